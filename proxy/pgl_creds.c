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
 *     it and drain the old generation (its servers retire as servers of the
 *     new one replace them, pgl_pool.c);
 *   - hard deadline: no server outlives its credential's end minus a safety
 *     margin (10% of its life, 1.5 s to 5 s); session clients on an old
 *     generation are asked to reconnect (57P01) at their next idle point
 *     shortly before it, and whatever still runs at the deadline is cut;
 *   - a drained generation's lease is revoked (revoke_on_drain), every lease
 *     at shutdown (revoke_on_shutdown).
 * The generation's clock and states are pgl_generation's and the pool acts
 * on them; this file talks to Vault: fetch, renew, revoke, and the tick
 * that drives them. A 28xxx on an upstream login means the credential is
 * gone (revoked early, role dropped): the pool kills the generation and
 * asks here (on_rejected) for a new one at once.
 * Vault being down never stops service on valid credentials; with none
 * left, waiting clients get 08006 naming Vault instead of hanging.
 */
#include "pgl_creds.h"

#include "pgl_log.h"
#include "pgl_notify.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_secenv.h"
#include "pgl_server.h"
#include "pgl_vault.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define TICK_MS 200
#define REFETCH_BACKOFF_MS 1000
#define REFETCH_MAX_MS 30000
#define SHUTDOWN_REVOKE_MS 5000
/* Failed reads in a row, with no credential left, before waiting clients
 * are told rather than kept waiting: a blip (503 for a second) passes
 * before that. */
#define VAULT_GIVE_UP 3

static bool vault_pool(pgl_pool *pool)
{
    pgl_conf_creds_kind k = pgl_pool_db(pool)->creds_kind;
    return k == PGL_CONF_CREDS_DYNAMIC || k == PGL_CONF_CREDS_STATIC || k == PGL_CONF_CREDS_KV;
}

