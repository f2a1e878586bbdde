/*
 * Vault-issued upstream credentials: one generation per credential.
 *
 * For each database with creds=, a 200 ms tick drives the newest
 * generation's life:
 *   - renew a renewable lease at 2/3 of its duration; a renewal answered
 *     with less than asked means the lease hits its max TTL: its end is
 *     then final;
 *   - rotate `rotate_before` ahead of the final end (default 1/3 of the
 *     credential's life, never more than half): fetch a new credential, let
 *     it prove itself with one login (WARMING), then switch new checkouts to
 *     it and drain the old generation (idle servers closed at once, busy ones
 *     when their transaction ends);
 *   - hard deadline: no server outlives its credential's end minus a safety
 *     margin (min(5 s, 10% of its life)); session clients on an old
 *     generation are asked to reconnect (57P01) at their next idle point
 *     shortly before it, and whatever still runs at the deadline is cut;
 *   - a drained generation's lease is revoked (revoke_on_drain), every lease
 *     at shutdown (revoke_on_shutdown).
 * A 28xxx on an upstream login means the credential is gone (revoked early,
 * role dropped): the generation dies and a new one is fetched at once.
 * Vault being down never stops service on valid credentials; with none
 * left, waiting clients get 08006 naming Vault instead of hanging.
 */
#include "pgl_log.h"
#include "pgl_proxy.h"
#include "pgl_vault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 200
#define SAFETY_MAX_MS 5000
#define DEADLINE_NEAR_MS 2000 /* old servers stop serving this long before they must go */
#define REFETCH_BACKOFF_MS 1000
#define REFETCH_MAX_MS 30000
#define SHUTDOWN_REVOKE_MS 5000

