#include "pgl_poller.h"

#include <stdlib.h>

struct pgl_poller {
    uv_poll_t handle;
    int fd;
    int events;
    pgl_poller_cb cb;
    void *arg;
};

static void on_poll(uv_poll_t *h, int status, int events)
{
    pgl_poller *p = h->data;
    if (p->cb != NULL)
        p->cb(p, p->arg, status, events);
}

static void on_close(uv_handle_t *h)
{
    free(h->data);
}

int pgl_poller_open(uv_loop_t *loop, int fd, pgl_poller_cb cb, void *arg, pgl_poller **out)
{
    pgl_poller *p = calloc(1, sizeof *p);
    if (p == NULL)
        return UV_ENOMEM;
    int rc = uv_poll_init_socket(loop, &p->handle, fd);
    if (rc != 0) {
        free(p);
        return rc;
    }
    p->handle.data = p;
    p->fd = fd;
    p->cb = cb;
    p->arg = arg;
    *out = p;
    return 0;
}

void pgl_poller_retarget(pgl_poller *p, pgl_poller_cb cb, void *arg)
{
    p->cb = cb;
    p->arg = arg;
}

int pgl_poller_want(pgl_poller *p, int events)
{
    if (events == p->events)
        return 0;
    p->events = events;
    if (events == 0)
        return uv_poll_stop(&p->handle);
    return uv_poll_start(&p->handle, events, on_poll);
}

int pgl_poller_fd(const pgl_poller *p)
{
    return p->fd;
}

void pgl_poller_close(pgl_poller *p)
{
    if (p == NULL)
        return;
    uv_poll_stop(&p->handle);
    p->cb = NULL;
    uv_close((uv_handle_t *)&p->handle, on_close);
}
