/* Unit tests for conf/: parsing, defaults, overrides and every error path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgl_conf.h"
#include "pgl_conf_conninfo.h"

static char userlist[64];

/* Writes `text` to a fresh temp file; the path lives in `path`. */
static void write_file(char *path, size_t len, const char *text)
{
    snprintf(path, len, "/tmp/pgl-conf-test-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

static int setup(void **state)
{
    write_file(userlist, sizeof userlist, "\"app\" \"secret\"\n");
    return 0;
}

static int teardown(void **state)
{
    unlink(userlist);
    return 0;
}

/* A valid base configuration with one Vault database; tests append to it. */
static void base_config(char *buf, size_t len, const char *pglease_extra, const char *vault_extra,
                        const char *dbs)
{
    snprintf(buf, len,
             "[pglease]\n"
             "auth_file = %s\n"
             "%s\n"
             "[vault]\n"
             "role_id = 1234\n"
             "%s\n"
             "[databases]\n"
             "%s\n",
             userlist, pglease_extra, vault_extra,
             dbs ? dbs : "appdb = host=127.0.0.1 port=5432 dbname=app creds=database/creds/app-rw");
}

static int load_text(const char *text, char *const *env, pgl_conf **conf, char *err, char *path)
{
    write_file(path, 64, text);
    int rc = pgl_conf_load(path, env, conf, err, PGL_CONF_ERRLEN);
    unlink(path);
    return rc;
}

static void test_defaults(void **state)
{
    char text[2048], err[PGL_CONF_ERRLEN], path[64];
    pgl_conf *c;
    base_config(text, sizeof text, "", "", NULL);
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    assert_string_equal(c->listen_addr, "127.0.0.1");
    assert_int_equal(c->listen_port, 6432);
    assert_string_equal(c->unix_socket_dir, "/tmp");
    assert_int_equal(c->auth_type, PGL_CONF_AUTH_SCRAM);
    assert_int_equal(c->pool_mode, PGL_CONF_POOL_TRANSACTION);
    assert_int_equal(c->default_pool_size, 20);
    assert_int_equal(c->min_pool_size, 0);
    assert_int_equal(c->max_client_conn, 10000);
    assert_int_equal(c->max_packet_size, 64 * 1024 * 1024);
    assert_int_equal(c->server_connect_timeout, 5);
    assert_int_equal(c->query_wait_timeout, 120);
    assert_int_equal(c->client_tls_sslmode, PGL_CONF_TLS_DISABLE);
    assert_string_equal(c->http_listen, "127.0.0.1:9127");
    assert_int_equal(c->rotate_before, -1);
    assert_int_equal(c->drain_timeout, 30);
    assert_int_equal(c->kv_poll_interval, 30);
    assert_true(c->revoke_on_drain);
    assert_true(c->revoke_on_shutdown);
    assert_int_equal(c->shutdown_timeout, 30);
    assert_int_equal(c->log_format, PGL_CONF_LOG_TEXT);
    assert_null(c->pidfile);
    assert_string_equal(c->vault.addr, "http://127.0.0.1:8200");
    assert_int_equal(c->vault.auth_method, PGL_CONF_VAULT_APPROLE);
    assert_string_equal(c->vault.auth_mount, "approle");
    assert_false(c->vault.secret_id_wrapped);
    assert_string_equal(c->vault.jwt_file, "/var/run/secrets/kubernetes.io/serviceaccount/token");
    assert_true(c->vault_needed);

    assert_int_equal(c->ndatabases, 1);
    const pgl_conf_database *db = pgl_conf_database_find(c, "appdb");
    assert_non_null(db);
    assert_int_equal(db->line, 8);
    assert_int_equal(db->creds_kind, PGL_CONF_CREDS_DYNAMIC);
    assert_string_equal(db->creds_mount, "database");
    assert_string_equal(db->creds_role, "app-rw");
    assert_string_equal(pgl_conf_database_param(db, "host"), "127.0.0.1");
    assert_string_equal(pgl_conf_database_param(db, "dbname"), "app");
    assert_null(pgl_conf_database_param(db, "creds"));
    assert_int_equal(db->pool_size, -1);
    pgl_conf_free(c);
}

static void test_design_example(void **state)
{
    /* The design document's example, comments and all. */
    char text[4096], err[PGL_CONF_ERRLEN], path[64];
    snprintf(text, sizeof text,
             "[pglease]\n"
             "listen_addr = 127.0.0.1\n"
             "listen_port = 6432\n"
             "unix_socket_dir = /tmp\n"
             "auth_type = scram-sha-256        ; scram-sha-256 | md5 | trust | cert\n"
             "auth_file = %s         ; PgBouncer format\n"
             "admin_users = admin, ops\n"
             "pool_mode = session          ; session | transaction\n"
             "default_pool_size = 20\n"
             "min_pool_size = 0\n"
             "max_client_conn = 10000\n"
             "server_connect_timeout = 5\n"
             "query_wait_timeout = 2min\n"
             "client_tls_sslmode = disable\n"
             "client_tls_cert_file =\n"
             "client_tls_key_file =\n"
             "http_listen =\n"
             "rotate_before =                  ; seconds; default 1/3\n"
             "drain_timeout = 30\n"
             "revoke_on_drain = no\n"
             "revoke_on_shutdown = yes\n"
             "shutdown_timeout = 30\n"
             "log_format = json\n"
             "pidfile =\n"
             "\n"
             "[vault]\n"
             "addr = https://vault.example:8200\n"
             "namespace =\n"
             "ca_cert =\n"
             "auth_method = kubernetes\n"
             "auth_mount = k8s-east\n"
             "kubernetes_role = app\n"
             "jwt_file = /var/run/secrets/kubernetes.io/serviceaccount/token\n"
             "\n"
             "[databases]\n"
             "; name = libpq conninfo\n"
             "appdb = host=127.0.0.1 port=5432 dbname=app creds=database/creds/app-rw\n"
             "reports = host=db2 dbname=app sslmode=verify-full "
             "creds=database/static-creds/reports pool_size=5\n"
             "legacy = host=db3 user=bob password='it\\'s \\\\ ok' pool_mode=transaction\n",
             userlist);
    pgl_conf *c;
    int rc = load_text(text, NULL, &c, err, path);
    assert_int_equal(rc, 0);
    assert_int_equal(c->nadmin_users, 2);
    assert_string_equal(c->admin_users[1], "ops");
    assert_int_equal(c->pool_mode, PGL_CONF_POOL_SESSION);
    assert_int_equal(c->query_wait_timeout, 120);
    assert_null(c->http_listen);
    assert_int_equal(c->rotate_before, -1);
    assert_false(c->revoke_on_drain);
    assert_int_equal(c->log_format, PGL_CONF_LOG_JSON);
    assert_int_equal(c->vault.auth_method, PGL_CONF_VAULT_KUBERNETES);
    assert_string_equal(c->vault.auth_mount, "k8s-east");
    assert_null(c->vault.namespace);
    assert_int_equal(c->ndatabases, 3);
    const pgl_conf_database *r = pgl_conf_database_find(c, "reports");
    assert_int_equal(r->creds_kind, PGL_CONF_CREDS_STATIC);
    assert_string_equal(r->creds_role, "reports");
    assert_int_equal(r->pool_size, 5);
    assert_string_equal(pgl_conf_database_param(r, "sslmode"), "verify-full");
    const pgl_conf_database *l = pgl_conf_database_find(c, "legacy");
    assert_int_equal(l->creds_kind, PGL_CONF_CREDS_CONNINFO);
    assert_string_equal(pgl_conf_database_param(l, "user"), "bob");
    assert_string_equal(pgl_conf_database_param(l, "password"), "it's \\ ok");
    assert_int_equal(l->pool_mode, PGL_CONF_POOL_TRANSACTION);
    pgl_conf_free(c);
}

static void test_jwt_and_cert_methods(void **state)
{
    (void)state;
    char text[2048], err[PGL_CONF_ERRLEN], path[64];
    pgl_conf *c;
    base_config(text, sizeof text, "",
                "auth_method = jwt\njwt_role = app\njwt_file = /run/idp/token", NULL);
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    assert_int_equal(c->vault.auth_method, PGL_CONF_VAULT_JWT);
    assert_string_equal(c->vault.auth_mount, "jwt"); /* the method's name */
    assert_string_equal(c->vault.jwt_role, "app");
    assert_string_equal(c->vault.jwt_file, "/run/idp/token");
    assert_null(c->vault.client_cert_file);
    pgl_conf_free(c);

    base_config(text, sizeof text, "",
                "addr = https://vault:8200\nauth_method = cert\nclient_cert_file = /c.pem\n"
                "client_key_file = /k.pem\ncert_role = pglease",
                NULL);
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    assert_int_equal(c->vault.auth_method, PGL_CONF_VAULT_CERT);
    assert_string_equal(c->vault.auth_mount, "cert");
    assert_string_equal(c->vault.client_cert_file, "/c.pem");
    assert_string_equal(c->vault.client_key_file, "/k.pem");
    assert_string_equal(c->vault.cert_role, "pglease");
    pgl_conf_free(c);
}

static void test_kv_source(void **state)
{
    (void)state;
    char text[2048], err[PGL_CONF_ERRLEN], path[64];
    base_config(text, sizeof text, "kv_poll_interval = 5", "",
                "a = host=h creds=kv:secret/data/teams/app kv_username_field=user\n"
                "b = host=h creds=kv:team/kv/data/db/data/x");
    pgl_conf *c;
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    assert_int_equal(c->kv_poll_interval, 5);
    assert_true(c->vault_needed);
    const pgl_conf_database *a = pgl_conf_database_find(c, "a");
    assert_int_equal(a->creds_kind, PGL_CONF_CREDS_KV);
    assert_string_equal(a->creds_path, "secret/data/teams/app");
    assert_string_equal(a->kv_metadata_path, "secret/metadata/teams/app");
    assert_string_equal(a->kv_username_field, "user");
    assert_string_equal(a->kv_password_field, "password");
    /* The first "/data/" ends the mount: the secret's path may hold one. */
    const pgl_conf_database *b = pgl_conf_database_find(c, "b");
    assert_string_equal(b->creds_mount, "team/kv");
    assert_string_equal(b->kv_metadata_path, "team/kv/metadata/db/data/x");
    assert_string_equal(b->kv_username_field, "username");
    assert_null(pgl_conf_database_param(b, "kv_username_field"));
    pgl_conf_free(c);
}

static void test_users_section(void **state)
{
    (void)state;
    char text[2048], err[PGL_CONF_ERRLEN], path[64];
    base_config(text, sizeof text, "default_pool_size = 10", "",
                "appdb = host=h dbname=app creds=database/creds/app-rw pool_size=8\n"
                "fixed = host=h dbname=f user=owner password=pw\n"
                "[users]\n"
                "reporting = creds=database/creds/app-ro pool_size=3\n"
                "batch = pool_mode=session\n"
                "  min_pool_size=1\n");
    char *env[] = {"PGLEASE_USERS_AUDIT=creds=kv:secret/data/audit", NULL};
    pgl_conf *c;
    assert_int_equal(load_text(text, env, &c, err, path), 0);
    assert_int_equal(c->ndatabases, 2);
    assert_int_equal(c->nusers, 3);
    assert_int_equal(c->nuser_databases, 6);
    /* A user without an entry is served by the database's own. */
    const pgl_conf_database *base = pgl_conf_database_for(c, "appdb", "app");
    assert_ptr_equal(base, pgl_conf_database_find(c, "appdb"));
    assert_null(base->for_user);
    assert_null(pgl_conf_database_for(c, "nodb", "reporting"));
    /* Its own source, size and mode; the database's connection options. */
    const pgl_conf_database *r = pgl_conf_database_for(c, "appdb", "reporting");
    assert_string_equal(r->for_user, "reporting");
    assert_string_equal(r->name, "appdb");
    assert_int_equal(r->creds_kind, PGL_CONF_CREDS_DYNAMIC);
    assert_string_equal(r->creds_path, "database/creds/app-ro");
    assert_string_equal(r->creds_role, "app-ro");
    assert_int_equal(pgl_conf_database_pool_size(c, r), 3);
    assert_string_equal(pgl_conf_database_param(r, "dbname"), "app");
    /* On a fixed-user database, a Vault source drops the fixed login. */
    const pgl_conf_database *rf = pgl_conf_database_for(c, "fixed", "reporting");
    assert_int_equal(rf->creds_kind, PGL_CONF_CREDS_DYNAMIC);
    assert_null(pgl_conf_database_param(rf, "user"));
    assert_null(pgl_conf_database_param(rf, "password"));
    assert_string_equal(pgl_conf_database_param(rf, "dbname"), "f");
    /* Mode only: the database's source and size. */
    const pgl_conf_database *b = pgl_conf_database_for(c, "appdb", "batch");
    assert_int_equal(b->creds_kind, PGL_CONF_CREDS_DYNAMIC);
    assert_string_equal(b->creds_path, "database/creds/app-rw");
    assert_int_equal(b->pool_mode, PGL_CONF_POOL_SESSION);
    assert_int_equal(b->min_pool_size, 1);
    assert_int_equal(pgl_conf_database_pool_size(c, b), 8);
    const pgl_conf_database *bf = pgl_conf_database_for(c, "fixed", "batch");
    assert_int_equal(bf->creds_kind, PGL_CONF_CREDS_CONNINFO);
    assert_string_equal(pgl_conf_database_param(bf, "user"), "owner");
    assert_int_equal(pgl_conf_database_pool_size(c, bf), 10);
    /* From the environment, like a database. */
    const pgl_conf_database *a = pgl_conf_database_for(c, "fixed", "audit");
    assert_int_equal(a->creds_kind, PGL_CONF_CREDS_KV);
    assert_string_equal(a->kv_metadata_path, "secret/metadata/audit");
    assert_string_equal(a->kv_username_field, "username");
    assert_null(pgl_conf_database_find_for(c, "appdb", "nobody"));
    pgl_conf_free(c);

    /* A user's Vault source alone makes Vault needed. */
    base_config(text, sizeof text, "", "", "fixed = host=h user=u\n[users]\nr = creds=db/creds/ro");
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    assert_true(c->vault_needed);
    pgl_conf_free(c);
}

static void test_env_overrides(void **state)
{
    char text[2048], err[PGL_CONF_ERRLEN], path[64];
    base_config(text, sizeof text, "listen_port = 7000", "", NULL);
    char *env[] = {
        "PGLEASE_PGLEASE_LISTEN_PORT=7001",
        "PGLEASE_VAULT_ROLE_ID=from-env",
        "PGLEASE_DATABASES_EXTRA=host=h user=u",
        "VAULT_ADDR=https://vault.test:8200",
        "VAULT_NAMESPACE=team-a",
        "UNRELATED=1",
        NULL,
    };
    pgl_conf *c;
    assert_int_equal(load_text(text, env, &c, err, path), 0);
    assert_int_equal(c->listen_port, 7001);
    assert_string_equal(c->vault.role_id, "from-env");
    assert_string_equal(c->vault.addr, "https://vault.test:8200");
    assert_string_equal(c->vault.namespace, "team-a");
    assert_int_equal(c->ndatabases, 2);
    assert_non_null(pgl_conf_database_find(c, "extra"));
    pgl_conf_free(c);

    /* The file's addr wins over VAULT_ADDR. */
    base_config(text, sizeof text, "", "addr = http://file:8200", NULL);
    assert_int_equal(load_text(text, env, &c, err, path), 0);
    assert_string_equal(c->vault.addr, "http://file:8200");
    pgl_conf_free(c);
}

typedef struct {
    const char *pglease; /* extra [pglease] lines */
    const char *vault;   /* extra [vault] lines */
    const char *dbs;     /* [databases] lines, NULL = default */
    const char *expect;  /* substring of the message; ":LINE:" is checked too */
    int line;            /* expected line in the message, 0 = none */
    int rc;
} bad_case;

static const bad_case bad_cases[] = {
    {"bogus_key = 1", "", NULL, "[pglease] bogus_key: unknown key", 3, -EINVAL},
    {"listen_port = 70000", "", NULL, "[pglease] listen_port: 70000 is out of range 1..65535", 3,
     -EINVAL},
    {"listen_port = 12ab", "", NULL, "listen_port: \"12ab\" is not an integer", 3,
     -EINVAL},
    {"listen_port = 0", "", NULL, "out of range", 3, -EINVAL},
    {"pool_mode = statement", "", NULL,
     "[pglease] pool_mode: \"statement\" is not one of transaction, session", 3,
     -EINVAL},
    {"auth_type = password", "", NULL, "auth_type: \"password\" is not one of", 3,
     -EINVAL},
    {"revoke_on_drain = maybe", "", NULL, "revoke_on_drain: \"maybe\" is not a boolean", 3,
     -EINVAL},
    {"query_wait_timeout = 5 weeks", "", NULL, "query_wait_timeout: \"5 weeks\" has an unknown unit",
     3, -EINVAL},
    {"max_packet_size = 12", "", NULL, "max_packet_size: 12 is out of range", 3,
     -EINVAL},
    {"listen_addr = example.com", "", NULL, "listen_addr: \"example.com\" is not an IP address", 3,
     -EINVAL},
    {"http_listen = 127.0.0.1", "", NULL, "http_listen: \"127.0.0.1\" is not host:port", 3,
     -EINVAL},
    {"http_listen = 127.0.0.1:99999", "", NULL, "http_listen: port", 3, -EINVAL},
    {"default_pool_size = 5\nmin_pool_size = 6", "", NULL,
     "min_pool_size: 6 exceeds default_pool_size 5", 4, -EINVAL},
    {"listen_port = 1\nlisten_port = 2", "", NULL,
     "[pglease] listen_port: duplicate key (first at line 3)", 4, -EINVAL},
    {"client_tls_sslmode = require", "", NULL, "client_tls_cert_file: missing required key", 0,
     -EINVAL},
    {"auth_type = cert", "", NULL, "auth_type: cert needs client_tls_sslmode = require", 3,
     -EINVAL},
    {"auth_file = /nonexistent/users.txt", "", NULL, "duplicate key", 3, -EINVAL},
    {"", "auth_method = ldap", NULL, "[vault] auth_method: \"ldap\" is not one of", 6,
     -EINVAL},
    {"", "secret_idfile = x", NULL, "[vault] secret_idfile: unknown key", 6, -EINVAL},
    {"", "auth_method = kubernetes", NULL, "[vault] kubernetes_role: missing required key", 6,
     -EINVAL},
    {"", "auth_method = jwt", NULL,
     "[vault] jwt_role: missing required key (auth_method = jwt)", 6, -EINVAL},
    {"", "addr = https://v:8200\nauth_method = cert", NULL,
     "[vault] client_cert_file: missing required key (auth_method = cert)", 7, -EINVAL},
    {"", "addr = https://v:8200\nauth_method = cert\nclient_cert_file = /c.pem", NULL,
     "[vault] client_key_file: missing required key (auth_method = cert)", 7, -EINVAL},
    {"", "addr = https://v:8200\nclient_key_file = /k.pem", NULL,
     "[vault] client_key_file: needs client_cert_file too", 7, -EINVAL},
    {"", "addr = http://v:8200\nauth_method = cert\nclient_cert_file = /c.pem\n"
         "client_key_file = /k.pem",
     NULL, "[vault] client_cert_file: needs an https:// addr", 8, -EINVAL},
    {"", "role_id_file = /x", NULL, "role_id_file: set role_id or role_id_file, not both", 6,
     -EINVAL},
    {"", "addr = ftp://x", NULL, "[vault] addr: \"ftp://x\" is not an http", 6, -EINVAL},
    {"", "", "appdb = host=h creds=database/creds/a\nappdb = host=h2 creds=database/creds/b",
     "[databases] appdb: duplicate database (first at line 8)", 9, -EINVAL},
    {"", "", "pgbouncer = host=h user=u", "pgbouncer: this name is reserved", 8,
     -EINVAL},
    {"", "", "appdb = host=h bogus=1 user=u", "appdb: bogus: unknown connection option \"bogus\"", 8,
     -EINVAL},
    {"", "", "appdb = host=h user=u password='open", "unterminated quoted value for \"password\"",
     8, -EINVAL},
    {"", "", "appdb = host=h port", "missing \"=\" after \"port\"", 8, -EINVAL},
    {"", "", "appdb = host=h creds=database/creds/", "creds: \"database/creds/\" is not", 8,
     -EINVAL},
    {"", "", "appdb = host=h creds=secret/data/x", "is not <mount>/creds/<role>", 8,
     -EINVAL},
    {"", "", "appdb = host=h creds=database/creds/a user=x",
     "user and password come from creds=", 8, -EINVAL},
    {"", "", "appdb = host=h creds=file:creds.json", "file: needs an absolute path", 8,
     -EINVAL},
    {"", "", "appdb = host=h creds='exec:helper --db x'", "exec: needs the helper's absolute path",
     8, -EINVAL},
    {"", "", "appdb = host=h creds=file:/run/x.json user=u",
     "user and password come from creds=", 8, -EINVAL},
    {"", "", "appdb = host=h dbname=x", "missing creds= (Vault) or user=", 8, -EINVAL},
    {"", "", "appdb = host=h creds=kv:secret/app", "creds: \"kv:secret/app\" is not "
     "kv:<mount>/data/<path>", 8, -EINVAL},
    {"", "", "appdb = host=h creds=kv:secret/data/", "is not kv:<mount>/data/<path>", 8,
     -EINVAL},
    {"", "", "appdb = host=h creds=database/creds/a kv_username_field=u",
     "appdb: kv_username_field: only with creds=kv:<mount>/data/<path>", 8, -EINVAL},
    {"", "", "appdb = host=h creds=kv:secret/data/a kv_password_field=",
     "appdb: kv_password_field: empty field name", 8, -EINVAL},
    {"", "", "appdb = host=h creds=kv:secret/data/a kv_password_field=a kv_password_field=b",
     "appdb: kv_password_field: given twice", 8, -EINVAL},
    {"kv_poll_interval = 0", "", NULL, "[pglease] kv_poll_interval: 0 is out of range", 3,
     -EINVAL},
    {"", "", "appdb = host=h user=u pool_size=0", "pool_size: \"0\" is not an integer in 1..10000",
     8, -EINVAL},
    {"", "", "appdb = host=h user=u pool_mode=statement", "pool_mode: \"statement\"", 8,
     -EINVAL},
    {"", "", "appdb = host=h user=u host=other", "connection option \"host\" given twice", 8,
     -EINVAL},
    {"", "", "", "[databases]: missing: define at least one database", 0, -EINVAL},
    {"workers = 65", "", NULL, "[pglease] workers: 65 is out of range", 3, -EINVAL},
    {"workers = two", "", NULL, "[pglease] workers: ", 3, -EINVAL},
    {"workers = 0", "", NULL, "[pglease] workers: 0 is out of range", 3, -EINVAL},
    {"log_level = verbose", "", NULL,
     "[pglease] log_level: \"verbose\" is not one of error, warning, info, debug", 3, -EINVAL},
    /* Continuation lines: only [databases] entries may span lines; an
     * indented key elsewhere is refused, not silently joined. */
    {"listen_port = 1\n  listen_addr = *", "", NULL,
     "[pglease] listen_port: this indented line continues the value of line 3", 4, -EINVAL},
    /* An entry's errors name its first line, whichever line is to blame. */
    {"", "", "appdb = host=h\n  dbname=x\n  bogus=1 user=u",
     "appdb: bogus: unknown connection option", 8, -EINVAL},
    {"", "", "appdb = host=h\n  dbname=x", "missing creds= (Vault) or user=", 8, -EINVAL},
    /* A duplicate on its own line is still a duplicate, after continuations too. */
    {"", "", "appdb = host=h\n  user=u\nappdb = host=h2 user=u",
     "[databases] appdb: duplicate database (first at line 8)", 10, -EINVAL},
    {"", "", "appdb = host=h user=u\n[extra]\n", "[extra]: unknown section", 9,
     -EINVAL},
    {"", "", "appdb = host=h user=u\n[broken\n", "malformed section header", 9,
     PGL_ESYNTAX},
    {"this line has no equals sign", "", NULL, "not a \"key = value\" line", 3, PGL_ESYNTAX},
    {"", "", "appdb = host=h user=u\n[users]\nreporting = host=h2",
     "[users] reporting: host: unknown key \"host\" (a user takes creds", 10, -EINVAL},
    {"", "", "appdb = host=h user=u\n[users]\nreporting = ", "[users] reporting: empty", 10,
     -EINVAL},
    {"", "", "appdb = host=h user=u\n[users]\nr = pool_mode=statement",
     "[users] r: pool_mode: \"statement\" is not one of", 10, -EINVAL},
    {"", "", "appdb = host=h user=u\n[users]\nr = pool_size=2\nr = pool_size=3",
     "[users] r: duplicate user (first at line 10)", 11, -EINVAL},
    {"", "", "appdb = host=h user=u min_pool_size=4\n[users]\nr = pool_size=2",
     "[users] r: on database appdb, min_pool_size 4 exceeds pool_size 2", 10, -EINVAL},
    {"", "", "appdb = host=h user=u\n[users]\nr = creds=database/creds/ro kv_username_field=x",
     "[users] r: kv_username_field: only with creds=kv:", 10, -EINVAL},
};

static void test_bad_values(void **state)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *bc = &bad_cases[i];
        char text[2048], err[PGL_CONF_ERRLEN], path[64];
        base_config(text, sizeof text, bc->pglease, bc->vault, bc->dbs);
        pgl_conf *c = (pgl_conf *)1;
        int rc = load_text(text, NULL, &c, err, path);
        if (rc != bc->rc || strstr(err, bc->expect) == NULL)
            fail_msg("case %zu: rc %d, message \"%s\", wanted %d \"%s\"", i, rc, err, bc->rc,
                     bc->expect);
        assert_null(c);
        /* Every message starts with the file's name and, where a line is to blame, the line. */
        assert_memory_equal(err, path, strlen(path));
        if (bc->line > 0) {
            char at[80];
            snprintf(at, sizeof at, "%s:%d: ", path, bc->line);
            if (strncmp(err, at, strlen(at)) != 0)
                fail_msg("case %zu: \"%s\" does not start with \"%s\"", i, err, at);
        }
    }
}

