#include "pgl_upstream.h"

#include "pgl_log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <openssl/crypto.h>

const char *const pgl_upstream_report_params[] = {
    "application_name", "client_encoding", "DateStyle", "default_transaction_read_only",
    "in_hot_standby", "integer_datetimes", "IntervalStyle", "is_superuser", "server_encoding",
    "server_version", "session_authorization", "standard_conforming_strings", "TimeZone", NULL,
};

extern char **environ;

int pgl_upstream_isolate_env(char *first, size_t len)
{
    int removed = 0;
    if (len > 0)
        first[0] = '\0';
    /* unsetenv shifts environ, so rescan from the start after each removal. */
    for (char **e = environ; e && *e;) {
        /* PGLEASE_* is ours (configuration overrides), not libpq's. */
        if (strncmp(*e, "PG", 2) != 0 || strncmp(*e, "PGLEASE_", 8) == 0 ||
            strchr(*e, '=') == NULL) {
            e++;
            continue;
        }
        char name[128];
        size_t n = (size_t)(strchr(*e, '=') - *e);
        if (n >= sizeof name) {
            e++;
            continue;
        }
        memcpy(name, *e, n);
        name[n] = '\0';
        if (removed == 0 && len > 0)
            snprintf(first, len, "%s", name);
        unsetenv(name);
        removed++;
        e = environ;
    }
    return removed;
}

#define MAX_KEYS 72

typedef enum {
    UP_STARTING, /* first loop turn: callbacks never run inside _start */
    UP_RESOLVING,
    UP_POLLING,  /* watching the socket for what libpq waits for */
    UP_STEPPING, /* a PQconnectPoll runs in the thread pool: u->pg is libpq's */
    UP_DONE,
} up_state;

struct pgl_upstream {
    uv_loop_t *loop;
    up_state state;
    bool aborted;
    pgl_upstream_cb cb;
    void *arg;
    uv_getaddrinfo_t resolver;
    /* PQconnectPoll runs in the thread pool (UP_STEPPING): the SCRAM key
     * derivation (4096 HMAC rounds, ~3 ms) and a TLS handshake would stall
     * every client of the loop if it ran there. */
    uv_work_t work;
    bool timed_out; /* while stepping: reported when the step is back */
    PostgresPollingStatusType polled;
    uv_timer_t timer;
    int handles_open;
    unsigned timeout_ms;
    PGconn *pg;
    pgl_poller *poller;
    char log_ctx[160];
    /* Copied parameters: libpq reads them in PQconnectStartParams only. */
    const char *keys[MAX_KEYS + 1];
    const char *values[MAX_KEYS + 1];
    size_t n;
    char *strings;   /* one allocation holding every copied string */
    size_t strings_len;
    char hostaddr[INET6_ADDRSTRLEN];
};

static void release(pgl_upstream *u);
static void destroy(pgl_upstream *u);

static void finish(pgl_upstream *u, pgl_upstream_result *res)
{
    u->state = UP_DONE;
    uv_timer_stop(&u->timer);
    if (!u->aborted)
        u->cb(u->arg, res);
    release(u);
}

static void fail(pgl_upstream *u, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(pgl_upstream *u, const char *sqlstate, const char *fmt, ...)
{
    pgl_upstream_result res = {.status = -1};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res.message, sizeof res.message, fmt, ap);
    va_end(ap);
    if (sqlstate)
        snprintf(res.sqlstate, sizeof res.sqlstate, "%s", sqlstate);
    else
        pgl_upstream_classify(res.message, res.sqlstate);
    pgl_poller_close(u->poller);
    u->poller = NULL;
    if (u->pg) {
        PQfinish(u->pg);
        u->pg = NULL;
    }
    finish(u, &res);
}

void pgl_upstream_classify(const char *m, char sqlstate[6])
{
    static const struct {
        const char *needle;
        const char *code;
    } table[] = {
        /* First: these also name a role or a database. */
        {"too many connections", "53300"},
        {"too many clients", "53300"},
        {"remaining connection slots", "53300"},
        {"password authentication failed", "28P01"},
        {"no password supplied", "28P01"},
        {"role \"", "28000"}, /* role "x" does not exist / is not permitted to log in */
        {"no pg_hba.conf entry", "28000"},
        {"database \"", "3D000"},
        {"the database system is starting up", "57P03"},
        {"the database system is shutting down", "57P03"},
        {"the database system is in recovery", "57P03"},
        {"timeout", "08001"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strstr(m, table[i].needle)) {
            memcpy(sqlstate, table[i].code, 6);
            return;
        }
    }
    memcpy(sqlstate, "08001", 6);
}

