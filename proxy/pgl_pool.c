/*
 * Pools: see pgl_pool.h.
 *
 * Rotation is make-before-break in transaction and statement mode: the
 * generation being left keeps serving while servers of the new one log in
 * (REPLACE_PARALLEL at a time, paced: see REPLACE_PACE_MS); each new server
 * retires one old server, at once when it is idle, else when its
 * transaction ends. Clients never wait for a burst of logins. Session mode closes the old idle servers at once:
 * a new session must not start on a credential that is going away.
 *
 * Upstream login failures back off exponentially (100 ms doubling to 10 s,
 * half of it random) so a wrong password or a down database never becomes
 * a connection storm. Clients waiting with no server at all wait out a
 * transient cause (Postgres full, restarting, unreachable for a moment) up
 * to query_wait_timeout and are then told it; a permanent one (unknown
 * database, a refused password) fails them at once. A permission error on
 * a live server of a Vault credential triggers a test login with it: the
 * credential may have been revoked behind the servers' back.
 */
#include "pgl_pool.h"

#include "pgl_client.h"
#include "pgl_creds.h"
#include "pgl_execcreds.h"
#include "pgl_filecreds.h"
#include "pgl_log.h"
#include "pgl_proxy.h"
#include "pgl_server.h"
#include "pgl_replica.h"
#include "pgl_upstream.h"
#include "pgl_worker.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
/* Logins replacing a retiring generation's servers at once; the pool may be
 * this many servers over its size while it rotates. */
#define REPLACE_PARALLEL 2
/* Replacement logins start at most this often. Each new server costs the
 * database host ~10-15 ms of its throughput on a 2-core host (fork, the
 * old backend's exit, cold caches; scripts/bench.py, rotation row,
 * measured in 100 ms bins): a pool of 20 replaced back to back (~0.4 s)
 * took a quarter of that second's transactions, one login every 200 ms
 * about a tenth of each second, one every 500 ms a few hundredths. A pool
 * of 20 then takes ~10 s to move, which the old credential's life allows
 * by far (rotation starts with a third of it left); less when the time
 * left to replace the old servers is short (see replace_pace). */
#define REPLACE_PACE_MS 500
#define MAKING_ROOM "making room for the new credential's first login"
#define RETIRING "its credential generation is retiring"

static int unreplaced(pgl_pool *pool);
static bool replace_paced(pgl_pool *pool, int old, uint64_t now);

uint64_t pgl_backoff_ceiling(uint64_t min_ms, uint64_t max_ms, int failures)
{
    uint64_t ceiling = min_ms;
    for (int i = 1; i < failures && ceiling < max_ms; i++)
        ceiling *= 2;
    return ceiling < max_ms ? ceiling : max_ms;
}

/* ---- settings, read through the current snapshot ------------------------------- */

const pgl_conf_database *pgl_pool_db(pgl_pool *pool)
{
    /* A removed database keeps the entry of the snapshot it was removed
     * from (kept_conf). */
    if (pool->db_conf != pool->px->conf && !pool->removed) {
        pool->db = pgl_conf_database_find_for(pool->px->conf, pool->dbname, pool->for_user);
        pool->db_conf = pool->px->conf;
        assert(pool->db != NULL); /* a reload that drops a database closes its pool first */
    }
    return pool->db;
}

int pgl_pool_size(pgl_pool *pool)
{
    return pgl_conf_database_pool_size(pool->px->conf, pgl_pool_db(pool));
}

int pgl_pool_min_size(pgl_pool *pool)
{
    const pgl_conf_database *db = pgl_pool_db(pool);
    return db->min_pool_size >= 0 ? db->min_pool_size : pool->px->conf->min_pool_size;
}

pgl_conf_pool_mode pgl_pool_mode(pgl_pool *pool)
{
    const pgl_conf_database *db = pgl_pool_db(pool);
    return db->pool_mode >= 0 ? (pgl_conf_pool_mode)db->pool_mode : pool->px->conf->pool_mode;
}

bool pgl_pool_replaces_in_place(pgl_pool *pool)
{
    return pgl_pool_mode(pool) != PGL_CONF_POOL_SESSION;
}

/* ---- generations ------------------------------------------------------------- */

#define server_at(pos) pgl_container_of(pos, pgl_server, node)
#define generation_at(pos) pgl_container_of(pos, pgl_generation, node)

pgl_generation *pgl_pool_add_generation(pgl_pool *pool, const char *user, const char *password,
                                        pgl_generation_state state)
{
    pgl_generation *g = pgl_generation_new(pool->next_gen_id + 1, user, password, state);
    if (g == NULL)
        return NULL;
    pool->next_gen_id++;
    g->log_ctx = pool->label;
    g->owner = pool;
    if (pool->creds != NULL)
        g->retired = pool->creds->retired;
    pgl_list_prepend(&pool->generations, &g->node);
    /* A new credential reaches the other loops now, not at the next round. */
    if (pool->lp->index == 0)
        pgl_replicas_soon(pool->px);
    return g;
}

pgl_generation *pgl_pool_generation(pgl_pool *pool)
{
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->generations)
    {
        if (generation_at(pos)->state == PGL_GEN_ACTIVE)
            return generation_at(pos);
    }
    return NULL;
}

/* Closes every server in `list` (each close takes it out of the list). */
static void close_all(pgl_clist *list, const char *why)
{
    pgl_list *p;
    while ((p = pgl_clist_first(list)) != NULL)
        pgl_server_close(server_at(p), why);
}

void pgl_pool_drop_dead_idle(pgl_pool *pool)
{
    pgl_list *gp = pool->generations.next;
    while (gp != &pool->generations) {
        pgl_generation *g = generation_at(gp);
        /* A close may kick the pool, which hands idle servers out: scan
         * afresh after each. The hold keeps `g` while its last goes. */
        pgl_generation_hold(g);
        bool again = true;
        while (again) {
            again = false;
            pgl_list *pos, *tmp;
            pgl_clist_foreach(pos, tmp, &g->idle)
            {
                pgl_server *s = server_at(pos);
                if (pgl_conn_input_waiting(&s->conn)) {
                    pgl_server_close(s, "an idle server said something or closed while its "
                                        "Postgres was terminating connections");
                    again = true;
                    break;
                }
            }
        }
        gp = gp->next;
        pgl_generation_unhold(g);
    }
}

