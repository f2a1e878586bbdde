/*
 * pgl_creds — Vault-issued upstream credentials: fetch, renew, revoke, and
 * the tick that drives every Vault pool's generations (pgl_creds.c says
 * how). Nothing here runs for databases whose conninfo holds the password.
 */
#ifndef PGL_CREDS_H
#define PGL_CREDS_H

#include <stddef.h>

typedef struct pgl_proxy pgl_proxy;

/* Starts the Vault client and the tick when some database needs Vault.
 * 0, or a negative error with `err` saying why. */
int pgl_creds_init(pgl_proxy *px, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Shutdown: cancels renewals and fetches, revokes every lease
 * (revoke_on_shutdown); `done` runs when Vault answered (bounded). */
void pgl_creds_shutdown(pgl_proxy *px, void (*done)(pgl_proxy *px));

void pgl_creds_free(pgl_proxy *px);

#endif