static void on_poll(pgl_poller *p, void *arg, int status, int events);
static void step(pgl_upstream *u);

static void step_work(uv_work_t *w)
{
    pgl_upstream *u = w->data;
    u->polled = PQconnectPoll(u->pg);
}

/* Acts on what PQconnectPoll returned: reports the end of the login, or
 * watches the socket for what libpq waits for. */
static void step_done(uv_work_t *w, int status)
{
    pgl_upstream *u = w->data;
    (void)status; /* the work is never cancelled */
    u->state = UP_POLLING;
    u->handles_open--;
    /* A timer closing without an abort: the loop's teardown walk closed
     * it. Nothing may start on that loop now (a new watcher would keep it
     * running). */
    if (u->aborted || uv_is_closing((uv_handle_t *)&u->timer)) {
        release(u);
        return;
    }
    if (u->timed_out) {
        fail(u, "08001", "timeout connecting to the server (server_connect_timeout)");
        return;
    }
    PostgresPollingStatusType st = u->polled;
    if (st == PGRES_POLLING_FAILED) {
        /* First line only: the rest repeats per host and may be long. */
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(u->pg));
        char *nl = strchr(msg, '\n');
        if (nl)
            *nl = '\0';
        const char *text = strncmp(msg, "FATAL:  ", 8) == 0 ? msg + 8 : msg;
        /* Out of descriptors ("could not create socket: Too many open
         * files"): pglease's own limit, not the server's; reported as
         * Postgres reports a full server, so callers treat it as the
         * transient "too many connections" it is. */
        if (strstr(text, "Too many open files") != NULL)
            fail(u, "53300", "too many connections: pglease is out of file descriptors (%s)",
                 text);
        else
            fail(u, NULL, "%s", text);
        return;
    }
    int fd = PQsocket(u->pg);
    if (fd < 0) {
        fail(u, "08001", "libpq lost its socket during login");
        return;
    }
    /* A new watcher each time: libpq may have closed the socket and opened
     * another (the next address, or without TLS), and a number the loop
     * reused meanwhile must not lose its own watcher to a stale one. */
    int rc = pgl_poller_open(u->loop, fd, on_poll, u, &u->poller);
    if (rc != 0) {
        fail(u, rc == UV_EMFILE || rc == UV_ENFILE ? "53300" : "08001",
             "cannot watch the server socket: %s", uv_strerror(rc));
        return;
    }
    if (st == PGRES_POLLING_OK) {
        pgl_upstream_result res = {.status = 0, .pg = u->pg, .poller = u->poller};
        res.backend_pid = PQbackendPID(u->pg);
        if (PQsslInUse(u->pg))
            res.ssl = PQsslStruct(u->pg, "OpenSSL");
        u->pg = NULL;
        u->poller = NULL;
        finish(u, &res);
        return;
    }
    pgl_poller_want(u->poller, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE);
}

/* Hands the next PQconnectPoll to the thread pool. Until it is back, the
 * loop leaves u->pg and its socket alone: the watcher is closed now, while
 * the socket is still libpq's open one. */
static void step(pgl_upstream *u)
{
    pgl_poller_close(u->poller);
    u->poller = NULL;
    u->state = UP_STEPPING;
    u->handles_open++;
    u->work.data = u;
    if (uv_queue_work(u->loop, &u->work, step_work, step_done) != 0) {
        step_work(&u->work); /* cannot happen with a valid loop; stay correct anyway */
        step_done(&u->work, 0);
    }
}

static void on_poll(pgl_poller *p, void *arg, int status, int events)
{
    pgl_upstream *u = arg;
    (void)p;
    (void)events;
    if (status < 0) {
        fail(u, "08001", "server socket error: %s", uv_strerror(status));
        return;
    }
    step(u);
}