/* Starts retiring `g` (draining or dead): its logins in progress are of no
 * use, and its idle servers close unless they serve on until replaced. */
static void drain(pgl_pool *pool, pgl_generation *g)
{
    pgl_generation_hold(g);
    if (g->state == PGL_GEN_DEAD || g->hurry || !pgl_pool_replaces_in_place(pool))
        close_all(&g->idle, RETIRING);
    close_all(&g->login, RETIRING);
    pgl_generation_unhold(g);
}

void pgl_pool_generation_drain(pgl_pool *pool, pgl_generation *g)
{
    if (g->state != PGL_GEN_ACTIVE && g->state != PGL_GEN_WARMING)
        return;
    pgl_generation_set_state(g, PGL_GEN_DRAINING, pgl_now_ms(pool->px));
    drain(pool, g);
}

/* A warming generation's first login succeeded: it takes over. */
static void takeover(pgl_pool *pool, pgl_generation *gen)
{
    uint64_t now = pgl_now_ms(pool->px);
    pgl_generation_set_state(gen, PGL_GEN_ACTIVE, now);
    pgl_log_info(pool->label, "generation %llu (user %s) takes over", (unsigned long long)gen->id,
                 gen->user);
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->generations)
    {
        pgl_generation *g = generation_at(pos);
        if (g == gen || g->state != PGL_GEN_ACTIVE)
            continue;
        pgl_generation_set_state(g, PGL_GEN_DRAINING, now);
        drain(pool, g);
    }
    /* The proving login was the first replacement (and the credential's
     * fetch just cost the database a statement): the next one waits its
     * pace rather than land in the same moment. */
    int old = unreplaced(pool);
    if (old > 0)
        (void)replace_paced(pool, old, now);
}

void pgl_pool_warm(pgl_pool *pool, pgl_generation *gen)
{
    int n = pgl_pool_min_size(pool) > 0 && pool->lp->index == 0 ? pgl_pool_min_size(pool) : 1;
    for (int i = 0; i < n; i++) {
        if (pgl_server_connect(pool, gen) != 0) {
            pgl_log_error(pool->label, "cannot start an upstream login");
            return;
        }
    }
}

/* Servers of draining generations no server of the active one replaced yet. */
static int unreplaced(pgl_pool *pool)
{
    if (!pgl_pool_replaces_in_place(pool))
        return 0;
    int n = 0;
    for (pgl_list *p = pool->generations.next; p != &pool->generations; p = p->next)
        n += pgl_generation_unreplaced(generation_at(p));
    return n;
}

bool pgl_pool_retire_one(pgl_pool *pool)
{
    if (!pgl_pool_replaces_in_place(pool))
        return false;
    /* The oldest generation first: its credential ends first. */
    for (pgl_list *p = pool->generations.prev; p != &pool->generations; p = p->prev) {
        pgl_generation *g = generation_at(p);
        if (pgl_generation_unreplaced(g) <= 0)
            continue;
        pgl_list *idle = pgl_clist_last(&g->idle);
        if (idle != NULL)
            pgl_server_close(server_at(idle), "replaced by a server with the new credential");
        else
            g->replaced++; /* the next of its servers to finish a transaction */
        return true;
    }
    return false;
}

/* Postgres had no connection slot (max_connections, a database's
 * CONNECTION LIMIT) for a login with a newer generation: an older server
 * makes room, break-before-make, one server at a time. */
static bool make_room(pgl_pool *pool, pgl_generation *gen)
{
    if (gen->state == PGL_GEN_ACTIVE)
        return pgl_pool_retire_one(pool);
    pgl_generation *active = pgl_pool_generation(pool);
    if (gen->state != PGL_GEN_WARMING || active == NULL || pool->px->shutting_down)
        return false;
    /* The first login of a new credential: the least recently used idle
     * server of the current one goes now, else the next one released. The
     * retry after the backoff goes before logins for waiting clients. */
    pgl_list *lru = pgl_clist_last(&active->idle);
    if (lru != NULL)
        pgl_server_close(server_at(lru), MAKING_ROOM);
    else
        pool->room_wanted = true;
    return true;
}

const char *pgl_pool_server_released(pgl_pool *pool, pgl_server *s)
{
    if (s->id <= pool->reconnect_upto)
        return "RECONNECT on the admin console";
    if (pool->removed)
        return "its database was removed from the configuration";
    if (s->gen->state == PGL_GEN_ACTIVE) {
        if (!pool->room_wanted)
            return NULL;
        pool->room_wanted = false;
        return MAKING_ROOM;
    }
    return pgl_generation_released(s->gen, pgl_pool_replaces_in_place(pool));
}

/* Past the deadline or drain_timeout: every server of `g` goes now, and a
 * client in the middle of something with one is told why. */
static void cut(pgl_generation *g, bool deadline)
{
    const char *client_msg = deadline ? "terminating connection: its upstream credential "
                                        "expires (credentials rotated, please reconnect)"
                                      : "terminating connection: drain_timeout reached "
                                        "after a credential rotation, please reconnect";
    const char *why = deadline ? "credential deadline reached" : "drain_timeout reached";
    pgl_generation_hold(g);
    pgl_clist *const lists[] = {&g->busy, &g->idle, &g->login};
    for (size_t i = 0; i < 3; i++) {
        pgl_list *p;
        while ((p = pgl_clist_first(lists[i])) != NULL) {
            pgl_server *s = server_at(p);
            if (s->link != NULL)
                pgl_client_fail(s->link, "FATAL", "57P01", "%s", client_msg);
            /* The client's close may have given the server back instead. */
            pgl_server_close(s, why);
        }
    }
    pgl_generation_unhold(g);
}

/* Clients that keep a server of an old generation (session mode, or pinned
 * in transaction mode), shortly before its deadline: each is closed at its
 * next idle point with a clear reason. */
