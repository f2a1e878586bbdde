/*
 * pgl_listener — the listening sockets: TCP on listen_addr:listen_port
 * ("*" = every IPv4 and IPv6 address) and the unix socket
 * unix_socket_dir/.s.PGSQL.<port>. Each accepted socket is handed to the
 * accept callback; the listeners know nothing of clients.
 */
#ifndef PGL_LISTENER_H
#define PGL_LISTENER_H

#include "pgl_conf.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <uv.h>

typedef struct pgl_listener pgl_listener;

/* A new connection: `fd` is non-blocking and now the callee's; `sa` is the
 * peer's address, NULL for the unix socket. */
typedef void (*pgl_listener_accept_cb)(void *arg, int fd, const struct sockaddr *sa);

/* Opens every listener `conf` asks for into *out (a list). 0, or a
 * negative error with `err` saying what could not be listened on (what
 * was opened stays in *out for pgl_listeners_close). */
int pgl_listeners_open(uv_loop_t *loop, const pgl_conf *conf, pgl_listener_accept_cb cb,
                       void *arg, pgl_listener **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Stops (or resumes) accepting, keeping the sockets: SIGUSR1/SIGUSR2, shutdown. */
void pgl_listeners_pause(pgl_listener *list, bool pause);

/* Closes the sockets (unlinking the unix one); memory goes with the loop's
 * close callbacks. NULL is fine. */
void pgl_listeners_close(pgl_listener *list);

#endif
