/*
 * pgl_pgwire_saslprep — SASLprep (RFC 4013) of a password before a SCRAM
 * secret is derived from it, as Postgres's pg_saslprep does, so a
 * plaintext userlist password yields the secret Postgres would store and
 * matches what libpq-based clients send.
 *
 * Postgres's rules, kept here:
 *   - a pure ASCII password is used unchanged;
 *   - otherwise it must be valid UTF-8; non-ASCII spaces (C.1.2) map to
 *     U+0020, "commonly mapped to nothing" (B.1) characters are removed;
 *   - the mapped string must not be empty, and must hold no prohibited
 *     (C.1.2-C.9) or unassigned (A.1, Unicode 3.2) code point and pass the
 *     bidi rules; like Postgres these are checked on the mapped string,
 *     before normalisation;
 *   - the result is its NFKC form.
 * When a rule fails the caller uses the password's raw bytes, as Postgres
 * and libpq do. The tables and NFKC are GNU libidn's (Unicode 3.2).
 */
#ifndef PGL_PGWIRE_SASLPREP_H
#define PGL_PGWIRE_SASLPREP_H

#include "pgl_pgwire.h"

/*
 * Prepare `password`. On 0, *out is a new NUL-terminated string that the
 * caller owns and releases with pgl_pgwire_saslprep_free(). On failure *out
 * is NULL and the result is -EILSEQ (not valid UTF-8), -EINVAL (empty after
 * mapping, prohibited or unassigned code point, bidi rule broken): use the
 * password as given; or -ENOMEM. Every intermediate copy is wiped.
 */
PGL_MUST_CHECK int pgl_pgwire_saslprep(const char *password, char **out);

/* Wipe and free a string from pgl_pgwire_saslprep(); NULL is ignored. */
void pgl_pgwire_saslprep_free(char *prepared);

#endif