static void ask_sessions_to_reconnect(pgl_generation *g)
{
    /* Closing a client closes its server, maybe the generation's last. */
    pgl_generation_hold(g);
    bool again = true;
    while (again) {
        again = false;
        pgl_list *pos, *tmp;
        pgl_clist_foreach(pos, tmp, &g->busy)
        {
            pgl_server *s = server_at(pos);
            if (pgl_server_between_transactions(s)) {
                pgl_client_doom(s->link,
                                "terminating connection: credentials rotated, please reconnect");
                again = true; /* the list changed: scan afresh */
                break;
            }
        }
    }
    pgl_generation_unhold(g);
}

void pgl_pool_enforce(pgl_pool *pool, pgl_generation *g, uint64_t now)
{
    const pgl_conf *conf = pool->px->conf;
    pgl_generation_state was = g->state;
    switch (pgl_generation_check(g, now, conf->drain_timeout)) {
    case PGL_GEN_DUE_NOTHING:
        return;
    case PGL_GEN_DUE_DEADLINE:
        if (was == PGL_GEN_ACTIVE)
            pgl_log_error(pool->label, "generation %llu reached its deadline without a successor",
                          (unsigned long long)g->id);
        cut(g, true);
        return;
    case PGL_GEN_DUE_DRAIN_OVER:
        cut(g, false);
        return;
    case PGL_GEN_DUE_HURRY:
        drain(pool, g);
        return;
    case PGL_GEN_DUE_RECONNECT:
        ask_sessions_to_reconnect(g);
        return;
    }
}

bool pgl_pool_enforce_all(pgl_pool *pool, uint64_t now)
{
    bool warming = false;
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->generations)
    {
        pgl_generation *g = generation_at(pos);
        warming |= g->state == PGL_GEN_WARMING;
        pgl_pool_enforce(pool, g, now); /* may free g */
    }
    return warming;
}

void pgl_pool_fail_waiters(pgl_pool *pool, const char *sqlstate, const char *message)
{
    snprintf(pool->fail_sqlstate, sizeof pool->fail_sqlstate, "%s", sqlstate);
    snprintf(pool->fail_message, sizeof pool->fail_message, "%s", message);
    /* Each call moves the client out of its list (logged in, or closed). */
    pgl_list *p;
    while ((p = pgl_clist_first(&pool->login_wait)) != NULL)
        pgl_client_login_ready(pgl_container_of(p, pgl_client, pool_node));
    while ((p = pgl_clist_first(&pool->waiting)) != NULL)
        pgl_client_fail(pgl_container_of(p, pgl_client, pool_node), "FATAL", sqlstate,
                        "pglease cannot serve database \"%s\": %s", pool->dbname, message);
}

/* ---- pools --------------------------------------------------------------------- */

static void pool_free(pgl_pool *pool);

static pgl_pool *pool_create(pgl_loop *lp, const pgl_conf_database *db, pgl_pool_shared *shared)
{
    pgl_proxy *px = lp->px;
    pgl_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return NULL;
    if (shared == NULL && (shared = calloc(1, sizeof *shared)) == NULL) {
        free(pool);
        return NULL;
    }
    atomic_fetch_add(&shared->refs, 1);
    pool->shared = shared;
    /* A user's pool is "<database>/<user>" wherever pools are named (logs,
     * the console, /metrics). */
    int rc = db->for_user != NULL ? asprintf(&pool->name, "%s/%s", db->name, db->for_user)
                                  : ((pool->name = strdup(db->name)) != NULL ? 0 : -1);
    pool->dbname = strdup(db->name);
    pool->for_user = db->for_user != NULL ? strdup(db->for_user) : NULL;
    if (rc < 0 || pool->dbname == NULL || (db->for_user != NULL && pool->for_user == NULL)) {
        if (rc < 0)
            pool->name = NULL;
        free(pool->name);
        free(pool->dbname);
        free(pool->for_user);
        if (atomic_fetch_sub(&shared->refs, 1) == 1)
            free(shared);
        free(pool);
        return NULL;
    }
    pool->px = px;
    pool->lp = lp;
    if (lp->index == 0)
        pool->label = pool->name;
    else if (asprintf(&pool->label, "%s@w%d", pool->name, lp->index) < 0)
        pool->label = pool->name; /* a name for the log is no reason to fail */
    pgl_list_init(&pool->generations);
    pgl_clist_init(&pool->login_wait);
    pgl_clist_init(&pool->idle);
    pgl_clist_init(&pool->waiting);
    pgl_clist_init(&pool->active);
    pgl_list_append(&lp->pools, &pool->node);
    if (lp->index > 0) {
        /* A replica: its generations are copies of its primary's
         * (pgl_replica.c), and no credential source of its own runs. */
        pgl_replica_attach(pool);
        return pool;
    }
    if ((db->creds_kind == PGL_CONF_CREDS_CONNINFO &&
         pgl_pool_add_generation(pool, pgl_conf_database_param(db, "user"),
                                 pgl_conf_database_param(db, "password"),
                                 PGL_GEN_ACTIVE) == NULL) ||
        (db->creds_kind == PGL_CONF_CREDS_FILE && pgl_filecreds_start(pool) != 0) ||
        (db->creds_kind == PGL_CONF_CREDS_EXEC && pgl_execcreds_start(pool) != 0)) {
        pool_free(pool);
        return NULL;
    }
    return pool;
}

pgl_pool *pgl_pool_add_on(pgl_loop *lp, const pgl_conf_database *db, pgl_pool_shared *shared)
{
    pgl_pool *pool = pool_create(lp, db, shared);
    if (pool != NULL && lp->index == 0)
        pgl_creds_attach(pool);
    return pool;
}

pgl_pool *pgl_pool_add(pgl_proxy *px, const pgl_conf_database *db)
{
    pgl_pool *pool = pgl_pool_add_on(&px->main, db, NULL);
    if (pool == NULL)
        return NULL;
    /* Its replicas, on the loops that lack one (a first login there may
     * have made it already). */
    pgl_workers_park(px);
    for (int i = 1; i < px->nloops; i++) {
        pgl_pool *r = pgl_pool_find_entry(px->loops[i], db);
        if (r == NULL)
            r = pgl_pool_add_on(px->loops[i], db, pool->shared);
        else
            pgl_pool_share(r, pool->shared);
        if (r == NULL)
            pgl_log_error(pool->label, "out of memory: worker %d cannot serve it", i);
    }
    pgl_workers_unpark(px);
    return pool;
}

