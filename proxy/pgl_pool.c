/*
 * Pools: one per database. A pool hands idle servers to waiting clients in
 * arrival order, opens servers (with its newest credential generation) up
 * to its size when clients wait, keeps min_pool_size open, and retires
 * servers that idled or lived too long.
 *
 * Rotation is make-before-break in transaction and statement mode: the
 * generation being left keeps serving while servers of the new one log in
 * (REPLACE_PARALLEL at a time); each new server retires one old server, at
 * once when it is idle, else when its transaction ends. Clients never wait
 * for a burst of logins. Session mode closes the old idle servers at once:
 * a new session must not start on a credential that is going away.
 *
 * Upstream login failures back off exponentially (100 ms doubling to 10 s)
 * so a wrong password or a down database never becomes a connection storm;
 * clients waiting with no server at all get the failure as an error at
 * once instead of hanging until query_wait_timeout.
 */
#include "pgl_log.h"
#include "pgl_proxy.h"
#include "pgl_vault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
/* Logins replacing a retiring generation's servers at once; the pool may be
 * this many servers over its size while it rotates. */
#define REPLACE_PARALLEL 2
#define MAKING_ROOM "making room for the new credential's first login"

uint64_t pgl_backoff_ceiling(uint64_t min_ms, uint64_t max_ms, int failures)
{
    uint64_t ceiling = min_ms;
    for (int i = 1; i < failures && ceiling < max_ms; i++)
        ceiling *= 2;
    return ceiling < max_ms ? ceiling : max_ms;
}

/* ---- generations ------------------------------------------------------------- */

void pgl_generation_free(pgl_generation *g)
{
    free(g->user);
    if (g->password != NULL) {
        OPENSSL_cleanse(g->password, strlen(g->password));
        free(g->password);
    }
    free(g->lease_id);
    free(g);
}

pgl_generation *pgl_pool_add_generation(pgl_pool *pool, const char *user, const char *password,
                                        pgl_generation_state state)
{
    pgl_generation *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->pool = pool;
    g->id = ++pool->next_gen_id;
    g->state = state;
    g->end = g->renew_at = g->rotate_at = UINT64_MAX;
    g->user = strdup(user ? user : "");
    g->password = password ? strdup(password) : NULL;
    if (g->user == NULL || (password != NULL && g->password == NULL)) {
        pgl_generation_free(g);
        return NULL;
    }
    pgl_list_prepend(&pool->generations, &g->node);
    return g;
}

pgl_generation *pgl_pool_generation(pgl_pool *pool)
{
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->generations)
    {
        pgl_generation *g = pgl_container_of(pos, pgl_generation, node);
        if (g->state == PGL_GEN_ACTIVE)
            return g;
    }
    return NULL;
}

void pgl_generation_server_gone(pgl_generation *g)
{
    /* Whichever of its servers went, the replacements made still cover
     * the ones left. */
    if (g->replaced > g->nservers)
        g->replaced = g->nservers;
    /* Retired generations disappear with their last server (after their
     * lease is revoked). */
    if ((g->state == PGL_GEN_DRAINING || g->state == PGL_GEN_DEAD) && g->nservers == 0) {
        pgl_log_info(g->pool->name, "generation %llu drained", (unsigned long long)g->id);
        pgl_list_remove(&g->node);
        pgl_creds_retire(g);
        pgl_generation_free(g);
    }
}

/* The first server of `gen` in `list` (any generation when gen is NULL). */
pgl_server *pgl_pool_find_server(pgl_list *list, const pgl_generation *gen)
{
    for (pgl_list *p = list->next; p != list; p = p->next) {
        pgl_server *s = pgl_container_of(p, pgl_server, node);
        if (gen == NULL || s->gen == gen)
            return s;
    }
    return NULL;
}

static bool replaces_in_place(const pgl_pool *pool)
{
    return pool->mode != PGL_CONF_POOL_SESSION;
}