static void test_missing_auth_file(void **state)
{
    char text[512], err[PGL_CONF_ERRLEN], path[64];
    pgl_conf *c;
    snprintf(text, sizeof text, "[pglease]\nlisten_port = 1\n[databases]\nx = host=h user=u\n");
    assert_int_equal(load_text(text, NULL, &c, err, path), -EINVAL);
    assert_non_null(strstr(err, "[pglease] auth_file: missing required key"));

    snprintf(text, sizeof text, "[pglease]\nauth_file = /nonexistent/u.txt\n[databases]\nx = host=h user=u\n");
    assert_int_equal(load_text(text, NULL, &c, err, path), -EINVAL);
    assert_non_null(strstr(err, ":2: [pglease] auth_file: cannot read \"/nonexistent/u.txt\""));

    /* trust needs no userlist; a conninfo-only config needs no [vault]. */
    snprintf(text, sizeof text, "[pglease]\nauth_type = trust\n[databases]\nx = host=h user=u\n");
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    assert_false(c->vault_needed);
    pgl_conf_free(c);
}

static void test_env_errors(void **state)
{
    char text[2048], err[PGL_CONF_ERRLEN], path[64];
    pgl_conf *c;
    base_config(text, sizeof text, "", "", NULL);
    char *env1[] = {"PGLEASE_PGLEASE_LISTEN_PORT=abc", NULL};
    assert_int_equal(load_text(text, env1, &c, err, path), -EINVAL);
    assert_non_null(strstr(err, "environment PGLEASE_PGLEASE_LISTEN_PORT: [pglease] listen_port"));
    char *env2[] = {"PGLEASE_VAULT_NOPE=1", NULL};
    assert_int_equal(load_text(text, env2, &c, err, path), -EINVAL);
    assert_non_null(strstr(err, "environment PGLEASE_VAULT_NOPE: [vault] nope: unknown key"));
    /* Variables outside our three prefixes belong to someone else (the
     * Kubernetes service links of a Service named "pglease", say). */
    char *env3[] = {"PGLEASE_PORT=tcp://10.0.0.1:6432", "PGLEASE_SERVICE_HOST=10.0.0.1", NULL};
    assert_int_equal(load_text(text, env3, &c, err, path), 0);
    pgl_conf_free(c);

    /* token auth needs token_file or VAULT_TOKEN. */
    base_config(text, sizeof text, "", "auth_method = token", NULL);
    assert_int_equal(load_text(text, NULL, &c, err, path), -EINVAL);
    assert_non_null(strstr(err, "[vault] token_file: missing required key"));
    char *env4[] = {"VAULT_TOKEN=hvs.x", NULL};
    assert_int_equal(load_text(text, env4, &c, err, path), 0);
    pgl_conf_free(c);
}