int pgl_pools_init(pgl_proxy *px)
{
    /* Pools of [users] entries open at their user's first login. */
    for (size_t i = 0; i < px->conf->ndatabases; i++) {
        if (pgl_pool_add(px, &px->conf->databases[i]) == NULL)
            return -1;
    }
    return 0;
}

void pgl_pool_share(pgl_pool *replica, pgl_pool_shared *shared)
{
    if (replica->shared == shared)
        return;
    /* A replica opened by a first login on its own loop has no server yet
     * (its generations come from the primary). */
    atomic_fetch_add(&shared->servers, replica->nservers);
    atomic_fetch_sub(&replica->shared->servers, replica->nservers);
    if (atomic_fetch_sub(&replica->shared->refs, 1) == 1)
        free(replica->shared);
    atomic_fetch_add(&shared->refs, 1);
    replica->shared = shared;
}

bool pgl_pool_close_idle(pgl_pool *pool, const char *why)
{
    for (pgl_list *p = pool->generations.prev; p != &pool->generations; p = p->prev) {
        pgl_list *lru = pgl_clist_last(&generation_at(p)->idle);
        if (lru != NULL) {
            pgl_server_close(server_at(lru), why);
            return true;
        }
    }
    return false;
}

void pgl_pool_count_server(pgl_pool *pool, int delta)
{
    pool->nservers += delta;
    atomic_fetch_add_explicit(&pool->shared->servers, delta, memory_order_relaxed);
}

static void close_servers_of(pgl_pool *pool)
{
    {
        if (pool->verify_up != NULL) {
            pgl_upstream_abort(pool->verify_up);
            pool->verify_up = NULL;
            pgl_generation_unhold(pool->verify_gen);
            pool->verify_gen = NULL;
        }
        pgl_list *gp, *gt;
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            /* Closing sends Terminate (PQfinish); the structs go to the
             * reaper. A retiring generation goes with its last server. */
            pgl_generation *g = generation_at(gp);
            pgl_generation_hold(g);
            close_all(&g->busy, "pglease is shutting down");
            close_all(&g->idle, "pglease is shutting down");
            close_all(&g->login, "pglease is shutting down");
            pgl_generation_unhold(g);
        }
    }
}

/* Frees a pool whose servers are all closed. */
static void pool_free(pgl_pool *pool)
{
    pgl_filecreds_stop(pool);
    pgl_execcreds_stop(pool);
    pgl_list_remove(&pool->node);
    while (!pgl_list_empty(&pool->generations))
        pgl_generation_free(generation_at(pool->generations.next));
    for (size_t i = 0; i < pool->nparams; i++) {
        free(pool->params[i].name);
        free(pool->params[i].value);
    }
    free(pool->params);
    pgl_varcache_clear(&pool->defaults);
    /* Every client and server let go of its statements when it closed. */
    tdestroy(pool->stmts.root, free);
    if (pool->kept_conf != NULL)
        pgl_conf_ref_drop(pool->kept_conf);
    if (atomic_fetch_sub(&pool->shared->refs, 1) == 1)
        free(pool->shared);
    if (pool->label != pool->name)
        free(pool->label);
    free(pool->name);
    free(pool->dbname);
    free(pool->for_user);
    free(pool);
}

void pgl_pools_each(pgl_proxy *px, void (*fn)(pgl_pool *pool))
{
    pgl_workers_park(px);
    pgl_loop *lp;
    PGL_FOREACH_LOOP(px, lp)
    {
        pgl_list *pos, *tmp;
        pgl_list_foreach(pos, tmp, &lp->pools)
        {
            fn(pgl_container_of(pos, pgl_pool, node));
        }
    }
    pgl_workers_unpark(px);
}

void pgl_pools_close_servers(pgl_proxy *px)
{
    pgl_pools_each(px, close_servers_of);
}

void pgl_pools_free_loop(pgl_loop *lp)
{
    /* Servers first: they point at their generation. Vault requests were
     * cancelled by pgl_creds_shutdown (or never started). */
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &lp->pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        close_servers_of(pool);
        pool_free(pool);
    }
    pgl_list_init(&lp->pools);
}

/* ---- reload ------------------------------------------------------------------------ */

static const char *removed_why(const pgl_pool *pool)
{
    return pool->for_user != NULL ? PGL_CLIENT_USER_REMOVED : PGL_CLIENT_DB_REMOVED;
}

/* Clients of a removed database that wait for something are told now. */
static void tell_removed(pgl_pool *pool, pgl_clist *list)
{
    pgl_list *p;
    while ((p = pgl_clist_first(list)) != NULL)
        pgl_client_fail(pgl_container_of(p, pgl_client, pool_node), "FATAL", "57P01", "%s",
                        removed_why(pool));
}

/* Idle ones at their next message (pgl_client_doom). */
static void doom_idle(pgl_pool *pool)
{
    pgl_list *pos, *tmp;
    pgl_clist_foreach(pos, tmp, &pool->idle)
    {
        pgl_container_of(pos, pgl_client, pool_node)->doomed = removed_why(pool);
    }
}

void pgl_pool_remove(pgl_pool *pool, pgl_conf_ref *kept)
{
    (void)pgl_pool_db(pool); /* resolved in the snapshot `kept` holds */
    pgl_filecreds_stop(pool); /* no new credential for what drains */
    pgl_execcreds_stop(pool);
    pool->removed = true;
    pool->removed_at = pgl_now_ms(pool->px);
    pool->kept_conf = kept;
    kept->refs++;
    pgl_log_info(pool->label, "removed from the configuration: %zu client(s) between "
                             "transactions are told at their next message, %zu finish their "
                             "transaction first",
                 pgl_clist_count(&pool->idle) + pgl_clist_count(&pool->waiting) +
                     pgl_clist_count(&pool->login_wait),
                 pgl_clist_count(&pool->active));
    doom_idle(pool);
    tell_removed(pool, &pool->waiting);
    tell_removed(pool, &pool->login_wait);
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->generations)
    {
        pgl_generation *g = generation_at(pos);
        if (g->state == PGL_GEN_ACTIVE || g->state == PGL_GEN_WARMING)
            pgl_generation_set_state(g, PGL_GEN_DRAINING, pool->removed_at);
        /* Nothing will replace them: idle servers and logins go now. */
        pgl_generation_hold(g);
        close_all(&g->idle, "its database was removed from the configuration");
        close_all(&g->login, "its database was removed from the configuration");
        pgl_generation_unhold(g); /* may free g */
    }
}

