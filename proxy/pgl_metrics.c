/*
 * /metrics and /readyz (pgl_metrics.h). Every metric is named pglease_*;
 * docs/operations.md lists them. Counts are read from the counted lists and
 * the counters of pgl_stats; the only walk is over the clients still
 * logging in (they are in no pool's lists), once per scrape.
 */
#include "pgl_metrics.h"

#include "pgl_client.h"
#include "pgl_generation.h"
#include "pgl_loop.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_replica.h"
#include "pgl_stats.h"
#include "pgl_vault.h"
#include "pgl_version.h"
#include "pgl_worker.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the buffer ------------------------------------------------------------------ */

void pgl_metrics_buf_init(pgl_metrics_buf *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max;
}

void pgl_metrics_buf_free(pgl_metrics_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void pgl_metrics_printf(pgl_metrics_buf *b, const char *fmt, ...)
{
    if (b->rc != 0)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->rc = -EINVAL;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t want = b->len + (size_t)n + 1;
        if (want > b->max) {
            b->rc = -E2BIG;
            return;
        }
        size_t ncap = b->cap ? b->cap * 2 : 16384;
        while (ncap < want)
            ncap *= 2;
        if (ncap > b->max)
            ncap = b->max;
        char *grown = realloc(b->data, ncap);
        if (grown == NULL) {
            b->rc = -ENOMEM;
            return;
        }
        b->data = grown;
        b->cap = ncap;
    }
}

/* ---- helpers ----------------------------------------------------------------------- */

/* A label value as the exposition format wants it: \\, \" and \n escaped.
 * Database names come from the config file, so they are escaped. */
static const char *label(const char *v, char *buf, size_t cap)
{
    size_t n = 0;
    for (; v && *v && n + 3 < cap; v++) {
        if (*v == '\\' || *v == '"') {
            buf[n++] = '\\';
            buf[n++] = *v;
        } else if (*v == '\n') {
            buf[n++] = '\\';
            buf[n++] = 'n';
        } else {
            buf[n++] = *v;
        }
    }
    buf[n] = '\0';
    return buf;
}

static void head(pgl_metrics_buf *b, const char *name, const char *type, const char *help)
{
    pgl_metrics_printf(b, "# HELP pglease_%s %s\n# TYPE pglease_%s %s\n", name, help, name, type);
}

#define U(v) ((unsigned long long)(v))

/* Seconds from microseconds, as Prometheus wants durations. */
static double secs(uint64_t us)
{
    return (double)us / 1e6;
}

/* Loop-clock milliseconds as Unix seconds. */
static double wall(const pgl_proxy *px, uint64_t ms)
{
    uint64_t now = pgl_now_ms(px);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double real = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    return real + ((double)ms - (double)now) / 1000.0;
}

/* The primaries: a database's series add up its copies on every loop
 * (rendered with the other loops parked). */
#define FOREACH_POOL(px, pool, it, tmp)                                                        \
    pgl_list_foreach(it, tmp, &(px)->main.pools) if (((pool) = pgl_container_of(it, pgl_pool, node)), 1)

/* Clients of every copy of `pool` in the list at `off` in pgl_pool. */
static uint64_t clients_in(pgl_proxy *px, pgl_pool *pool, size_t off)
{
    uint64_t n = 0;
    pgl_pool *cp;
    PGL_FOREACH_COPY(px, pool, cp)
    {
        n += pgl_clist_count((const pgl_clist *)((const char *)cp + off));
    }
    return n;
}

/* The counters of every copy of `pool`, added up. */
static void stats_of(pgl_proxy *px, pgl_pool *pool, pgl_stats *out)
{
    memset(out, 0, sizeof *out);
    pgl_pool *cp;
    PGL_FOREACH_COPY(px, pool, cp)
    {
        pgl_stats_add(&out->total, &cp->stats.total);
        for (size_t i = 0; i <= PGL_STATS_WAIT_BUCKETS; i++)
            out->wait_buckets[i] += cp->stats.wait_buckets[i];
        for (size_t i = 0; i <= PGL_STATS_ERROR_CLASSES; i++)
            out->errors[i] += cp->stats.errors[i];
    }
}

