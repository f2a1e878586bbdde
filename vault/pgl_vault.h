/*
 * pgl_vault — the Vault client pglease needs: log in (token, AppRole,
 * Kubernetes, JWT, TLS certificate), keep the token alive, read secrets, renew and revoke leases.
 *
 * Everything runs on the caller's libuv loop through pgl_vault_http. Calls
 * that fail for reasons that may pass (transport errors, 412, 429, 5xx,
 * sealed) are retried with capped exponential backoff and full jitter; a
 * 403 makes the client log in again before retrying; 400 and 404 are
 * reported to the caller. Nothing here logs on its own: messages go to the
 * caller's log callback and never contain a token, secret_id, password or
 * JWT.
 *
 * Errors are 0 or a negative code of base/pgl_err.h (-ENOMEM, -EIO, -EPROTO
 * for an answer that does not decode...).
 */
#ifndef PGL_VAULT_H
#define PGL_VAULT_H

#include "pgl_err.h"

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

typedef enum {
    PGL_VAULT_AUTH_APPROLE = 0,
    PGL_VAULT_AUTH_TOKEN,
    PGL_VAULT_AUTH_KUBERNETES,
    PGL_VAULT_AUTH_JWT,  /* role jwt_role, the JWT read from jwt_file at each login */
    PGL_VAULT_AUTH_CERT, /* the client certificate; cert_role names the login's role */
} pgl_vault_auth_method;

typedef struct {
    const char *addr, *namespace, *ca_cert;
    pgl_vault_auth_method method;
    const char *auth_mount;   /* "approle", "kubernetes"... */
    const char *token;        /* token method without token_file ($VAULT_TOKEN) */
    const char *token_file;
    const char *role_id, *role_id_file, *secret_id_file;
    bool secret_id_wrapped;
    const char *kubernetes_role, *jwt_file;
    const char *jwt_role;
    const char *client_cert, *client_key; /* PEM files, sent on every request */
    const char *cert_role;                /* NULL: Vault picks a matching role */
    long request_timeout_ms;
} pgl_vault_config;

/* A secret read from a database engine. */
typedef struct {
    char *username;
    char *password;
    char *lease_id;       /* "" for static credentials */
    long lease_duration;  /* seconds; 0 when not leased */
    bool renewable;
    long static_ttl;      /* static-creds: seconds until Vault rotates, else -1 */
    long kv_version;      /* KV v2: the version read, else 0 */
} pgl_vault_secret;

/* Wipes and frees the fields (not the struct). */
void pgl_vault_secret_clear(pgl_vault_secret *s);

typedef struct pgl_vault pgl_vault;
typedef struct pgl_vault_op pgl_vault_op;

enum { PGL_VAULT_LOG_DEBUG, PGL_VAULT_LOG_INFO, PGL_VAULT_LOG_WARNING, PGL_VAULT_LOG_ERROR };
typedef void (*pgl_vault_log_fn)(void *arg, int level, const char *msg);

/* rc 0: `secret` filled (the callee owns it after the call: clear it). */
typedef void (*pgl_vault_secret_cb)(void *arg, int rc, pgl_vault_secret *secret,
                                    const char *err);
/* rc 0: renewed for `lease_duration` seconds (may be less than asked). */
typedef void (*pgl_vault_lease_cb)(void *arg, int rc, long lease_duration, const char *err);

/*
 * Process-wide set-up of the libraries the client uses (libcurl's global
 * state, jansson's wiping allocator). Call once, before any thread starts
 * and before the first pgl_vault_new; pgl_vault_global_cleanup undoes it
 * after the last pgl_vault_free. Returns 0 or -EIO.
 *
 * The retry jitter draws from random(): the program seeds it (srandom).
 */
PGL_MUST_CHECK int pgl_vault_global_init(void);
void pgl_vault_global_cleanup(void);

PGL_MUST_CHECK int pgl_vault_new(uv_loop_t *loop, const pgl_vault_config *cfg,
                                 pgl_vault_log_fn log, void *log_arg, pgl_vault **out,
                                 char *err, size_t errlen);

/* Logs in (and keeps logging in / renewing) until freed. */
void pgl_vault_start(pgl_vault *v);

/* A token is held and not expired. */
bool pgl_vault_ready(const pgl_vault *v);

/* Loop time (ms) at which the current token ends for good (its max TTL);
 * UINT64_MAX for a token that never expires, 0 when there is none. Leases
 * created with it end no later than that. */
uint64_t pgl_vault_token_end(const pgl_vault *v);

/* Identifies the current token (changes at each login), so a lease can be
 * tied to the token that created it. 0 when there is none. */
uint64_t pgl_vault_token_id(const pgl_vault *v);

/* The final end (loop ms) of the token `id` once known, UINT64_MAX while
 * it may still be renewed or is unknown. A lease ends with its token. */
uint64_t pgl_vault_token_end_of(const pgl_vault *v, uint64_t id);

/* GET `path` (e.g. "database/creds/app-rw") and decode a database secret.
 * Transient failures are retried a few times (about two seconds), then
 * reported; 400/404 are reported at once. */
pgl_vault_op *pgl_vault_read_secret(pgl_vault *v, const char *path, pgl_vault_secret_cb cb,
                                    void *arg);

/* GET a KV v2 secret's latest version at `path` ("<mount>/data/<path>"):
 * the user and password are the string fields `user_field` and
 * `password_field` of data.data, kv_version its data.metadata.version; no
 * lease. Retries as pgl_vault_read_secret. */
pgl_vault_op *pgl_vault_read_kv(pgl_vault *v, const char *path, const char *user_field,
                                const char *password_field, pgl_vault_secret_cb cb, void *arg);

/* GET `metadata_path` ("<mount>/metadata/<path>"): `cb` gets the secret's
 * current_version (as its long) without reading the secret itself. Retries
 * as pgl_vault_read_secret. */
pgl_vault_op *pgl_vault_kv_version(pgl_vault *v, const char *metadata_path,
                                   pgl_vault_lease_cb cb, void *arg);

/* sys/leases/renew with `increment` seconds; a few retries. */
pgl_vault_op *pgl_vault_renew(pgl_vault *v, const char *lease_id, long increment,
                              pgl_vault_lease_cb cb, void *arg);

/* sys/leases/revoke; a few retries. `cb` may be NULL. */
pgl_vault_op *pgl_vault_revoke(pgl_vault *v, const char *lease_id, pgl_vault_lease_cb cb,
                               void *arg);

/* Drops an operation; its callback will not run. NULL is fine. */
void pgl_vault_cancel(pgl_vault_op *op);

/* Number of operations in flight (shutdown waits for revocations). */
int pgl_vault_pending(const pgl_vault *v);

void pgl_vault_free(pgl_vault *v);

#endif