/* The janitor's part for a removed pool: cut what outlived drain_timeout,
 * free the pool once nothing is left. true when it was freed. */
static bool removed_upkeep(pgl_pool *pool, uint64_t now)
{
    const pgl_conf *conf = pool->px->conf;
    /* Clients that were logging in when it went. */
    doom_idle(pool);
    tell_removed(pool, &pool->waiting);
    tell_removed(pool, &pool->login_wait);
    /* After drain_timeout, whoever is left goes now: the pool can only be
     * freed without clients. */
    if (conf->drain_timeout > 0 && now - pool->removed_at >= (uint64_t)conf->drain_timeout * 1000) {
        tell_removed(pool, &pool->active);
        tell_removed(pool, &pool->idle);
    }
    if (!pgl_clist_empty(&pool->active) || !pgl_clist_empty(&pool->idle) || pool->nservers > 0 ||
        pool->fetch_op != NULL || pool->verify_up != NULL)
        return false;
    /* A lease whose copies still serve on a worker is revoked after them. */
    for (pgl_list *p = pool->generations.next; p != &pool->generations; p = p->next)
        if (generation_at(p)->replica_hold)
            return false;
    pgl_log_info(pool->label, "removed database drained: pool closed");
    pool_free(pool);
    return true;
}

static bool same_credential(const pgl_generation *g, const char *user, const char *password)
{
    return g != NULL && g->user != NULL && strcmp(g->user, user) == 0 && g->password != NULL &&
           strcmp(g->password, password) == 0;
}

void pgl_pool_offer_credential(pgl_pool *pool, const char *user, const char *password,
                               long duration_s, const char *source)
{
    pgl_generation *current = pgl_pool_generation(pool);
    pgl_generation *newest = pgl_list_empty(&pool->generations)
                                 ? NULL
                                 : generation_at(pool->generations.next);
    if (same_credential(current, user, password) ||
        (newest != NULL && newest->state == PGL_GEN_WARMING &&
         same_credential(newest, user, password)))
        return;
    pgl_generation *g = pgl_pool_add_generation(pool, user, password,
                                                current != NULL ? PGL_GEN_WARMING
                                                                : PGL_GEN_ACTIVE);
    if (g == NULL) {
        pgl_log_error(pool->label, "%s: out of memory for a new generation", source);
        return;
    }
    if (duration_s > 0)
        pgl_generation_issued(g, pgl_now_ms(pool->px), duration_s, false, false, 0,
                              pool->px->conf->rotate_before);
    pool->stats.creds.fetched++;
    if (current != NULL)
        pool->stats.creds.rotations++;
    pgl_log_info(pool->label, "%s: generation %llu: user %s%s", source,
                 (unsigned long long)g->id, g->user, duration_s > 0 ? ", expires" : "");
    if (g->state == PGL_GEN_WARMING)
        pgl_pool_warm(pool, g);
    else
        pgl_pool_kick(pool);
}

void pgl_pool_new_upstream(pgl_pool *pool)
{
    const pgl_conf_database *db = pgl_pool_db(pool);
    if (db->creds_kind == PGL_CONF_CREDS_FILE || db->creds_kind == PGL_CONF_CREDS_EXEC ||
        pool->filecreds != NULL || pool->execcreds != NULL) {
        /* Another file or helper (or none any more): its credential is a
         * generation like any other new one. */
        pgl_filecreds_stop(pool);
        pgl_execcreds_stop(pool);
        int rc = db->creds_kind == PGL_CONF_CREDS_FILE   ? pgl_filecreds_start(pool)
                 : db->creds_kind == PGL_CONF_CREDS_EXEC ? pgl_execcreds_start(pool)
                                                         : 0;
        if (rc != 0)
            pgl_log_error(pool->label, "out of memory following the new credential source");
        if (db->creds_kind == PGL_CONF_CREDS_FILE || db->creds_kind == PGL_CONF_CREDS_EXEC)
            return;
    }
    if (db->creds_kind != PGL_CONF_CREDS_CONNINFO)
        return; /* Vault pools fetch a credential from the new path (pgl_reload.c) */
    pgl_generation *current = pgl_pool_generation(pool);
    pgl_generation *g = pgl_pool_add_generation(pool, pgl_conf_database_param(db, "user"),
                                                pgl_conf_database_param(db, "password"),
                                                current != NULL ? PGL_GEN_WARMING
                                                                : PGL_GEN_ACTIVE);
    if (g == NULL) {
        pgl_log_error(pool->label, "out of memory starting a generation for the new upstream");
        return;
    }
    pgl_log_info(pool->label, "upstream changed by a reload: generation %llu replaces the "
                             "current servers as they finish their transactions",
                 (unsigned long long)g->id);
    if (g->state == PGL_GEN_WARMING)
        pgl_pool_warm(pool, g);
    else
        pgl_pool_kick(pool);
}

pgl_pool *pgl_pool_find(pgl_proxy *px, const char *name)
{
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (!pool->removed && strcmp(pool->name, name) == 0)
            return pool;
    }
    return NULL;
}

pgl_pool *pgl_pool_find_entry(pgl_loop *lp, const pgl_conf_database *db)
{
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &lp->pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (!pool->removed && strcmp(pool->dbname, db->name) == 0 &&
            (pool->for_user == NULL) == (db->for_user == NULL) &&
            (pool->for_user == NULL || strcmp(pool->for_user, db->for_user) == 0))
            return pool;
    }
    return NULL;
}

