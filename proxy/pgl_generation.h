/*
 * pgl_generation — one upstream credential of a pool and the servers that
 * logged in with it, through its whole life:
 *
 *   WARMING ──first login──▶ ACTIVE ──a newer one takes over──▶ DRAINING
 *      │                       │                                   │
 *      └──rejected (28xxx)──▶ DEAD ◀──deadline, no successor───────┘(rejected)
 *                                                                   │
 *   DRAINING/DEAD ──no server and nobody holding it──▶ RETIRED (freed)
 *
 * This file decides; the pool acts. It keeps the generation's clock (lease
 * end, renewal, rotation, hard deadline, drain end), counts its servers in
 * three counted lists (the server's set_state moves them), answers "must
 * this released server close?" and "what is due now?", and frees the
 * generation once it is retired and nobody holds it. It never closes a
 * server or talks to Vault: the pool closes what a verdict names, and the
 * `retired` callback (the credentials module: revoke the lease) runs once
 * when a generation is done. All times are milliseconds of the caller's
 * clock; UINT64_MAX means "never".
 */
#ifndef PGL_GENERATION_H
#define PGL_GENERATION_H

#include "pgl_list.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct pgl_generation pgl_generation;

typedef enum {
    PGL_GEN_WARMING = 0, /* fresh: proving itself with a first login */
    PGL_GEN_ACTIVE,      /* new servers use it */
    PGL_GEN_DRAINING,    /* a newer one took over; servers retire as they are replaced */
    PGL_GEN_DEAD,        /* its credential no longer works (rejected, or out of time) */
    PGL_GEN_RETIRED,     /* no servers left, lease handed back; freed when unheld */
} pgl_generation_state;

/* Runs once when the generation retires (before it is freed). */
typedef void (*pgl_generation_retired_cb)(pgl_generation *g);

struct pgl_generation {
    uint64_t id;
    pgl_generation_state state;
    const char *log_ctx; /* the pool's name, for log lines (borrowed) */
    pgl_list node; /* the pool's list, newest first */
    char *user;
    char *password; /* wiped on free */
    /* Its servers: logging in, idle, and busy (linked or running pglease's
     * own query). Moved only by the server's set_state. */
    pgl_clist login, idle, busy;
    /* Draining only: how many of its servers a server of the active
     * generation has already replaced; that many close at their next
     * release (never more than it has). */
    int replaced;
    /* Draining and its end is near: every server closes at release,
     * replaced or not, so none is cut mid-transaction. */
    bool hurry;
    /* A primary's generation that a replica still has servers of: held so
     * it retires (and its lease is revoked) only after theirs
     * (pgl_replica.c). */
    bool replica_hold;
    int holds; /* callers inside a walk that may empty it: do not free yet */
    void *owner; /* the pool (opaque here) */
    pgl_generation_retired_cb retired;

    /* Credential clock. Vault-issued only (lease_id NULL otherwise). */
    char *lease_id;
    bool is_static; /* no lease: a static role or a KV secret, read again at rotate_at */
    long kv_version; /* KV: the secret's version it holds; 0 unknown (a poll failed since) */
    bool renewable;
    bool end_final;      /* `end` will not move: renewals are capped or over */
    long lease_duration; /* seconds, as issued: the renewal increment */
    uint64_t issued, end, renew_at, rotate_at;
    uint64_t renew_sent; /* a renewal is out since then; 0 when none */
    uint64_t drain_since;
    uint64_t token_id;  /* which Vault token created the lease */
    uint64_t token_end; /* that token's final end once known, else 0 */
    struct pgl_vault_op *renew_op;
};

/* A new generation (NULL when out of memory); password may be NULL. */
pgl_generation *pgl_generation_new(uint64_t id, const char *user, const char *password,
                                   pgl_generation_state state);

/* The one place a generation changes state; asserts the move is legal and
 * records when draining started. Entering RETIRED is done by
 * pgl_generation_maybe_retire only. */
void pgl_generation_set_state(pgl_generation *g, pgl_generation_state to, uint64_t now);

const char *pgl_generation_state_name(pgl_generation_state s);

static inline int pgl_generation_nservers(const pgl_generation *g)
{
    return (int)(pgl_clist_count(&g->login) + pgl_clist_count(&g->idle) +
                 pgl_clist_count(&g->busy));
}

/* Draining or dead: no new server may use it. */
static inline bool pgl_generation_retiring(const pgl_generation *g)
{
    return g->state == PGL_GEN_DRAINING || g->state == PGL_GEN_DEAD;
}

