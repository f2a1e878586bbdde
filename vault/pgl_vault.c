#include "pgl_vault.h"

#include "pgl_vault_http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/crypto.h>

#define BACKOFF_BASE_MS 250
#define BACKOFF_CAP_MS 30000
#define FEW_ATTEMPTS 6          /* renew / revoke */
#define READ_ATTEMPTS 3
#define MAX_FORBIDDEN 2         /* 403s with a fresh token before giving up */
#define TOKEN_FILE_CHECK_MS 5000
#define SECRET_FILE_MAX 16384

/* OP_KV_VERSION: a KV v2 secret's current version from its metadata. */
typedef enum { OP_READ_SECRET, OP_RENEW, OP_REVOKE, OP_KV_VERSION } op_kind;

typedef enum {
    TOKEN_NONE,      /* no usable token: a login is due */
    TOKEN_LOGGING_IN,
    TOKEN_READY,
} token_state;

typedef struct {
    uv_timer_t handle;
} vtimer;

struct pgl_vault_op {
    pgl_vault *v;
    op_kind kind;
    pgl_vault_op *prev, *next;
    char method[8];
    char *path;
    char *body;
    /* KV v2 reads: the fields of data.data holding the user and the
     * password; NULL for a database engine's secret. */
    char *user_field, *password_field;
    pgl_vault_secret_cb secret_cb;
    pgl_vault_lease_cb lease_cb;
    void *arg;
    int attempts, max_attempts, forbidden;
    pgl_vault_http_req *req;
    vtimer *retry;
    bool waiting_token;
    unsigned token_generation; /* the token it was sent with */
};

struct pgl_vault {
    uv_loop_t *loop;
    pgl_vault_http *http;
    pgl_vault_auth_method method;
    char *auth_mount, *token_cfg, *token_file, *role_id, *role_id_file, *secret_id_file;
    char *kubernetes_role, *jwt_file, *jwt_role, *cert_role;
    bool secret_id_wrapped;
    char *unwrapped_secret_id; /* kept after the one unwrap; wiped on free */
    pgl_vault_log_fn log;
    void *log_arg;

    token_state tstate;
    char *token;
    unsigned token_generation;
    long token_ttl;            /* seconds asked at each renewal */
    bool token_renewable;
    uint64_t token_expire;     /* loop ms; UINT64_MAX = never */
    uint64_t token_final;      /* loop ms when renewals stop helping; UINT64_MAX = unknown */
    pgl_vault_http_req *login_req;
    int login_attempts;
    vtimer *token_timer;       /* renew, re-login or retry */
    vtimer *file_timer;        /* token_file changes */
    struct timespec token_file_mtime;
    pgl_vault_op *ops;
    int nops;
    /* Recent tokens and their final ends: leases die with their token. */
    struct {
        uint64_t id, final;
    } history[16];
    unsigned nhistory;
};

/* Records what is known of the current token's end. */
static void note_token_final(pgl_vault *v)
{
    unsigned slot = v->token_generation % 16;
    v->history[slot].id = v->token_generation;
    v->history[slot].final = v->token_final;
}

uint64_t pgl_vault_token_id(const pgl_vault *v)
{
    return v->token != NULL ? v->token_generation : 0;
}

uint64_t pgl_vault_token_end_of(const pgl_vault *v, uint64_t id)
{
    unsigned slot = (unsigned)(id % 16);
    if (id != 0 && v->history[slot].id == id)
        return v->history[slot].final;
    return UINT64_MAX;
}

/* ---- small helpers ----------------------------------------------------------- */