static int rotate_before(const pgl_pool *pool)
{
    return pool->px->conf->rotate_before;
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

/* Whether `s` is the credential `g` already uses (a static role read again
 * before Vault rotated it). */
static bool same_credential(const pgl_generation *g, const pgl_vault_secret *s)
{
    size_t n = strlen(s->password);
    return strcmp(g->user, s->username) == 0 && g->password != NULL &&
           strlen(g->password) == n && CRYPTO_memcmp(g->password, s->password, n) == 0;
}

/* ---- fetching ------------------------------------------------------------------ */

static bool kv_pool(pgl_pool *pool)
{
    return pgl_pool_db(pool)->creds_kind == PGL_CONF_CREDS_KV;
}

/* A Vault read (a secret, or a KV secret's version) failed: the current
 * generation, if any, serves on; the read is tried again after a capped,
 * fully jittered backoff (many pools, or pglease instances, must not
 * hammer a Vault that is struggling). */
static void read_failed(pgl_pool *pool, const char *path, int rc, const char *err, uint64_t now)
{
    pgl_proxy *px = pool->px;
    pgl_stats_vault_error(&px->vault_stats, PGL_STATS_VAULT_READ, rc);
    pool->fetch_failures++;
    snprintf(pool->vault_error, sizeof pool->vault_error, "%s", err ? err : "failed");
    uint64_t ceiling =
        pgl_backoff_ceiling(REFETCH_BACKOFF_MS, REFETCH_MAX_MS, pool->fetch_failures);
    pool->refetch_at = now + (uint64_t)random() % (ceiling + 1);
    pgl_generation *current = pgl_pool_generation(pool);
    if (current != NULL)
        pgl_log_error(pool->name, "vault: cannot read %s: %s; generation %llu (user %s) "
                                  "serves on", path, pool->vault_error,
                      (unsigned long long)current->id, current->user);
    else
        pgl_log_error(pool->name, "vault: cannot read %s: %s", path, pool->vault_error);
}

static void on_secret(void *arg, int rc, pgl_vault_secret *secret, const char *err)
{
    pgl_pool *pool = arg;
    pgl_proxy *px = pool->px;
    pool->fetch_op = NULL;
    uint64_t now = pgl_now_ms(px);
    const pgl_conf_database *db = pgl_pool_db(pool);
    if (rc != 0) {
        /* A KV secret's version whose read failed is read again at the
         * next good poll. */
        pgl_generation *current = pgl_pool_generation(pool);
        if (current != NULL && db->creds_kind == PGL_CONF_CREDS_KV)
            current->kv_version = 0;
        read_failed(pool, db->creds_path, rc, err, now);
        return;
    }
    pool->fetch_failures = 0;
    pool->vault_error[0] = '\0';
    bool kv = db->creds_kind == PGL_CONF_CREDS_KV;
    /* With a working generation, the new one proves itself first. */
    pgl_generation *current = pgl_pool_generation(pool);
    if (current != NULL && current->is_static && same_credential(current, secret)) {
        if (kv) {
            /* A new version with the same user and password (or the
             * version after a failed poll): nothing to switch. */
            current->kv_version = secret->kv_version;
            pgl_generation_poll_after(current, now, px->conf->kv_poll_interval);
            pgl_log_info(pool->name, "vault: %s version %ld has generation %llu's user and "
                                     "password: kept", db->creds_path, secret->kv_version,
                         (unsigned long long)current->id);
        } else {
            /* Vault has not rotated yet (its rotation runs a moment after
             * the ttl, or a refused login raced it): keep the generation,
             * read again after the ttl Vault gives now. */
            pgl_generation_static_reread(current, now, secret->static_ttl);
            pgl_log_debug(pool->name, "vault: static role password unchanged; next read in %lds",
                          secret->static_ttl);
        }
        pgl_vault_secret_clear(secret);
        return;
    }
    pool->stats.creds.fetched++;
    if (current != NULL)
        pool->stats.creds.rotations++;
    pgl_generation *g = pgl_pool_add_generation(pool, secret->username, secret->password,
                                                current ? PGL_GEN_WARMING : PGL_GEN_ACTIVE);
    if (g == NULL) {
        pgl_vault_secret_clear(secret);
        pool->refetch_at = now + REFETCH_BACKOFF_MS;
        return;
    }
    g->lease_id = secret->lease_id[0] ? strdup(secret->lease_id) : NULL;
    /* No lease for static roles and KV secrets: nothing to renew or
     * revoke, no deadline; they are read again instead. */
    pgl_generation_issued(g, now, secret->lease_duration, secret->renewable && g->lease_id,
                          db->creds_kind == PGL_CONF_CREDS_STATIC || kv, secret->static_ttl,
                          rotate_before(pool));
    g->token_id = pgl_vault_token_id(px->vault);
    char hint[96];
    if (kv) {
        g->kv_version = secret->kv_version;
        pgl_generation_poll_after(g, now, px->conf->kv_poll_interval);
        pgl_log_info(pool->name, "vault: generation %llu: user %s, %s version %ld (no lease)",
                     (unsigned long long)g->id, g->user, db->creds_path, secret->kv_version);
    } else if (g->is_static) {
        pgl_log_info(pool->name,
                     "vault: generation %llu: user %s, static role (no lease), Vault rotates "
                     "its password in %lds", (unsigned long long)g->id, g->user,
                     secret->static_ttl);
    } else {
        pgl_log_info(pool->name, "vault: generation %llu: user %s, lease %s, %lds%s",
                     (unsigned long long)g->id, g->user,
                     g->lease_id ? lease_hint(g->lease_id, hint, sizeof hint) : "(none)",
                     secret->lease_duration, g->renewable ? ", renewable" : "");
    }
    pgl_vault_secret_clear(secret);
    if (g->state == PGL_GEN_WARMING)
        pgl_pool_warm(pool, g);
    else
        pgl_pool_kick(pool);
}

static void fetch(pgl_pool *pool)
{
    if (pool->fetch_op != NULL)
        return;
    const pgl_conf_database *db = pgl_pool_db(pool);
    pool->fetch_op =
        db->creds_kind == PGL_CONF_CREDS_KV
            ? pgl_vault_read_kv(pool->px->vault, db->creds_path, db->kv_username_field,
                                db->kv_password_field, on_secret, pool)
            : pgl_vault_read_secret(pool->px->vault, db->creds_path, on_secret, pool);
    if (pool->fetch_op == NULL)
        pool->refetch_at = pgl_now_ms(pool->px) + REFETCH_BACKOFF_MS;
}

/* A KV secret's current version: a new one is read (and becomes a new
 * generation); the same one is checked again after kv_poll_interval. */
static void on_version(void *arg, int rc, long version, const char *err)
{
    pgl_pool *pool = arg;
    pgl_proxy *px = pool->px;
    pool->fetch_op = NULL;
    uint64_t now = pgl_now_ms(px);
    const pgl_conf_database *db = pgl_pool_db(pool);
    pgl_generation *current = pgl_pool_generation(pool);
    if (rc != 0) {
        if (current != NULL)
            current->kv_version = 0;
        read_failed(pool, db->kv_metadata_path, rc, err, now);
        return;
    }
    pool->fetch_failures = 0;
    pool->vault_error[0] = '\0';
    if (current != NULL && current->kv_version == version) {
        pgl_generation_poll_after(current, now, px->conf->kv_poll_interval);
        return;
    }
    pgl_log_info(pool->name, "vault: %s is at version %ld: reading it", db->creds_path, version);
    fetch(pool);
}

static void poll_version(pgl_pool *pool)
{
    pool->fetch_op = pgl_vault_kv_version(pool->px->vault, pgl_pool_db(pool)->kv_metadata_path,
                                          on_version, pool);
    if (pool->fetch_op == NULL)
        pool->refetch_at = pgl_now_ms(pool->px) + REFETCH_BACKOFF_MS;
}

static void cancel_renewal(pgl_generation *g)
{
    if (g->renew_op) {
        pgl_vault_cancel(g->renew_op);
        g->renew_op = NULL;
    }
}

static bool has_warming(pgl_pool *pool)
{
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->generations)
    {
        if (pgl_container_of(pos, pgl_generation, node)->state == PGL_GEN_WARMING)
            return true;
    }
    return false;
}

