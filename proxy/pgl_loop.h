/*
 * pgl_loop — one event loop and what lives on it: its clients, listeners,
 * cancel keys, connection buffers and output flusher, the janitor timer,
 * and the reaper that frees closed clients and servers once the loop is
 * outside every callback that may still hold a pointer to them.
 *
 * The process (pgl_proxy) owns the main one (index 0); with `workers = N`
 * each worker thread owns another (pgl_worker.h). Nothing here is shared
 * between loops, so nothing here is locked, except the task queue other
 * threads post to.
 */
#ifndef PGL_LOOP_H
#define PGL_LOOP_H

#include "pgl_cancel.h"
#include "pgl_conn.h"
#include "pgl_list.h"

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

typedef struct pgl_proxy pgl_proxy;
typedef struct pgl_listener pgl_listener;

typedef struct pgl_loop pgl_loop;

/* The reaper freed what was closed (the process may stop now). */
typedef void (*pgl_loop_reaped_cb)(pgl_loop *lp);

/* Work handed to a loop from another thread (pgl_loop_post). */
typedef void (*pgl_task_fn)(pgl_loop *lp, void *arg);
typedef struct pgl_task {
    pgl_list node;
    pgl_task_fn fn;
    void *arg;
} pgl_task;

struct pgl_loop {
    uv_loop_t uv;
    pgl_proxy *px;
    int index;        /* 0: the main loop */
    pgl_list pools;   /* its pools: the primaries on loop 0, their replicas elsewhere */
    /* Tasks other threads posted, run in order on this loop's thread. */
    uv_async_t wake;
    uv_mutex_t task_mu;
    pgl_list tasks;
    pgl_task park;    /* the park request (pgl_worker.c), posted at most once at a time */
    uv_thread_t thread; /* loops > 0 */
    pgl_loop_reaped_cb reaped;
    pgl_conn_loop conns;    /* buffer pool and own-output flusher */
    pgl_list clients;       /* every client on this loop, closing ones excepted */
    int nclients;
    pgl_cancel_table cancels;
    pgl_listener *listeners;
    uv_timer_t janitor;
    /* Starts paced replacement logins in pools with nothing else going on
     * (pgl_pool.c). */
    uv_timer_t replace_timer;
    uint64_t replace_wake; /* ms: when it fires, while active */
    /* Closed objects wait here until the reaper frees them. */
    pgl_list zombie_clients;
    pgl_list zombie_servers;
    uv_check_t reaper;
    bool reap_pending;
    uint64_t next_client_id, next_server_id;
};

/* The loop the calling thread runs (set by the thread that runs it). */
extern _Thread_local pgl_loop *pgl_loop_current;

/* Sets up the loop and its handles. 0 or a negative error. */
int pgl_loop_init(pgl_loop *lp, pgl_proxy *px, int index, pgl_loop_reaped_cb reaped)
    __attribute__((warn_unused_result));

/* Runs fn(lp, arg) on lp's thread, after the callback running now (any
 * thread may post). 0, or -ENOMEM (nothing will run). */
int pgl_loop_post(pgl_loop *lp, pgl_task_fn fn, void *arg) __attribute__((warn_unused_result));
/* The same with a task the caller owns until it runs (cannot fail). */
void pgl_loop_post_task(pgl_loop *lp, pgl_task *t);

/* Closes every handle still open, runs the loop until they are gone, frees
 * what the reaper holds, and closes the loop. 0, or the negative error of
 * uv_loop_close (a handle leaked). */
int pgl_loop_close(pgl_loop *lp);

static inline uint64_t pgl_loop_now(const pgl_loop *lp)
{
    return uv_now(&lp->uv);
}

/* A client or server id from `counter` (one of lp's): unique across loops,
 * 1, 2, 3... with a single loop. */
uint64_t pgl_loop_next_id(const pgl_loop *lp, uint64_t *counter);

/* Schedules the reaper: it frees the zombie lists, then calls `reaped`. */
void pgl_loop_reap_later(pgl_loop *lp);

/* The janitor (pgl_janitor.c): every second, client timeouts and pool
 * upkeep. pgl_janitor_shutdown switches it to the shutdown sweep, at once
 * and then every 100 ms. */
void pgl_janitor_start(pgl_loop *lp);
void pgl_janitor_shutdown(pgl_loop *lp);

#endif