static void vlog(pgl_vault *v, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void vlog(pgl_vault *v, int level, const char *fmt, ...)
{
    if (v->log == NULL)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    v->log(v->log_arg, level, msg);
}

static void wipe_str(char **s)
{
    if (*s != NULL) {
        OPENSSL_cleanse(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

/* jansson allocations are wiped on free: parsed responses hold tokens and
 * passwords. A size header in front of each block makes that possible. */
typedef union {
    size_t size;
    max_align_t align;
} alloc_hdr;

static void *wiping_malloc(size_t n)
{
    alloc_hdr *h = malloc(sizeof *h + n);
    if (h == NULL)
        return NULL;
    h->size = n;
    return h + 1;
}

static void wiping_free(void *p)
{
    if (p == NULL)
        return;
    alloc_hdr *h = (alloc_hdr *)p - 1;
    OPENSSL_cleanse(p, h->size);
    free(h);
}

static vtimer *timer_new(pgl_vault *v, void *data)
{
    vtimer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    uv_timer_init(v->loop, &t->handle);
    t->handle.data = data;
    return t;
}

static void timer_closed(uv_handle_t *h)
{
    free((vtimer *)h); /* the handle is the first member */
}

static void timer_free(vtimer **t)
{
    if (*t != NULL) {
        uv_timer_stop(&(*t)->handle);
        uv_close((uv_handle_t *)&(*t)->handle, timer_closed);
        *t = NULL;
    }
}

/* Full jitter: uniform in [0, min(cap, base * 2^attempt)]. */
static uint64_t backoff_ms(int attempt)
{
    uint64_t ceiling = BACKOFF_BASE_MS;
    for (int i = 0; i < attempt && ceiling < BACKOFF_CAP_MS; i++)
        ceiling *= 2;
    if (ceiling > BACKOFF_CAP_MS)
        ceiling = BACKOFF_CAP_MS;
    return (uint64_t)random() % (ceiling + 1);
}

/* Reads a small secret file, trimmed of surrounding whitespace. */
static char *read_secret_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read %s: %s", path, pgl_strerror(-errno));
        return NULL;
    }
    char *buf = calloc(1, SECRET_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, SECRET_FILE_MAX, f) : 0;
    fclose(f);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t start = 0;
    while (start < n && (buf[start] == ' ' || buf[start] == '\n' || buf[start] == '\r' ||
                         buf[start] == '\t'))
        start++;
    while (n > start && (buf[n - 1] == ' ' || buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
                         buf[n - 1] == '\t'))
        n--;
    if (n == start) {
        OPENSSL_cleanse(buf, SECRET_FILE_MAX);
        free(buf);
        snprintf(err, errlen, "%s is empty", path);
        return NULL;
    }
    char *out = strndup(buf + start, n - start);
    OPENSSL_cleanse(buf, SECRET_FILE_MAX);
    free(buf);
    if (out == NULL)
        snprintf(err, errlen, "out of memory");
    return out;
}

/* The first entry of Vault's "errors" array (never holds secrets). */
static void vault_errors(const pgl_vault_http_response *res, char *out, size_t len)
{
    if (res->status == 0) {
        snprintf(out, len, "%s", res->error ? res->error : "no answer");
        return;
    }
    json_t *root = json_loadb(res->body, res->body_len, 0, NULL);
    json_t *errs = root ? json_object_get(root, "errors") : NULL;
    const char *first = errs && json_array_size(errs) > 0
                            ? json_string_value(json_array_get(errs, 0))
                            : NULL;
    if (first != NULL) {
        /* Vault wraps messages as "1 error occurred:\n\t* msg\n\n". */
        const char *star = strstr(first, "* ");
        snprintf(out, len, "HTTP %ld: %s", res->status, star ? star + 2 : first);
        char *nl = strchr(out, '\n');
        if (nl)
            *nl = '\0';
    } else {
        snprintf(out, len, "HTTP %ld", res->status);
    }
    json_decref(root);
}

/* Parses a response and returns its object member `key` ("auth", "data"),
 * or NULL; *root must be json_decref'd by the caller either way. */
static json_t *response_member(const pgl_vault_http_response *res, const char *key,
                               json_t **root)
{
    *root = json_loadb(res->body, res->body_len, 0, NULL);
    return *root ? json_object_get(*root, key) : NULL;
}

static bool retryable(long status)
{
    return status == 0 || status == 412 || status == 429 || status >= 500;
}

static const char *method_name(pgl_vault_auth_method m)
{
    switch (m) {
    case PGL_VAULT_AUTH_TOKEN: return "token";
    case PGL_VAULT_AUTH_APPROLE: return "approle";
    case PGL_VAULT_AUTH_KUBERNETES: return "kubernetes";
    case PGL_VAULT_AUTH_JWT: return "jwt";
    case PGL_VAULT_AUTH_CERT: return "cert";
    }
    return "?";
}

/* ---- token lifecycle --------------------------------------------------------------- */

static void login(pgl_vault *v);
static void ops_token_ready(pgl_vault *v);
static void on_token_timer(uv_timer_t *t);

static void schedule_token_timer(pgl_vault *v, uint64_t delay_ms)
{
    if (v->token_timer == NULL && (v->token_timer = timer_new(v, v)) == NULL)
        return;
    uv_timer_start(&v->token_timer->handle, on_token_timer, delay_ms, 0);
}

static void op_fail(pgl_vault_op *op, const char *err);
static void op_release(pgl_vault_op *op);
static void on_retry(uv_timer_t *t);

/* The login failed: try again later, and tell the callers waiting for a
 * token now instead of letting them wait blindly (revocations keep
 * waiting: they matter at shutdown and are bounded there). */
static void login_retry_later(pgl_vault *v, const char *why)
{
    v->tstate = TOKEN_NONE;
    uint64_t delay = backoff_ms(v->login_attempts++);
    schedule_token_timer(v, delay < 100 ? 100 : delay);
    char err[300];
    snprintf(err, sizeof err, "Vault login failed: %s", why);
    for (pgl_vault_op *op = v->ops, *next; op; op = next) {
        next = op->next;
        if (op->waiting_token && op->kind != OP_REVOKE)
            op_fail(op, err);
    }
}

/* A token arrived (login) or was confirmed (lookup): keep it alive. */
static void token_ready(pgl_vault *v, long ttl, bool renewable)
{
    uint64_t now = uv_now(v->loop);
    v->tstate = TOKEN_READY;
    v->token_generation++;
    v->login_attempts = 0;
    v->token_ttl = ttl;
    v->token_renewable = renewable;
    v->token_final = UINT64_MAX;
    note_token_final(v);
    if (ttl <= 0) {
        v->token_expire = UINT64_MAX; /* root-like: never expires */
        if (v->token_timer)
            uv_timer_stop(&v->token_timer->handle);
    } else {
        v->token_expire = now + (uint64_t)ttl * 1000;
        if (!renewable)
            v->token_final = v->token_expire;
        note_token_final(v);
        /* Renew (or log in again) at 2/3 of the TTL, jittered by up to 10%
         * so many pglease instances do not hit Vault in step. */
        uint64_t at = (uint64_t)ttl * 1000 * 2 / 3;
        at -= at / 10 ? (uint64_t)random() % (at / 10) : 0;
        schedule_token_timer(v, at);
    }
    vlog(v, PGL_VAULT_LOG_INFO, "vault: logged in (%s), token ttl %lds%s", method_name(v->method),
         ttl, renewable ? ", renewable" : "");
    ops_token_ready(v);
}

static void set_token(pgl_vault *v, const char *token)
{
    wipe_str(&v->token);
    v->token = strdup(token);
}

static void on_renew_self(void *arg, const pgl_vault_http_response *res)
{
    pgl_vault *v = arg;
    v->login_req = NULL;
    if (res->status == 200) {
        json_t *root;
        json_t *auth = response_member(res, "auth", &root);
        long got = auth ? (long)json_integer_value(json_object_get(auth, "lease_duration")) : 0;
        json_decref(root);
        if (got > 0) {
            uint64_t now = uv_now(v->loop);
            v->token_expire = now + (uint64_t)got * 1000;
            if (got + 1 < v->token_ttl) {
                /* Capped by the token's max TTL: it ends for good then. Log
                 * in again before, leaving the old token to expire with the
                 * leases it created (the caller rotates them before that). */
                /* Capped by the token's max TTL: it ends for good then, and
                 * takes the leases it created along. Log in again now, so
                 * credentials fetched from here on belong to a token with a
                 * future; the old one lives on until then for the old ones. */
                v->token_final = v->token_expire;
                note_token_final(v);
                vlog(v, PGL_VAULT_LOG_INFO,
                     "vault: token renewal capped at %lds by its max TTL; logging in again", got);
                v->token_renewable = false;
                login(v);
            } else {
                schedule_token_timer(v, (uint64_t)got * 1000 * 2 / 3);
            }
            return;
        }
    }
    char err[256];
    vault_errors(res, err, sizeof err);
    if (retryable(res->status) && uv_now(v->loop) + 2000 < v->token_expire) {
        vlog(v, PGL_VAULT_LOG_WARNING, "vault: token renewal failed (%s); retrying", err);
        uint64_t delay = backoff_ms(v->login_attempts++);
        schedule_token_timer(v, delay < 100 ? 100 : delay);
        return;
    }
    vlog(v, PGL_VAULT_LOG_WARNING, "vault: token renewal failed (%s); logging in again", err);
    v->tstate = TOKEN_NONE;
    login(v);
}

static void on_token_timer(uv_timer_t *t)
{
    pgl_vault *v = t->data;
    if (v->tstate == TOKEN_READY && v->token_renewable && v->token_final == UINT64_MAX) {
        char body[64];
        snprintf(body, sizeof body, "{\"increment\": %ld}", v->token_ttl);
        if (pgl_vault_http_request(v->http, "POST", "auth/token/renew-self", v->token, body, NULL,
                                   on_renew_self, v, &v->login_req) == 0)
            return;
    }
    if (v->tstate == TOKEN_LOGGING_IN)
        return;
    /* Not renewable, capped, or a retry: log in again. The current token
     * stays usable meanwhile. */
    login(v);
}

static void on_login(void *arg, const pgl_vault_http_response *res)
{
    pgl_vault *v = arg;
    v->login_req = NULL;
    char err[256];
    if (res->status == 200) {
        json_t *root;
        json_t *auth = response_member(res, "auth", &root);
        const char *tok = auth ? json_string_value(json_object_get(auth, "client_token")) : NULL;
        if (tok != NULL) {
            set_token(v, tok);
            long ttl = (long)json_integer_value(json_object_get(auth, "lease_duration"));
            bool renewable = json_is_true(json_object_get(auth, "renewable"));
            json_decref(root);
            token_ready(v, ttl, renewable);
            return;
        }
        json_decref(root);
        snprintf(err, sizeof err, "login answer without auth.client_token");
    } else {
        vault_errors(res, err, sizeof err);
    }
    vlog(v, res->status == 400 || res->status == 403 ? PGL_VAULT_LOG_ERROR : PGL_VAULT_LOG_WARNING,
         "vault: %s login failed: %s; retrying", method_name(v->method), err);
    login_retry_later(v, err);
}

static void on_lookup_self(void *arg, const pgl_vault_http_response *res)
{
    pgl_vault *v = arg;
    v->login_req = NULL;
    if (res->status == 200) {
        json_t *root;
        json_t *data = response_member(res, "data", &root);
        long ttl = data ? (long)json_integer_value(json_object_get(data, "ttl")) : 0;
        bool renewable = data && json_is_true(json_object_get(data, "renewable"));
        json_decref(root);
        token_ready(v, ttl, renewable);
        return;
    }
    char err[256];
    vault_errors(res, err, sizeof err);
    vlog(v, PGL_VAULT_LOG_ERROR, "vault: the configured token does not work: %s; retrying", err);
    login_retry_later(v, err);
}

static void on_unwrap(void *arg, const pgl_vault_http_response *res)
{
    pgl_vault *v = arg;
    v->login_req = NULL;
    if (res->status == 200) {
        json_t *root;
        json_t *data = response_member(res, "data", &root);
        const char *sid = data ? json_string_value(json_object_get(data, "secret_id")) : NULL;
        if (sid != NULL)
            v->unwrapped_secret_id = strdup(sid);
        json_decref(root);
        if (v->unwrapped_secret_id != NULL) {
            vlog(v, PGL_VAULT_LOG_INFO, "vault: unwrapped the secret_id");
            login(v);
            return;
        }
    }
    char err[256];
    vault_errors(res, err, sizeof err);
    vlog(v, PGL_VAULT_LOG_ERROR,
         "vault: cannot unwrap the secret_id in %s: %s (a wrapping token works once: "
         "provide a fresh one)", v->secret_id_file, err);
    login_retry_later(v, err);
}

/* POSTs `body` (taken; NULL when it could not be built) to the auth
 * method's login path. The JSON text holds the credential: wiped once sent. */
static int post_login(pgl_vault *v, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL)
        return -ENOMEM;
    char path[512];
    snprintf(path, sizeof path, "auth/%s/login", v->auth_mount);
    int rc = pgl_vault_http_request(v->http, "POST", path, NULL, text, NULL, on_login, v,
                                    &v->login_req);
    wiping_free(text);
    return rc;
}

static void login(pgl_vault *v)
{
    char err[256] = "";
    int rc = 0;
    v->tstate = TOKEN_LOGGING_IN;
    switch (v->method) {
    case PGL_VAULT_AUTH_TOKEN: {
        char *tok = v->token_file ? read_secret_file(v->token_file, err, sizeof err)
                                  : (v->token_cfg ? strdup(v->token_cfg) : NULL);
        if (tok == NULL) {
            vlog(v, PGL_VAULT_LOG_ERROR, "vault: no token: %s", err[0] ? err : "unset");
            login_retry_later(v, "no token");
            return;
        }
        set_token(v, tok);
        wipe_str(&tok);
        rc = pgl_vault_http_request(v->http, "GET", "auth/token/lookup-self", v->token, NULL,
                                    NULL, on_lookup_self, v, &v->login_req);
        break;
    }
    case PGL_VAULT_AUTH_APPROLE: {
        char *role_id = v->role_id ? strdup(v->role_id)
                                   : read_secret_file(v->role_id_file, err, sizeof err);
        if (role_id == NULL) {
            vlog(v, PGL_VAULT_LOG_ERROR, "vault: no role_id: %s", err);
            login_retry_later(v, "no role_id");
            return;
        }
        char *secret_id = NULL;
        if (v->secret_id_wrapped && v->unwrapped_secret_id == NULL) {
            char *wrapping = read_secret_file(v->secret_id_file, err, sizeof err);
            if (wrapping == NULL) {
                wipe_str(&role_id);
                vlog(v, PGL_VAULT_LOG_ERROR, "vault: no wrapped secret_id: %s", err);
                login_retry_later(v, "no wrapped secret_id");
                return;
            }
            rc = pgl_vault_http_request(v->http, "POST", "sys/wrapping/unwrap", wrapping, NULL,
                                        NULL, on_unwrap, v, &v->login_req);
            wipe_str(&wrapping);
            wipe_str(&role_id);
            break;
        }
        if (v->secret_id_wrapped)
            secret_id = strdup(v->unwrapped_secret_id);
        else if (v->secret_id_file)
            secret_id = read_secret_file(v->secret_id_file, err, sizeof err);
        if (v->secret_id_file && secret_id == NULL) {
            wipe_str(&role_id);
            vlog(v, PGL_VAULT_LOG_ERROR, "vault: no secret_id: %s", err);
            login_retry_later(v, "no secret_id");
            return;
        }
        json_t *body = secret_id ? json_pack("{s:s, s:s}", "role_id", role_id, "secret_id",
                                             secret_id)
                                 : json_pack("{s:s}", "role_id", role_id);
        wipe_str(&role_id);
        wipe_str(&secret_id);
        rc = post_login(v, body);
        break;
    }
    case PGL_VAULT_AUTH_KUBERNETES:
    case PGL_VAULT_AUTH_JWT: {
        /* The kubelet (or whatever issues workload identities) rotates the
         * token file, and the tokens are short-lived: read it at each
         * login, never keep it. */
        char *jwt = read_secret_file(v->jwt_file, err, sizeof err);
        if (jwt == NULL) {
            vlog(v, PGL_VAULT_LOG_ERROR, "vault: no %s: %s",
                 v->method == PGL_VAULT_AUTH_JWT ? "JWT" : "service account token", err);
            login_retry_later(v, v->method == PGL_VAULT_AUTH_JWT ? "no JWT"
                                                                 : "no service account token");
            return;
        }
        json_t *body = json_pack("{s:s, s:s}", "role",
                                 v->method == PGL_VAULT_AUTH_JWT ? v->jwt_role
                                                                 : v->kubernetes_role,
                                 "jwt", jwt);
        wipe_str(&jwt);
        rc = post_login(v, body);
        break;
    }
    case PGL_VAULT_AUTH_CERT: {
        /* The credential is the TLS client certificate libcurl presents
         * (pgl_vault_http); the body only names the role, if one is set. */
        rc = post_login(v, v->cert_role ? json_pack("{s:s}", "name", v->cert_role)
                                        : json_object());
        break;
    }
    }
    if (rc != 0) {
        vlog(v, PGL_VAULT_LOG_ERROR, "vault: cannot start the login request: %s",
             strerror(-rc));
        login_retry_later(v, "cannot start the request");
    }
}

static void on_file_timer(uv_timer_t *t)
{
    pgl_vault *v = t->data;
    struct stat st;
    if (stat(v->token_file, &st) != 0)
        return;
    if (st.st_mtim.tv_sec != v->token_file_mtime.tv_sec ||
        st.st_mtim.tv_nsec != v->token_file_mtime.tv_nsec) {
        bool first = v->token_file_mtime.tv_sec == 0 && v->token_file_mtime.tv_nsec == 0;
        v->token_file_mtime = st.st_mtim;
        if (!first && v->tstate != TOKEN_LOGGING_IN) {
            vlog(v, PGL_VAULT_LOG_INFO, "vault: %s changed; using the new token", v->token_file);
            login(v);
        }
    }
}

/* ---- operations ------------------------------------------------------------------------ */

static void op_send(pgl_vault_op *op);

static void op_release(pgl_vault_op *op)
{
    pgl_vault *v = op->v;
    if (op->prev)
        op->prev->next = op->next;
    else
        v->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    v->nops--;
    pgl_vault_http_cancel(op->req);
    timer_free(&op->retry);
    free(op->path);
    free(op->user_field);
    free(op->password_field);
    wipe_str(&op->body);
    free(op);
}

/* What an operation asks for, in log lines. */
static const char *op_what(const pgl_vault_op *op)
{
    return op->kind == OP_RENEW || op->kind == OP_REVOKE ? "sys/leases" : op->path;
}

static void op_fail(pgl_vault_op *op, const char *err)
{
    if (op->secret_cb)
        op->secret_cb(op->arg, -EIO, NULL, err);
    else if (op->lease_cb)
        op->lease_cb(op->arg, -EIO, 0, err);
    op_release(op);
}

static void on_retry(uv_timer_t *t)
{
    op_send(t->data);
}

static void op_retry_later(pgl_vault_op *op, const char *err)
{
    pgl_vault *v = op->v;
    if (op->max_attempts > 0 && op->attempts >= op->max_attempts) {
        op_fail(op, err);
        return;
    }
    uint64_t delay = backoff_ms(op->attempts);
    vlog(v, PGL_VAULT_LOG_WARNING, "vault: %s %s failed (%s); retry %d in %llu ms", op->method,
         op_what(op), err, op->attempts,
         (unsigned long long)delay);
    if (op->retry == NULL && (op->retry = timer_new(v, op)) == NULL) {
        op_fail(op, "out of memory");
        return;
    }
    uv_timer_start(&op->retry->handle, on_retry, delay, 0);
}

/* A database engine's secret (data.username, data.password), or with
 * `user_field` a KV v2 secret (data.data.<field>, data.metadata.version). */
static int parse_secret(const pgl_vault_http_response *res, const char *user_field,
                        const char *password_field, pgl_vault_secret *s)
{
    memset(s, 0, sizeof *s);
    s->static_ttl = -1;
    json_t *root = json_loadb(res->body, res->body_len, 0, NULL);
    json_t *data = root ? json_object_get(root, "data") : NULL;
    if (user_field != NULL) {
        json_t *meta = json_object_get(data, "metadata");
        s->kv_version = (long)json_integer_value(json_object_get(meta, "version"));
        data = json_object_get(data, "data");
    }
    const char *user =
        data ? json_string_value(json_object_get(data, user_field ? user_field : "username"))
             : NULL;
    const char *pw =
        data ? json_string_value(
                   json_object_get(data, password_field ? password_field : "password"))
             : NULL;
    const char *lease = json_string_value(json_object_get(root, "lease_id"));
    int rc = -EPROTO;
    if (user && pw) {
        s->username = strdup(user);
        s->password = strdup(pw);
        s->lease_id = strdup(lease ? lease : "");
        s->lease_duration = (long)json_integer_value(json_object_get(root, "lease_duration"));
        s->renewable = json_is_true(json_object_get(root, "renewable"));
        json_t *ttl = json_object_get(data, "ttl");
        if (json_is_integer(ttl))
            s->static_ttl = (long)json_integer_value(ttl);
        rc = s->username && s->password && s->lease_id ? 0 : -ENOMEM;
        if (rc != 0)
            pgl_vault_secret_clear(s);
    }
    json_decref(root);
    return rc;
}

static void on_op_done(void *arg, const pgl_vault_http_response *res)
{
    pgl_vault_op *op = arg;
    pgl_vault *v = op->v;
    op->req = NULL;
    op->attempts++;
    char err[256];
    if (res->status >= 200 && res->status < 300) {
        switch (op->kind) {
        case OP_READ_SECRET: {
            pgl_vault_secret s;
            if (parse_secret(res, op->user_field, op->password_field, &s) != 0) {
                char why[160];
                snprintf(why, sizeof why, "the answer holds no %.40s/%.40s string fields",
                         op->user_field ? op->user_field : "username",
                         op->password_field ? op->password_field : "password");
                op_fail(op, why);
                return;
            }
            op->secret_cb(op->arg, 0, &s, NULL);
            break;
        }
        case OP_RENEW: {
            json_t *root = json_loadb(res->body, res->body_len, 0, NULL);
            long d = (long)json_integer_value(json_object_get(root, "lease_duration"));
            json_decref(root);
            op->lease_cb(op->arg, 0, d, NULL);
            break;
        }
        case OP_REVOKE:
            if (op->lease_cb)
                op->lease_cb(op->arg, 0, 0, NULL);
            break;
        case OP_KV_VERSION: {
            json_t *root = json_loadb(res->body, res->body_len, 0, NULL);
            json_t *cur = json_object_get(json_object_get(root, "data"), "current_version");
            long version = json_is_integer(cur) ? (long)json_integer_value(cur) : -1;
            json_decref(root);
            if (version < 1) {
                op_fail(op, "the metadata holds no current_version");
                return;
            }
            op->lease_cb(op->arg, 0, version, NULL);
            break;
        }
        }
        op_release(op);
        return;
    }
    vault_errors(res, err, sizeof err);
    if (res->status == 403) {
        /* The token is gone (revoked, expired) or lacks the policy. Log in
         * again once or twice; a policy problem stays a 403 and fails. */
        if (++op->forbidden > MAX_FORBIDDEN) {
            op_fail(op, err);
            return;
        }
        if (op->token_generation == v->token_generation && v->tstate == TOKEN_READY) {
            vlog(v, PGL_VAULT_LOG_WARNING, "vault: permission denied on %s; logging in again",
                 op_what(op));
            login(v);
        }
        op->waiting_token = true;
        if (v->tstate == TOKEN_READY)
            op_send(op);
        return;
    }
    if (retryable(res->status)) {
        op_retry_later(op, err);
        return;
    }
    op_fail(op, err);
}

static void op_send(pgl_vault_op *op)
{
    pgl_vault *v = op->v;
    if (v->tstate != TOKEN_READY && v->login_attempts > 0 && op->kind != OP_REVOKE &&
        v->tstate == TOKEN_NONE) {
        op_fail(op, "Vault login is failing (see the log)");
        return;
    }
    if (v->tstate != TOKEN_READY) {
        op->waiting_token = true;
        if (v->tstate == TOKEN_NONE && (v->token_timer == NULL ||
                                        !uv_is_active((uv_handle_t *)&v->token_timer->handle)))
            login(v);
        return;
    }
    op->waiting_token = false;
    op->token_generation = v->token_generation;
    int rc = pgl_vault_http_request(v->http, op->method, op->path, v->token, op->body, NULL,
                                    on_op_done, op, &op->req);
    if (rc != 0)
        op_retry_later(op, "cannot start the request");
}

/* The first send happens on the next loop turn: a callback never runs
 * inside the call that started the operation (the caller has not even
 * stored the handle yet). */
static pgl_vault_op *op_start(pgl_vault_op *op)
{
    if (op->retry == NULL && (op->retry = timer_new(op->v, op)) == NULL) {
        op_release(op);
        return NULL;
    }
    uv_timer_start(&op->retry->handle, on_retry, 0, 0);
    return op;
}

static void ops_token_ready(pgl_vault *v)
{
    for (pgl_vault_op *op = v->ops, *next; op; op = next) {
        next = op->next;
        if (op->waiting_token)
            op_send(op);
    }
}

static pgl_vault_op *op_new(pgl_vault *v, op_kind kind, const char *method, const char *path,
                            const char *body)
{
    pgl_vault_op *op = calloc(1, sizeof *op);
    if (op == NULL)
        return NULL;
    op->v = v;
    op->kind = kind;
    snprintf(op->method, sizeof op->method, "%s", method);
    op->path = strdup(path);
    op->body = body ? strdup(body) : NULL;
    if (op->path == NULL || (body && op->body == NULL)) {
        free(op->path);
        free(op->body);
        free(op);
        return NULL;
    }
    op->next = v->ops;
    if (v->ops)
        v->ops->prev = op;
    v->ops = op;
    v->nops++;
    return op;
}

pgl_vault_op *pgl_vault_read_secret(pgl_vault *v, const char *path, pgl_vault_secret_cb cb,
                                    void *arg)
{
    pgl_vault_op *op = op_new(v, OP_READ_SECRET, "GET", path, NULL);
    if (op == NULL)
        return NULL;
    /* A few quick retries, then the caller hears about it: it decides
     * what clients are told and when to ask again. */
    op->max_attempts = READ_ATTEMPTS;
    op->secret_cb = cb;
    op->arg = arg;
    return op_start(op);
}

pgl_vault_op *pgl_vault_read_kv(pgl_vault *v, const char *path, const char *user_field,
                                const char *password_field, pgl_vault_secret_cb cb, void *arg)
{
    pgl_vault_op *op = op_new(v, OP_READ_SECRET, "GET", path, NULL);
    if (op == NULL)
        return NULL;
    op->user_field = strdup(user_field);
    op->password_field = strdup(password_field);
    if (op->user_field == NULL || op->password_field == NULL) {
        op_release(op);
        return NULL;
    }
    op->max_attempts = READ_ATTEMPTS;
    op->secret_cb = cb;
    op->arg = arg;
    return op_start(op);
}

pgl_vault_op *pgl_vault_kv_version(pgl_vault *v, const char *metadata_path,
                                   pgl_vault_lease_cb cb, void *arg)
{
    pgl_vault_op *op = op_new(v, OP_KV_VERSION, "GET", metadata_path, NULL);
    if (op == NULL)
        return NULL;
    op->max_attempts = READ_ATTEMPTS;
    op->lease_cb = cb;
    op->arg = arg;
    return op_start(op);
}

static pgl_vault_op *lease_op(pgl_vault *v, op_kind kind, const char *lease_id, long increment,
                              pgl_vault_lease_cb cb, void *arg)
{
    json_t *body = kind == OP_RENEW
                       ? json_pack("{s:s, s:I}", "lease_id", lease_id, "increment",
                                   (json_int_t)increment)
                       : json_pack("{s:s}", "lease_id", lease_id);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL)
        return NULL;
    pgl_vault_op *op = op_new(v, kind, "PUT",
                              kind == OP_RENEW ? "sys/leases/renew" : "sys/leases/revoke", text);
    wiping_free(text);
    if (op == NULL)
        return NULL;
    op->lease_cb = cb;
    op->arg = arg;
    op->max_attempts = FEW_ATTEMPTS;
    return op_start(op);
}