static bool vault_pool(const pgl_pool *pool)
{
    return pool->db->creds_kind != PGL_CONF_CREDS_CONNINFO;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/* The moment a generation's credential really stops working, as far as we
 * know: its lease end when final, capped by the Vault token's own end (a
 * token takes its leases with it). */
static uint64_t gen_end(const pgl_generation *g)
{
    return g->end_final ? g->end : UINT64_MAX;
}

static uint64_t gen_deadline(const pgl_generation *g)
{
    uint64_t end = gen_end(g);
    if (end == UINT64_MAX)
        return UINT64_MAX;
    uint64_t life = end > g->issued ? end - g->issued : 0;
    return end - min_u64(SAFETY_MAX_MS, life / 10);
}

/* When to fetch the successor of `g`. */
static void schedule_rotation(pgl_proxy *px, pgl_generation *g)
{
    uint64_t end = gen_end(g);
    if (g->is_static || end == UINT64_MAX)
        return; /* static: rotate_at was set from Vault's ttl */
    uint64_t life = end > g->issued ? end - g->issued : 0;
    uint64_t before = px->conf->rotate_before >= 0
                          ? min_u64((uint64_t)px->conf->rotate_before * 1000, life / 2)
                          : life / 3;
    g->rotate_at = end - before;
}

static void log_vault(void *arg, int level, const char *msg)
{
    (void)arg;
    pgl_log_level l = level == PGL_VAULT_LOG_DEBUG     ? PGL_LOG_DEBUG
                      : level == PGL_VAULT_LOG_INFO    ? PGL_LOG_INFO
                      : level == PGL_VAULT_LOG_WARNING ? PGL_LOG_WARNING
                                                       : PGL_LOG_ERROR;
    pgl_log(l, NULL, "%s", msg);
}

/* The part of a lease id that identifies it without being all of it. */
static const char *lease_hint(const char *lease_id, char *buf, size_t len)
{
    const char *slash = strrchr(lease_id, '/');
    if (slash == NULL) {
        snprintf(buf, len, "(static)");
        return buf;
    }
    snprintf(buf, len, "%.*s/%.4s…", (int)(slash - lease_id), lease_id, slash + 1);
    return buf;
}

/* ---- fetching ------------------------------------------------------------------ */

static void fetch(pgl_pool *pool);

static void on_secret(void *arg, int rc, pgl_vault_secret *secret, const char *err)
{
    pgl_pool *pool = arg;
    pgl_proxy *px = pool->px;
    pool->fetch_op = NULL;
    uint64_t now = pgl_now_ms(px);
    if (rc != 0) {
        pool->fetch_failures++;
        snprintf(pool->vault_error, sizeof pool->vault_error, "%s", err ? err : "failed");
        /* Exponential, capped, full jitter: many pools (or pglease
         * instances) must not hammer a Vault that is struggling. */
        uint64_t ceiling =
            pgl_backoff_ceiling(REFETCH_BACKOFF_MS, REFETCH_MAX_MS, pool->fetch_failures);
        pool->refetch_at = now + (uint64_t)random() % (ceiling + 1);
        pgl_log_error(pool->name, "vault: cannot read %s: %s", pool->db->creds_path,
                      pool->vault_error);
        return;
    }
    pool->fetch_failures = 0;
    pool->vault_error[0] = '\0';
    /* With a working generation, the new one proves itself first. */
    pgl_generation *current = pgl_pool_generation(pool);
    pgl_generation *g = pgl_pool_add_generation(pool, secret->username, secret->password,
                                                current ? PGL_GEN_WARMING : PGL_GEN_ACTIVE);
    if (g == NULL) {
        pgl_vault_secret_clear(secret);
        pool->refetch_at = now + REFETCH_BACKOFF_MS;
        return;
    }
    g->issued = now;
    g->is_static = pool->db->creds_kind == PGL_CONF_CREDS_STATIC;
    g->lease_id = secret->lease_id[0] ? strdup(secret->lease_id) : NULL;
    g->renewable = secret->renewable && g->lease_id != NULL;
    g->lease_duration = secret->lease_duration;
    if (g->is_static) {
        /* Re-read just after Vault's rotation; no deadline: the user stays
         * and Postgres keeps existing sessions across a password change. */
        long ttl = secret->static_ttl > 0 ? secret->static_ttl : 60;
        g->rotate_at = now + (uint64_t)ttl * 1000 + 1000;
    } else if (secret->lease_duration > 0) {
        g->end = now + (uint64_t)secret->lease_duration * 1000;
        g->end_final = !g->renewable;
        g->renew_at = g->renewable ? now + (uint64_t)secret->lease_duration * 1000 * 2 / 3
                                   : UINT64_MAX;
    }
    g->token_id = pgl_vault_token_id(px->vault);
    schedule_rotation(px, g);
    char hint[96];
    pgl_log_info(pool->name,
                 "vault: generation %llu: user %s, lease %s, %lds%s", (unsigned long long)g->id,
                 g->user, g->lease_id ? lease_hint(g->lease_id, hint, sizeof hint) : "(none)",
                 secret->lease_duration, g->renewable ? ", renewable" : "");
    pgl_vault_secret_clear(secret);
    if (g->state == PGL_GEN_WARMING) {
        int n = pool->min_pool_size > 0 ? pool->min_pool_size : 1;
        for (int i = 0; i < n; i++)
            if (pgl_server_connect(pool, g) != 0)
                break;
    } else {
        pgl_pool_kick(pool);
    }
}

static void fetch(pgl_pool *pool)
{
    if (pool->fetch_op != NULL)
        return;
    pool->fetch_op = pgl_vault_read_secret(pool->px->vault, pool->db->creds_path, on_secret, pool);
    if (pool->fetch_op == NULL)
        pool->refetch_at = pgl_now_ms(pool->px) + REFETCH_BACKOFF_MS;
}

/* ---- generation switch ------------------------------------------------------------ */

void pgl_creds_login_succeeded(pgl_pool *pool, pgl_generation *gen)
{
    if (gen->state != PGL_GEN_WARMING)
        return;
    gen->state = PGL_GEN_ACTIVE;
    uint64_t now = pgl_now_ms(pool->px);
    pgl_log_info(pool->name, "generation %llu (user %s) takes over", (unsigned long long)gen->id,
                 gen->user);
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->generations)
    {
        pgl_generation *g = pgl_container_of(pos, pgl_generation, node);
        if (g == gen || g->state != PGL_GEN_ACTIVE)
            continue;
        g->state = PGL_GEN_DRAINING;
        g->drain_since = now;
        pgl_pool_drain_generation(pool, g);
    }
}

