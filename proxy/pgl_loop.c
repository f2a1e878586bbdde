/*
 * One event loop and what lives on it (pgl_loop.h): set-up, the reaper,
 * and the orderly close that leaves no handle behind.
 */
#include "pgl_loop.h"

#include "pgl_client.h"
#include "pgl_listener.h"
#include "pgl_proxy.h"
#include "pgl_server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

_Thread_local pgl_loop *pgl_loop_current;

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

uint64_t pgl_loop_next_id(const pgl_loop *lp, uint64_t *counter)
{
    /* Loop k's ids are k+1, k+1+N, k+1+2N...: never another loop's. */
    uint64_t n = lp->px->nloops > 0 ? (uint64_t)lp->px->nloops : 1;
    return (*counter)++ * n + (uint64_t)lp->index + 1;
}

void pgl_loop_reap_later(pgl_loop *lp)
{
    if (!lp->reap_pending) {
        lp->reap_pending = true;
        uv_check_start(&lp->reaper, reap);
    }
}

/* A task posted with pgl_loop_post: freed once run. */
typedef struct {
    pgl_task task;
    pgl_task_fn fn;
    void *arg;
} owned_task;

static void run_owned(pgl_loop *lp, void *arg)
{
    owned_task *t = arg;
    pgl_task_fn fn = t->fn;
    void *fn_arg = t->arg;
    free(t);
    fn(lp, fn_arg);
}

void pgl_loop_post_task(pgl_loop *lp, pgl_task *t)
{
    uv_mutex_lock(&lp->task_mu);
    pgl_list_append(&lp->tasks, &t->node);
    uv_mutex_unlock(&lp->task_mu);
    uv_async_send(&lp->wake);
}

int pgl_loop_post(pgl_loop *lp, pgl_task_fn fn, void *arg)
{
    owned_task *t = malloc(sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    t->fn = fn;
    t->arg = arg;
    t->task.fn = run_owned;
    t->task.arg = t;
    pgl_loop_post_task(lp, &t->task);
    return 0;
}

static void on_wake(uv_async_t *h)
{
    pgl_loop *lp = h->data;
    pgl_list batch;
    pgl_list_init(&batch);
    uv_mutex_lock(&lp->task_mu);
    while (!pgl_list_empty(&lp->tasks)) {
        pgl_list *n = lp->tasks.next;
        pgl_list_remove(n);
        pgl_list_append(&batch, n);
    }
    uv_mutex_unlock(&lp->task_mu);
    while (!pgl_list_empty(&batch)) {
        pgl_task *t = pgl_container_of(batch.next, pgl_task, node);
        pgl_list_remove(&t->node);
        t->fn(lp, t->arg);
    }
}

int pgl_loop_init(pgl_loop *lp, pgl_proxy *px, int index, pgl_loop_reaped_cb reaped)
{
    memset(lp, 0, sizeof *lp);
    lp->px = px;
    lp->index = index;
    lp->reaped = reaped;
    pgl_list_init(&lp->pools);
    pgl_list_init(&lp->tasks);
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
    uv_timer_init(&lp->uv, &lp->replace_timer);
    /* A shutdown stops logins: the loop must not wait for this. */
    uv_unref((uv_handle_t *)&lp->replace_timer);
    if ((rc = uv_mutex_init(&lp->task_mu)) != 0 || (rc = uv_async_init(&lp->uv, &lp->wake, on_wake)) != 0) {
        (void)uv_loop_close(&lp->uv);
        pgl_cancel_table_free(&lp->cancels);
        return rc;
    }
    lp->wake.data = lp;
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
    /* Tasks nobody will run (posted after the loop stopped). */
    while (!pgl_list_empty(&lp->tasks)) {
        pgl_task *t = pgl_container_of(lp->tasks.next, pgl_task, node);
        pgl_list_remove(&t->node);
        if (t->fn == run_owned)
            free(t->arg);
    }
    uv_mutex_destroy(&lp->task_mu);
    return uv_loop_close(&lp->uv);
}
