/*
 * pgl_vault_http — HTTP requests to Vault on libcurl's multi interface,
 * driven by the libuv loop: sockets watched with uv_poll, curl's timer on a
 * uv_timer. No call blocks and no thread is started.
 *
 * Every request carries X-Vault-Request: true, the namespace header when
 * configured, and is bounded by a total timeout. Secrets handled here (the
 * token header, request and response bodies) are wiped when dropped.
 */
#ifndef PGL_VAULT_HTTP_H
#define PGL_VAULT_HTTP_H

#include "pgl_err.h"

#include <stddef.h>

#include <uv.h>

typedef struct pgl_vault_http pgl_vault_http;
typedef struct pgl_vault_http_req pgl_vault_http_req;

typedef struct {
    const char *addr;      /* http(s)://host:port, no trailing path */
    const char *namespace; /* X-Vault-Namespace, or NULL */
    const char *ca_cert;   /* CA bundle for https, or NULL for the system's */
    /* TLS client certificate and key (PEM files) presented on every
     * request, or NULL: the cert auth method, or a listener requiring
     * mTLS. libcurl reads them itself, at each new connection. */
    const char *client_cert, *client_key;
    long timeout_ms;       /* whole request */
} pgl_vault_http_config;

typedef struct {
    long status;      /* HTTP status; 0 when the request never got an answer */
    const char *body; /* NUL-terminated; valid during the callback only */
    size_t body_len;
    const char *error; /* transport error (no secrets), or NULL */
} pgl_vault_http_response;

typedef void (*pgl_vault_http_cb)(void *arg, const pgl_vault_http_response *res);

/* libcurl's global state: once per process, before any thread (see
 * pgl_vault_global_init). Returns 0 or -EIO. */
PGL_MUST_CHECK int pgl_vault_http_global_init(void);
void pgl_vault_http_global_cleanup(void);

PGL_MUST_CHECK int pgl_vault_http_new(uv_loop_t *loop, const pgl_vault_http_config *cfg,
                                      pgl_vault_http **out, char *err, size_t errlen);

/*
 * Starts `method` on /v1/`path`. `token` (X-Vault-Token), `body` (JSON) and
 * `wrap_ttl` (X-Vault-Wrap-TTL) may be NULL. `cb` runs exactly once, from
 * the loop, unless the request is cancelled first. Returns 0 or -errno.
 */
PGL_MUST_CHECK int pgl_vault_http_request(pgl_vault_http *h, const char *method,
                                          const char *path, const char *token, const char *body,
                                          const char *wrap_ttl, pgl_vault_http_cb cb, void *arg,
                                          pgl_vault_http_req **out);

/* Drops a request; its callback will not run. NULL is fine. */
void pgl_vault_http_cancel(pgl_vault_http_req *req);

/* Cancels everything and releases the client (handles close on the loop). */
void pgl_vault_http_free(pgl_vault_http *h);

#endif
