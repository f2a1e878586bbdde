/*
 * Worker threads, parking, and stopping them (pgl_worker.h).
 */
#include "pgl_worker.h"

#include "pgl_client.h"
#include "pgl_log.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_replica.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

static void run_thread(void *arg)
{
    pgl_loop *lp = arg;
    pgl_loop_current = lp;
    uv_run(&lp->uv, UV_RUN_DEFAULT);
}

static void check_stop(pgl_loop *main, void *arg)
{
    (void)arg;
    /* The main loop's reaper decides (pgl_proxy.c). */
    pgl_loop_reap_later(main);
}

/* What a worker loop closed is freed: during a shutdown, its last client
 * gone may be the process's last. */
static void on_worker_reaped(pgl_loop *lp)
{
    pgl_proxy *px = lp->px;
    if (px->shutting_down && lp->nclients == 0 && atomic_load(&px->nclients) == 0 &&
        pgl_loop_post(&px->main, check_stop, NULL) != 0)
        pgl_log_error(NULL, "out of memory telling the main loop the last client left");
}

int pgl_workers_init(pgl_proxy *px, int n, char *err, size_t errlen)
{
    int rc = uv_mutex_init(&px->park_mu);
    if (rc == 0 && (rc = uv_cond_init(&px->park_cond)) != 0)
        uv_mutex_destroy(&px->park_mu);
    if (rc != 0) {
        snprintf(err, errlen, "workers: %s", uv_strerror(rc));
        return rc;
    }
    px->loops[0] = &px->main;
    px->nloops = px->nloops_running = 1;
    for (int i = 1; i < n; i++) {
        pgl_loop *lp = calloc(1, sizeof *lp);
        if (lp == NULL) {
            rc = -ENOMEM;
            break;
        }
        if ((rc = pgl_loop_init(lp, px, i, on_worker_reaped)) != 0) {
            free(lp);
            break;
        }
        px->loops[px->nloops++] = lp;
    }
    if (rc != 0) {
        snprintf(err, errlen, "workers: cannot set up worker %d: %s", px->nloops,
                 pgl_strerror(rc));
        pgl_workers_stop(px);
        return rc;
    }
    return 0;
}

int pgl_workers_run(pgl_proxy *px, char *err, size_t errlen)
{
    for (int i = 1; i < px->nloops; i++) {
        pgl_loop *lp = px->loops[i];
        pgl_janitor_start(lp);
        int rc = uv_thread_create(&lp->thread, run_thread, lp);
        if (rc != 0) {
            snprintf(err, errlen, "workers: cannot start worker %d: %s", i, uv_strerror(rc));
            /* Those started stop with the others at exit. */
            px->nloops_running = i;
            return rc;
        }
        px->nloops_running = i + 1;
    }
    pgl_replicas_start(px);
    return 0;
}

/* The park request, run by each other loop: wait until the main thread
 * lets go. */
static void park(pgl_loop *lp, void *arg)
{
    (void)arg;
    pgl_proxy *px = lp->px;
    uv_mutex_lock(&px->park_mu);
    uint64_t epoch = px->park_epoch;
    px->parked++;
    uv_cond_broadcast(&px->park_cond);
    while (px->park_epoch == epoch)
        uv_cond_wait(&px->park_cond, &px->park_mu);
    uv_mutex_unlock(&px->park_mu);
}

void pgl_workers_park(pgl_proxy *px)
{
    if (px->nloops_running <= 1 || px->park_depth++ > 0)
        return;
    for (int i = 1; i < px->nloops_running; i++) {
        pgl_loop *lp = px->loops[i];
        lp->park.fn = park;
        lp->park.arg = NULL;
        pgl_loop_post_task(lp, &lp->park);
    }
    uv_mutex_lock(&px->park_mu);
    while (px->parked < px->nloops_running - 1)
        uv_cond_wait(&px->park_cond, &px->park_mu);
    uv_mutex_unlock(&px->park_mu);
}

void pgl_workers_unpark(pgl_proxy *px)
{
    if (px->nloops_running <= 1 || --px->park_depth > 0)
        return;
    uv_mutex_lock(&px->park_mu);
    px->parked = 0;
    px->park_epoch++;
    uv_cond_broadcast(&px->park_cond);
    uv_mutex_unlock(&px->park_mu);
}

/* ---- accepting ---------------------------------------------------------------------- */

typedef struct {
    int fd;
    bool has_addr;
    struct sockaddr_storage addr;
} handed_fd;

static void adopt(pgl_loop *lp, void *arg)
{
    handed_fd *h = arg;
    pgl_client_accept(lp, h->fd, h->has_addr ? (const struct sockaddr *)&h->addr : NULL);
    free(h);
}

void pgl_workers_accept(void *arg, int fd, const struct sockaddr *sa)
{
    pgl_proxy *px = arg;
    /* In turn: the kernel's spreading of SO_REUSEPORT is by hash, this is
     * even, and one listener keeps reload's re-binding as it is. */
    int i = px->nloops_running > 1 ? (int)(px->next_loop++ % (unsigned)px->nloops_running) : 0;
    handed_fd *h = i > 0 ? malloc(sizeof *h) : NULL;
    if (h == NULL) {
        pgl_client_accept(&px->main, fd, sa);
        return;
    }
    h->fd = fd;
    h->has_addr = sa != NULL;
    if (sa != NULL)
        memcpy(&h->addr, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                              : sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                         : sizeof(struct sockaddr));
    if (pgl_loop_post(px->loops[i], adopt, h) != 0) {
        free(h);
        pgl_client_accept(&px->main, fd, sa);
    }
}

static void stop_loop(pgl_loop *lp, void *arg)
{
    (void)arg;
    uv_stop(&lp->uv);
}

void pgl_workers_stop(pgl_proxy *px)
{
    for (int i = 1; i < px->nloops; i++) {
        pgl_loop *lp = px->loops[i];
        if (i < px->nloops_running) {
            lp->park.fn = stop_loop;
            pgl_loop_post_task(lp, &lp->park);
            uv_thread_join(&lp->thread);
        }
        pgl_pools_free_loop(lp);
        /* Its handles close on this thread now that its own is gone. */
        pgl_loop *was = pgl_loop_current;
        pgl_loop_current = lp;
        int rc = pgl_loop_close(lp);
        pgl_loop_current = was;
        if (rc != 0)
            pgl_log_warning(NULL, "worker %d: event loop closed with handles open: %s", i,
                            pgl_strerror(rc));
        free(lp);
        px->loops[i] = NULL;
    }
    if (px->nloops > 0) {
        uv_cond_destroy(&px->park_cond);
        uv_mutex_destroy(&px->park_mu);
    }
    px->nloops = px->nloops > 0 ? 1 : 0;
    px->nloops_running = 0;
}