bool pgl_creds_login_failed(pgl_pool *pool, pgl_generation *gen, const char *sqlstate)
{
    if (!vault_pool(pool) || strncmp(sqlstate, "28", 2) != 0)
        return false;
    if (gen->state == PGL_GEN_DEAD)
        return true;
    pgl_log_warning(pool->name,
                    "generation %llu (user %s) was rejected by the server (%s): fetching a new "
                    "credential now", (unsigned long long)gen->id, gen->user, sqlstate);
    bool was_warming = gen->state == PGL_GEN_WARMING;
    gen->state = PGL_GEN_DEAD;
    gen->drain_since = pgl_now_ms(pool->px);
    if (gen->renew_op) {
        pgl_vault_cancel(gen->renew_op);
        gen->renew_op = NULL;
    }
    pgl_pool_drain_generation(pool, gen);
    if (was_warming) {
        /* A fresh credential that does not work: try again, not in a loop. */
        pool->refetch_at = pgl_now_ms(pool->px) + REFETCH_BACKOFF_MS;
    } else {
        fetch(pool);
    }
    return true;
}

static void on_revoked(void *arg, int rc, long unused, const char *err)
{
    char *hint = arg;
    (void)unused;
    if (rc == 0)
        pgl_log_info(NULL, "vault: revoked lease %s", hint);
    else
        pgl_log_warning(NULL, "vault: could not revoke lease %s: %s", hint, err ? err : "");
    free(hint);
}

static void revoke_lease(pgl_proxy *px, const char *lease_id)
{
    char buf[96];
    char *hint = strdup(lease_hint(lease_id, buf, sizeof buf));
    if (hint == NULL)
        return;
    if (pgl_vault_revoke(px->vault, lease_id, on_revoked, hint) == NULL)
        free(hint);
}

void pgl_creds_retire(pgl_generation *gen)
{
    pgl_proxy *px = gen->pool->px;
    if (gen->renew_op) {
        pgl_vault_cancel(gen->renew_op);
        gen->renew_op = NULL;
    }
    if (gen->lease_id != NULL && px->vault != NULL && px->conf->revoke_on_drain)
        revoke_lease(px, gen->lease_id);
}

/* ---- renewal -------------------------------------------------------------------------- */

static void on_renewed(void *arg, int rc, long duration, const char *err)
{
    pgl_generation *g = arg;
    pgl_pool *pool = g->pool;
    g->renew_op = NULL;
    uint64_t now = pgl_now_ms(pool->px);
    if (rc != 0) {
        /* The lease cannot be renewed (gone, or Vault down): its current end
         * is the real one. Rotation takes it from here. */
        pgl_log_warning(pool->name, "vault: renewing generation %llu failed: %s",
                        (unsigned long long)g->id, err ? err : "");
        g->end_final = true;
        g->renew_at = UINT64_MAX;
        schedule_rotation(pool->px, g);
        return;
    }
    g->end = now + (uint64_t)duration * 1000;
    if (duration + 1 < g->lease_duration) {
        g->end_final = true;
        g->renew_at = UINT64_MAX;
        pgl_log_info(pool->name, "vault: generation %llu renewed for %lds: capped by max_ttl, "
                                 "rotating before it ends", (unsigned long long)g->id, duration);
    } else {
        g->renew_at = now + (uint64_t)duration * 1000 * 2 / 3;
        pgl_log_debug(pool->name, "vault: generation %llu renewed for %lds",
                      (unsigned long long)g->id, duration);
    }
    schedule_rotation(pool->px, g);
}

/* ---- the tick ------------------------------------------------------------------------------ */

