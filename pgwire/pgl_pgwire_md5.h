/*
 * pgl_pgwire_md5 — Postgres's md5 password authentication:
 *   stored  = "md5" + hex(md5(password + user))
 *   on wire = "md5" + hex(md5(hex(md5(password + user)) + salt))
 * Kept for PgBouncer userlist compatibility; SCRAM is the default.
 */
#ifndef PGL_PGWIRE_MD5_H
#define PGL_PGWIRE_MD5_H

#include "pgl_pgwire.h"

#define PGL_PGWIRE_MD5_LEN 35 /* "md5" + 32 hex digits */

/* The stored form for password+user, NUL-terminated in out[36]. */
PGL_MUST_CHECK int pgl_pgwire_md5_secret(const char *password, const char *user,
                                         char out[PGL_PGWIRE_MD5_LEN + 1]);

/*
 * Check a client's md5 response. `secret` is either the stored md5 form
 * (secret_is_md5) or the plaintext password. Returns 0 when it matches,
 * PGL_EAUTH otherwise. The comparison is constant-time.
 */
PGL_MUST_CHECK
int pgl_pgwire_md5_verify(const char *secret, int secret_is_md5, const char *user,
                          const uint8_t salt[4], const char *response, size_t response_len);

#endif