/* The credential new servers use (the newest that is not warming). */
static pgl_generation *current_generation(pgl_pool *pool)
{
    return pgl_pool_generation(pool);
}

/* ---- sections ---------------------------------------------------------------------- */

static void process_metrics(pgl_proxy *px, pgl_metrics_buf *b)
{
    head(b, "build_info", "gauge", "Version of pglease; always 1.");
    pgl_metrics_printf(b, "pglease_build_info{version=\"%s\"} 1\n", PGL_VERSION);
    head(b, "start_time_seconds", "gauge", "When pglease started, Unix time.");
    pgl_metrics_printf(b, "pglease_start_time_seconds %.3f\n", wall(px, px->started_ms));
    char why[256];
    head(b, "ready", "gauge", "1 when every database has a valid credential (what /readyz says).");
    pgl_metrics_printf(b, "pglease_ready %d\n", pgl_metrics_ready(px, why, sizeof why) ? 1 : 0);
    head(b, "paused", "gauge", "1 while SIGUSR1 or a console PAUSE of every database holds.");
    pgl_metrics_printf(b, "pglease_paused %d\n", px->paused ? 1 : 0);
    head(b, "reloads_total", "counter", "Configuration reloads, by result.");
    pgl_metrics_printf(b, "pglease_reloads_total{result=\"ok\"} %llu\n", U(px->reloads_ok));
    pgl_metrics_printf(b, "pglease_reloads_total{result=\"failed\"} %llu\n",
                       U(px->reloads_failed));
}

static void connection_metrics(pgl_proxy *px, pgl_metrics_buf *b)
{
    pgl_pool *pool;
    pgl_list *it, *tmp;
    char db[256];
    uint64_t login = 0, console = 0;
    for (int li = 0; li < px->nloops; li++) {
        pgl_list_foreach(it, tmp, &px->loops[li]->clients)
        {
            const pgl_client *c = pgl_container_of(it, pgl_client, node);
            login += c->state <= PGL_CLIENT_AUTH;
            console += c->admin && c->state > PGL_CLIENT_AUTH;
        }
    }
    head(b, "clients", "gauge",
         "Client connections by database and state (login: not logged in yet, no database; "
         "console: admin console clients).");
    pgl_metrics_printf(b, "pglease_clients{database=\"\",state=\"login\"} %llu\n", U(login));
    pgl_metrics_printf(b, "pglease_clients{database=\"\",state=\"console\"} %llu\n", U(console));
    FOREACH_POOL(px, pool, it, tmp)
    {
        label(pool->name, db, sizeof db);
        const struct {
            const char *state;
            size_t off;
        } states[] = {{"login_wait", offsetof(pgl_pool, login_wait)},
                      {"idle", offsetof(pgl_pool, idle)},
                      {"waiting", offsetof(pgl_pool, waiting)},
                      {"active", offsetof(pgl_pool, active)}};
        for (size_t i = 0; i < 4; i++)
            pgl_metrics_printf(b, "pglease_clients{database=\"%s\",state=\"%s\"} %llu\n", db,
                               states[i].state, U(clients_in(px, pool, states[i].off)));
    }
    head(b, "clients_pinned", "gauge",
         "Clients that keep their server (transaction mode, session state left behind).");
    FOREACH_POOL(px, pool, it, tmp)
    {
        int pinned = 0;
        pgl_pool *cp;
        PGL_FOREACH_COPY(px, pool, cp)
        {
            pinned += cp->pinned;
        }
        pgl_metrics_printf(b, "pglease_clients_pinned{database=\"%s\"} %d\n",
                           label(pool->name, db, sizeof db), pinned);
    }
    head(b, "servers", "gauge", "Server connections by database and state.");
    FOREACH_POOL(px, pool, it, tmp)
    {
        uint64_t n[3] = {0, 0, 0};
        pgl_list *gp, *gt;
        pgl_pool *cp;
        PGL_FOREACH_COPY(px, pool, cp)
        {
            pgl_list_foreach(gp, gt, &cp->generations)
            {
                const pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
                n[0] += pgl_clist_count(&g->login);
                n[1] += pgl_clist_count(&g->idle);
                n[2] += pgl_clist_count(&g->busy);
            }
        }
        static const char *const names[] = {"login", "idle", "active"};
        label(pool->name, db, sizeof db);
        for (size_t i = 0; i < 3; i++)
            pgl_metrics_printf(b, "pglease_servers{database=\"%s\",state=\"%s\"} %llu\n", db,
                               names[i], U(n[i]));
    }
    head(b, "pool_size", "gauge", "The most server connections a database's pool opens.");
    FOREACH_POOL(px, pool, it, tmp)
    {
        pgl_metrics_printf(b, "pglease_pool_size{database=\"%s\"} %d\n",
                           label(pool->name, db, sizeof db), pgl_pool_size(pool));
    }
}

