/*
 * One event loop and what lives on it (pgl_loop.h): set-up, the reaper,
 * and the orderly close that leaves no handle behind.
 */
#include "pgl_loop.h"

#include "pgl_client.h"
#include "pgl_listener.h"
#include "pgl_server.h"

#include <string.h>

/* Connection buffers: large enough for a typical result batch per read. */
#define CONN_BUF_SIZE (32u * 1024)

/* Frees what was closed, now that no callback can hold a pointer to it. */
static void reap(uv_check_t *h)
{
    pgl_loop *lp = h->data;
    uv_check_stop(h);
    lp->reap_pending = false;
    while (!pgl_list_empty(&lp->zombie_clients)) {
        pgl_client *c = pgl_container_of(lp->zombie_clients.next, pgl_client, node);
        pgl_list_remove(&c->node);
        pgl_client_free(c);
    }
    while (!pgl_list_empty(&lp->zombie_servers)) {
        pgl_server *s = pgl_container_of(lp->zombie_servers.next, pgl_server, node);
        pgl_list_remove(&s->node);
        pgl_server_free(s);
    }
    if (lp->reaped != NULL)
        lp->reaped(lp);
}

void pgl_loop_reap_later(pgl_loop *lp)
{
    if (!lp->reap_pending) {
        lp->reap_pending = true;
        uv_check_start(&lp->reaper, reap);
    }
}

int pgl_loop_init(pgl_loop *lp, pgl_proxy *px, pgl_loop_reaped_cb reaped)
{
    memset(lp, 0, sizeof *lp);
    lp->px = px;
    lp->reaped = reaped;
    pgl_list_init(&lp->clients);
    pgl_list_init(&lp->zombie_clients);
    pgl_list_init(&lp->zombie_servers);
    int rc = pgl_cancel_table_init(&lp->cancels);
    if (rc != 0)
        return rc;
    rc = uv_loop_init(&lp->uv);
    if (rc != 0) {
        pgl_cancel_table_free(&lp->cancels);
        return rc;
    }
    pgl_conn_loop_init(&lp->conns, &lp->uv, CONN_BUF_SIZE);
    uv_timer_init(&lp->uv, &lp->janitor);
    lp->janitor.data = lp;
    uv_check_init(&lp->uv, &lp->reaper);
    lp->reaper.data = lp;
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int pgl_loop_close(pgl_loop *lp)
{
    pgl_listeners_close(lp->listeners);
    lp->listeners = NULL;
    pgl_conn_loop_close(&lp->conns);
    uv_walk(&lp->uv, close_walk, NULL);
    uv_run(&lp->uv, UV_RUN_DEFAULT);
    /* The reaper's handle is closed: free what it would have, and tell
     * nobody (the process is past stopping). */
    lp->reaped = NULL;
    reap(&lp->reaper);
    pgl_conn_loop_free_buffers(&lp->conns);
    pgl_cancel_table_free(&lp->cancels);
    return uv_loop_close(&lp->uv);
}