/* ---- what the pool tells us ---------------------------------------------------- */

static void on_rejected(pgl_pool *pool, pgl_generation *g, bool was_warming)
{
    cancel_renewal(g);
    if (was_warming) {
        /* A fresh credential that does not work: try again, not in a loop. */
        pool->refetch_at = pgl_now_ms(pool->px) + REFETCH_BACKOFF_MS;
    } else {
        fetch(pool);
    }
}

/* A static role's password was refused although its generation is
 * current: Vault rotated it early (rotate-role). Its servers stay logged in
 * (Postgres keeps sessions across a password change); the new password is
 * read now, warms and takes over as at a scheduled rotation. */
static void on_stale(pgl_pool *pool, pgl_generation *g)
{
    (void)g;
    if (has_warming(pool))
        return; /* its successor is already proving itself */
    pool->refetch_at = 0;
    fetch(pool);
}

/* What a revocation's answer needs: where to count it, what to log. */
typedef struct {
    pgl_proxy *px;
    char hint[96];
} revocation;

static void on_revoked(void *arg, int rc, long unused, const char *err)
{
    revocation *rv = arg;
    (void)unused;
    if (rc == 0) {
        rv->px->vault_stats.revocations++;
        pgl_log_info(NULL, "vault: revoked lease %s", rv->hint);
    } else {
        rv->px->vault_stats.revocation_failures++;
        pgl_stats_vault_error(&rv->px->vault_stats, PGL_STATS_VAULT_REVOKE, rc);
        pgl_log_warning(NULL, "vault: could not revoke lease %s: %s", rv->hint, err ? err : "");
    }
    free(rv);
}