static void traffic_metrics(pgl_proxy *px, pgl_metrics_buf *b)
{
    pgl_pool *pool;
    pgl_list *it, *tmp;
    char db[256];
    static const struct {
        const char *name;
        const char *help;
        size_t off;
        bool us;
    } counters[] = {
        {"transactions_total", "Transactions pooled (SHOW STATS total_xact_count).",
         offsetof(pgl_stats_counters, xact_count), false},
        {"queries_total", "Queries pooled (SHOW STATS total_query_count).",
         offsetof(pgl_stats_counters, query_count), false},
        {"client_received_bytes_total", "Bytes received from clients and forwarded.",
         offsetof(pgl_stats_counters, bytes_received), false},
        {"client_sent_bytes_total", "Bytes forwarded from servers to clients.",
         offsetof(pgl_stats_counters, bytes_sent), false},
        {"transaction_seconds_total", "Time spent in transactions.",
         offsetof(pgl_stats_counters, xact_time_us), true},
        {"query_seconds_total", "Time spent in queries.",
         offsetof(pgl_stats_counters, query_time_us), true},
    };
    for (size_t k = 0; k < sizeof counters / sizeof counters[0]; k++) {
        head(b, counters[k].name, "counter", counters[k].help);
        FOREACH_POOL(px, pool, it, tmp)
        {
            pgl_stats st;
            stats_of(px, pool, &st);
            uint64_t v;
            memcpy(&v, (const char *)&st.total + counters[k].off, sizeof v);
            label(pool->name, db, sizeof db);
            if (counters[k].us)
                pgl_metrics_printf(b, "pglease_%s{database=\"%s\"} %.6f\n", counters[k].name, db,
                                   secs(v));
            else
                pgl_metrics_printf(b, "pglease_%s{database=\"%s\"} %llu\n", counters[k].name, db,
                                   U(v));
        }
    }
    head(b, "client_wait_seconds", "histogram", "How long clients waited for a server.");
    FOREACH_POOL(px, pool, it, tmp)
    {
        pgl_stats st;
        stats_of(px, pool, &st);
        label(pool->name, db, sizeof db);
        uint64_t cum = 0;
        for (size_t i = 0; i <= PGL_STATS_WAIT_BUCKETS; i++) {
            cum += st.wait_buckets[i];
            if (i < PGL_STATS_WAIT_BUCKETS)
                pgl_metrics_printf(b,
                                   "pglease_client_wait_seconds_bucket{database=\"%s\",le=\"%g\"} "
                                   "%llu\n",
                                   db, secs(pgl_stats_wait_bounds_us[i]), U(cum));
            else
                pgl_metrics_printf(
                    b, "pglease_client_wait_seconds_bucket{database=\"%s\",le=\"+Inf\"} %llu\n", db,
                    U(cum));
        }
        pgl_metrics_printf(b, "pglease_client_wait_seconds_sum{database=\"%s\"} %.6f\n", db,
                           secs(st.total.wait_time_us));
        pgl_metrics_printf(b, "pglease_client_wait_seconds_count{database=\"%s\"} %llu\n", db,
                           U(cum));
    }
    head(b, "server_errors_total", "counter",
         "ErrorResponses servers sent to clients, by SQLSTATE class (other: unlisted class or "
         "unreadable).");
    FOREACH_POOL(px, pool, it, tmp)
    {
        pgl_stats st;
        stats_of(px, pool, &st);
        label(pool->name, db, sizeof db);
        for (size_t i = 0; i <= PGL_STATS_ERROR_CLASSES; i++) {
            if (st.errors[i] == 0)
                continue;
            pgl_metrics_printf(b, "pglease_server_errors_total{database=\"%s\",class=\"%s\"} %llu\n",
                               db, pgl_stats_error_class(i), U(st.errors[i]));
        }
    }
}

