/*
 * Credentials a helper prints (pgl_execcreds.h).
 */
#include "pgl_execcreds.h"

#include "pgl_credjson.h"
#include "pgl_log.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <uv.h>

#define OUT_MAX (64 * 1024)
#define ERR_MAX 2048
#define TICK_MS 1000
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000

/* One run's pipes, process and timer; freed when all have closed. */
typedef struct {
    pgl_execcreds *owner; /* NULL once the source stopped */
    uv_process_t proc;
    uv_pipe_t out, err;
    uv_timer_t timeout;
    char *buf; /* stdout */
    size_t len;
    char errbuf[ERR_MAX];
    size_t errlen;
    bool exited, out_done, err_done, timed_out, too_big;
    int64_t status;
    int term_signal;
    int handles;
} run;

struct pgl_execcreds {
    pgl_pool *pool;
    char *cmdline;     /* the words, split in place into argv */
    char **argv;
    uv_timer_t tick;
    run *running;
    uint64_t next_run; /* ms: not before (backoff) */
    int failures;
    bool first; /* runs once at start (or after a reload changed it) whatever is in use */
};

/* ---- a run ------------------------------------------------------------------------ */

static void run_closed(uv_handle_t *h)
{
    run *r = h->data;
    if (--r->handles > 0)
        return;
    if (r->buf != NULL) {
        OPENSSL_cleanse(r->buf, OUT_MAX);
        free(r->buf);
    }
    OPENSSL_cleanse(r->errbuf, sizeof r->errbuf);
    free(r);
}

static void run_close(run *r)
{
    uv_close((uv_handle_t *)&r->proc, run_closed);
    uv_close((uv_handle_t *)&r->timeout, run_closed);
    if (!uv_is_closing((uv_handle_t *)&r->out))
        uv_close((uv_handle_t *)&r->out, run_closed);
    if (!uv_is_closing((uv_handle_t *)&r->err))
        uv_close((uv_handle_t *)&r->err, run_closed);
}

/* Logs the helper's stderr, one line each, with `secret` masked. */
static void log_stderr(pgl_pool *pool, run *r, const char *secret)
{
    r->errbuf[r->errlen < sizeof r->errbuf ? r->errlen : sizeof r->errbuf - 1] = '\0';
    if (secret != NULL && *secret != '\0')
        for (char *p = strstr(r->errbuf, secret); p != NULL; p = strstr(p, secret))
            memset(p, '*', strlen(secret));
    char *save = NULL;
    for (char *line = strtok_r(r->errbuf, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save))
        pgl_log_info(pool->name, "credential helper says: %.300s", line);
}

static void finished(run *r)
{
    pgl_execcreds *ec = r->owner;
    if (ec == NULL) {
        run_close(r);
        return;
    }
    pgl_pool *pool = ec->pool;
    ec->running = NULL;
    uint64_t now = pgl_now_ms(pool->px);
    char why[256] = "";
    pgl_credjson cj = {0};
    if (r->timed_out)
        snprintf(why, sizeof why, "did not finish within exec_timeout (%d s); killed",
                 pool->px->conf->exec_timeout);
    else if (r->term_signal != 0)
        snprintf(why, sizeof why, "killed by signal %d", r->term_signal);
    else if (r->status != 0)
        snprintf(why, sizeof why, "exited with status %lld", (long long)r->status);
    else if (r->too_big)
        snprintf(why, sizeof why, "printed more than %d bytes", OUT_MAX);
    else
        (void)pgl_credjson_parse(r->buf ? r->buf : "", r->len, time(NULL), "its output", &cj,
                                 why, sizeof why);
    log_stderr(pool, r, cj.password);
    if (cj.username != NULL) {
        ec->failures = 0;
        ec->next_run = 0;
        pgl_pool_offer_credential(pool, cj.username, cj.password, cj.duration_s,
                                  "credential helper");
        pgl_credjson_clear(&cj);
    } else {
        ec->failures++;
        ec->next_run = now + pgl_backoff_ceiling(BACKOFF_MIN_MS, BACKOFF_MAX_MS, ec->failures);
        pgl_log_warning(pool->name, "credential helper %s: %s; %s", ec->argv[0], why,
                        pgl_pool_generation(pool) != NULL ? "the current credential stays"
                                                          : "no credential yet");
    }
    run_close(r);
}