void pgl_pool_drain_generation(pgl_pool *pool, pgl_generation *g)
{
    /* Hold it: closing its last server would free it under our feet. And
     * look the next server up afresh each time: closing one kicks the pool,
     * which may move other servers between lists. */
    g->nservers++;
    pgl_server *s;
    /* A rotated credential's idle servers serve on until replaced, unless
     * its end is near; a dead one's are of no use. */
    if (g->state == PGL_GEN_DEAD || g->hurry || !replaces_in_place(pool)) {
        while ((s = pgl_pool_find_server(&pool->idle, g)) != NULL)
            pgl_server_close(s, "its credential generation is retiring");
    }
    /* Logins still running with it are useless now. */
    while ((s = pgl_pool_find_server(&pool->connecting, g)) != NULL)
        pgl_server_close(s, "its credential generation is retiring");
    g->nservers--;
    pgl_generation_server_gone(g); /* retires it now if nothing is left */
}

/* Servers of draining generations no server of the active one replaced yet. */
static int unreplaced(pgl_pool *pool)
{
    int n = 0;
    if (!replaces_in_place(pool))
        return 0;
    for (pgl_list *p = pool->generations.next; p != &pool->generations; p = p->next) {
        pgl_generation *g = pgl_container_of(p, pgl_generation, node);
        if (g->state == PGL_GEN_DRAINING)
            n += g->nservers - g->replaced;
    }
    return n;
}

bool pgl_pool_retire_one(pgl_pool *pool)
{
    if (!replaces_in_place(pool))
        return false;
    /* The oldest generation first: its credential ends first. */
    for (pgl_list *p = pool->generations.prev; p != &pool->generations; p = p->prev) {
        pgl_generation *g = pgl_container_of(p, pgl_generation, node);
        if (g->state != PGL_GEN_DRAINING || g->replaced >= g->nservers)
            continue;
        pgl_server *s = pgl_pool_find_server(&pool->idle, g);
        if (s != NULL)
            pgl_server_close(s, "replaced by a server with the new credential");
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
    for (pgl_list *p = pool->idle.prev; p != &pool->idle; p = p->prev) {
        pgl_server *s = pgl_container_of(p, pgl_server, node);
        if (s->gen == active) {
            pgl_server_close(s, MAKING_ROOM);
            return true;
        }
    }
    pool->room_wanted = true;
    return true;
}

const char *pgl_pool_must_close(pgl_server *s)
{
    pgl_generation *g = s->gen;
    if (g->state == PGL_GEN_ACTIVE) {
        if (!s->pool->room_wanted)
            return NULL;
        s->pool->room_wanted = false;
        return MAKING_ROOM;
    }
    if (g->state != PGL_GEN_DRAINING || !replaces_in_place(s->pool))
        return "its credential generation is retiring";
    if (g->replaced > 0) {
        g->replaced--;
        return "replaced by a server with the new credential";
    }
    /* Unreplaced, it serves on, unless its credential ends soon. */
    return g->hurry ? "its credential generation ends soon" : NULL;
}

void pgl_pool_fail_waiters(pgl_pool *pool, const char *sqlstate, const char *message)
{
    snprintf(pool->fail_sqlstate, sizeof pool->fail_sqlstate, "%s", sqlstate);
    snprintf(pool->fail_message, sizeof pool->fail_message, "%s", message);
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->login_wait)
    {
        pgl_client_login_ready(pgl_container_of(pos, pgl_client, wait_node));
    }
    pgl_list_foreach(pos, tmp, &pool->waiting)
    {
        pgl_client *c = pgl_container_of(pos, pgl_client, wait_node);
        pgl_client_fail(c, "FATAL", sqlstate, "pglease cannot serve database \"%s\": %s",
                        pool->name, message);
    }
}

/* ---- pools --------------------------------------------------------------------- */

static int pool_create(pgl_proxy *px, const pgl_conf_database *db)
{
    const pgl_conf *conf = px->conf;
    pgl_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL || (pool->name = strdup(db->name)) == NULL) {
        free(pool);
        return -1;
    }
    pool->px = px;
    pool->db = db;
    pgl_list_init(&pool->generations);
    pgl_list_init(&pool->idle);
    pgl_list_init(&pool->active);
    pgl_list_init(&pool->connecting);
    pgl_list_init(&pool->waiting);
    pgl_list_init(&pool->login_wait);
    pool->pool_size = db->pool_size >= 0 ? db->pool_size : conf->default_pool_size;
    pool->min_pool_size = db->min_pool_size >= 0 ? db->min_pool_size : conf->min_pool_size;
    pool->mode = db->pool_mode >= 0 ? (pgl_conf_pool_mode)db->pool_mode : conf->pool_mode;
    pgl_list_append(&px->pools, &pool->node);
    if (db->creds_kind == PGL_CONF_CREDS_CONNINFO &&
        pgl_pool_add_generation(pool, pgl_conf_database_param(db, "user"),
                                pgl_conf_database_param(db, "password"),
                                PGL_GEN_ACTIVE) == NULL)
        return -1;
    return 0;
}