static void test_long_line(void **state)
{
    char text[4096], err[PGL_CONF_ERRLEN], path[64], dbs[1024];
    snprintf(dbs, sizeof dbs, "appdb = host=h user=u application_name=%0300d", 7);
    base_config(text, sizeof text, "", "", dbs);
    pgl_conf *c;
    assert_int_equal(load_text(text, NULL, &c, err, path), PGL_ESYNTAX);
    assert_non_null(strstr(err, ":8: line longer than"));
}

/* libinih (Debian's build: INI_ALLOW_MULTILINE) passes an indented line
 * as another value of the previous key; a [databases] entry joins them with
 * one space, so a conninfo longer than one line can be written. */
static void test_multiline_database(void **state)
{
    char text[4096], err[PGL_CONF_ERRLEN], path[64], dbs[2048], app[160];
    snprintf(app, sizeof app, "%0150d", 7);
    snprintf(dbs, sizeof dbs,
             "appdb = host=h port=5433\n"
             "    dbname=app\n"
             "\n"
             "\t; a comment between continuation lines\n"
             "\tapplication_name=%s ; inline comment\n"
             "    sslmode=require\n"
             "    creds=database/creds/app-rw pool_size=7\n"
             "other = host=h2 user=u\n"
             "third = host=h3\n"
             "  user=v",
             app);
    base_config(text, sizeof text, "", "", dbs);
    pgl_conf *c;
    int rc = load_text(text, NULL, &c, err, path);
    if (rc != 0)
        fail_msg("%s", err);
    assert_int_equal(c->ndatabases, 3);
    const pgl_conf_database *db = pgl_conf_database_find(c, "appdb");
    assert_non_null(db);
    assert_int_equal(db->line, 8);
    assert_string_equal(pgl_conf_database_param(db, "host"), "h");
    assert_string_equal(pgl_conf_database_param(db, "port"), "5433");
    assert_string_equal(pgl_conf_database_param(db, "dbname"), "app");
    assert_string_equal(pgl_conf_database_param(db, "application_name"), app);
    assert_string_equal(pgl_conf_database_param(db, "sslmode"), "require");
    assert_string_equal(db->creds_path, "database/creds/app-rw");
    assert_int_equal(db->pool_size, 7);
    db = pgl_conf_database_find(c, "other");
    assert_non_null(db);
    assert_int_equal(db->line, 15);
    assert_string_equal(pgl_conf_database_param(db, "user"), "u");
    db = pgl_conf_database_find(c, "third");
    assert_non_null(db);
    assert_int_equal(db->line, 16);
    assert_string_equal(pgl_conf_database_param(db, "user"), "v");
    pgl_conf_free(c);

    /* A quoted value may not span lines: the join is a plain space. */
    base_config(text, sizeof text, "", "", "appdb = host=h user=u password='a\n  b'");
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    db = pgl_conf_database_find(c, "appdb");
    assert_string_equal(pgl_conf_database_param(db, "password"), "a b");
    pgl_conf_free(c);

    /* A section header ends an entry: an indented first key is a plain key. */
    snprintf(text, sizeof text,
             "[pglease]\nauth_file = %s\n[vault]\n  role_id = 1\n[databases]\n"
             "appdb = host=h\n  creds=database/creds/x\n[pglease]\n  listen_port = 7000\n",
             userlist);
    rc = load_text(text, NULL, &c, err, path);
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(c->vault.role_id, "1");
    assert_int_equal(c->listen_port, 7000);
    assert_string_equal(pgl_conf_database_find(c, "appdb")->creds_path, "database/creds/x");
    pgl_conf_free(c);
}

