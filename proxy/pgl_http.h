/*
 * pgl_http — the HTTP endpoint on http_listen: /metrics (Prometheus text),
 * /healthz (200 while the loop turns: whatever answers, answers from it),
 * /readyz (200 when ready, else 503 and one line saying why).
 *
 * HTTP is libh2o's (Debian's libh2o, its libuv binding): h2o parses the
 * requests and writes the answers on sockets of the proxy's own loop, so a
 * scrape reads the proxy's state between two callbacks and needs no lock.
 * Nothing here parses HTTP. Bounds: h2o's own request-size limits, a cap on
 * open connections (more are closed at accept), h2o's request timeout for
 * slow or silent peers, and every answer closes its connection; writes are
 * asynchronous, so a slow reader never holds the loop.
 *
 * Owned by the process (px->http). pgl_http_stop closes the listener and
 * h2o's context before the loop closes; pgl_http_free releases the memory
 * after it (the handles' memory must outlive their close).
 */
#ifndef PGL_HTTP_H
#define PGL_HTTP_H

#include <stddef.h>

typedef struct pgl_proxy pgl_proxy;
typedef struct pgl_http pgl_http;

/* Listens on the config's http_listen (nothing when it is unset). 0, or a
 * negative error with `err` saying why. */
int pgl_http_start(pgl_proxy *px, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Stops listening and closes what h2o holds on the loop. */
void pgl_http_stop(pgl_proxy *px);

/* After the loop is closed. */
void pgl_http_free(pgl_proxy *px);

#endif