static void start_libpq(pgl_upstream *u)
{
    u->state = UP_POLLING;
    if (u->hostaddr[0] != '\0') {
        u->keys[u->n] = "hostaddr";
        u->values[u->n++] = u->hostaddr;
    }
    u->keys[u->n] = NULL;
    u->values[u->n] = NULL;
    u->pg = PQconnectStartParams(u->keys, u->values, 0);
    /* libpq has its copies now; ours (the password among them) go. */
    OPENSSL_cleanse(u->strings, u->strings_len);
    if (u->pg == NULL) {
        fail(u, "53200", "out of memory starting the upstream login");
        return;
    }
    step(u); /* a CONNECTION_BAD start reports libpq's reason from there */
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pgl_upstream *u = req->data;
    u->handles_open--;
    if (u->aborted) {
        uv_freeaddrinfo(res);
        release(u);
        return;
    }
    if (status != 0 || res == NULL) {
        uv_freeaddrinfo(res);
        fail(u, "08001", "could not resolve the server host: %s", uv_strerror(status));
        return;
    }
    const void *addr = res->ai_family == AF_INET6
                           ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                           : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    inet_ntop(res->ai_family, addr, u->hostaddr, sizeof u->hostaddr);
    uv_freeaddrinfo(res);
    start_libpq(u);
}

static void on_timer(uv_timer_t *t)
{
    pgl_upstream *u = t->data;
    if (u->state == UP_STARTING) {
        if (u->timeout_ms > 0)
            uv_timer_start(&u->timer, on_timer, u->timeout_ms, 0);
        start_libpq(u);
        return;
    }
    if (u->state == UP_RESOLVING) {
        uv_cancel((uv_req_t *)&u->resolver);
        /* on_resolved still runs (with UV_ECANCELED) and must not report twice. */
        pgl_upstream_result res = {.status = -1, .sqlstate = "08001"};
        snprintf(res.message, sizeof res.message, "timeout resolving the server host");
        u->state = UP_DONE;
        if (!u->aborted)
            u->cb(u->arg, &res);
        u->aborted = true;
        return;
    }
    if (u->state == UP_STEPPING) {
        u->timed_out = true; /* libpq is busy with u->pg: step_done reports it */
        return;
    }
    fail(u, "08001", "timeout connecting to the server (server_connect_timeout)");
}

static void destroy(pgl_upstream *u)
{
    if (u->strings) {
        OPENSSL_cleanse(u->strings, u->strings_len);
        free(u->strings);
    }
    free(u);
}

static void on_timer_closed(uv_handle_t *h)
{
    pgl_upstream *u = h->data;
    if (--u->handles_open == 0)
        destroy(u);
}

static void release(pgl_upstream *u)
{
    if (u->state == UP_RESOLVING && u->handles_open > 1)
        return; /* the resolver callback will come back here */
    /* A step in flight still uses u->pg: step_done comes back here for it.
     * The timer closes now all the same, with its callback: closed later
     * by the loop's teardown walk, it would have none, and u would never be
     * freed. Whichever of the two ends last frees u. */
    if (u->state != UP_STEPPING) {
        pgl_poller_close(u->poller);
        u->poller = NULL;
        if (u->pg) {
            PQfinish(u->pg);
            u->pg = NULL;
        }
    }
    if (!uv_is_closing((uv_handle_t *)&u->timer))
        uv_close((uv_handle_t *)&u->timer, on_timer_closed);
    else if (u->handles_open == 0)
        destroy(u);
}

/* Whether libpq would resolve this host itself (a name, not an address or a
 * socket directory). */
static bool needs_dns(const char *host)
{
    if (host == NULL || host[0] == '\0' || host[0] == '/' || host[0] == '@' || strchr(host, ','))
        return false;
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1;
}