pgl_pool *pgl_pool_for_login(pgl_loop *lp, const char *database, const char *user, int *err)
{
    pgl_proxy *px = lp->px;
    *err = 0;
    const pgl_conf_database *db = pgl_conf_database_for(px->conf, database, user);
    if (db == NULL)
        return NULL;
    pgl_pool *pool = pgl_pool_find_entry(lp, db);
    if (pool != NULL || db->for_user == NULL)
        return pool;
    /* On a worker loop: its replica now, the primary (and the other
     * replicas) from the main loop; the credential follows. */
    pool = lp->index == 0 ? pgl_pool_add(px, db) : pgl_pool_add_on(lp, db, NULL);
    if (pool == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    if (lp->index > 0)
        pgl_replica_open_primary(pool);
    pgl_log_info(pool->label, "pool opened for user %s's first login (its [users] entry)", user);
    pgl_pool_kick(pool);
    return pool;
}

/* Clients a login would serve: those queued for a server, and the first
 * client waiting for the pool's ParameterStatus set. */
static int clients_waiting(const pgl_pool *pool)
{
    return (int)pgl_clist_count(&pool->waiting) + (pgl_clist_empty(&pool->login_wait) ? 0 : 1);
}

/* Logins in progress, every generation. */
static int logins(pgl_pool *pool)
{
    int n = 0;
    for (pgl_list *p = pool->generations.next; p != &pool->generations; p = p->next)
        n += (int)pgl_clist_count(&generation_at(p)->login);
    return n;
}

static void on_replace_due(uv_timer_t *t)
{
    pgl_loop *lp = t->data;
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &lp->pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (!pool->removed)
            pgl_pool_kick(pool);
    }
}

/* Kicks the loop's pools at `when`: a busy pool is kicked by its clients
 * anyway, an idle one has nothing else to start its next replacement
 * login. */
static void wake_at(pgl_loop *lp, uint64_t when)
{
    if (uv_is_active((uv_handle_t *)&lp->replace_timer) && lp->replace_wake <= when)
        return;
    uint64_t now = pgl_now_ms(lp->px);
    lp->replace_wake = when;
    lp->replace_timer.data = lp;
    uv_timer_start(&lp->replace_timer, on_replace_due, when > now ? when - now : 0, 0);
}

/* The gap before the next replacement login: REPLACE_PACE_MS, less when the
 * `old` servers left would not be replaced within three quarters of the
 * time until the first retiring generation stops serving them (a short
 * lease or drain_timeout), 0 once that time has come. Worked out again at
 * every login, so logins slower than planned catch up. */
static uint64_t replace_pace(pgl_pool *pool, int old, uint64_t now)
{
    uint64_t pace = REPLACE_PACE_MS;
    for (pgl_list *p = pool->generations.next; p != &pool->generations; p = p->next) {
        pgl_generation *g = generation_at(p);
        if (pgl_generation_unreplaced(g) <= 0)
            continue;
        uint64_t stop = pgl_generation_stop_serving(g, pool->px->conf->drain_timeout);
        if (stop == UINT64_MAX)
            continue;
        if (stop <= now)
            return 0;
        uint64_t fair = (stop - now) * 3 / 4 / (uint64_t)old;
        if (fair < pace)
            pace = fair;
    }
    return pace;
}

/* Whether a login replacing a retiring server may start now; if not, the
 * pool is kicked when one may. */
static bool replace_due(pgl_pool *pool, uint64_t now)
{
    if (now >= pool->replace_after)
        return true;
    wake_at(pool->lp, pool->replace_after);
    return false;
}

/* A replacement login started: the next one waits its pace. True when it
 * has to (the caller starts no more now). */
static bool replace_paced(pgl_pool *pool, int old, uint64_t now)
{
    uint64_t pace = replace_pace(pool, old, now);
    if (pace == 0)
        return false;
    pool->replace_after = now + pace;
    wake_at(pool->lp, pool->replace_after);
    return true;
}

/* Opens servers for `wanted` waiting clients and for the replacement of a
 * retiring generation, if the pool may. */
static void maybe_connect(pgl_pool *pool, int wanted)
{
    pgl_proxy *px = pool->px;
    if (px->shutting_down || pgl_now_ms(px) < pool->retry_after)
        return;
    /* A new credential whose first login failed (no connection slot, server
     * down) tries again first: it may need the slot an old server just
     * gave up. */
    for (pgl_list *p = pool->generations.next; p != &pool->generations; p = p->next) {
        pgl_generation *g = generation_at(p);
        if (g->state == PGL_GEN_WARMING && pgl_generation_nservers(g) == 0 &&
            pgl_server_connect(pool, g) != 0)
            return;
    }
    int old = unreplaced(pool);
    pgl_generation *gen = pgl_pool_generation(pool);
    if ((wanted <= 0 && old <= 0) || gen == NULL)
        return;
    int connecting = logins(pool);
    int limit = pgl_pool_size(pool);
    uint64_t now = pgl_now_ms(px);
    if (old > 0 && replace_due(pool, now)) {
        int replacing = old < REPLACE_PARALLEL ? old : REPLACE_PARALLEL;
        if (wanted < replacing)
            wanted = replacing;
        limit += REPLACE_PARALLEL;
    }
    /* Do not open more than the clients waiting need, nor past the size,
     * which bounds the servers of every loop's copy of the pool together. */
    while (connecting < wanted) {
        int servers = atomic_load_explicit(&pool->shared->servers, memory_order_relaxed);
        if (servers >= limit) {
            /* Full with servers of other loops: one of their idle ones
             * makes room (pgl_replica.c). */
            if (pool->px->nloops_running > 1 && connecting < clients_waiting(pool))
                pgl_replica_want_slot(pool);
            return;
        }
        bool replacement = servers >= pgl_pool_size(pool);
        if (pgl_server_connect(pool, gen) != 0) {
            pgl_log_error(pool->label, "cannot start an upstream login");
            return;
        }
        connecting++;
        if (replacement && replace_paced(pool, old, now))
            return;
    }
}

/* The idle server to hand out next: the active generation's most recently
 * used first, then those of generations serving on until replaced. */
static pgl_server *next_idle(pgl_pool *pool)
{
    for (pgl_list *p = pool->generations.next; p != &pool->generations; p = p->next) {
        pgl_generation *g = generation_at(p);
        if (g->state != PGL_GEN_WARMING && !pgl_clist_empty(&g->idle))
            return server_at(pgl_clist_first(&g->idle));
    }
    return NULL;
}

