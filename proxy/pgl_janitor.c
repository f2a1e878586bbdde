/*
 * The janitor: what is about time rather than bytes. Every second: client
 * timeouts (login, query_wait_timeout, client_idle_timeout) and pool upkeep
 * (server_lifetime, server_idle_timeout, min_pool_size, login retries).
 * During a shutdown, every 100 ms: close each client that is between
 * transactions, and every client once the grace period is over.
 */
#include "pgl_client.h"
#include "pgl_loop.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_server.h"

static void shutdown_sweep(pgl_loop *lp, uint64_t now)
{
    bool deadline = now >= lp->px->shutdown_deadline;
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &lp->clients)
    {
        pgl_client *c = pgl_container_of(it, pgl_client, node);
        bool between = c->state != PGL_CLIENT_ACTIVE ||
                       (c->link != NULL && pgl_server_between_transactions(c->link));
        if (between || deadline)
            pgl_client_fail(c, "FATAL", "57P01", "terminating connection: pglease is shutting down");
    }
}

static void on_janitor(uv_timer_t *t)
{
    pgl_loop *lp = t->data;
    pgl_proxy *px = lp->px;
    uint64_t now = pgl_loop_now(lp);
    if (px->shutting_down) {
        shutdown_sweep(lp, now);
        return;
    }
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &lp->clients)
    {
        pgl_client_janitor(pgl_container_of(it, pgl_client, node), now);
    }
    pgl_list_foreach(it, tmp, &lp->pools)
    {
        pgl_pool *pool = pgl_container_of(it, pgl_pool, node);
        pgl_stats_tick(&pool->stats, now, px->conf->stats_period);
        pgl_pool_janitor(pool, now);
    }
}

#define JANITOR_MS 1000
#define SHUTDOWN_SWEEP_MS 100

void pgl_janitor_start(pgl_loop *lp)
{
    uv_timer_start(&lp->janitor, on_janitor, JANITOR_MS, JANITOR_MS);
}

void pgl_janitor_shutdown(pgl_loop *lp)
{
    uv_timer_start(&lp->janitor, on_janitor, 0, SHUTDOWN_SWEEP_MS);
}
