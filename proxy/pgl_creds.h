/*
 * pgl_creds — Vault-issued upstream credentials: fetch, renew, revoke, and
 * the tick that drives every Vault pool's generations (pgl_creds.c says
 * how). Nothing here runs for databases whose conninfo holds the password.
 */
#ifndef PGL_CREDS_H
#define PGL_CREDS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pgl_proxy pgl_proxy;
typedef struct pgl_pool pgl_pool;
struct pgl_conf;
struct pgl_vault;

/* Starts the Vault client and the tick when some database needs Vault.
 * 0, or a negative error with `err` saying why. */
int pgl_creds_init(pgl_proxy *px, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Shutdown: cancels renewals and fetches, revokes every lease
 * (revoke_on_shutdown); `done` runs when Vault answered (bounded). */
void pgl_creds_shutdown(pgl_proxy *px, void (*done)(pgl_proxy *px));

void pgl_creds_free(pgl_proxy *px);

/* Reload: a Vault client for `next`'s [vault] section, not started (0 or a
 * negative error with `err`); pgl_creds_replace then drops the running one
 * (its requests in flight are cancelled) and starts `v`, and every Vault
 * pool fetches a credential of the new login, drained as a rotation. */
int pgl_creds_prepare(pgl_proxy *px, const struct pgl_conf *next, struct pgl_vault **out,
                      char *err, size_t errlen) __attribute__((warn_unused_result));
void pgl_creds_replace(pgl_proxy *px, struct pgl_vault *v);
/* Hooks `pool` to Vault when its database takes credentials from it (a
 * pool added or changed by a reload). */
void pgl_creds_attach(pgl_pool *pool);


/* Console ROTATE: fetch a successor credential now; it warms, takes over
 * and the current generation drains as in a scheduled rotation. 0; -EINVAL
 * when the database does not take credentials from Vault; -EALREADY when a
 * fetch or a warming generation is already under way. */
int pgl_creds_rotate(pgl_pool *pool);

/* The pool has no credential and Vault failed again and again: clients
 * waiting for one are told now rather than at query_wait_timeout. */
bool pgl_creds_gave_up(pgl_pool *pool);

#endif