static void credential_metrics(pgl_proxy *px, pgl_metrics_buf *b)
{
    pgl_pool *pool;
    pgl_list *it, *tmp;
    char db[256];
    uint64_t now = pgl_now_ms(px);
    head(b, "generations", "gauge", "Credential generations by database and state.");
    FOREACH_POOL(px, pool, it, tmp)
    {
        uint64_t n[PGL_GEN_RETIRED + 1] = {0};
        pgl_list *gp, *gt;
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            n[pgl_container_of(gp, pgl_generation, node)->state]++;
        }
        label(pool->name, db, sizeof db);
        for (int s = PGL_GEN_WARMING; s < PGL_GEN_RETIRED; s++)
            pgl_metrics_printf(b, "pglease_generations{database=\"%s\",state=\"%s\"} %llu\n", db,
                               pgl_generation_state_name((pgl_generation_state)s), U(n[s]));
    }
    head(b, "lease_ttl_seconds", "gauge",
         "Seconds left on the current credential's lease (databases with a Vault lease).");
    FOREACH_POOL(px, pool, it, tmp)
    {
        const pgl_generation *g = current_generation(pool);
        if (g == NULL || g->end == 0 || g->end == UINT64_MAX)
            continue;
        pgl_metrics_printf(b, "pglease_lease_ttl_seconds{database=\"%s\"} %.3f\n",
                           label(pool->name, db, sizeof db),
                           g->end > now ? (double)(g->end - now) / 1000.0 : 0.0);
    }
    head(b, "lease_expiry_timestamp_seconds", "gauge",
         "When the current credential's lease ends, Unix time (renewals move it).");
    FOREACH_POOL(px, pool, it, tmp)
    {
        const pgl_generation *g = current_generation(pool);
        if (g == NULL || g->end == 0 || g->end == UINT64_MAX)
            continue;
        pgl_metrics_printf(b, "pglease_lease_expiry_timestamp_seconds{database=\"%s\"} %.3f\n",
                           label(pool->name, db, sizeof db), wall(px, g->end));
    }
    static const struct {
        const char *name;
        const char *help;
        size_t off;
    } counters[] = {
        {"credentials_fetched_total",
         "Credentials obtained (from Vault, a credential file or a helper).",
         offsetof(pgl_stats_creds, fetched)},
        {"rotations_total", "Successor credentials obtained for a working one (rotations).",
         offsetof(pgl_stats_creds, rotations)},
        {"lease_renewals_total", "Lease renewals Vault granted.",
         offsetof(pgl_stats_creds, renewals)},
        {"lease_renewal_failures_total", "Lease renewals that failed.",
         offsetof(pgl_stats_creds, renewal_failures)},
    };
    for (size_t k = 0; k < sizeof counters / sizeof counters[0]; k++) {
        head(b, counters[k].name, "counter", counters[k].help);
        FOREACH_POOL(px, pool, it, tmp)
        {
            uint64_t v;
            memcpy(&v, (const char *)&pool->stats.creds + counters[k].off, sizeof v);
            pgl_metrics_printf(b, "pglease_%s{database=\"%s\"} %llu\n", counters[k].name,
                               label(pool->name, db, sizeof db), U(v));
        }
    }
    const pgl_stats_vault *vs = &px->vault_stats;
    head(b, "lease_revocations_total", "counter", "Leases revoked in Vault, by result.");
    pgl_metrics_printf(b, "pglease_lease_revocations_total{result=\"ok\"} %llu\n",
                       U(vs->revocations));
    pgl_metrics_printf(b, "pglease_lease_revocations_total{result=\"failed\"} %llu\n",
                       U(vs->revocation_failures));
    head(b, "vault_request_errors_total", "counter",
         "Vault requests that failed (after the client's own retries), by request and cause.");
    for (size_t i = 0; i < PGL_STATS_VAULT_CODES && vs->errors[i].code != 0; i++)
        for (int op = 0; op < PGL_STATS_VAULT_OPS; op++)
            if (vs->errors[i].n[op] > 0)
                pgl_metrics_printf(b,
                                   "pglease_vault_request_errors_total{request=\"%s\",cause=\"%s\"} "
                                   "%llu\n",
                                   pgl_stats_vault_op_name((pgl_stats_vault_op)op),
                                   pgl_errname(vs->errors[i].code), U(vs->errors[i].n[op]));
    for (int op = 0; op < PGL_STATS_VAULT_OPS; op++)
        if (vs->errors_other[op] > 0)
            pgl_metrics_printf(
                b, "pglease_vault_request_errors_total{request=\"%s\",cause=\"other\"} %llu\n",
                pgl_stats_vault_op_name((pgl_stats_vault_op)op), U(vs->errors_other[op]));
    if (px->vault != NULL) {
        head(b, "vault_token_valid", "gauge", "1 while pglease holds an unexpired Vault token.");
        pgl_metrics_printf(b, "pglease_vault_token_valid %d\n", pgl_vault_ready(px->vault) ? 1 : 0);
    }
}