/* Closes whatever of `g` must not live on. */
static void enforce(pgl_pool *pool, pgl_generation *g, uint64_t now)
{
    uint64_t deadline = gen_deadline(g);
    bool draining = g->state == PGL_GEN_DRAINING || g->state == PGL_GEN_DEAD;
    const pgl_conf *conf = pool->px->conf;
    uint64_t drain_end = draining && conf->drain_timeout >= 0
                             ? g->drain_since + (uint64_t)conf->drain_timeout * 1000
                             : UINT64_MAX;
    bool drain_over = now >= drain_end;
    pgl_list *pos, *tmp;
    if (now >= deadline || drain_over) {
        g->nservers++; /* closing its last server must not free it here */
        if (now >= deadline && g->state == PGL_GEN_ACTIVE) {
            /* No successor arrived in time (Vault down?): this credential is
             * over; clients now wait for the next one. Before the servers
             * close: the pool must not open new ones with it. */
            g->state = PGL_GEN_DEAD;
            g->drain_since = now;
            pgl_log_error(pool->name, "generation %llu reached its deadline without a successor",
                          (unsigned long long)g->id);
        }
        pgl_list *const lists[] = {&pool->active, &pool->idle, &pool->connecting};
        for (size_t i = 0; i < 3; i++) {
            pgl_server *s;
            while ((s = pgl_pool_find_server(lists[i], g)) != NULL) {
                if (s->link != NULL)
                    pgl_client_fail(s->link, "FATAL", "57P01",
                                    now >= deadline
                                        ? "terminating connection: its upstream credential "
                                          "expires (credentials rotated, please reconnect)"
                                        : "terminating connection: drain_timeout reached "
                                          "after a credential rotation, please reconnect");
                if (s->state != PGL_SERVER_CLOSED)
                    pgl_server_close(s, now >= deadline ? "credential deadline reached"
                                                        : "drain_timeout reached");
            }
        }
        g->nservers--;
        pgl_generation_server_gone(g);
        return;
    }
    bool deadline_near = deadline != UINT64_MAX && now + DEADLINE_NEAR_MS >= deadline;
    uint64_t stop = min_u64(deadline, drain_end);
    /* Transaction mode: servers not replaced yet (logins are slow on a
     * saturated database) stop serving; idle ones close now, busy ones at
     * the end of their transaction rather than be cut at the deadline or
     * at drain_timeout. */
    if (g->state == PGL_GEN_DRAINING && stop != UINT64_MAX && now + DEADLINE_NEAR_MS >= stop &&
        !g->hurry) {
        g->hurry = true;
        pgl_pool_drain_generation(pool, g);
        return;
    }
    /* Session clients of an old generation: shortly before the deadline,
     * close them at their next idle point with a clear reason. */
    if (draining && pool->mode == PGL_CONF_POOL_SESSION && deadline_near) {
        bool again = true;
        while (again) {
            again = false;
            pgl_list_foreach(pos, tmp, &pool->active)
            {
                pgl_server *s = pgl_container_of(pos, pgl_server, node);
                if (s->gen == g && s->link != NULL && s->state == PGL_SERVER_ACTIVE &&
                    s->rfq_status == 'I' && s->expected_rfq == 0 &&
                    !pgl_conn_mid_message(&s->conn) && !pgl_conn_mid_message(&s->link->conn)) {
                    pgl_client_fail(s->link, "FATAL", "57P01",
                                    "terminating connection: credentials rotated, please "
                                    "reconnect");
                    again = true; /* the lists changed: scan afresh */
                    break;
                }
            }
        }
    }
}

static void tick_pool(pgl_pool *pool, uint64_t now)
{
    pgl_proxy *px = pool->px;
    pgl_list *gp, *gt;
    pgl_list_foreach(gp, gt, &pool->generations)
    {
        pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
        uint64_t end = pgl_vault_token_end_of(px->vault, g->token_id);
        if (end != UINT64_MAX)
            g->token_end = end;
    }
    bool warming = false;
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->generations)
    {
        pgl_generation *g = pgl_container_of(pos, pgl_generation, node);
        if (g->state == PGL_GEN_WARMING) {
            warming = true;
            /* Its first login ended without success for a reason other than
             * the credential (server down, no slot, timeout): the pool tries
             * it again after its login backoff. */
            if (g->nservers == 0)
                pgl_pool_kick(pool);
        }
        /* The Vault token that created this lease ends for good: the lease
         * goes with it, whatever its own TTL. */
        if (!g->is_static && g->lease_id != NULL && g->token_end != 0 &&
            g->token_end < g->end) {
            g->end = g->token_end;
            g->end_final = true;
            schedule_rotation(px, g);
        }
        if (g->renewable && !g->end_final && g->renew_op == NULL && now >= g->renew_at &&
            (g->state == PGL_GEN_ACTIVE || g->state == PGL_GEN_WARMING)) {
            g->renew_at = UINT64_MAX;
            g->renew_op = pgl_vault_renew(px->vault, g->lease_id, g->lease_duration, on_renewed, g);
        }
        enforce(pool, g, now);
    }
    pgl_generation *active = pgl_pool_generation(pool);
    bool due = active == NULL || now >= active->rotate_at;
    if (due && !warming && pool->fetch_op == NULL && now >= pool->refetch_at)
        fetch(pool);
    /* Nothing valid to serve with and Vault not delivering: say so rather
     * than letting clients hang. */
    if (active == NULL && pool->fetch_failures > 0 &&
        (!pgl_list_empty(&pool->waiting) || !pgl_list_empty(&pool->login_wait))) {
        char msg[400];
        snprintf(msg, sizeof msg, "no valid upstream credential: Vault: %s", pool->vault_error);
        pgl_pool_fail_waiters(pool, "08006", msg);
    }
}