int pgl_pools_init(pgl_proxy *px)
{
    pgl_list_init(&px->pools);
    for (size_t i = 0; i < px->conf->ndatabases; i++) {
        if (pool_create(px, &px->conf->databases[i]) != 0)
            return -1;
    }
    return 0;
}

void pgl_pools_close_servers(pgl_proxy *px)
{
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        /* Closing sends Terminate (PQfinish); the structs go to the reaper. */
        pgl_list *const lists[] = {&pool->active, &pool->idle, &pool->connecting};
        for (size_t i = 0; i < 3; i++)
            while (!pgl_list_empty(lists[i]))
                pgl_server_close(pgl_container_of(lists[i]->next, pgl_server, node),
                                 "pglease is shutting down");
    }
}

void pgl_pools_free(pgl_proxy *px)
{
    /* Servers first: they point at their generation. */
    pgl_pools_close_servers(px);
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        pgl_list *gp, *gt;
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
            if (g->renew_op)
                pgl_vault_cancel(g->renew_op);
            pgl_generation_free(g);
        }
        if (pool->fetch_op)
            pgl_vault_cancel(pool->fetch_op);
        for (size_t i = 0; i < pool->nparams; i++) {
            free(pool->params[i].name);
            free(pool->params[i].value);
        }
        free(pool->params);
        pgl_varcache_clear(&pool->defaults);
        free(pool->name);
        free(pool);
    }
    pgl_list_init(&px->pools);
}

pgl_pool *pgl_pool_find(pgl_proxy *px, const char *name)
{
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (strcmp(pool->name, name) == 0)
            return pool;
    }
    return NULL;
}

/* Clients a login would serve: those queued for a server, and the first
 * client ever waiting for the pool's ParameterStatus set. */
static int clients_waiting(const pgl_pool *pool)
{
    return (int)pgl_list_count(&pool->waiting) + (pgl_list_empty(&pool->login_wait) ? 0 : 1);
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
        pgl_generation *g = pgl_container_of(p, pgl_generation, node);
        if (g->state == PGL_GEN_WARMING && g->nservers == 0 && pgl_server_connect(pool, g) != 0)
            return;
    }
    int old = unreplaced(pool);
    pgl_generation *gen = pgl_pool_generation(pool);
    if ((wanted <= 0 && old <= 0) || gen == NULL)
        return;
    int connecting = (int)pgl_list_count(&pool->connecting);
    int limit = pool->pool_size;
    if (old > 0) {
        int replacing = old < REPLACE_PARALLEL ? old : REPLACE_PARALLEL;
        if (wanted < replacing)
            wanted = replacing;
        limit += REPLACE_PARALLEL;
    }
    /* Do not open more than the clients waiting need, nor past the size. */
    while (connecting < wanted && pool->nservers < limit) {
        if (pgl_server_connect(pool, gen) != 0) {
            pgl_log_error(pool->name, "cannot start an upstream login");
            return;
        }
        connecting++;
    }
}

/* Hands idle servers to waiting clients, oldest waiter first. */
static void serve(pgl_pool *pool)
{
    while (!pgl_list_empty(&pool->waiting) && !pgl_list_empty(&pool->idle) &&
           !pool->px->paused) {
        pgl_client *c = pgl_container_of(pool->waiting.next, pgl_client, wait_node);
        pgl_server *s = pgl_container_of(pool->idle.next, pgl_server, node);
        pgl_list_remove(&c->wait_node);
        pgl_server_assign(s, c);
    }
}

void pgl_pool_kick(pgl_pool *pool)
{
    serve(pool);
    maybe_connect(pool, clients_waiting(pool));
}