/* Keeps `g` alive across a walk that may close its last server. */
static inline void pgl_generation_hold(pgl_generation *g)
{
    g->holds++;
}

/* Ends a hold; retires and frees `g` when it was the last thing keeping a
 * retiring, empty generation. true when `g` is gone. */
bool pgl_generation_unhold(pgl_generation *g);

/* A server left `g` (closed): keeps the replacement count within what is
 * left and retires `g` when it is retiring, empty and unheld (runs the
 * retired callback, unlinks and frees it). true when `g` is gone. */
bool pgl_generation_server_left(pgl_generation *g);

/* Frees without retiring (shutdown), wiping the password. */
void pgl_generation_free(pgl_generation *g);

/* ---- the credential's clock ---------------------------------------------- */

/* When the credential really stops working, when known and final. */
uint64_t pgl_generation_end(const pgl_generation *g);

/* The hard deadline: no server may outlive end − margin (10% of life, at
 * least 1.5 s, at most 5 s, never more than half the life),
 * where end is the lease's current end, final or not: a renewal counts
 * only once Vault answered it. */
uint64_t pgl_generation_deadline(const pgl_generation *g);

/* Sets rotate_at from the final end: rotate_before_s ahead of it (< 0: a
 * third of the credential's life; never more than half). */
void pgl_generation_schedule_rotation(pgl_generation *g, int rotate_before_s);

/* A fresh credential: `duration_s` lease (0: none), static roles re-read
 * after `static_ttl_s`. */
void pgl_generation_issued(pgl_generation *g, uint64_t now, long duration_s, bool renewable,
                           bool is_static, long static_ttl_s, int rotate_before_s);

/* Static role: the next re-read of the password, just after Vault's next
 * rotation `static_ttl_s` from `now` (< 0: unknown, a default period).
 * Also for a re-read that found the password unchanged. */
void pgl_generation_static_reread(pgl_generation *g, uint64_t now, long static_ttl_s);

/* A KV secret: its version is checked again `interval_s` from `now`. */
void pgl_generation_poll_after(pgl_generation *g, uint64_t now, long interval_s);

/* A renewal answered with `duration_s`; a shorter one than issued means
 * max_ttl caps it: the end is final. true when capped. */
bool pgl_generation_renewed(pgl_generation *g, uint64_t now, long duration_s,
                            int rotate_before_s);

/* Renewal failed: the current end is the real one. */
void pgl_generation_renew_failed(pgl_generation *g, int rotate_before_s);

/* The Vault token that created the lease ends for good at `token_end`. */
void pgl_generation_token_ends(pgl_generation *g, uint64_t token_end, int rotate_before_s);

/* Whether a renewal is due now (and marks it taken, sent at `now`). */
bool pgl_generation_renew_due(pgl_generation *g, uint64_t now);

/* Whether a successor should be fetched now: the rotation point of the
 * final end, or a renewal unanswered for too long. */
bool pgl_generation_rotation_due(const pgl_generation *g, uint64_t now);

/* ---- what the pool must do ---------------------------------------------- */

typedef enum {
    PGL_GEN_DUE_NOTHING = 0,
    PGL_GEN_DUE_HURRY,      /* stop serving unreplaced servers: close idle ones */
    PGL_GEN_DUE_RECONNECT,  /* deadline near: clients that keep a server (session mode,
                               pinned) are asked to reconnect at their next idle point */
    PGL_GEN_DUE_DEADLINE,   /* past the hard deadline: cut every server */
    PGL_GEN_DUE_DRAIN_OVER, /* drain_timeout over: cut every server */
} pgl_generation_due;

/*
 * What `g` needs at `now`. Updates its own state on the way: an active
 * generation past its deadline dies (no successor came in time), and a
 * draining one near its stop hurries (answered once).
 * drain_timeout_s < 0: no drain timeout.
 */
pgl_generation_due pgl_generation_check(pgl_generation *g, uint64_t now, int drain_timeout_s);

/* When servers of a retiring `g` that no new server replaced yet stop
 * serving (shortly before its deadline or drain_timeout), UINT64_MAX when
 * never. */
uint64_t pgl_generation_stop_serving(const pgl_generation *g, int drain_timeout_s);

/* Servers of a draining `g` no server of the active one replaced yet. */
int pgl_generation_unreplaced(const pgl_generation *g);

/*
 * A server of `g` finished its client's work. Returns why it must close, or
 * NULL when it serves on; closing one that a new server replaced uses that
 * replacement up. in_place: transaction/statement mode (old servers serve
 * until replaced); otherwise every server of a retiring generation closes.
 */
const char *pgl_generation_released(pgl_generation *g, bool in_place);

#endif
