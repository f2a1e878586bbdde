/*
 * Configuration loading. The order of events is fixed, so that every value
 * is validated exactly once, by the same code, whatever its origin:
 *
 *   1. the file, line by line, through libinih with our own line reader
 *      (which gives exact line numbers and catches bad section headers);
 *   2. PGLEASE_<SECTION>_<KEY> environment overrides;
 *   3. VAULT_* fallbacks, then built-in defaults, for keys still unset;
 *   4. cross-key checks (required keys, conflicts).
 *
 * Keys are described once in a table (name, type, range, default, where the
 * value lives); parsing, defaults and SHOW CONFIG all walk that table.
 */
#include "pgl_conf.h"
#include "pgl_conf_conninfo.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/crypto.h>

typedef enum {
    K_STR,    /* char *, "" = NULL */
    K_INT,    /* int, [min, max] */
    K_SECS,   /* int seconds, optional unit s/min/h; [min, max] */
    K_BYTES,  /* int bytes, optional unit B/kB/MB/GB; [min, max] */
    K_BOOL,   /* bool */
    K_ENUM,   /* int index into names[] */
    K_LIST,   /* char ** + size_t count right after it, comma-separated */
    K_LISTEN, /* char *: "*" or comma-separated IP addresses / localhost */
    K_HOSTPORT, /* char *: host:port or [v6]:port, "" = NULL */
} key_type;

/* K_INT/K_SECS keys that may be left unset hold -1 (e.g. rotate_before). */
#define F_UNSET_OK 0x1

typedef struct {
    const char *section;
    const char *name;
    size_t offset;
    key_type type;
    const char *def; /* default as the file would spell it; NULL = unset */
    long min, max;
    const char *const *names; /* K_ENUM, in enum order */
    const char *env_fallback; /* e.g. VAULT_ADDR, used when the key is unset */
    int flags;
} key_desc;

static const char *const auth_names[] = {"scram-sha-256", "md5", "trust", "cert", NULL};
static const char *const pool_names[] = {"transaction", "session", NULL};
static const char *const track_names[] = {"pin", "reset", "off", NULL};
static const char *const tls_names[] = {"disable", "allow", "require", NULL};
static const char *const logfmt_names[] = {"text", "json", NULL};
static const char *const loglevel_names[] = {"error", "warning", "info", "debug", NULL};
static const char *const vault_auth_names[] = {"approle", "token", "kubernetes", "jwt",
                                                "cert",    NULL};

#define PG(field) "pglease", #field, offsetof(pgl_conf, field)
#define VA(field) "vault", #field, offsetof(pgl_conf, vault.field)
#define DAY (24L * 3600)