void pgl_pool_want_server(pgl_pool *pool, pgl_client *client)
{
    if (client != NULL)
        pgl_list_append(&pool->waiting, &client->wait_node);
    pgl_pool_kick(pool);
}

void pgl_pool_server_ready(pgl_pool *pool, pgl_server *s)
{
    pgl_list_remove(&s->node);
    /* Servers of the active generation are handed out first. */
    if (s->gen->state == PGL_GEN_ACTIVE)
        pgl_list_prepend(&pool->idle, &s->node);
    else
        pgl_list_append(&pool->idle, &s->node);
    serve(pool);
}

void pgl_pool_forget_client(pgl_client *client)
{
    pgl_list_remove(&client->wait_node);
}

void pgl_pool_login_succeeded(pgl_pool *pool, pgl_generation *gen, PGconn *pg)
{
    pgl_creds_login_succeeded(pool, gen);
    pool->room_wanted = false;
    pool->consecutive_failures = 0;
    pool->retry_after = 0;
    pool->fail_sqlstate[0] = pool->fail_message[0] = '\0';
    if (pool->params != NULL)
        return;
    size_t n = 0;
    for (const char *const *p = pgl_upstream_report_params; *p; p++)
        n += PQparameterStatus(pg, *p) != NULL;
    pool->params = calloc(n ? n : 1, sizeof *pool->params);
    if (pool->params == NULL)
        return;
    for (const char *const *p = pgl_upstream_report_params; *p; p++) {
        const char *v = PQparameterStatus(pg, *p);
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
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->login_wait)
    {
        pgl_client_login_ready(pgl_container_of(pos, pgl_client, wait_node));
    }
}

void pgl_pool_login_failed(pgl_pool *pool, pgl_generation *gen, const char *sqlstate,
                           const char *message)
{
    /* A Vault credential Postgres rejects (lease revoked early, role
     * dropped) is replaced at once; clients keep waiting for the next one. */
    if (pgl_creds_login_failed(pool, gen, sqlstate))
        return;
    pgl_proxy *px = pool->px;
    uint64_t now = pgl_now_ms(px);
    snprintf(pool->fail_message, sizeof pool->fail_message, "%s", message);
    pool->fail_time = now;
    pool->consecutive_failures++;
    pool->retry_after =
        now + pgl_backoff_ceiling(BACKOFF_MIN_MS, BACKOFF_MAX_MS, pool->consecutive_failures);
    /* With room made (or promised), retry soon, whatever the backoff grew to
     * while the pool sat at the limit. */
    if (strcmp(sqlstate, "53300") == 0 && make_room(pool, gen))
        pool->retry_after = now + BACKOFF_MIN_MS;

    /* With servers still alive, waiting clients will be served by them;
     * with none (besides the one failing now), waiting is hopeless. Clients
     * must not read "wrong password" for pglease's upstream user: 28xxx
     * becomes 08006. */
    if (pool->nservers > 1)
        return;
    char msg[400];
    snprintf(msg, sizeof msg, "login to the upstream server failed: %s", message);
    pgl_pool_fail_waiters(pool, strncmp(sqlstate, "28", 2) == 0 ? "08006" : sqlstate, msg);
}

void pgl_pool_janitor(pgl_pool *pool, uint64_t now)
{
    const pgl_conf *conf = pool->px->conf;
    pgl_list *pos, *tmp;
    /* Oldest idle servers are at the tail. */
    for (pos = pool->idle.prev; pos != &pool->idle; pos = tmp) {
        tmp = pos->prev;
        pgl_server *s = pgl_container_of(pos, pgl_server, node);
        bool too_old = conf->server_lifetime > 0 &&
                       now - s->created > (uint64_t)conf->server_lifetime * 1000;
        bool too_idle = conf->server_idle_timeout > 0 && pool->nservers > pool->min_pool_size &&
                        now - s->last_used > (uint64_t)conf->server_idle_timeout * 1000;
        if (too_old || too_idle) {
            pgl_server_close(s, too_old ? "server_lifetime reached" : "server_idle_timeout reached");
        }
    }
    /* Keep min_pool_size warm; retry logins clients are waiting for. */
    int want = pool->min_pool_size - pool->nservers;
    int waiting = clients_waiting(pool);
    if (waiting > want)
        want = waiting;
    maybe_connect(pool, want);
}