int pgl_metrics_render(pgl_proxy *px, pgl_metrics_buf *b)
{
    pgl_workers_park(px);
    process_metrics(px, b);
    connection_metrics(px, b);
    traffic_metrics(px, b);
    credential_metrics(px, b);
    pgl_workers_unpark(px);
    return b->rc;
}

/* ---- readiness ---------------------------------------------------------------------- */

/* A credential that still works: not dead, and its lease (if any) not over. */
static bool valid(const pgl_generation *g, uint64_t now)
{
    return (g->state == PGL_GEN_ACTIVE || g->state == PGL_GEN_DRAINING) &&
           (g->end == 0 || g->end > now);
}

bool pgl_metrics_ready(pgl_proxy *px, char *why, size_t cap)
{
    uint64_t now = pgl_now_ms(px);
    if (px->shutting_down) {
        snprintf(why, cap, "shutting down");
        return false;
    }
    if (px->vault != NULL && !pgl_vault_ready(px->vault)) {
        snprintf(why, cap, "no valid Vault token");
        return false;
    }
    pgl_pool *pool;
    pgl_list *it, *tmp;
    FOREACH_POOL(px, pool, it, tmp)
    {
        if (pool->creds == NULL)
            continue; /* conninfo credentials do not expire */
        bool ok = false;
        pgl_list *gp, *gt;
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            ok |= valid(pgl_container_of(gp, pgl_generation, node), now);
        }
        if (!ok) {
            snprintf(why, cap, "database %s: no valid credential (Vault: %s)", pool->name,
                     pool->vault_error[0] ? pool->vault_error : "no answer yet");
            return false;
        }
    }
    snprintf(why, cap, "ready");
    return true;
}