int pgl_upstream_start(uv_loop_t *loop, const pgl_upstream_params *p, pgl_upstream_cb cb,
                       void *arg, pgl_upstream **out)
{
    *out = NULL;
    if (p->n + 5 > MAX_KEYS)
        return -E2BIG;
    pgl_upstream *u = calloc(1, sizeof *u);
    if (u == NULL)
        return -ENOMEM;
    u->loop = loop;
    u->cb = cb;
    u->arg = arg;
    snprintf(u->log_ctx, sizeof u->log_ctx, "%s", p->log_ctx ? p->log_ctx : "upstream");

    /* Copy every key and value into one block so the caller's config may
     * change (reload) while we resolve. */
    /* ~/.pgpass must not decide anything either: the password is given. */
    bool has_passfile = false;
    for (size_t i = 0; i < p->n; i++)
        has_passfile |= strcmp(p->keys[i], "passfile") == 0;
    const char *const extra_keys[] = {"user", "password", "fallback_application_name",
                                      "passfile"};
    const char *const extra_values[] = {p->user, p->password, p->application_name,
                                        has_passfile ? NULL : "/dev/null"};
    size_t total = 0;
    for (size_t i = 0; i < p->n; i++)
        total += strlen(p->keys[i]) + strlen(p->values[i]) + 2;
    for (size_t i = 0; i < 4; i++)
        total += extra_values[i] ? strlen(extra_keys[i]) + strlen(extra_values[i]) + 2 : 0;
    u->strings = malloc(total + 1);
    if (u->strings == NULL) {
        free(u);
        return -ENOMEM;
    }
    u->strings_len = total + 1;
    char *w = u->strings;
    const char *host = NULL;
#define COPY(k, v)                                                                                 \
    do {                                                                                           \
        size_t kl_ = strlen(k) + 1, vl_ = strlen(v) + 1;                                           \
        u->keys[u->n] = memcpy(w, (k), kl_);                                                       \
        w += kl_;                                                                                  \
        u->values[u->n++] = memcpy(w, (v), vl_);                                                   \
        w += vl_;                                                                                  \
    } while (0)
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->keys[i], "host") == 0)
            host = p->values[i];
        COPY(p->keys[i], p->values[i]);
    }
    for (size_t i = 0; i < 4; i++)
        if (extra_values[i])
            COPY(extra_keys[i], extra_values[i]);
#undef COPY

    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    u->handles_open = 1;
    u->timeout_ms = p->connect_timeout_ms;
    *out = u;
    if (needs_dns(host)) {
        u->state = UP_RESOLVING;
        u->resolver.data = u;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
        int rc = uv_getaddrinfo(loop, &u->resolver, on_resolved, host, NULL, &hints);
        if (rc != 0) {
            *out = NULL;
            u->aborted = true;
            release(u);
            return rc;
        }
        u->handles_open++;
        if (u->timeout_ms > 0)
            uv_timer_start(&u->timer, on_timer, u->timeout_ms, 0);
        return 0;
    }
    /* libpq may fail at once (socket refused); that is reported from the
     * next loop turn, when the caller has finished setting up. */
    u->state = UP_STARTING;
    uv_timer_start(&u->timer, on_timer, 0, 0);
    return 0;
}

void pgl_upstream_abort(pgl_upstream *u)
{
    if (u == NULL || u->aborted)
        return;
    u->aborted = true;
    if (u->state == UP_RESOLVING) {
        uv_cancel((uv_req_t *)&u->resolver);
        uv_timer_stop(&u->timer);
        return; /* on_resolved releases */
    }
    if (u->state != UP_DONE)
        release(u);
}

/* ---- cancel ---------------------------------------------------------------------- */

typedef struct {
    uv_work_t work;
    PGcancel *cancel;
    int status;
    void (*done)(void *arg, int status);
    void *arg;
} cancel_req;

static void cancel_work(uv_work_t *w)
{
    cancel_req *r = w->data;
    char err[256];
    r->status = PQcancel(r->cancel, err, sizeof err) == 1 ? 0 : -1;
}

static void cancel_after(uv_work_t *w, int status)
{
    cancel_req *r = w->data;
    PQfreeCancel(r->cancel);
    if (r->done)
        r->done(r->arg, status == 0 ? r->status : -1);
    free(r);
}

int pgl_upstream_cancel(uv_loop_t *loop, PGconn *pg, void (*done)(void *arg, int status),
                        void *arg)
{
    cancel_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -ENOMEM;
    r->cancel = PQgetCancel(pg);
    if (r->cancel == NULL) {
        free(r);
        return -EINVAL;
    }
    r->done = done;
    r->arg = arg;
    r->work.data = r;
    int rc = uv_queue_work(loop, &r->work, cancel_work, cancel_after);
    if (rc != 0) {
        PQfreeCancel(r->cancel);
        free(r);
    }
    return rc;
}
