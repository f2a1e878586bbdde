/*
 * pgl_replica — a pool's copies on the worker loops (`workers = N`).
 *
 * The main loop's pool of a database (its primary) alone has a credential
 * source: Vault, a file, a helper. Every worker loop keeps a replica with
 * its own clients and servers, whose generations are copies of the
 * primary's, made and kept in step by the main thread every SYNC_MS with
 * the workers parked (pgl_worker.h): a new generation is copied (and warms
 * and takes over on that loop as on the main one), clocks follow renewals,
 * a dead one dies everywhere, and the replica's deadlines are enforced.
 * The primary's generation retires (and its lease is revoked) only once no
 * replica has a server of it left.
 *
 * What a replica learns that its primary must know is posted to the main
 * loop: a credential Postgres refused, a static password that changed, a
 * [users] pool opened by a first login there, and a pool at its size
 * whose servers are idle on other loops (one of them closes).
 */
#ifndef PGL_REPLICA_H
#define PGL_REPLICA_H

#include "pgl_pool.h"

/* The copy of `primary` on `lp`, or NULL. */
pgl_pool *pgl_replica_of(struct pgl_loop *lp, const pgl_pool *primary);

/* Every loop's copy of the primary `pool`, itself first (a walk the main
 * thread makes with the other loops parked; needs pgl_proxy.h). */
#define PGL_FOREACH_COPY(px, pool, copy)                                                        \
    for (int pgl_c_ = 0; pgl_c_ < (px)->nloops; pgl_c_++)                                        \
        if (((copy) = pgl_c_ == 0 ? (pool) : pgl_replica_of((px)->loops[pgl_c_], (pool))) != NULL)

/* Gives a replica its hooks (what it learns goes to the primary). */
void pgl_replica_attach(pgl_pool *pool);

/* Main loop: starts keeping replicas in step (with more than one loop). */
void pgl_replicas_start(pgl_proxy *px);
void pgl_replicas_stop(pgl_proxy *px);
/* Main loop: a round as soon as the loop is back from its callbacks (a
 * primary's generations changed). */
void pgl_replicas_soon(pgl_proxy *px);
/* Main loop: one round of keeping them in step now (parks the workers). */
void pgl_replicas_sync(pgl_proxy *px);

/* A replica opened on its loop by a first login: the primary and the
 * other replicas are opened by the main loop (failures are logged). */
void pgl_replica_open_primary(pgl_pool *replica);

/* The pool is at its size across loops with clients waiting: an idle
 * server of another loop's copy makes room. */
void pgl_replica_want_slot(pgl_pool *pool);

#endif
