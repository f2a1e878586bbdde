/*
 * pgl_worker — the event-loop threads of `workers = N`.
 *
 * Loop 0 is the process's main loop (px->main). It accepts every
 * connection and hands each to a loop in turn (itself included), and it
 * alone talks to Vault, runs reloads, signals, the console's commands and
 * the HTTP endpoint. Loops 1..N-1 run on threads of their own. Each loop
 * owns its clients, its servers and its replica of every pool, so the
 * per-transaction path never leaves its loop and takes no lock.
 *
 * What spans loops (a new credential, a reload, a console command, a
 * metrics scrape, shutdown) is rare, so it is done the simple way: the main
 * thread parks every other loop inside a callback (pgl_workers_park), does
 * the work on their objects as if it ran in their callbacks (handles
 * included: a parked loop is between callbacks of its own iteration), and
 * lets them go. The park's mutex orders those accesses. Only the main
 * thread parks, and a parked loop waits for nothing else, so it cannot
 * deadlock. A loop that needs the main thread posts a task to it
 * (pgl_loop_post) and never waits for the answer.
 */
#ifndef PGL_WORKER_H
#define PGL_WORKER_H

#include "pgl_loop.h"

#include <stddef.h>

typedef struct pgl_proxy pgl_proxy;

/* Sets up loops 1..n-1 (px->loops[0] is the main loop), not running yet:
 * the pools put their replicas on them first. 0, or a negative error with
 * `err` saying why (none is left). */
int pgl_workers_init(pgl_proxy *px, int n, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Starts their threads. 0, or a negative error with `err` saying why. */
int pgl_workers_run(pgl_proxy *px, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Main thread only: every other loop stops inside a callback until the
 * matching unpark. Nests. */
void pgl_workers_park(pgl_proxy *px);
void pgl_workers_unpark(pgl_proxy *px);

/* The listeners' accept callback (`arg` the proxy): the connection goes to
 * the next loop in turn. */
struct sockaddr;
void pgl_workers_accept(void *arg, int fd, const struct sockaddr *sa);

/* After the main loop returned: stops every other loop, joins its thread,
 * and closes it. */
void pgl_workers_stop(pgl_proxy *px);

/* Every loop, main first. */
#define PGL_FOREACH_LOOP(px, lp)                                                                  \
    for (int pgl_i_ = 0; pgl_i_ < (px)->nloops && ((lp) = (px)->loops[pgl_i_], 1); pgl_i_++)

#endif