static void test_log_level_and_workers(void **state)
{
    char text[2048], err[PGL_CONF_ERRLEN], path[64];
    pgl_conf *c;
    base_config(text, sizeof text, "", "", NULL);
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    assert_int_equal(c->log_level, PGL_CONF_LOG_INFO);
    assert_int_equal(c->workers, 1);
    pgl_conf_free(c);

    static const struct {
        const char *text;
        pgl_conf_log_level level;
    } levels[] = {{"error", PGL_CONF_LOG_ERROR},
                  {"warning", PGL_CONF_LOG_WARNING},
                  {"info", PGL_CONF_LOG_INFO},
                  {"DEBUG", PGL_CONF_LOG_DEBUG}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        char line[64];
        snprintf(line, sizeof line, "log_level = %s\nworkers = 1", levels[i].text);
        base_config(text, sizeof text, line, "", NULL);
        assert_int_equal(load_text(text, NULL, &c, err, path), 0);
        assert_int_equal(c->log_level, levels[i].level);
        pgl_conf_free(c);
    }

    /* Any count up to 64, or one per CPU pglease may run on. */
    base_config(text, sizeof text, "workers = 4", "", NULL);
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    assert_int_equal(c->workers, 4);
    pgl_conf_free(c);
    base_config(text, sizeof text, "workers = auto", "", NULL);
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    assert_int_equal(c->workers, CPU_COUNT(&set) > 64 ? 64 : CPU_COUNT(&set));
    pgl_conf_free(c);
    /* The environment is held to the same rule, and named. */
    base_config(text, sizeof text, "", "", NULL);
    char *env[] = {"PGLEASE_PGLEASE_WORKERS=0", NULL};
    assert_int_equal(load_text(text, env, &c, err, path), -EINVAL);
    assert_non_null(strstr(err, "environment PGLEASE_PGLEASE_WORKERS"));
    char *env2[] = {"PGLEASE_PGLEASE_LOG_LEVEL=warning", NULL};
    assert_int_equal(load_text(text, env2, &c, err, path), 0);
    assert_int_equal(c->log_level, PGL_CONF_LOG_WARNING);
    pgl_conf_free(c);
}

