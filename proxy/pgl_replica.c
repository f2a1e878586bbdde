/*
 * Replica pools on the worker loops (pgl_replica.h).
 */
#include "pgl_replica.h"

#include "pgl_creds.h"
#include "pgl_generation.h"
#include "pgl_log.h"
#include "pgl_proxy.h"
#include "pgl_worker.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How often the main thread brings the replicas in step: a new credential
 * reaches the workers within this, and their deadlines are checked this
 * often (they are SAFETY_MARGIN seconds ahead of the credential's end). */
#define SYNC_MS 100
/* A replica asks for another loop's idle server at most this often. */
#define SLOT_ASK_MS 50

#define generation_at(pos) pgl_container_of(pos, pgl_generation, node)

static pgl_generation *generation_by_id(pgl_pool *pool, uint64_t id)
{
    for (pgl_list *p = pool->generations.next; p != &pool->generations; p = p->next)
        if (generation_at(p)->id == id)
            return generation_at(p);
    return NULL;
}

/* The copy of `primary` on `lp` (a removed primary's removed copy). */
pgl_pool *pgl_replica_of(pgl_loop *lp, const pgl_pool *primary)
{
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &lp->pools)
    {
        pgl_pool *r = pgl_container_of(pos, pgl_pool, node);
        if (r->removed == primary->removed && strcmp(r->name, primary->name) == 0)
            return r;
    }
    return NULL;
}

/* ---- what a replica tells the main loop --------------------------------------------- */

typedef enum { NOTE_REFUSED, NOTE_STALE, NOTE_SLOT, NOTE_OPEN } note_kind;

typedef struct {
    note_kind kind;
    int from;          /* the loop it comes from */
    uint64_t gen_id;   /* REFUSED, STALE */
    char name[192];    /* the pool's name; OPEN: the database's */
    char for_user[72]; /* OPEN */
} note;

/* Clients of a copy, whatever their state. */
static size_t clients_of(const pgl_pool *r)
{
    return pgl_clist_count(&r->idle) + pgl_clist_count(&r->waiting) +
           pgl_clist_count(&r->active) + pgl_clist_count(&r->login_wait);
}

/*
 * A copy of the pool has clients waiting and the pool is at its size
 * across loops. Each loop with clients is due an even share of the size; a
 * copy below its share gets an idle server of the copy furthest above it,
 * or of one without clients (closed there, opened here). Shares settle
 * after a few moves, so servers do not wander back and forth under steady
 * load. The other loops are parked.
 */
static void balance(pgl_proxy *px, pgl_pool *primary, pgl_pool *wants)
{
    if (pgl_clist_empty(&wants->waiting) ||
        atomic_load(&primary->shared->servers) < pgl_pool_size(primary))
        return;
    int busy_loops = 0;
    pgl_pool *r;
    PGL_FOREACH_COPY(px, primary, r)
    {
        busy_loops += clients_of(r) > 0;
    }
    int size = pgl_pool_size(primary);
    int share = busy_loops > 0 ? (size + busy_loops - 1) / busy_loops : size;
    int floor_share = busy_loops > 0 ? size / busy_loops : size;
    if (wants->nservers >= share)
        return;
    pgl_pool *donor = NULL;
    PGL_FOREACH_COPY(px, primary, r)
    {
        if (r == wants || (r->nservers <= floor_share && clients_of(r) > 0))
            continue;
        bool idle = false;
        for (pgl_list *p = r->generations.next; p != &r->generations && !idle; p = p->next)
            idle = !pgl_clist_empty(&generation_at(p)->idle);
        if (idle && (donor == NULL || r->nservers > donor->nservers))
            donor = r;
    }
    if (donor != NULL && pgl_pool_close_idle(donor, "its slot goes to a client of another worker"))
        pgl_pool_kick(wants);
}

static void make_room(pgl_proxy *px, pgl_pool *primary, int from)
{
    pgl_workers_park(px);
    pgl_pool *wants = from == 0 ? primary : pgl_replica_of(px->loops[from], primary);
    if (wants != NULL)
        balance(px, primary, wants);
    pgl_workers_unpark(px);
}