pgl_vault_op *pgl_vault_renew(pgl_vault *v, const char *lease_id, long increment,
                              pgl_vault_lease_cb cb, void *arg)
{
    return lease_op(v, OP_RENEW, lease_id, increment, cb, arg);
}

pgl_vault_op *pgl_vault_revoke(pgl_vault *v, const char *lease_id, pgl_vault_lease_cb cb,
                               void *arg)
{
    return lease_op(v, OP_REVOKE, lease_id, 0, cb, arg);
}

void pgl_vault_cancel(pgl_vault_op *op)
{
    if (op != NULL)
        op_release(op);
}

int pgl_vault_pending(const pgl_vault *v)
{
    return v->nops;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

void pgl_vault_secret_clear(pgl_vault_secret *s)
{
    wipe_str(&s->username);
    wipe_str(&s->password);
    wipe_str(&s->lease_id);
}

static char *dup_opt(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

int pgl_vault_global_init(void)
{
    json_set_alloc_funcs(wiping_malloc, wiping_free);
    return pgl_vault_http_global_init();
}

void pgl_vault_global_cleanup(void)
{
    pgl_vault_http_global_cleanup();
}

int pgl_vault_new(uv_loop_t *loop, const pgl_vault_config *cfg, pgl_vault_log_fn log,
                  void *log_arg, pgl_vault **out, char *err, size_t errlen)
{
    *out = NULL;
    pgl_vault *v = calloc(1, sizeof *v);
    if (v == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    v->loop = loop;
    v->method = cfg->method;
    v->log = log;
    v->log_arg = log_arg;
    v->auth_mount = dup_opt(cfg->auth_mount);
    if (v->auth_mount == NULL)
        v->auth_mount = strdup(method_name(cfg->method));
    v->token_cfg = dup_opt(cfg->token);
    v->token_file = dup_opt(cfg->token_file);
    v->role_id = dup_opt(cfg->role_id);
    v->role_id_file = dup_opt(cfg->role_id_file);
    v->secret_id_file = dup_opt(cfg->secret_id_file);
    v->secret_id_wrapped = cfg->secret_id_wrapped;
    v->kubernetes_role = dup_opt(cfg->kubernetes_role);
    v->jwt_file = dup_opt(cfg->jwt_file);
    v->jwt_role = dup_opt(cfg->jwt_role);
    v->cert_role = dup_opt(cfg->cert_role);
    v->token_expire = 0;
    v->token_final = UINT64_MAX;
    pgl_vault_http_config hc = {
        .addr = cfg->addr,
        .namespace = cfg->namespace,
        .ca_cert = cfg->ca_cert,
        .client_cert = cfg->client_cert,
        .client_key = cfg->client_key,
        .timeout_ms = cfg->request_timeout_ms,
    };
    int rc = pgl_vault_http_new(loop, &hc, &v->http, err, errlen);
    if (rc != 0) {
        pgl_vault_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

void pgl_vault_start(pgl_vault *v)
{
    if (v->method == PGL_VAULT_AUTH_TOKEN && v->token_file != NULL &&
        (v->file_timer = timer_new(v, v)) != NULL) {
        on_file_timer(&v->file_timer->handle); /* records the current mtime */
        uv_timer_start(&v->file_timer->handle, on_file_timer, TOKEN_FILE_CHECK_MS,
                       TOKEN_FILE_CHECK_MS);
    }
    login(v);
}

bool pgl_vault_ready(const pgl_vault *v)
{
    return v->token != NULL && v->tstate != TOKEN_NONE && uv_now(v->loop) < v->token_expire;
}

uint64_t pgl_vault_token_end(const pgl_vault *v)
{
    if (v->token == NULL)
        return 0;
    return v->token_final;
}

void pgl_vault_free(pgl_vault *v)
{
    if (v == NULL)
        return;
    while (v->ops)
        op_release(v->ops);
    pgl_vault_http_cancel(v->login_req);
    timer_free(&v->token_timer);
    timer_free(&v->file_timer);
    pgl_vault_http_free(v->http);
    wipe_str(&v->token);
    wipe_str(&v->token_cfg);
    wipe_str(&v->unwrapped_secret_id);
    free(v->auth_mount);
    free(v->token_file);
    wipe_str(&v->role_id);
    free(v->role_id_file);
    free(v->secret_id_file);
    free(v->kubernetes_role);
    free(v->jwt_file);
    free(v->jwt_role);
    free(v->cert_role);
    free(v);
}