static void revoke_lease(pgl_proxy *px, const char *lease_id)
{
    revocation *rv = malloc(sizeof *rv);
    if (rv == NULL)
        return;
    rv->px = px;
    lease_hint(lease_id, rv->hint, sizeof rv->hint);
    if (pgl_vault_revoke(px->vault, lease_id, on_revoked, rv) == NULL)
        free(rv);
}

/* A retired generation hands its lease back (revoke_on_drain). */
static void on_retired(pgl_generation *g)
{
    pgl_pool *pool = g->owner;
    pgl_proxy *px = pool->px;
    cancel_renewal(g);
    if (g->lease_id != NULL && px->vault != NULL && px->conf->revoke_on_drain)
        revoke_lease(px, g->lease_id);
}

static const pgl_pool_creds_hooks hooks = {on_rejected, on_stale, on_retired};

/* ---- renewal -------------------------------------------------------------------------- */

static void on_renewed(void *arg, int rc, long duration, const char *err)
{
    pgl_generation *g = arg;
    pgl_pool *pool = g->owner;
    g->renew_op = NULL;
    uint64_t now = pgl_now_ms(pool->px);
    if (rc != 0) {
        pool->stats.creds.renewal_failures++;
        pgl_stats_vault_error(&pool->px->vault_stats, PGL_STATS_VAULT_RENEW, rc);
        /* The lease cannot be renewed (gone, or Vault down): its current end
         * is the real one. Rotation takes it from here. */
        pgl_log_warning(pool->name, "vault: renewing generation %llu failed: %s",
                        (unsigned long long)g->id, err ? err : "");
        pgl_generation_renew_failed(g, rotate_before(pool));
        return;
    }
    pool->stats.creds.renewals++;
    if (pgl_generation_renewed(g, now, duration, rotate_before(pool)))
        pgl_log_info(pool->name, "vault: generation %llu renewed for %lds: capped by max_ttl, "
                                 "rotating before it ends", (unsigned long long)g->id, duration);
    else
        pgl_log_debug(pool->name, "vault: generation %llu renewed for %lds",
                      (unsigned long long)g->id, duration);
}

/* ---- the tick ------------------------------------------------------------------------------ */

static void tick_pool(pgl_pool *pool, uint64_t now)
{
    pgl_proxy *px = pool->px;
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
            if (pgl_generation_nservers(g) == 0)
                pgl_pool_kick(pool);
        }
        pgl_generation_token_ends(g, pgl_vault_token_end_of(px->vault, g->token_id),
                                  rotate_before(pool));
        if (pgl_generation_renew_due(g, now))
            g->renew_op = pgl_vault_renew(px->vault, g->lease_id, g->lease_duration, on_renewed, g);
        pgl_pool_enforce(pool, g, now); /* may free g */
    }
    pgl_generation *active = pgl_pool_generation(pool);
    /* A removed database only drains what it has. */
    bool due = !pool->removed && (active == NULL || pgl_generation_rotation_due(active, now));
    if (due && !warming && pool->fetch_op == NULL && now >= pool->refetch_at) {
        /* A KV secret is read only when its version moved. */
        if (active != NULL && kv_pool(pool))
            poll_version(pool);
        else
            fetch(pool);
    }
    /* Nothing valid to serve with and Vault not delivering: clients wait
     * for the next credential, up to query_wait_timeout, and are then told
     * Vault's error (pgl_pool_wait_cause); a Vault that failed again and
     * again (down, misconfigured TLS, no permission) is not waited for. */
    if (active == NULL && pool->fetch_failures >= VAULT_GIVE_UP &&
        (!pgl_clist_empty(&pool->waiting) || !pgl_clist_empty(&pool->login_wait))) {
        char sqlstate[6], msg[400];
        if (pgl_pool_wait_cause(pool, sqlstate, msg, sizeof msg) != NULL)
            pgl_pool_fail_waiters(pool, sqlstate, msg);
    }
}