static void test_secrets_not_in_errors(void **state)
{
    char text[2048], err[PGL_CONF_ERRLEN], path[64];
    pgl_conf *c;
    base_config(text, sizeof text, "", "",
                "appdb = host=h user=u password=hunter2-secret nope=1");
    assert_int_equal(load_text(text, NULL, &c, err, path), -EINVAL);
    assert_null(strstr(err, "hunter2"));
    base_config(text, sizeof text, "", "", "appdb = host=h user=u password='hunter2-secret");
    assert_int_equal(load_text(text, NULL, &c, err, path), -EINVAL);
    assert_null(strstr(err, "hunter2"));
}

static void test_io_error(void **state)
{
    char err[PGL_CONF_ERRLEN];
    pgl_conf *c;
    assert_int_equal(pgl_conf_load("/nonexistent/pglease.ini", NULL, &c, err, sizeof err),
                     -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/pglease.ini: cannot open"));
}

static int count_keys(void *arg, const char *section, const char *key, const char *value)
{
    int *n = arg;
    (*n)++;
    if (strcmp(key, "listen_port") == 0)
        assert_string_equal(value, "6432");
    if (strcmp(key, "rotate_before") == 0)
        assert_string_equal(value, "");
    if (strcmp(key, "auth_method") == 0)
        assert_string_equal(section, "vault");
    return 0;
}

static void test_foreach(void **state)
{
    char text[2048], err[PGL_CONF_ERRLEN], path[64];
    pgl_conf *c;
    base_config(text, sizeof text, "", "", NULL);
    assert_int_equal(load_text(text, NULL, &c, err, path), 0);
    int n = 0;
    assert_int_equal(pgl_conf_foreach(c, count_keys, &n), 0);
    assert_true(n >= 40);
    pgl_conf_free(c);
}

static void test_conninfo_split(void **state)
{
    pgl_conf_kv *kv;
    size_t n;
    char why[256];
    assert_int_equal(pgl_conf_conninfo_split("  a=1 b = 'x y'  c=\\ z d=''", &kv, &n, why,
                                             sizeof why),
                     0);
    assert_int_equal(n, 4);
    assert_string_equal(kv[1].key, "b");
    assert_string_equal(kv[1].value, "x y");
    assert_string_equal(kv[2].value, " z");
    assert_string_equal(kv[3].value, "");
    pgl_conf_conninfo_free(kv, n);
    assert_int_equal(pgl_conf_conninfo_split("", &kv, &n, why, sizeof why), 0);
    assert_int_equal(n, 0);
    pgl_conf_conninfo_free(kv, n);
    assert_int_equal(pgl_conf_conninfo_split("=x", &kv, &n, why, sizeof why), -EINVAL);
    assert_true(pgl_conf_conninfo_is_libpq_key("sslmode"));
    assert_false(pgl_conf_conninfo_is_libpq_key("creds"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_users_section),
        cmocka_unit_test(test_design_example),
        cmocka_unit_test(test_jwt_and_cert_methods),
        cmocka_unit_test(test_kv_source),
        cmocka_unit_test(test_env_overrides),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_missing_auth_file),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_multiline_database),
        cmocka_unit_test(test_log_level_and_workers),
        cmocka_unit_test(test_secrets_not_in_errors),
        cmocka_unit_test(test_io_error),
        cmocka_unit_test(test_foreach),
        cmocka_unit_test(test_conninfo_split),
    };
    return cmocka_run_group_tests_name("conf", tests, setup, teardown);
}