static void maybe_finished(run *r)
{
    if (r->exited && r->out_done && r->err_done)
        finished(r);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal)
{
    run *r = p->data;
    r->exited = true;
    r->status = status;
    r->term_signal = r->timed_out ? 0 : term_signal;
    uv_timer_stop(&r->timeout);
    maybe_finished(r);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    run *r = h->data;
    (void)suggested;
    if ((uv_pipe_t *)h == &r->out) {
        if (r->buf == NULL)
            r->buf = malloc(OUT_MAX);
        size_t room = r->buf != NULL ? OUT_MAX - r->len : 0;
        *buf = uv_buf_init(r->buf != NULL ? r->buf + r->len : NULL, (unsigned)room);
        return;
    }
    /* Past what is kept, stderr is read and dropped: a chatty helper must
     * not block on a full pipe. */
    static char scratch[512];
    size_t room = sizeof r->errbuf - 1 - r->errlen;
    *buf = room > 0 ? uv_buf_init(r->errbuf + r->errlen, (unsigned)room)
                    : uv_buf_init(scratch, sizeof scratch);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    run *r = s->data;
    (void)buf;
    bool is_out = (uv_pipe_t *)s == &r->out;
    if (n > 0) {
        if (is_out)
            r->len += (size_t)n;
        else if (buf->base >= r->errbuf && buf->base < r->errbuf + sizeof r->errbuf)
            r->errlen += (size_t)n;
    }
    /* End of stream, an error, or no room left for stdout (UV_ENOBUFS). */
    if (n < 0) {
        if (is_out && n == UV_ENOBUFS)
            r->too_big = true;
        uv_read_stop(s);
        if (is_out)
            r->out_done = true;
        else
            r->err_done = true;
        maybe_finished(r);
    }
}

static void on_timeout(uv_timer_t *t)
{
    run *r = t->data;
    r->timed_out = true;
    (void)uv_process_kill(&r->proc, SIGKILL);
}

static void start_run(pgl_execcreds *ec)
{
    pgl_pool *pool = ec->pool;
    uv_loop_t *loop = &pool->px->main.uv;
    run *r = calloc(1, sizeof *r);
    if (r == NULL)
        return;
    r->owner = ec;
    uv_pipe_init(loop, &r->out, 0);
    uv_pipe_init(loop, &r->err, 0);
    uv_timer_init(loop, &r->timeout);
    r->out.data = r->err.data = r->timeout.data = r->proc.data = r;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->err},
    };
    uv_process_options_t opt = {
        .exit_cb = on_exit_cb,
        .file = ec->argv[0],
        .args = ec->argv,
        .stdio_count = 3,
        .stdio = stdio,
    };
    int rc = uv_spawn(loop, &r->proc, &opt);
    r->handles = 4;
    if (rc != 0) {
        /* libuv wants the process handle closed even when spawning failed. */
        r->owner = NULL;
        ec->failures++;
        ec->next_run = pgl_now_ms(pool->px) +
                       pgl_backoff_ceiling(BACKOFF_MIN_MS, BACKOFF_MAX_MS, ec->failures);
        pgl_log_warning(pool->name, "credential helper %s: cannot run it: %s", ec->argv[0],
                        uv_strerror(rc));
        run_close(r);
        return;
    }
    ec->running = r;
    uv_read_start((uv_stream_t *)&r->out, alloc_cb, read_cb);
    uv_read_start((uv_stream_t *)&r->err, alloc_cb, read_cb);
    uv_timer_start(&r->timeout, on_timeout, (uint64_t)pool->px->conf->exec_timeout * 1000, 0);
}

/* ---- the schedule ------------------------------------------------------------------ */

static void on_tick(uv_timer_t *t)
{
    pgl_execcreds *ec = t->data;
    pgl_pool *pool = ec->pool;
    uint64_t now = pgl_now_ms(pool->px);
    bool warming = pgl_pool_enforce_all(pool, now); /* an expiry is a deadline */
    pgl_generation *active = pgl_pool_generation(pool);
    bool due = ec->first || active == NULL || pgl_generation_rotation_due(active, now);
    if (due && !warming && ec->running == NULL && now >= ec->next_run) {
        ec->first = false;
        start_run(ec);
    }
}

int pgl_execcreds_start(pgl_pool *pool)
{
    pgl_execcreds *ec = calloc(1, sizeof *ec);
    const char *cmd = pgl_pool_db(pool)->creds_path;
    if (ec == NULL || (ec->cmdline = strdup(cmd)) == NULL ||
        (ec->argv = calloc(strlen(cmd) / 2 + 2, sizeof *ec->argv)) == NULL) {
        if (ec != NULL)
            free(ec->cmdline);
        free(ec);
        return -ENOMEM;
    }
    size_t n = 0;
    char *save = NULL;
    for (char *w = strtok_r(ec->cmdline, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
        ec->argv[n++] = w;
    ec->pool = pool;
    ec->first = true;
    uv_timer_init(&pool->px->main.uv, &ec->tick);
    ec->tick.data = ec;
    uv_timer_start(&ec->tick, on_tick, 0, TICK_MS);
    pool->execcreds = ec;
    return 0;
}

static void tick_closed(uv_handle_t *h)
{
    pgl_execcreds *ec = h->data;
    free(ec->argv);
    free(ec->cmdline);
    free(ec);
}

void pgl_execcreds_stop(pgl_pool *pool)
{
    pgl_execcreds *ec = pool->execcreds;
    if (ec == NULL)
        return;
    pool->execcreds = NULL;
    if (ec->running != NULL) {
        ec->running->owner = NULL; /* its end only closes it */
        (void)uv_process_kill(&ec->running->proc, SIGKILL);
    }
    uv_close((uv_handle_t *)&ec->tick, tick_closed);
}