static void on_note(pgl_loop *main, void *arg)
{
    note *n = arg;
    pgl_proxy *px = main->px;
    if (n->kind == NOTE_OPEN) {
        const pgl_conf_database *db = pgl_conf_database_find_for(px->conf, n->name, n->for_user);
        if (db != NULL && pgl_pool_find_entry(main, db) == NULL && pgl_pool_add(px, db) == NULL)
            pgl_log_error(n->name, "out of memory opening the pool of user %s", n->for_user);
        free(n);
        return;
    }
    pgl_pool *primary = pgl_pool_find(px, n->name);
    pgl_generation *g = primary != NULL ? generation_by_id(primary, n->gen_id) : NULL;
    switch (n->kind) {
    case NOTE_REFUSED:
        /* Postgres refused it on a worker: it is as dead here. */
        if (g != NULL && g->state != PGL_GEN_DEAD && g->state != PGL_GEN_RETIRED) {
            pgl_log_warning(primary->name, "generation %llu (user %s) was refused on worker %d: "
                                           "retiring it and fetching a new credential now",
                            (unsigned long long)g->id, g->user, n->from);
            pgl_pool_generation_refused(primary, g);
        }
        break;
    case NOTE_STALE:
        if (g != NULL && g->state == PGL_GEN_ACTIVE && primary->creds != NULL &&
            primary->creds->stale != NULL)
            primary->creds->stale(primary, g);
        break;
    case NOTE_SLOT:
        if (primary != NULL)
            make_room(px, primary, n->from);
        break;
    case NOTE_OPEN:
        break;
    }
    free(n);
}

static void post_note(pgl_pool *pool, note_kind kind, uint64_t gen_id)
{
    note *n = calloc(1, sizeof *n);
    if (n != NULL) {
        n->kind = kind;
        n->from = pool->lp->index;
        n->gen_id = gen_id;
        snprintf(n->name, sizeof n->name, "%s", kind == NOTE_OPEN ? pool->dbname : pool->name);
        if (pool->for_user != NULL)
            snprintf(n->for_user, sizeof n->for_user, "%s", pool->for_user);
    }
    if (n == NULL || pgl_loop_post(&pool->px->main, on_note, n) != 0) {
        free(n);
        pgl_log_error(pool->label, "out of memory telling the main loop");
    }
}

static void on_rejected(pgl_pool *pool, pgl_generation *g, bool was_warming)
{
    (void)was_warming;
    post_note(pool, NOTE_REFUSED, g->id);
}

static void on_stale(pgl_pool *pool, pgl_generation *g)
{
    post_note(pool, NOTE_STALE, g->id);
}

static const pgl_pool_creds_hooks hooks = {
    .rejected = on_rejected,
    .stale = on_stale,
    .retired = NULL, /* leases are the primary's */
};

void pgl_replica_attach(pgl_pool *pool)
{
    /* As its primary: only credentials Vault hands out are replaced when
     * Postgres refuses them. */
    pgl_conf_creds_kind k = pgl_pool_db(pool)->creds_kind;
    bool vault = k == PGL_CONF_CREDS_DYNAMIC || k == PGL_CONF_CREDS_STATIC ||
                 k == PGL_CONF_CREDS_KV;
    pool->creds = vault ? &hooks : NULL;
}

void pgl_replica_open_primary(pgl_pool *replica)
{
    post_note(replica, NOTE_OPEN, 0);
}

void pgl_replica_want_slot(pgl_pool *pool)
{
    uint64_t now = pgl_loop_now(pool->lp);
    if (pool->slot_asked != 0 && now - pool->slot_asked < SLOT_ASK_MS)
        return;
    pool->slot_asked = now;
    post_note(pool, NOTE_SLOT, 0);
}

/* ---- keeping them in step --------------------------------------------------------------- */

static void copy_clocks(pgl_generation *c, const pgl_generation *g)
{
    c->issued = g->issued;
    c->end = g->end;
    c->end_final = g->end_final;
    c->lease_duration = g->lease_duration;
    c->is_static = g->is_static;
    c->kv_version = g->kv_version;
}