/* Assigning moves both out of their lists. */
void pgl_pool_serve(pgl_pool *pool)
{
    pgl_server *s;
    while (!pgl_clist_empty(&pool->waiting) && !pool->px->paused && !pool->paused &&
           (s = next_idle(pool)) != NULL) {
        pgl_client *c = pgl_container_of(pgl_clist_first(&pool->waiting), pgl_client, pool_node);
        pgl_server_assign(s, c);
    }
}

void pgl_pool_kick(pgl_pool *pool)
{
    pgl_pool_serve(pool);
    if (pool->paused)
        return; /* console PAUSE/KILL: nothing new opens either */
    maybe_connect(pool, clients_waiting(pool));
}

/* The first login of a pool tells what every client of it will be told:
 * server_version, encodings, DateStyle... */
typedef const char *(*param_source)(const void *from, const char *name);

static const char *from_server(const void *from, const char *name)
{
    return PQparameterStatus(from, name);
}

static const char *from_pool(const void *from, const char *name)
{
    const pgl_pool *pool = from;
    for (size_t i = 0; i < pool->nparams; i++)
        if (strcmp(pool->params[i].name, name) == 0)
            return pool->params[i].value;
    return NULL;
}

/* The reported parameters `get` knows become the pool's; the clients that
 * waited for them log in. */
static void learn_params(pgl_pool *pool, param_source get, const void *from)
{
    size_t n = 0;
    for (const char *const *p = pgl_upstream_report_params; *p; p++)
        n += get(from, *p) != NULL;
    pool->params = calloc(n ? n : 1, sizeof *pool->params);
    if (pool->params == NULL)
        return;
    for (const char *const *p = pgl_upstream_report_params; *p; p++) {
        const char *v = get(from, *p);
        if (v == NULL)
            continue;
        pgl_param *pp = &pool->params[pool->nparams];
        pp->name = strdup(*p);
        pp->value = strdup(v);
        int var = pgl_varcache_lookup(*p);
        if (pp->name == NULL || pp->value == NULL ||
            (var >= 0 && pgl_varcache_set(&pool->defaults, (pgl_var)var, v, strlen(v)) != 0)) {
            free(pp->name);
            free(pp->value);
            continue;
        }
        pool->nparams++;
    }
    pgl_list *p;
    while ((p = pgl_clist_first(&pool->login_wait)) != NULL)
        pgl_client_login_ready(pgl_container_of(p, pgl_client, pool_node));
}

void pgl_pool_copy_params(pgl_pool *to, const pgl_pool *from)
{
    if (to->params == NULL && from->params != NULL)
        learn_params(to, from_pool, from);
}

void pgl_pool_login_succeeded(pgl_pool *pool, pgl_generation *gen, PGconn *pg)
{
    if (gen->state == PGL_GEN_WARMING)
        takeover(pool, gen);
    pool->room_wanted = false;
    pool->consecutive_failures = 0;
    pool->retry_after = 0;
    pool->fail_sqlstate[0] = pool->fail_message[0] = '\0';
    if (pool->params == NULL)
        learn_params(pool, from_server, pg);
}

/* A Vault credential Postgres rejects (lease revoked early, role dropped)
 * is replaced at once; clients keep waiting for the next one. */
static bool credential_rejected(pgl_pool *pool, pgl_generation *gen, const char *sqlstate,
                                const char *how)
{
    if (pool->creds == NULL || strncmp(sqlstate, "28", 2) != 0)
        return false;
    if (gen->state == PGL_GEN_DEAD)
        return true;
    pgl_log_warning(pool->label,
                    "generation %llu (user %s) no longer works: %s was rejected (%s); retiring "
                    "its servers and fetching a new credential now",
                    (unsigned long long)gen->id, gen->user, how, sqlstate);
    pgl_pool_generation_refused(pool, gen);
    return true;
}

void pgl_pool_generation_refused(pgl_pool *pool, pgl_generation *gen)
{
    if (pool->lp->index == 0)
        pgl_replicas_soon(pool->px);
    bool was_warming = gen->state == PGL_GEN_WARMING;
    pgl_generation_set_state(gen, PGL_GEN_DEAD, pgl_now_ms(pool->px));
    if (pool->creds != NULL) /* a copy of a file or helper credential: nothing to fetch */
        pool->creds->rejected(pool, gen, was_warming);
    /* Draining may close its last server and free it: held across both. */
    pgl_generation_hold(gen);
    drain(pool, gen);
    /* Clients that keep one of its servers (session mode, pinned) would
     * fail statement after statement: they are asked to reconnect. */
    ask_sessions_to_reconnect(gen);
    pgl_generation_unhold(gen);
}

/* A static role's (or KV secret's) login refused while its generation is
 * current: the password changed before the ttl said (a forced
 * rotate-role), or before the KV secret was written. The
 * generation keeps serving with the servers it has, new logins back off
 * while the new password is read (pgl_creds.c), then it drains as in a
 * scheduled rotation. */
static bool static_password_changed(pgl_pool *pool, pgl_generation *gen, const char *sqlstate)
{
    if (pool->creds == NULL || !gen->is_static || gen->state != PGL_GEN_ACTIVE ||
        strncmp(sqlstate, "28", 2) != 0)
        return false;
    pgl_log_warning(pool->label,
                    "generation %llu (user %s): a login was refused (%s): its password "
                    "changed (a static role rotated early, or a KV secret not updated yet); "
                    "reading it again now, its servers serve on",
                    (unsigned long long)gen->id, gen->user, sqlstate);
    pool->creds->stale(pool, gen);
    return true;
}

/* ---- checking a credential behind live servers ------------------------------------- */

static void on_verified(void *arg, pgl_upstream_result *res)
{
    pgl_pool *pool = arg;
    pgl_generation *gen = pool->verify_gen;
    pool->verify_up = NULL;
    pool->verify_gen = NULL;
    if (res->status == 0) {
        pgl_log_debug(pool->label, "generation %llu: its credential still logs in",
                      (unsigned long long)gen->id);
        pgl_poller_close(res->poller);
        PQfinish(res->pg);
    } else if (!static_password_changed(pool, gen, res->sqlstate)) {
        credential_rejected(pool, gen, res->sqlstate,
                            "after a permission error on a live server, a test login");
    }
    pgl_generation_unhold(gen);
}