static const key_desc keys[] = {
    {PG(listen_addr), K_LISTEN, "127.0.0.1", 0, 0, NULL, NULL, 0},
    {PG(listen_port), K_INT, "6432", 1, 65535, NULL, NULL, 0},
    {PG(unix_socket_dir), K_STR, "/tmp", 0, 0, NULL, NULL, 0},
    {PG(auth_type), K_ENUM, "scram-sha-256", 0, 0, auth_names, NULL, 0},
    {PG(auth_file), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {PG(admin_users), K_LIST, NULL, 0, 0, NULL, NULL, 0},
    {PG(stats_users), K_LIST, NULL, 0, 0, NULL, NULL, 0},
    {PG(stats_period), K_SECS, "60", 1, DAY, NULL, NULL, 0},
    {PG(pool_mode), K_ENUM, "transaction", 0, 0, pool_names, NULL, 0},
    {PG(track_session_state), K_ENUM, "pin", 0, 0, track_names, NULL, 0},
    {PG(max_prepared_statements), K_INT, "200", 0, 100000, NULL, NULL, 0},
    {PG(replay_terminated_statements), K_BOOL, "yes", 0, 0, NULL, NULL, 0},
    {PG(default_pool_size), K_INT, "20", 1, 10000, NULL, NULL, 0},
    {PG(min_pool_size), K_INT, "0", 0, 10000, NULL, NULL, 0},
    {PG(max_client_conn), K_INT, "10000", 1, 1000000, NULL, NULL, 0},
    {PG(max_packet_size), K_BYTES, "64MB", 1024, 1024L * 1024 * 1024, NULL, NULL, 0},
    {PG(server_connect_timeout), K_SECS, "5", 1, 3600, NULL, NULL, 0},
    {PG(query_wait_timeout), K_SECS, "120", 0, DAY, NULL, NULL, 0},
    {PG(server_idle_timeout), K_SECS, "600", 0, 365 * DAY, NULL, NULL, 0},
    {PG(server_lifetime), K_SECS, "3600", 0, 365 * DAY, NULL, NULL, 0},
    {PG(client_idle_timeout), K_SECS, "0", 0, 365 * DAY, NULL, NULL, 0},
    {PG(client_tls_sslmode), K_ENUM, "disable", 0, 0, tls_names, NULL, 0},
    {PG(client_tls_cert_file), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {PG(client_tls_key_file), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {PG(http_listen), K_HOSTPORT, "127.0.0.1:9127", 0, 0, NULL, NULL, 0},
    {PG(rotate_before), K_SECS, NULL, 1, 365 * DAY, NULL, NULL, F_UNSET_OK},
    {PG(exec_timeout), K_SECS, "30", 1, 3600, NULL, NULL, 0},
    {PG(drain_timeout), K_SECS, "30", 0, DAY, NULL, NULL, 0},
    {PG(kv_poll_interval), K_SECS, "30", 1, DAY, NULL, NULL, 0},
    {PG(revoke_on_drain), K_BOOL, "yes", 0, 0, NULL, NULL, 0},
    {PG(revoke_on_shutdown), K_BOOL, "yes", 0, 0, NULL, NULL, 0},
    {PG(shutdown_timeout), K_SECS, "30", 0, DAY, NULL, NULL, 0},
    {PG(log_format), K_ENUM, "text", 0, 0, logfmt_names, NULL, 0},
    {PG(log_level), K_ENUM, "info", 0, 0, loglevel_names, NULL, 0},
    {PG(pidfile), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {PG(ignore_startup_parameters), K_LIST, NULL, 0, 0, NULL, NULL, 0},
    {PG(workers), K_INT, "1", 1, 64, NULL, NULL, 0},

    {VA(addr), K_STR, "http://127.0.0.1:8200", 0, 0, NULL, "VAULT_ADDR", 0},
    {VA(namespace), K_STR, NULL, 0, 0, NULL, "VAULT_NAMESPACE", 0},
    {VA(ca_cert), K_STR, NULL, 0, 0, NULL, "VAULT_CACERT", 0},
    {VA(auth_method), K_ENUM, "approle", 0, 0, vault_auth_names, NULL, 0},
    {VA(auth_mount), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {VA(token_file), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {VA(role_id), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {VA(role_id_file), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {VA(secret_id_file), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {VA(secret_id_wrapped), K_BOOL, "no", 0, 0, NULL, NULL, 0},
    {VA(kubernetes_role), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {VA(jwt_file), K_STR, "/var/run/secrets/kubernetes.io/serviceaccount/token", 0, 0, NULL,
     NULL, 0},
    {VA(jwt_role), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {VA(client_cert_file), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {VA(client_key_file), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {VA(cert_role), K_STR, NULL, 0, 0, NULL, NULL, 0},
    {VA(request_timeout), K_SECS, "10", 1, 600, NULL, NULL, 0},
};

#undef PG
#undef VA

#define NKEYS (sizeof keys / sizeof keys[0])

/* K_LIST fields are a char ** immediately followed by their count. */
_Static_assert(offsetof(pgl_conf, nadmin_users) == offsetof(pgl_conf, admin_users) + sizeof(char **),
               "admin_users count must follow the array");
_Static_assert(offsetof(pgl_conf, nstats_users) == offsetof(pgl_conf, stats_users) + sizeof(char **),
               "stats_users count must follow the array");
_Static_assert(offsetof(pgl_conf, nignore_startup_parameters) ==
                   offsetof(pgl_conf, ignore_startup_parameters) + sizeof(char **),
               "ignore_startup_parameters count must follow the array");

/* pglease's own keys inside a [databases] conninfo; everything else is libpq's. */
static const char *const db_own_keys[] = {"creds",     "pool_size",         "min_pool_size",
                                          "pool_mode", "kv_username_field", "kv_password_field",
                                          NULL};

/* Parse state shared by the line reader and the handler. */
typedef struct {
    pgl_conf *conf;
    const char *path;
    FILE *fp;
    int line;             /* line number of the line inih is handling */
    int seen[NKEYS];      /* line where each key was set (0 = not set) */
    char section[64];     /* current section, as the reader saw it */
    /* Multi-line values (see read_line): whether the line inih handles now
     * continues the previous entry, whether this section has had an entry
     * for it to continue (inih's prev_name), and that entry's line. */
    bool continuation;
    bool have_entry;
    int entry_line;
    /* The [databases] entry being read: parsed once its last continuation
     * line is known, i.e. when the next entry, header or end of file comes. */
    char *pending_name;
    char *pending_conninfo;
    int pending_line;
    bool pending_user; /* the pending entry is a [users] one */
    int rc;               /* first error, 0 if none */
    char *err;
    size_t errlen;
} parse_state;

static void fail(parse_state *ps, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(parse_state *ps, int rc, const char *fmt, ...)
{
    if (ps->rc != 0)
        return; /* keep the first error: later ones are often consequences */
    ps->rc = rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err, ps->errlen, fmt, ap);
    va_end(ap);
}

static char *xstrdup(parse_state *ps, const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        fail(ps, -ENOMEM, "out of memory");
    return d;
}

/* Frees a string that may hold a secret. */
static void free_secret(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static bool is_known_section(const char *s)
{
    return strcmp(s, "pglease") == 0 || strcmp(s, "vault") == 0 || strcmp(s, "databases") == 0 ||
           strcmp(s, "users") == 0;
}

/* ---- value parsers: 0 or an error message in `why` --------------------- */

static int parse_long(const char *v, long *out, const char **rest)
{
    errno = 0;
    char *end;
    long n = strtol(v, &end, 10);
    if (end == v)
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    *out = n;
    *rest = end;
    return 0;
}

typedef struct {
    const char *unit;
    long mult;
} unit_desc;

static const unit_desc sec_units[] = {{"", 1}, {"s", 1}, {"min", 60}, {"h", 3600}, {"d", DAY},
                                      {NULL, 0}};
static const unit_desc byte_units[] = {
    {"", 1}, {"B", 1}, {"kB", 1024}, {"MB", 1024L * 1024}, {"GB", 1024L * 1024 * 1024}, {NULL, 0}};

static int parse_number(const key_desc *k, const char *v, long *out, char *why, size_t whylen)
{
    const unit_desc *units = k->type == K_SECS    ? sec_units
                             : k->type == K_BYTES ? byte_units
                                                  : NULL;
    long n;
    const char *rest;
    if (parse_long(v, &n, &rest) != 0 || (units == NULL && *rest != '\0')) {
        snprintf(why, whylen, "\"%s\" is not an integer", v);
        return -EINVAL;
    }
    while (*rest == ' ')
        rest++;
    long mult = 1;
    if (*rest != '\0') {
        const unit_desc *u = units;
        for (; u != NULL && u->unit != NULL; u++)
            if (strcmp(rest, u->unit) == 0)
                break;
        if (u == NULL || u->unit == NULL) {
            snprintf(why, whylen, "\"%s\" has an unknown unit%s", v,
                     k->type == K_SECS    ? " (use s, min, h or d)"
                     : k->type == K_BYTES ? " (use B, kB, MB or GB)"
                                          : "");
            return -EINVAL;
        }
        mult = u->mult;
    }
    if (n != 0 && (n > LONG_MAX / mult || n < LONG_MIN / mult)) {
        snprintf(why, whylen, "\"%s\" is out of range %ld..%ld", v, k->min, k->max);
        return -EINVAL;
    }
    n *= mult;
    if (n < k->min || n > k->max) {
        snprintf(why, whylen, "%s is out of range %ld..%ld", v, k->min, k->max);
        return -EINVAL;
    }
    *out = n;
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1", NULL};
    static const char *const no[] = {"no", "false", "off", "0", NULL};
    for (const char *const *p = yes; *p; p++)
        if (strcasecmp(v, *p) == 0)
            return *out = true, 0;
    for (const char *const *p = no; *p; p++)
        if (strcasecmp(v, *p) == 0)
            return *out = false, 0;
    return -EINVAL;
}

static bool is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Splits a comma-separated list into trimmed, non-empty items. */
static int split_list(const char *v, char ***items_out, size_t *n_out)
{
    size_t cap = 1;
    for (const char *p = v; *p; p++)
        cap += *p == ',';
    char **items = calloc(cap, sizeof *items);
    if (items == NULL)
        return -ENOMEM;
    size_t n = 0;
    const char *p = v;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && isspace((unsigned char)*p))
            p++, len--;
        while (len > 0 && isspace((unsigned char)p[len - 1]))
            len--;
        if (len > 0) {
            items[n] = strndup(p, len);
            if (items[n] == NULL) {
                for (size_t i = 0; i < n; i++)
                    free(items[i]);
                free(items);
                return -ENOMEM;
            }
            n++;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    *items_out = items;
    *n_out = n;
    return 0;
}

static void free_list(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

static int check_listen(const char *v, char *why, size_t whylen)
{
    if (strcmp(v, "*") == 0)
        return 0;
    char **items;
    size_t n;
    if (split_list(v, &items, &n) != 0) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!is_ip_literal(items[i]) && strcmp(items[i], "localhost") != 0) {
            snprintf(why, whylen, "\"%s\" is not an IP address, \"localhost\" or \"*\"",
                     items[i]);
            rc = -EINVAL;
        }
    }
    free_list(items, n);
    return rc;
}

/* host:port, [v6]:port; the host is an IP literal or "localhost". */
static int check_hostport(const char *v, char *why, size_t whylen)
{
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v || colon[1] == '\0') {
        snprintf(why, whylen, "\"%s\" is not host:port", v);
        return -EINVAL;
    }
    char host[64];
    const char *h = v;
    size_t hlen = (size_t)(colon - v);
    if (*h == '[') {
        if (hlen < 2 || v[hlen - 1] != ']') {
            snprintf(why, whylen, "\"%s\" is not [address]:port", v);
            return -EINVAL;
        }
        h++, hlen -= 2;
    }
    if (hlen >= sizeof host) {
        snprintf(why, whylen, "host in \"%s\" is too long", v);
        return -EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (!is_ip_literal(host) && strcmp(host, "localhost") != 0) {
        snprintf(why, whylen, "\"%s\" is not an IP address or \"localhost\"", host);
        return -EINVAL;
    }
    long port;
    const char *rest;
    if (parse_long(colon + 1, &port, &rest) != 0 || *rest != '\0' || port < 1 || port > 65535) {
        snprintf(why, whylen, "port in \"%s\" is not 1..65535", v);
        return -EINVAL;
    }
    return 0;
}

/* ---- setting one key ------------------------------------------------------ */

static void *field(pgl_conf *conf, const key_desc *k)
{
    return (char *)conf + k->offset;
}

/* Releases what a key's field owns, leaving it zero. */
static void clear_field(pgl_conf *conf, const key_desc *k)
{
    void *f = field(conf, k);
    switch (k->type) {
    case K_STR:
    case K_LISTEN:
    case K_HOSTPORT:
        free_secret(*(char **)f);
        *(char **)f = NULL;
        break;
    case K_LIST: {
        size_t *n = (size_t *)((char *)f + sizeof(char **));
        free_list(*(char ***)f, *n);
        *(char ***)f = NULL;
        *n = 0;
        break;
    }
    case K_INT:
    case K_SECS:
    case K_BYTES:
    case K_BOOL:
    case K_ENUM:
        break;
    }
}

/*
 * Sets key `k` from text `v`. `where` prefixes messages ("file:12" or
 * "environment PGLEASE_X"). Returns 0 or records the error in ps.
 */
static int set_key(parse_state *ps, const key_desc *k, const char *v, const char *where)
{
    pgl_conf *conf = ps->conf;
    void *f = field(conf, k);
    char why[256] = "";
    int bad = 0;

    switch (k->type) {
    case K_STR:
    case K_LISTEN:
    case K_HOSTPORT:
        if (k->type == K_LISTEN && *v != '\0')
            bad = check_listen(v, why, sizeof why);
        else if (k->type == K_HOSTPORT && *v != '\0')
            bad = check_hostport(v, why, sizeof why);
        if (bad)
            break;
        clear_field(conf, k);
        if (*v != '\0' && (*(char **)f = xstrdup(ps, v)) == NULL)
            return ps->rc;
        return 0;
    case K_INT:
    case K_SECS:
    case K_BYTES: {
        long n;
        if (*v == '\0' && (k->flags & F_UNSET_OK)) {
            *(int *)f = -1;
            return 0;
        }
        if (strcmp(k->name, "workers") == 0 && strcasecmp(v, "auto") == 0) {
            /* One event loop per CPU this process may run on. */
            cpu_set_t set;
            int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
            *(int *)f = cpus < 1 ? 1 : cpus > (int)k->max ? (int)k->max : cpus;
            return 0;
        }
        bad = parse_number(k, v, &n, why, sizeof why);
        if (!bad)
            *(int *)f = (int)n;
        break;
    }
    case K_BOOL:
        bad = parse_bool(v, (bool *)f);
        if (bad)
            snprintf(why, sizeof why, "\"%s\" is not a boolean (use yes or no)", v);
        break;
    case K_ENUM: {
        int i = 0;
        for (; k->names[i] != NULL; i++)
            if (strcasecmp(v, k->names[i]) == 0)
                break;
        if (k->names[i] == NULL) {
            size_t off = (size_t)snprintf(why, sizeof why, "\"%s\" is not one of", v);
            for (int j = 0; k->names[j] != NULL && off < sizeof why; j++)
                off += (size_t)snprintf(why + off, sizeof why - off, "%s %s",
                                        j > 0 ? "," : "", k->names[j]);
            bad = -EINVAL;
        } else {
            *(int *)f = i;
        }
        break;
    }
    case K_LIST: {
        char **items;
        size_t n;
        if (split_list(v, &items, &n) != 0) {
            fail(ps, -ENOMEM, "out of memory");
            return ps->rc;
        }
        clear_field(conf, k);
        *(char ***)f = items;
        *(size_t *)((char *)f + sizeof(char **)) = n;
        return 0;
    }
    }
    if (bad) {
        fail(ps, bad, "%s: [%s] %s: %s", where, k->section, k->name, why);
        return ps->rc;
    }
    return 0;
}

static const key_desc *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcasecmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* ---- [databases] ------------------------------------------------------------ */

static void free_database(pgl_conf_database *db)
{
    free(db->name);
    for (size_t i = 0; i < db->nparams; i++) {
        free(db->params[i].key);
        free_secret(db->params[i].value);
    }
    free(db->params);
    free(db->creds_path);
    free(db->creds_mount);
    free(db->creds_role);
    free(db->kv_metadata_path);
    free(db->kv_username_field);
    free(db->kv_password_field);
    free(db->for_user);
    memset(db, 0, sizeof *db);
}

#define KV_PREFIX "kv:"
#define KV_FORM "kv:<mount>/data/<path>"

/* Splits "kv:<mount>/data/<path>" (KV v2; the first "/data/": a secret's
 * path may hold "data", a mount path rarely does). */
static int parse_kv(pgl_conf_database *db, const char *v, char *why, size_t whylen)
{
    const char *path = v + strlen(KV_PREFIX);
    const char *sep = strstr(path, "/data/");
    const char *secret = sep ? sep + strlen("/data/") : NULL;
    if (sep == NULL || sep == path || *path == '/' || *secret == '\0' ||
        secret[strlen(secret) - 1] == '/') {
        snprintf(why, whylen, "\"%s\" is not " KV_FORM, v);
        return -EINVAL;
    }
    db->creds_kind = PGL_CONF_CREDS_KV;
    db->creds_path = strdup(path);
    db->creds_mount = strndup(path, (size_t)(sep - path));
    db->creds_role = strdup(secret);
    if (db->creds_path && db->creds_mount && db->creds_role &&
        asprintf(&db->kv_metadata_path, "%s/metadata/%s", db->creds_mount, secret) < 0)
        db->kv_metadata_path = NULL;
    if (!db->creds_path || !db->creds_mount || !db->creds_role || !db->kv_metadata_path) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* Splits "<mount>/creds/<role>" or "<mount>/static-creds/<role>", or a
 * KV v2 secret "kv:<mount>/data/<path>". */
static int parse_creds(pgl_conf_database *db, const char *v, char *why, size_t whylen)
{
    /* Sources outside Vault: what follows the prefix is kept as it is (for
     * exec:, the program and its arguments, run without a shell). */
    static const struct {
        const char *prefix;
        pgl_conf_creds_kind kind;
        const char *needs;
    } local[] = {{"exec:", PGL_CONF_CREDS_EXEC, "the helper's absolute path"},
                 {"file:", PGL_CONF_CREDS_FILE, "an absolute path"}};
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++) {
        size_t n = strlen(local[i].prefix);
        if (strncmp(v, local[i].prefix, n) != 0)
            continue;
        if (v[n] != '/') {
            snprintf(why, whylen, "\"%s\": %s needs %s", v, local[i].prefix, local[i].needs);
            return -EINVAL;
        }
        db->creds_kind = local[i].kind;
        if ((db->creds_path = strdup(v + n)) == NULL) {
            snprintf(why, whylen, "out of memory");
            return -ENOMEM;
        }
        return 0;
    }
    if (strncmp(v, KV_PREFIX, strlen(KV_PREFIX)) == 0)
        return parse_kv(db, v, why, whylen);
    static const struct {
        const char *sep;
        pgl_conf_creds_kind kind;
    } forms[] = {{"/static-creds/", PGL_CONF_CREDS_STATIC}, {"/creds/", PGL_CONF_CREDS_DYNAMIC}};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        /* The last occurrence: a mount path may itself contain "creds". */
        const char *sep = NULL;
        for (const char *p = strstr(v, forms[i].sep); p; p = strstr(p + 1, forms[i].sep))
            sep = p;
        if (sep == NULL)
            continue;
        const char *role = sep + strlen(forms[i].sep);
        if (sep == v || *v == '/' || *role == '\0' || strchr(role, '/') != NULL) {
            snprintf(why, whylen, "\"%s\" is not <mount>/creds/<role>, <mount>/static-creds/<role> or "
                     KV_FORM, v);
            return -EINVAL;
        }
        db->creds_kind = forms[i].kind;
        db->creds_path = strdup(v);
        db->creds_mount = strndup(v, (size_t)(sep - v));
        db->creds_role = strdup(role);
        if (!db->creds_path || !db->creds_mount || !db->creds_role) {
            snprintf(why, whylen, "out of memory");
            return -ENOMEM;
        }
        return 0;
    }
    snprintf(why, whylen,
             "\"%s\" is not <mount>/creds/<role>, <mount>/static-creds/<role> or " KV_FORM, v);
    return -EINVAL;
}

/* Fills `db` (name already set) from a conninfo string; a [users] entry
 * (`section` "users") takes pglease's own keys only. */
static int parse_database(parse_state *ps, pgl_conf_database *db, const char *conninfo,
                          const char *where, const char *section)
{
    bool user_entry = strcmp(section, "users") == 0;
    char why[256];
    pgl_conf_kv *kv = NULL;
    size_t nkv = 0;
    db->pool_size = db->min_pool_size = db->pool_mode = -1;

    int rc = pgl_conf_conninfo_split(conninfo, &kv, &nkv, why, sizeof why);
    if (rc != 0) {
        fail(ps, rc, "%s: [%s] %s: %s", where, section, db->name, why);
        return ps->rc;
    }
    db->params = calloc(nkv ? nkv : 1, sizeof *db->params);
    if (db->params == NULL) {
        pgl_conf_conninfo_free(kv, nkv);
        fail(ps, -ENOMEM, "out of memory");
        return ps->rc;
    }

    int bad = 0;
    const char *badkey = NULL;
    for (size_t i = 0; i < nkv; i++) {
        const char *k = kv[i].key, *v = kv[i].value;
        bool own = false;
        for (const char *const *o = db_own_keys; *o; o++)
            own |= strcmp(k, *o) == 0;
        if (!own && user_entry) {
            snprintf(why, sizeof why,
                     "unknown key \"%s\" (a user takes creds, pool_size, min_pool_size, "
                     "pool_mode, kv_username_field, kv_password_field; the connection options "
                     "are the database's)",
                     k);
            bad = -EINVAL, badkey = k;
        } else if (!own) {
            if (!pgl_conf_conninfo_is_libpq_key(k)) {
                snprintf(why, sizeof why, "unknown connection option \"%s\"", k);
                bad = -EINVAL, badkey = k;
            } else if (pgl_conf_database_param(db, k) != NULL) {
                snprintf(why, sizeof why, "connection option \"%s\" given twice", k);
                bad = -EINVAL, badkey = k;
            } else {
                /* Move ownership; the slot in kv is cleared below. */
                db->params[db->nparams++] = kv[i];
                kv[i].key = kv[i].value = NULL;
            }
        } else if (strcmp(k, "creds") == 0) {
            if (db->creds_path != NULL) {
                snprintf(why, sizeof why, "creds given twice");
                bad = -EINVAL;
            } else {
                bad = parse_creds(db, v, why, sizeof why);
            }
            badkey = k;
        } else if (strncmp(k, "kv_", 3) == 0) { /* kv_username_field, kv_password_field */
            char **field = strcmp(k, "kv_username_field") == 0 ? &db->kv_username_field
                                                                 : &db->kv_password_field;
            if (*field != NULL) {
                snprintf(why, sizeof why, "given twice");
                bad = -EINVAL;
            } else if (*v == '\0') {
                snprintf(why, sizeof why, "empty field name");
                bad = -EINVAL;
            } else if ((*field = strdup(v)) == NULL) {
                snprintf(why, sizeof why, "out of memory");
                bad = -ENOMEM;
            }
            badkey = k;
        } else if (strcmp(k, "pool_mode") == 0) {
            int m = -1;
            for (int j = 0; pool_names[j]; j++)
                if (strcasecmp(v, pool_names[j]) == 0)
                    m = j;
            if (m < 0) {
                snprintf(why, sizeof why, "\"%s\" is not one of transaction, session", v);
                bad = -EINVAL;
            }
            db->pool_mode = m;
            badkey = k;
        } else { /* pool_size, min_pool_size */
            long n = 0;
            const char *rest;
            if (parse_long(v, &n, &rest) != 0 || *rest != '\0' || n < 0 || n > 10000 ||
                (n == 0 && strcmp(k, "pool_size") == 0)) {
                snprintf(why, sizeof why, "\"%s\" is not an integer in %s..10000", v,
                         strcmp(k, "pool_size") == 0 ? "1" : "0");
                bad = -EINVAL;
            }
            *(strcmp(k, "pool_size") == 0 ? &db->pool_size : &db->min_pool_size) = (int)n;
            badkey = k;
        }
        if (bad) {
            /* Report before kv (which owns badkey) is freed. */
            fail(ps, bad, "%s: [%s] %s: %s: %s", where, section, db->name, badkey, why);
            break;
        }
    }
    pgl_conf_conninfo_free(kv, nkv);
    if (bad)
        return ps->rc;

    if (db->creds_kind != PGL_CONF_CREDS_KV &&
        (db->kv_username_field != NULL || db->kv_password_field != NULL)) {
        fail(ps, -EINVAL, "%s: [%s] %s: %s: only with creds=" KV_FORM, where, section, db->name,
             db->kv_username_field != NULL ? "kv_username_field" : "kv_password_field");
        return ps->rc;
    }
    if (db->creds_kind == PGL_CONF_CREDS_KV &&
        ((db->kv_username_field == NULL && (db->kv_username_field = strdup("username")) == NULL) ||
         (db->kv_password_field == NULL && (db->kv_password_field = strdup("password")) == NULL))) {
        fail(ps, -ENOMEM, "out of memory");
        return ps->rc;
    }
    const char *user = pgl_conf_database_param(db, "user");
    if (user_entry) {
        if (db->creds_kind == PGL_CONF_CREDS_CONNINFO && db->pool_size < 0 &&
            db->min_pool_size < 0 && db->pool_mode < 0) {
            fail(ps, -EINVAL, "%s: [users] %s: empty: give creds=, pool_size=, min_pool_size= "
                              "or pool_mode=",
                 where, db->name);
            return ps->rc;
        }
        return 0;
    }
    if (db->creds_kind != PGL_CONF_CREDS_CONNINFO) {
        if (user != NULL || pgl_conf_database_param(db, "password") != NULL) {
            fail(ps, -EINVAL,
                 "%s: [databases] %s: user and password come from creds= when it is given; "
                 "remove them from the conninfo",
                 where, db->name);
            return ps->rc;
        }
    } else if (user == NULL) {
        fail(ps, -EINVAL,
             "%s: [databases] %s: missing creds= (Vault) or user= (fixed upstream user)", where,
             db->name);
        return ps->rc;
    }
    return 0;
}

/* A [databases] entry, or a [users] one (`user_entry`). */
static int add_entry(parse_state *ps, bool user_entry, const char *name, const char *conninfo,
                     const char *where)
{
    pgl_conf *conf = ps->conf;
    const char *section = user_entry ? "users" : "databases";
    pgl_conf_database **list = user_entry ? &conf->users : &conf->databases;
    size_t *n = user_entry ? &conf->nusers : &conf->ndatabases;
    if (!user_entry && (strcasecmp(name, "pglease") == 0 || strcasecmp(name, "pgbouncer") == 0)) {
        fail(ps, -EINVAL,
             "%s: [databases] %s: this name is reserved for the admin console", where, name);
        return ps->rc;
    }
    if (strlen(name) > 63) {
        fail(ps, -EINVAL, "%s: [%s] %s: name longer than 63 bytes", where, section, name);
        return ps->rc;
    }
    for (size_t i = 0; i < *n; i++) {
        if (strcmp((*list)[i].name, name) == 0) {
            fail(ps, -EINVAL, "%s: [%s] %s: duplicate %s (first at line %d)", where, section,
                 name, user_entry ? "user" : "database", (*list)[i].line);
            return ps->rc;
        }
    }
    pgl_conf_database *dbs = realloc(*list, (*n + 1) * sizeof *dbs);
    if (dbs == NULL) {
        fail(ps, -ENOMEM, "out of memory");
        return ps->rc;
    }
    *list = dbs;
    pgl_conf_database *db = &dbs[*n];
    memset(db, 0, sizeof *db);
    db->line = ps->line;
    if ((db->name = xstrdup(ps, name)) == NULL)
        return ps->rc;
    (*n)++; /* from here on pgl_conf_free releases it */
    return parse_database(ps, db, conninfo, where, section);
}

/* ---- the file ----------------------------------------------------------------- */

/* Parses the pending [databases] entry, if any, with messages naming its
 * first line. */
static int finish_pending(parse_state *ps)
{
    if (ps->pending_name == NULL)
        return ps->rc;
    char where[PATH_MAX + 16];
    snprintf(where, sizeof where, "%s:%d", ps->path, ps->pending_line);
    int line = ps->line;
    ps->line = ps->pending_line;
    if (ps->rc == 0)
        (void)add_entry(ps, ps->pending_user, ps->pending_name, ps->pending_conninfo, where);
    ps->line = line;
    free(ps->pending_name);
    free_secret(ps->pending_conninfo);
    ps->pending_name = ps->pending_conninfo = NULL;
    return ps->rc;
}

/* Appends a continuation line's value to the pending entry, joined by one
 * space. inih strips a " ;comment" from key lines but (release 55) not from
 * continuation lines; strip it here so both kinds of line read alike. */
static int continue_pending(parse_state *ps, const char *value)
{
    size_t vlen = strlen(value);
    for (size_t i = 1; i < vlen; i++) {
        if (value[i] == ';' && isspace((unsigned char)value[i - 1])) {
            vlen = i;
            break;
        }
    }
    while (vlen > 0 && isspace((unsigned char)value[vlen - 1]))
        vlen--;
    if (vlen == 0)
        return 0;
    size_t have = strlen(ps->pending_conninfo);
    char *joined = malloc(have + 1 + vlen + 1);
    if (joined == NULL) {
        fail(ps, -ENOMEM, "out of memory");
        return ps->rc;
    }
    memcpy(joined, ps->pending_conninfo, have);
    joined[have] = ' ';
    memcpy(joined + have + 1, value, vlen);
    joined[have + 1 + vlen] = '\0';
    free_secret(ps->pending_conninfo);
    ps->pending_conninfo = joined;
    return 0;
}

/*
 * inih's line reader. Counting lines here gives the exact line of each
 * handler call, and lets us refuse what inih would silently mangle: lines
 * longer than its buffer (it would split them) and section headers we do not
 * know (inih never reports an empty section).
 */
static char *read_line(char *str, int num, void *stream)
{
    parse_state *ps = stream;
    if (ps->rc != 0)
        return NULL;
    if (fgets(str, num, ps->fp) == NULL) {
        (void)finish_pending(ps);
        return NULL;
    }
    ps->line++;
    size_t len = strlen(str);
    if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(ps->fp)) {
        fail(ps, PGL_ESYNTAX,
             "%s:%d: line longer than %d bytes (a [databases] entry may go on over indented "
             "continuation lines)",
             ps->path, ps->line, num - 2);
        return NULL;
    }
    /* Mirror inih's multi-line rule (INI_ALLOW_MULTILINE, on in Debian's
     * build): a line that is not blank or a comment and starts with
     * whitespace continues the value of the section's previous entry, even
     * when it looks like "key = value" or "[section]". Any other line with
     * content ends the pending [databases] entry. */
    const char *start = str;
    if (ps->line == 1 && strncmp(str, "\xEF\xBB\xBF", 3) == 0)
        start += 3; /* inih skips a UTF-8 byte order mark */
    const char *p = start;
    while (*p != '\0' && isspace((unsigned char)*p))
        p++;
    ps->continuation = false;
    if (*p == '\0' || *p == ';' || *p == '#')
        return str;
    if (p > start && ps->have_entry) {
        ps->continuation = true;
        return str;
    }
    if (finish_pending(ps) != 0)
        return NULL;
    if (*p != '[') {
        ps->have_entry = true;
        ps->entry_line = ps->line;
    } else {
        ps->have_entry = false;
        const char *end = strchr(p, ']');
        size_t n = end ? (size_t)(end - p - 1) : 0;
        if (end == NULL || n == 0 || n >= sizeof ps->section) {
            fail(ps, PGL_ESYNTAX, "%s:%d: malformed section header", ps->path, ps->line);
            return NULL;
        }
        memcpy(ps->section, p + 1, n);
        ps->section[n] = '\0';
        if (!is_known_section(ps->section)) {
            fail(ps, -EINVAL,
                 "%s:%d: [%s]: unknown section (expected [pglease], [vault], [databases] or [users])",
                 ps->path, ps->line, ps->section);
            return NULL;
        }
    }
    return str;
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    char where[PATH_MAX + 16];
    snprintf(where, sizeof where, "%s:%d", ps->path, ps->line);

    if (ps->rc != 0)
        return 0;
    if (ps->continuation) {
        if (ps->pending_name != NULL)
            return continue_pending(ps, value) == 0;
        fail(ps, -EINVAL,
             "%s: [%s] %s: this indented line continues the value of line %d; only "
             "[databases] and [users] entries may span lines: remove the leading whitespace",
             where, section, name, ps->entry_line);
        return 0;
    }
    if (*section == '\0') {
        fail(ps, -EINVAL, "%s: %s: key outside of any section", where, name);
        return 0;
    }
    if (strcmp(section, "databases") == 0 || strcmp(section, "users") == 0) {
        /* Parsed by finish_pending, once continuation lines are in. */
        ps->pending_line = ps->line;
        ps->pending_user = strcmp(section, "users") == 0;
        if ((ps->pending_name = xstrdup(ps, name)) == NULL ||
            (ps->pending_conninfo = xstrdup(ps, value)) == NULL)
            return 0;
        return 1;
    }

    const key_desc *k = find_key(section, name);
    if (k == NULL) {
        fail(ps, -EINVAL, "%s: [%s] %s: unknown key", where, section, name);
        return 0;
    }
    size_t idx = (size_t)(k - keys);
    if (ps->seen[idx] != 0) {
        fail(ps, -EINVAL, "%s: [%s] %s: duplicate key (first at line %d)", where, section,
             name, ps->seen[idx]);
        return 0;
    }
    ps->seen[idx] = ps->line;
    return set_key(ps, k, value, where) == 0;
}

/* ---- environment ---------------------------------------------------------------- */

/* PGLEASE_<SECTION>_<KEY>=value; section and key match case-insensitively. */
static int apply_env(parse_state *ps, char *const *env)
{
    static const char *const sections[] = {"pglease", "vault", "databases", "users"};
    for (; env != NULL && *env != NULL; env++) {
        const char *e = *env;
        if (strncmp(e, "PGLEASE_", 8) != 0)
            continue;
        const char *eq = strchr(e, '=');
        if (eq == NULL)
            continue;
        char var[128];
        size_t vlen = (size_t)(eq - e);
        if (vlen >= sizeof var) {
            fail(ps, -EINVAL, "environment: variable name too long");
            return ps->rc;
        }
        memcpy(var, e, vlen);
        var[vlen] = '\0';
        char where[160];
        snprintf(where, sizeof where, "environment %s", var);

        const char *rest = var + 8, *section = NULL;
        for (size_t i = 0; i < 4 && section == NULL; i++) {
            size_t sl = strlen(sections[i]);
            if (strncasecmp(rest, sections[i], sl) == 0 && rest[sl] == '_')
                section = sections[i], rest += sl + 1;
        }
        /* Only PGLEASE_{PGLEASE,VAULT,DATABASES,USERS}_* are ours. Other PGLEASE_*
         * variables are someone else's: Kubernetes injects PGLEASE_PORT,
         * PGLEASE_SERVICE_HOST... into every pod when a Service is named
         * "pglease", and refusing to start over them would be absurd. */
        if (section == NULL)
            continue;
        char name[96];
        size_t n = 0;
        for (; rest[n] && n < sizeof name - 1; n++)
            name[n] = (char)tolower((unsigned char)rest[n]);
        name[n] = '\0';
        ps->line = 0;
        bool user_entry = strcmp(section, "users") == 0;
        if (user_entry || strcmp(section, "databases") == 0) {
            /* An override replaces the file's entry of the same name. */
            pgl_conf *conf = ps->conf;
            pgl_conf_database *list = user_entry ? conf->users : conf->databases;
            size_t *count = user_entry ? &conf->nusers : &conf->ndatabases;
            for (size_t i = 0; i < *count; i++) {
                if (strcmp(list[i].name, name) == 0) {
                    free_database(&list[i]);
                    list[i] = list[--*count];
                    break;
                }
            }
            if (add_entry(ps, user_entry, name, eq + 1, where) != 0)
                return ps->rc;
            continue;
        }
        const key_desc *k = find_key(section, name);
        if (k == NULL) {
            fail(ps, -EINVAL, "%s: [%s] %s: unknown key", where, section, name);
            return ps->rc;
        }
        ps->seen[k - keys] = -1; /* set, but not by a file line */
        if (set_key(ps, k, eq + 1, where) != 0)
            return ps->rc;
    }
    return 0;
}

static const char *env_get(char *const *env, const char *name)
{
    size_t n = strlen(name);
    for (; env != NULL && *env != NULL; env++)
        if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
            return *env + n + 1;
    return NULL;
}

/* ---- cross-key validation ------------------------------------------------------- */

static bool readable(const char *path)
{
    return path != NULL && access(path, R_OK) == 0;
}

/* The line a key was set at, for messages; 0 means default or environment. */
static void key_where(parse_state *ps, const char *section, const char *name, char *buf,
                      size_t len)
{
    const key_desc *k = find_key(section, name);
    int line = k ? ps->seen[k - keys] : 0;
    if (line > 0)
        snprintf(buf, len, "%s:%d", ps->path, line);
    else
        snprintf(buf, len, "%s", ps->path);
}

static bool takes_vault(pgl_conf_creds_kind k)
{
    return k == PGL_CONF_CREDS_DYNAMIC || k == PGL_CONF_CREDS_STATIC || k == PGL_CONF_CREDS_KV;
}

static int dup_field(parse_state *ps, char **to, const char *from)
{
    *to = from != NULL ? xstrdup(ps, from) : NULL;
    return from != NULL && *to == NULL ? -ENOMEM : 0;
}

/* The entry the pools of user `u` on database `d` read: the database's
 * connection options, `u`'s credential source (else the database's), and
 * `u`'s sizes and mode where it gives them. */
static int derive_user_database(parse_state *ps, const pgl_conf_database *u,
                                const pgl_conf_database *d, pgl_conf_database *out)
{
    const pgl_conf *c = ps->conf;
    bool own_creds = u->creds_kind != PGL_CONF_CREDS_CONNINFO;
    const pgl_conf_database *src = own_creds ? u : d;
    out->line = u->line;
    out->params = calloc(d->nparams ? d->nparams : 1, sizeof *out->params);
    if (out->params == NULL || dup_field(ps, &out->name, d->name) ||
        dup_field(ps, &out->for_user, u->name))
        goto nomem;
    for (size_t i = 0; i < d->nparams; i++) {
        /* Another source's user would log in with the fixed one's password. */
        if (own_creds && (strcmp(d->params[i].key, "user") == 0 ||
                          strcmp(d->params[i].key, "password") == 0))
            continue;
        pgl_conf_kv *kv = &out->params[out->nparams];
        if (dup_field(ps, &kv->key, d->params[i].key) ||
            dup_field(ps, &kv->value, d->params[i].value)) {
            free(kv->key);
            goto nomem;
        }
        out->nparams++;
    }
    out->creds_kind = src->creds_kind;
    if (dup_field(ps, &out->creds_path, src->creds_path) ||
        dup_field(ps, &out->creds_mount, src->creds_mount) ||
        dup_field(ps, &out->creds_role, src->creds_role) ||
        dup_field(ps, &out->kv_metadata_path, src->kv_metadata_path) ||
        dup_field(ps, &out->kv_username_field, src->kv_username_field) ||
        dup_field(ps, &out->kv_password_field, src->kv_password_field))
        goto nomem;
    out->pool_size = u->pool_size >= 0 ? u->pool_size : d->pool_size;
    out->min_pool_size = u->min_pool_size >= 0 ? u->min_pool_size : d->min_pool_size;
    out->pool_mode = u->pool_mode >= 0 ? u->pool_mode : d->pool_mode;
    int min = out->min_pool_size >= 0 ? out->min_pool_size : c->min_pool_size;
    int max = out->pool_size >= 0 ? out->pool_size : c->default_pool_size;
    if (min > max) {
        fail(ps, -EINVAL,
             "%s:%d: [users] %s: on database %s, min_pool_size %d exceeds pool_size %d",
             ps->path, u->line, u->name, d->name, min, max);
        return ps->rc;
    }
    return 0;
nomem:
    fail(ps, -ENOMEM, "out of memory");
    return ps->rc;
}

/* Every (database, [users] entry) pair's entry, built once per snapshot so
 * that pools read theirs as they read a database's. */
static int derive_user_databases(parse_state *ps)
{
    pgl_conf *c = ps->conf;
    if (c->nusers == 0)
        return 0;
    c->user_databases = calloc(c->nusers * c->ndatabases, sizeof *c->user_databases);
    if (c->user_databases == NULL) {
        fail(ps, -ENOMEM, "out of memory");
        return ps->rc;
    }
    for (size_t u = 0; u < c->nusers; u++) {
        for (size_t d = 0; d < c->ndatabases; d++) {
            pgl_conf_database *out = &c->user_databases[c->nuser_databases++];
            if (derive_user_database(ps, &c->users[u], &c->databases[d], out) != 0)
                return ps->rc;
            c->vault_needed |= takes_vault(out->creds_kind);
        }
    }
    return 0;
}

static int validate(parse_state *ps)
{
    pgl_conf *c = ps->conf;
    char w[PATH_MAX + 16];

    if (c->listen_addr == NULL && c->unix_socket_dir == NULL) {
        key_where(ps, "pglease", "listen_addr", w, sizeof w);
        fail(ps, -EINVAL,
             "%s: [pglease] listen_addr: no listener: set listen_addr or unix_socket_dir", w);
        return ps->rc;
    }
    if (c->auth_type == PGL_CONF_AUTH_SCRAM || c->auth_type == PGL_CONF_AUTH_MD5) {
        key_where(ps, "pglease", "auth_file", w, sizeof w);
        if (c->auth_file == NULL) {
            fail(ps, -EINVAL, "%s: [pglease] auth_file: missing required key (auth_type = %s)",
                 w, auth_names[c->auth_type]);
            return ps->rc;
        }
        if (!readable(c->auth_file)) {
            fail(ps, -EINVAL, "%s: [pglease] auth_file: cannot read \"%s\": %s", w,
                 c->auth_file, pgl_strerror(-errno));
            return ps->rc;
        }
    }
    if (c->client_tls_sslmode != PGL_CONF_TLS_DISABLE) {
        static const char *const tls_keys[] = {"client_tls_cert_file", "client_tls_key_file"};
        const char *vals[] = {c->client_tls_cert_file, c->client_tls_key_file};
        for (int i = 0; i < 2; i++) {
            key_where(ps, "pglease", tls_keys[i], w, sizeof w);
            if (vals[i] == NULL) {
                fail(ps, -EINVAL,
                     "%s: [pglease] %s: missing required key (client_tls_sslmode = %s)", w,
                     tls_keys[i], tls_names[c->client_tls_sslmode]);
                return ps->rc;
            }
            if (!readable(vals[i])) {
                fail(ps, -EINVAL, "%s: [pglease] %s: cannot read \"%s\": %s", w,
                     tls_keys[i], vals[i], pgl_strerror(-errno));
                return ps->rc;
            }
        }
    }
    if (c->auth_type == PGL_CONF_AUTH_CERT && c->client_tls_sslmode != PGL_CONF_TLS_REQUIRE) {
        key_where(ps, "pglease", "auth_type", w, sizeof w);
        fail(ps, -EINVAL,
             "%s: [pglease] auth_type: cert needs client_tls_sslmode = require", w);
        return ps->rc;
    }
    if (c->min_pool_size > c->default_pool_size) {
        key_where(ps, "pglease", "min_pool_size", w, sizeof w);
        fail(ps, -EINVAL, "%s: [pglease] min_pool_size: %d exceeds default_pool_size %d",
             w, c->min_pool_size, c->default_pool_size);
        return ps->rc;
    }
    if (c->ndatabases == 0) {
        fail(ps, -EINVAL, "%s: [databases]: missing: define at least one database",
             ps->path);
        return ps->rc;
    }
    for (size_t i = 0; i < c->ndatabases; i++) {
        const pgl_conf_database *db = &c->databases[i];
        int min = db->min_pool_size >= 0 ? db->min_pool_size : c->min_pool_size;
        int max = db->pool_size >= 0 ? db->pool_size : c->default_pool_size;
        if (min > max) {
            fail(ps, -EINVAL,
                 "%s:%d: [databases] %s: min_pool_size %d exceeds pool_size %d", ps->path,
                 db->line, db->name, min, max);
            return ps->rc;
        }
        c->vault_needed |= takes_vault(db->creds_kind);
    }
    if (derive_user_databases(ps) != 0)
        return ps->rc;

    if (!c->vault_needed)
        return 0;
    pgl_conf_vault *v = &c->vault;
    const char *missing = NULL;
    switch (v->auth_method) {
    case PGL_CONF_VAULT_APPROLE:
        if (v->role_id == NULL && v->role_id_file == NULL)
            missing = "role_id";
        else if (v->role_id != NULL && v->role_id_file != NULL) {
            key_where(ps, "vault", "role_id_file", w, sizeof w);
            fail(ps, -EINVAL, "%s: [vault] role_id_file: set role_id or role_id_file, not both",
                 w);
            return ps->rc;
        } else if (v->secret_id_wrapped && v->secret_id_file == NULL)
            missing = "secret_id_file";
        break;
    case PGL_CONF_VAULT_TOKEN:
        break; /* token_file or VAULT_TOKEN: checked by the caller, which has the environment */
    case PGL_CONF_VAULT_KUBERNETES:
        if (v->kubernetes_role == NULL)
            missing = "kubernetes_role";
        break;
    case PGL_CONF_VAULT_JWT:
        if (v->jwt_role == NULL)
            missing = "jwt_role";
        break;
    case PGL_CONF_VAULT_CERT:
        if (v->client_cert_file == NULL)
            missing = "client_cert_file";
        else if (v->client_key_file == NULL)
            missing = "client_key_file";
        break;
    }
    if (missing != NULL) {
        /* Points at the auth_method line: the missing key has none. */
        key_where(ps, "vault", "auth_method", w, sizeof w);
        fail(ps, -EINVAL, "%s: [vault] %s: missing required key (auth_method = %s)", w,
             missing, vault_auth_names[v->auth_method]);
        return ps->rc;
    }
    if ((v->client_cert_file == NULL) != (v->client_key_file == NULL)) {
        const char *set = v->client_cert_file ? "client_cert_file" : "client_key_file";
        key_where(ps, "vault", set, w, sizeof w);
        fail(ps, -EINVAL, "%s: [vault] %s: needs %s too", w, set,
             v->client_cert_file ? "client_key_file" : "client_cert_file");
        return ps->rc;
    }
    if (strncmp(v->addr, "http://", 7) != 0 && strncmp(v->addr, "https://", 8) != 0) {
        key_where(ps, "vault", "addr", w, sizeof w);
        fail(ps, -EINVAL, "%s: [vault] addr: \"%s\" is not an http:// or https:// URL", w,
             v->addr);
        return ps->rc;
    }
    if (v->client_cert_file != NULL && strncmp(v->addr, "https://", 8) != 0) {
        /* A client certificate only travels over TLS: over http the cert
         * login would fail at Vault with a less helpful message. */
        key_where(ps, "vault", "client_cert_file", w, sizeof w);
        fail(ps, -EINVAL, "%s: [vault] client_cert_file: needs an https:// addr (addr is \"%s\")",
             w, v->addr);
        return ps->rc;
    }
    return 0;
}

/* ---- public --------------------------------------------------------------------- */

int pgl_conf_load(const char *path, char *const *env, pgl_conf **out, char *err, size_t errlen)
{
    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';
    pgl_conf *conf = calloc(1, sizeof *conf);
    parse_state *ps = calloc(1, sizeof *ps);
    if (conf == NULL || ps == NULL) {
        free(conf);
        free(ps);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ps->conf = conf;
    ps->path = path;
    ps->err = err;
    ps->errlen = errlen;
    conf->rotate_before = -1;

    if ((conf->path = xstrdup(ps, path)) == NULL)
        goto done;
    ps->fp = fopen(path, "r");
    if (ps->fp == NULL) {
        int e = errno > 0 ? errno : EIO;
        fail(ps, -e, "%s: cannot open: %s", path, pgl_strerror(-e));
        goto done;
    }
    int line = ini_parse_stream(read_line, ps, on_entry, ps);
    if (ferror(ps->fp))
        fail(ps, -EIO, "%s: read error: %s", path, pgl_strerror(-errno));
    fclose(ps->fp);
    ps->fp = NULL;
    if (ps->rc == 0 && line > 0)
        fail(ps, PGL_ESYNTAX, "%s:%d: not a \"key = value\" line or [section] header", path,
             line);
    if (ps->rc != 0)
        goto done;

    if (apply_env(ps, env) != 0)
        goto done;

    for (size_t i = 0; i < NKEYS; i++) {
        if (ps->seen[i] != 0)
            continue;
        const char *v = keys[i].env_fallback ? env_get(env, keys[i].env_fallback) : NULL;
        char where[64];
        if (v != NULL && *v != '\0') {
            snprintf(where, sizeof where, "environment %s", keys[i].env_fallback);
        } else {
            v = keys[i].def ? keys[i].def : "";
            snprintf(where, sizeof where, "built-in default");
        }
        if (set_key(ps, &keys[i], v, where) != 0)
            goto done;
    }
    if (conf->vault.auth_mount == NULL &&
        (conf->vault.auth_mount = xstrdup(ps, vault_auth_names[conf->vault.auth_method])) == NULL)
        goto done;

    if (validate(ps) != 0)
        goto done;
    if (conf->vault_needed && conf->vault.auth_method == PGL_CONF_VAULT_TOKEN &&
        conf->vault.token_file == NULL && env_get(env, "VAULT_TOKEN") == NULL) {
        fail(ps, -EINVAL,
             "%s: [vault] token_file: missing required key (auth_method = token and VAULT_TOKEN "
             "is not set)",
             path);
        goto done;
    }

done:;
    int rc = ps->rc;
    free(ps->pending_name);
    free_secret(ps->pending_conninfo);
    free(ps);
    if (rc != 0) {
        pgl_conf_free(conf);
        return rc;
    }
    *out = conf;
    return 0;
}

void pgl_conf_free(pgl_conf *conf)
{
    if (conf == NULL)
        return;
    for (size_t i = 0; i < NKEYS; i++)
        clear_field(conf, &keys[i]);
    pgl_conf_database *lists[] = {conf->databases, conf->users, conf->user_databases};
    size_t counts[] = {conf->ndatabases, conf->nusers, conf->nuser_databases};
    for (size_t l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++)
            free_database(&lists[l][i]);
        free(lists[l]);
    }
    free(conf->path);
    OPENSSL_cleanse(conf, sizeof *conf);
    free(conf);
}

const pgl_conf_database *pgl_conf_database_find(const pgl_conf *conf, const char *name)
{
    for (size_t i = 0; i < conf->ndatabases; i++)
        if (strcmp(conf->databases[i].name, name) == 0)
            return &conf->databases[i];
    return NULL;
}

const pgl_conf_database *pgl_conf_database_find_for(const pgl_conf *conf, const char *name,
                                                    const char *for_user)
{
    if (for_user == NULL)
        return pgl_conf_database_find(conf, name);
    for (size_t i = 0; i < conf->nuser_databases; i++) {
        const pgl_conf_database *db = &conf->user_databases[i];
        if (strcmp(db->name, name) == 0 && strcmp(db->for_user, for_user) == 0)
            return db;
    }
    return NULL;
}

const pgl_conf_database *pgl_conf_database_for(const pgl_conf *conf, const char *name,
                                               const char *user)
{
    const pgl_conf_database *db = pgl_conf_database_find_for(conf, name, user);
    return db != NULL ? db : pgl_conf_database_find(conf, name);
}

const char *pgl_conf_database_param(const pgl_conf_database *db, const char *key)
{
    for (size_t i = 0; i < db->nparams; i++)
        if (strcmp(db->params[i].key, key) == 0)
            return db->params[i].value;
    return NULL;
}

int pgl_conf_database_pool_size(const pgl_conf *conf, const pgl_conf_database *db)
{
    return db->pool_size >= 0 ? db->pool_size : conf->default_pool_size;
}

const char *pgl_conf_auth_type_name(pgl_conf_auth_type t)
{
    return (unsigned)t < 4 ? auth_names[t] : "?";
}

const char *pgl_conf_pool_mode_name(pgl_conf_pool_mode m)
{
    return (unsigned)m < 2 ? pool_names[m] : "?";
}

int pgl_conf_foreach(const pgl_conf *conf, pgl_conf_visit_fn fn, void *arg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const key_desc *k = &keys[i];
        const void *f = (const char *)conf + k->offset;
        char buf[1024] = "";
        switch (k->type) {
        case K_STR:
        case K_LISTEN:
        case K_HOSTPORT:
            snprintf(buf, sizeof buf, "%s", *(char *const *)f ? *(char *const *)f : "");
            break;
        case K_INT:
        case K_SECS:
        case K_BYTES:
            if (*(const int *)f >= 0 || !(k->flags & F_UNSET_OK))
                snprintf(buf, sizeof buf, "%d", *(const int *)f);
            break;
        case K_BOOL:
            snprintf(buf, sizeof buf, "%s", *(const bool *)f ? "yes" : "no");
            break;
        case K_ENUM:
            snprintf(buf, sizeof buf, "%s", k->names[*(const int *)f]);
            break;
        case K_LIST: {
            char *const *items = *(char *const *const *)f;
            size_t n = *(const size_t *)((const char *)f + sizeof(char **)), off = 0;
            for (size_t j = 0; j < n && off < sizeof buf; j++)
                off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", j ? "," : "",
                                        items[j]);
            break;
        }
        }
        int rc = fn(arg, k->section, k->name, buf);
        if (rc != 0)
            return rc;
    }
    return 0;
}
