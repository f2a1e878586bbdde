/*
 * pgl_poller — a heap-allocated uv_poll_t watching one socket.
 *
 * Connections own their socket but not the handle's memory: libuv frees a
 * handle only after its close callback, and libpq may replace the socket
 * during login (several hosts, retries). A poller is closed with
 * pgl_poller_close(), which stops it at once (no callback after that
 * returns) and frees it when libuv is done with it, so its owner can be
 * freed, or close the socket, right away.
 */
#ifndef PGL_POLLER_H
#define PGL_POLLER_H

#include <uv.h>

typedef struct pgl_poller pgl_poller;

/* `events` is UV_READABLE|UV_WRITABLE; `status` < 0 is a libuv error. */
typedef void (*pgl_poller_cb)(pgl_poller *p, void *arg, int status, int events);

/* Watches `fd` (not taken: the caller closes it). 0 or a libuv error. */
int pgl_poller_open(uv_loop_t *loop, int fd, pgl_poller_cb cb, void *arg, pgl_poller **out)
    __attribute__((warn_unused_result));

/* Changes the callback target, e.g. when a connection is handed over. */
void pgl_poller_retarget(pgl_poller *p, pgl_poller_cb cb, void *arg);

/* Sets the events watched; 0 stops watching. Cheap when unchanged. */
int pgl_poller_want(pgl_poller *p, int events);

int pgl_poller_fd(const pgl_poller *p);

/* Stops and releases. NULL is fine. The fd stays open. */
void pgl_poller_close(pgl_poller *p);

#endif