static void on_tick(uv_timer_t *t)
{
    pgl_proxy *px = t->data;
    /* Runs during a graceful shutdown too: leases must be renewed and
     * deadlines kept while the last transactions finish. */
    uint64_t now = pgl_now_ms(px);
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (vault_pool(pool))
            tick_pool(pool, now);
    }
}

/* ---- setup and shutdown ------------------------------------------------------------------ */

int pgl_creds_init(pgl_proxy *px, char *err, size_t errlen)
{
    const pgl_conf *conf = px->conf;
    if (!conf->vault_needed)
        return 0;
    const pgl_conf_vault *vc = &conf->vault;
    pgl_vault_config cfg = {
        .addr = vc->addr,
        .namespace = vc->namespace,
        .ca_cert = vc->ca_cert,
        .method = vc->auth_method == PGL_CONF_VAULT_TOKEN        ? PGL_VAULT_AUTH_TOKEN
                  : vc->auth_method == PGL_CONF_VAULT_KUBERNETES ? PGL_VAULT_AUTH_KUBERNETES
                                                                 : PGL_VAULT_AUTH_APPROLE,
        .auth_mount = vc->auth_mount,
        .token = getenv("VAULT_TOKEN"),
        .token_file = vc->token_file,
        .role_id = vc->role_id,
        .role_id_file = vc->role_id_file,
        .secret_id_file = vc->secret_id_file,
        .secret_id_wrapped = vc->secret_id_wrapped,
        .kubernetes_role = vc->kubernetes_role,
        .jwt_file = vc->jwt_file,
        .request_timeout_ms = (long)vc->request_timeout * 1000,
    };
    int rc = pgl_vault_new(px->loop, &cfg, log_vault, px, &px->vault, err, errlen);
    if (rc != 0)
        return rc;
    /* The token stays in pglease's memory only. */
    unsetenv("VAULT_TOKEN");
    pgl_vault_start(px->vault);
    uv_timer_init(px->loop, &px->creds_timer);
    px->creds_timer.data = px;
    uv_timer_start(&px->creds_timer, on_tick, 0, TICK_MS);
    return 0;
}

static void (*shutdown_done)(pgl_proxy *px);

static void on_stop_wait(uv_timer_t *t)
{
    pgl_proxy *px = t->data;
    bool timed_out = pgl_now_ms(px) >= px->shutdown_deadline + SHUTDOWN_REVOKE_MS;
    if (pgl_vault_pending(px->vault) > 0 && !timed_out)
        return;
    if (timed_out)
        pgl_log_warning(NULL, "vault: giving up on %d pending request(s) at exit",
                        pgl_vault_pending(px->vault));
    uv_timer_stop(t);
    shutdown_done(px);
}

void pgl_creds_shutdown(pgl_proxy *px, void (*done)(pgl_proxy *px))
{
    if (px->vault == NULL) {
        done(px);
        return;
    }
    uv_timer_stop(&px->creds_timer);
    pgl_list *pos, *tmp, *gp, *gt;
    pgl_list_foreach(pos, tmp, &px->pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (pool->fetch_op) {
            pgl_vault_cancel(pool->fetch_op);
            pool->fetch_op = NULL;
        }
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
            if (g->renew_op) {
                pgl_vault_cancel(g->renew_op);
                g->renew_op = NULL;
            }
            if (g->lease_id != NULL && px->conf->revoke_on_shutdown) {
                revoke_lease(px, g->lease_id);
                free(g->lease_id);
                g->lease_id = NULL;
            }
        }
    }
    shutdown_done = done;
    px->shutdown_deadline = pgl_now_ms(px);
    uv_timer_init(px->loop, &px->stop_timer);
    px->stop_timer.data = px;
    uv_timer_start(&px->stop_timer, on_stop_wait, 0, 50);
}

void pgl_creds_free(pgl_proxy *px)
{
    if (px->vault == NULL)
        return;
    pgl_vault_free(px->vault);
    px->vault = NULL;
}