void pgl_pool_credential_suspect(pgl_pool *pool, pgl_generation *gen)
{
    uint64_t now = pgl_now_ms(pool->px);
    /* One test login at a time, at most four a second: a client whose
     * statements lack a privilege must not become a login storm. */
    if (pool->creds == NULL || pool->verify_up != NULL || gen->state == PGL_GEN_DEAD ||
        gen->state == PGL_GEN_RETIRED || now < pool->verify_after || pool->px->shutting_down)
        return;
    pool->verify_after = now + 250;
    if (pgl_server_start_login(pool, gen, pool->name, on_verified, pool, &pool->verify_up) != 0)
        return;
    pool->verify_gen = gen;
    pgl_generation_hold(gen);
}

/* Failures that end by themselves: Postgres full, starting, restarting
 * or unreachable for a moment. Anything else (unknown database, a password
 * refused, TLS misconfigured) will fail again the same way. */
static bool transient(const char *sqlstate)
{
    static const char *const codes[] = {"53300", "53400", "57P01", "57P02", "57P03",
                                        "08000", "08001", "08003", "08006"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(sqlstate, codes[i]) == 0)
            return true;
    return false;
}

void pgl_pool_login_failed(pgl_pool *pool, pgl_generation *gen, const char *sqlstate,
                           const char *message)
{
    bool stale = static_password_changed(pool, gen, sqlstate);
    if (!stale && credential_rejected(pool, gen, sqlstate, "an upstream login"))
        return;
    uint64_t now = pgl_now_ms(pool->px);
    /* Clients must not read "wrong password" for pglease's upstream user:
     * 28xxx becomes 08006. */
    snprintf(pool->fail_sqlstate, sizeof pool->fail_sqlstate, "%s",
             strncmp(sqlstate, "28", 2) == 0 ? "08006" : sqlstate);
    snprintf(pool->fail_message, sizeof pool->fail_message, "%s", message);
    pool->fail_time = now;
    pool->consecutive_failures++;
    /* Capped exponential backoff, half of it random: pglease instances
     * that lost the same database must not come back in step. */
    uint64_t ceiling =
        pgl_backoff_ceiling(BACKOFF_MIN_MS, BACKOFF_MAX_MS, pool->consecutive_failures);
    pool->retry_after = now + ceiling / 2 + (uint64_t)random() % (ceiling / 2 + 1);
    /* With room made (or promised), retry soon, whatever the backoff grew to
     * while the pool sat at the limit. */
    if (strcmp(sqlstate, "53300") == 0 && make_room(pool, gen))
        pool->retry_after = now + BACKOFF_MIN_MS;

    /* With servers still alive, waiting clients will be served by them. A
     * transient cause is waited out: clients stay queued while the logins
     * retry, up to query_wait_timeout (then they are told this cause). A
     * permanent one, with no server left, fails them now. */
    if (pool->nservers > 1 || transient(sqlstate) || stale)
        return;
    char msg[400];
    snprintf(msg, sizeof msg, "login to the upstream server failed: %s", message);
    pgl_pool_fail_waiters(pool, pool->fail_sqlstate, msg);
}

const char *pgl_pool_wait_cause(pgl_pool *pool, char sqlstate[6], char *buf, size_t cap)
{
    if (pool->creds != NULL && pgl_pool_generation(pool) == NULL) {
        memcpy(sqlstate, "08006", 6);
        snprintf(buf, cap, "no valid upstream credential: Vault: %s",
                 pool->vault_error[0]  ? pool->vault_error
                 : pool->fetch_op != NULL ? "no answer to the request for a new one yet"
                                          : "no credential yet");
        return buf;
    }
    if (pool->fail_message[0] == '\0')
        return NULL;
    memcpy(sqlstate, pool->fail_sqlstate[0] ? pool->fail_sqlstate : "08006", 6);
    snprintf(buf, cap, "last upstream login error: %s", pool->fail_message);
    return buf;
}

/* Servers kept open without clients: min_pool_size on the main loop's
 * copy; a worker loop's copy opens for its clients only. */
static int kept_open(pgl_pool *pool)
{
    return pool->lp->index == 0 ? pgl_pool_min_size(pool) : 0;
}

/* An idle server that lived or idled too long, or NULL. */
static const char *idle_expired(pgl_pool *pool, const pgl_server *s, uint64_t now)
{
    const pgl_conf *conf = pool->px->conf;
    if (conf->server_lifetime > 0 && now - s->created > (uint64_t)conf->server_lifetime * 1000)
        return "server_lifetime reached";
    if (conf->server_idle_timeout > 0 && pool->nservers > kept_open(pool) &&
        now - s->last_used > (uint64_t)conf->server_idle_timeout * 1000)
        return "server_idle_timeout reached";
    return NULL;
}

void pgl_pool_janitor(pgl_pool *pool, uint64_t now)
{
    if (pool->removed) {
        removed_upkeep(pool, now);
        return;
    }
    pgl_list *gp, *gt;
    pgl_list_foreach(gp, gt, &pool->generations)
    {
        pgl_generation *g = generation_at(gp);
        pgl_generation_hold(g);
        /* Least recently used at the tail. A close can hand other idle
         * servers out: scan afresh after each. */
        bool closed = true;
        while (closed) {
            closed = false;
            for (pgl_list *p = g->idle.head.prev; p != &g->idle.head; p = p->prev) {
                const char *why = idle_expired(pool, server_at(p), now);
                if (why != NULL) {
                    pgl_server_close(server_at(p), why);
                    closed = true;
                    break;
                }
            }
        }
        pgl_generation_unhold(g);
    }
    /* Keep min_pool_size warm; retry logins clients are waiting for. A
     * console PAUSE/KILL opens nothing until RESUME. */
    int want = kept_open(pool) - pool->nservers;
    int waiting = clients_waiting(pool);
    if (!pool->paused)
        maybe_connect(pool, waiting > want ? waiting : want);
}
