/*
 * pgl_metrics — what the HTTP endpoint says about the process: /metrics in
 * the Prometheus text exposition format (version 0.0.4), and the readiness
 * verdict of /readyz. Pure reads of the proxy's state on the loop's thread;
 * no I/O here (pgl_http.c serves it).
 */
#ifndef PGL_METRICS_H
#define PGL_METRICS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pgl_proxy pgl_proxy;

/* A text being built, with a hard cap: a scrape can never make the process
 * allocate without bound. */
typedef struct {
    char *data;
    size_t len, cap, max;
    int rc; /* 0, or -ENOMEM / -E2BIG once the text could not grow */
} pgl_metrics_buf;

/* Empty buffer that may grow to `max` bytes. */
void pgl_metrics_buf_init(pgl_metrics_buf *b, size_t max);
void pgl_metrics_buf_free(pgl_metrics_buf *b);
/* Appends formatted text; failures stick in b->rc. */
void pgl_metrics_printf(pgl_metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Writes every metric into `b`. 0 or b->rc. */
int pgl_metrics_render(pgl_proxy *px, pgl_metrics_buf *b) __attribute__((warn_unused_result));

/* Ready to serve: every database has a credential that has not expired,
 * and the Vault token (when Vault is used) is valid. When not, `why` gets
 * one line naming the first database (or the token) that is not. */
bool pgl_metrics_ready(pgl_proxy *px, char *why, size_t cap);

#endif