/* Until every Vault-backed database has had a credential pglease is not
 * ready; it says so once, and every 10 s says which database still waits
 * and why. */
#define NOT_READY_LOG_MS 10000

static void check_ready(pgl_proxy *px, uint64_t now)
{
    pgl_pool *waiting = NULL;
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (vault_pool(pool) && pgl_pool_generation(pool) == NULL && pool->next_gen_id == 0) {
            waiting = pool;
            break;
        }
    }
    if (waiting == NULL) {
        px->ready = true;
        pgl_log_info(NULL, "pglease ready: every database has an upstream credential");
        pgl_notify_ready();
        return;
    }
    if (now - px->not_ready_logged < NOT_READY_LOG_MS)
        return;
    px->not_ready_logged = now;
    pgl_log_warning(waiting->name, "not ready: no upstream credential yet: Vault: %s",
                    waiting->vault_error[0] ? waiting->vault_error : "no answer yet");
}

static void on_tick(uv_timer_t *t)
{
    pgl_proxy *px = t->data;
    /* Runs during a graceful shutdown too: leases must be renewed and
     * deadlines kept while the last transactions finish. */
    uint64_t now = pgl_now_ms(px);
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (vault_pool(pool))
            tick_pool(pool, now);
    }
    if (!px->ready)
        check_ready(px, now);
}

bool pgl_creds_gave_up(pgl_pool *pool)
{
    return pgl_pool_generation(pool) == NULL && pool->fetch_failures >= VAULT_GIVE_UP;
}

/* ---- the console's ROTATE -------------------------------------------------------------- */

int pgl_creds_rotate(pgl_pool *pool)
{
    if (!vault_pool(pool) || pool->px->vault == NULL)
        return -EINVAL;
    if (pool->fetch_op != NULL || has_warming(pool))
        return -EALREADY;
    pgl_log_info(pool->name, "vault: rotating now (admin console)");
    pool->refetch_at = 0;
    fetch(pool);
    return 0;
}

/* ---- setup and shutdown ------------------------------------------------------------------ */

static pgl_vault_auth_method vault_method(pgl_conf_vault_auth m)
{
    switch (m) {
    case PGL_CONF_VAULT_APPROLE: return PGL_VAULT_AUTH_APPROLE;
    case PGL_CONF_VAULT_TOKEN: return PGL_VAULT_AUTH_TOKEN;
    case PGL_CONF_VAULT_KUBERNETES: return PGL_VAULT_AUTH_KUBERNETES;
    case PGL_CONF_VAULT_JWT: return PGL_VAULT_AUTH_JWT;
    case PGL_CONF_VAULT_CERT: return PGL_VAULT_AUTH_CERT;
    }
    return PGL_VAULT_AUTH_APPROLE;
}

/* The Vault client's settings in `conf`. */
static void vault_config(const pgl_conf *conf, pgl_vault_config *cfg)
{
    const pgl_conf_vault *vc = &conf->vault;
    *cfg = (pgl_vault_config){
        .addr = vc->addr,
        .namespace = vc->namespace,
        .ca_cert = vc->ca_cert,
        .method = vault_method(vc->auth_method),
        .auth_mount = vc->auth_mount,
        /* Kept (pgl_secenv) for as long as pglease runs: a reload that
         * changes [vault] logs in again with it. */
        .token = pgl_secenv_get("VAULT_TOKEN"),
        .token_file = vc->token_file,
        .role_id = vc->role_id,
        .role_id_file = vc->role_id_file,
        .secret_id_file = vc->secret_id_file,
        .secret_id_wrapped = vc->secret_id_wrapped,
        .kubernetes_role = vc->kubernetes_role,
        .jwt_file = vc->jwt_file,
        .jwt_role = vc->jwt_role,
        .client_cert = vc->client_cert_file,
        .client_key = vc->client_key_file,
        .cert_role = vc->cert_role,
        .request_timeout_ms = (long)vc->request_timeout * 1000,
    };
}