static void sync_replica(pgl_pool *primary, pgl_pool *r, uint64_t now)
{
    if (r->shared != primary->shared)
        pgl_pool_share(r, primary->shared);
    memcpy(r->vault_error, primary->vault_error, sizeof r->vault_error);
    /* Whichever copy logged in first knows what clients are told. */
    pgl_pool_copy_params(r, primary);
    pgl_pool_copy_params(primary, r);
    /* Vault keeps failing: the copy's waiting clients are told as the
     * primary's are (pgl_creds.c). */
    char sqlstate[6], msg[400];
    if (pgl_creds_gave_up(primary) &&
        (!pgl_clist_empty(&r->waiting) || !pgl_clist_empty(&r->login_wait)) &&
        pgl_pool_wait_cause(primary, sqlstate, msg, sizeof msg) != NULL)
        pgl_pool_fail_waiters(r, sqlstate, msg);
    /* Oldest first, so that copies are made in the primary's order. */
    for (pgl_list *gp = primary->generations.prev; gp != &primary->generations;
         gp = gp->prev) {
        pgl_generation *g = generation_at(gp);
        pgl_generation *c = generation_by_id(r, g->id);
        if (c == NULL) {
            /* A credential in use there and never copied here (one copied
             * and gone has retired on this loop already). */
            if ((g->state != PGL_GEN_WARMING && g->state != PGL_GEN_ACTIVE) ||
                g->id <= r->next_gen_id)
                continue;
            bool serving = pgl_pool_generation(r) != NULL;
            r->next_gen_id = g->id - 1;
            c = pgl_pool_add_generation(r, g->user, g->password,
                                        serving ? PGL_GEN_WARMING : PGL_GEN_ACTIVE);
            if (c == NULL) {
                pgl_log_error(r->name, "worker %d: out of memory copying generation %llu",
                              r->lp->index, (unsigned long long)g->id);
                continue;
            }
            copy_clocks(c, g);
            /* Its lease outlives this copy's servers (hold_while_copied). */
            if (!g->replica_hold) {
                g->replica_hold = true;
                pgl_generation_hold(g);
            }
            if (c->state == PGL_GEN_WARMING)
                pgl_pool_warm(r, c);
            else
                pgl_pool_kick(r);
            continue;
        }
        copy_clocks(c, g);
        if (g->state == PGL_GEN_DEAD && c->state != PGL_GEN_DEAD &&
            c->state != PGL_GEN_RETIRED)
            pgl_pool_generation_refused(r, c);
    }
    /* Copies of generations the primary has retired: their credential is
     * over; they drain as after a rotation. */
    pgl_list *cp, *ct;
    pgl_list_foreach(cp, ct, &r->generations)
    {
        pgl_generation *c = generation_at(cp);
        pgl_generation *g = generation_by_id(primary, c->id);
        if (g == NULL || g->state == PGL_GEN_RETIRED)
            pgl_pool_generation_drain(r, c);
    }
    pgl_pool_enforce_all(r, now);
}

/* A primary's generation whose copies still have servers stays held. */
static void hold_while_copied(pgl_proxy *px, pgl_pool *primary)
{
    pgl_list *gp, *gt;
    pgl_list_foreach(gp, gt, &primary->generations)
    {
        pgl_generation *g = generation_at(gp);
        bool copied = false;
        for (int i = 1; i < px->nloops && !copied; i++) {
            pgl_pool *r = pgl_replica_of(px->loops[i], primary);
            pgl_generation *c = r != NULL ? generation_by_id(r, g->id) : NULL;
            copied = c != NULL && c->state != PGL_GEN_RETIRED;
        }
        if (copied && !g->replica_hold) {
            g->replica_hold = true;
            pgl_generation_hold(g);
        } else if (!copied && g->replica_hold) {
            g->replica_hold = false;
            pgl_generation_unhold(g); /* may retire and free it */
        }
    }
}

void pgl_replicas_sync(pgl_proxy *px)
{
    if (px->nloops_running <= 1)
        return;
    pgl_workers_park(px);
    uint64_t now = pgl_now_ms(px);
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        pgl_pool *primary = pgl_container_of(pos, pgl_pool, node);
        for (int i = 1; i < px->nloops; i++) {
            pgl_pool *r = pgl_replica_of(px->loops[i], primary);
            if (r != NULL && !r->removed)
                sync_replica(primary, r, now);
        }
        hold_while_copied(px, primary);
        /* Clients waiting on one loop for a server idle on another. */
        if (!primary->removed) {
            pgl_pool *r;
            PGL_FOREACH_COPY(px, primary, r)
            {
                balance(px, primary, r);
            }
        }
    }
    pgl_workers_unpark(px);
}

static void on_sync(uv_timer_t *t)
{
    pgl_replicas_sync(t->data);
}

void pgl_replicas_start(pgl_proxy *px)
{
    if (px->nloops_running <= 1 || px->replica_timer_on)
        return;
    uv_timer_init(&px->main.uv, &px->replica_timer);
    px->replica_timer.data = px;
    uv_timer_start(&px->replica_timer, on_sync, 0, SYNC_MS);
    px->replica_timer_on = true;
}

void pgl_replicas_soon(pgl_proxy *px)
{
    if (px->replica_timer_on && uv_is_active((uv_handle_t *)&px->replica_timer))
        uv_timer_start(&px->replica_timer, on_sync, 0, SYNC_MS);
}

void pgl_replicas_stop(pgl_proxy *px)
{
    if (px->replica_timer_on)
        uv_timer_stop(&px->replica_timer);
}