void pgl_creds_attach(pgl_pool *pool)
{
    pool->creds = vault_pool(pool) ? &hooks : NULL;
}

/* The client becomes px->vault; the tick starts with the first one. */
static void use_vault(pgl_proxy *px, pgl_vault *v)
{
    /* The tick's timer is set up once; a reload's new client finds it. */
    bool first = px->creds_timer.loop == NULL;
    px->vault = v;
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        pgl_creds_attach(pgl_container_of(pos, pgl_pool, node));
    }
    pgl_vault_start(px->vault);
    if (first) {
        uv_timer_init(&px->main.uv, &px->creds_timer);
        px->creds_timer.data = px;
        uv_timer_start(&px->creds_timer, on_tick, 0, TICK_MS);
    }
}

int pgl_creds_init(pgl_proxy *px, char *err, size_t errlen)
{
    if (!px->conf->vault_needed)
        return 0;
    pgl_vault_config cfg;
    vault_config(px->conf, &cfg);
    pgl_vault *v;
    int rc = pgl_vault_new(&px->main.uv, &cfg, log_vault, px, &v, err, errlen);
    if (rc != 0)
        return rc;
    use_vault(px, v);
    return 0;
}

int pgl_creds_prepare(pgl_proxy *px, const pgl_conf *next, pgl_vault **out, char *err,
                      size_t errlen)
{
    pgl_vault_config cfg;
    vault_config(next, &cfg);
    return pgl_vault_new(&px->main.uv, &cfg, log_vault, px, out, err, errlen);
}

void pgl_creds_replace(pgl_proxy *px, pgl_vault *v)
{
    pgl_vault *old = px->vault;
    if (old != NULL) {
        /* What the old client had in flight is asked again of the new one
         * by the tick: reads now (below), renewals when due. */
        pgl_list *pos, *tmp, *gp, *gt;
        pgl_list_foreach(pos, tmp, &px->main.pools)
        {
            pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
            if (pool->fetch_op != NULL) {
                pgl_vault_cancel(pool->fetch_op);
                pool->fetch_op = NULL;
            }
            pgl_list_foreach(gp, gt, &pool->generations)
            {
                cancel_renewal(pgl_container_of(gp, pgl_generation, node));
            }
        }
        if (pgl_vault_pending(old) > 0)
            pgl_log_warning(NULL, "vault: %d request(s) of the previous Vault login dropped "
                                  "(revocations among them expire with their leases)",
                            pgl_vault_pending(old));
        pgl_vault_free(old);
        px->vault = NULL;
    }
    use_vault(px, v);
    /* Credentials of the old login live only as long as its token: every
     * Vault pool takes a credential of the new one, drained as a rotation. */
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (pool->creds != NULL && !pool->removed && pgl_pool_generation(pool) != NULL) {
            pool->refetch_at = 0;
            fetch(pool);
        }
    }
}

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
    px->creds_done(px);
}

void pgl_creds_shutdown(pgl_proxy *px, void (*done)(pgl_proxy *px))
{
    if (px->vault == NULL) {
        done(px);
        return;
    }
    uv_timer_stop(&px->creds_timer);
    pgl_list *pos, *tmp, *gp, *gt;
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (pool->fetch_op) {
            pgl_vault_cancel(pool->fetch_op);
            pool->fetch_op = NULL;
        }
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
            cancel_renewal(g);
            if (g->lease_id != NULL && px->conf->revoke_on_shutdown) {
                revoke_lease(px, g->lease_id);
                free(g->lease_id);
                g->lease_id = NULL;
            }
        }
    }
    px->creds_done = done;
    px->shutdown_deadline = pgl_now_ms(px);
    uv_timer_init(&px->main.uv, &px->stop_timer);
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
