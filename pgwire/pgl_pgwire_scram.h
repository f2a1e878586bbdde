/*
 * pgl_pgwire_scram — SCRAM-SHA-256 (RFC 5802, RFC 7677), the server side a
 * client authenticates against, and Postgres's stored secret format
 *   SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
 * (base64 fields). Crypto is OpenSSL's; every key buffer is wiped with
 * OPENSSL_cleanse when it is dropped.
 *
 * A secret made from a password derives it from the password's SASLprep
 * form, as Postgres does (pgl_pgwire_saslprep.h), so a non-ASCII plaintext
 * userlist password matches what libpq-based clients send.
 */
#ifndef PGL_PGWIRE_SCRAM_H
#define PGL_PGWIRE_SCRAM_H

#include "pgl_pgwire.h"

#define PGL_PGWIRE_SCRAM_KEY_LEN 32
#define PGL_PGWIRE_SCRAM_SALT_MAX 64
#define PGL_PGWIRE_SCRAM_SALT_LEN 16         /* what Postgres generates */
#define PGL_PGWIRE_SCRAM_ITERATIONS 4096     /* Postgres's default */
#define PGL_PGWIRE_SCRAM_SECRET_MAX 256      /* text form, NUL included */
#define PGL_PGWIRE_SCRAM_MSG_MAX 2048        /* largest message we accept or send */
#define PGL_PGWIRE_SCRAM_CB_MAX 64           /* tls-server-end-point hash, up to SHA-512 */

typedef struct pgl_pgwire_scram_secret {
    uint32_t iterations;
    uint8_t salt[PGL_PGWIRE_SCRAM_SALT_MAX];
    size_t salt_len;
    uint8_t stored_key[PGL_PGWIRE_SCRAM_KEY_LEN];
    uint8_t server_key[PGL_PGWIRE_SCRAM_KEY_LEN];
} pgl_pgwire_scram_secret;

/* Parse the stored text form. Returns 0 or PGL_ESECRET. */
PGL_MUST_CHECK int pgl_pgwire_scram_secret_parse(const char *text, pgl_pgwire_scram_secret *out);
void pgl_pgwire_scram_secret_wipe(pgl_pgwire_scram_secret *s);

/* Derive the stored form from a password (SASLprep applied, or the raw
 * bytes where Postgres would keep them) with a fresh random salt and
 * Postgres's default iteration count. `out` gets a NUL-terminated string. */
PGL_MUST_CHECK int pgl_pgwire_scram_secret_make(const char *password, char *out, size_t cap);
/* Same with a given salt and iteration count (tests, reproducibility). */
PGL_MUST_CHECK
int pgl_pgwire_scram_secret_make_salted(const char *password, const uint8_t *salt,
                                        size_t salt_len, uint32_t iterations, char *out,
                                        size_t cap);

typedef struct pgl_pgwire_scram_server pgl_pgwire_scram_server;

/*
 * Start one exchange. `secret` is the user's stored secret, or NULL for an
 * unknown user (or one without a SCRAM secret): the exchange then runs with
 * a mock salt derived from `mock_key` (32 random bytes per process) and the
 * user name, so an attacker cannot tell unknown users from wrong passwords,
 * and fails at the end with PGL_EAUTH, as Postgres does.
 * `cb`/`cb_len` is the tls-server-end-point hash of our certificate when
 * the client connection is TLS (SCRAM-SHA-256-PLUS is then offered), or
 * NULL/0.
 */
PGL_MUST_CHECK int pgl_pgwire_scram_server_new(const char *secret, const char *user,
                                               const uint8_t mock_key[PGL_PGWIRE_SCRAM_KEY_LEN],
                                               const uint8_t *cb, size_t cb_len,
                                               pgl_pgwire_scram_server **out);

/* Fix the server nonce instead of drawing it from RAND_bytes: for the RFC
 * test vector and deterministic fuzzing only. Call before _first. */
PGL_MUST_CHECK int pgl_pgwire_scram_server_set_nonce(pgl_pgwire_scram_server *s, const char *nonce);

/* client-first-message → server-first-message. `mech` is the mechanism the
 * client chose in SASLInitialResponse. */
PGL_MUST_CHECK
int pgl_pgwire_scram_server_first(pgl_pgwire_scram_server *s, const char *mech,
                                  const uint8_t *data, size_t len, uint8_t *reply, size_t cap,
                                  size_t *reply_len);

/* client-final-message → server-final-message. Returns 0 only when the
 * proof verified; PGL_EAUTH for a wrong password or unknown user. */
PGL_MUST_CHECK
int pgl_pgwire_scram_server_final(pgl_pgwire_scram_server *s, const uint8_t *data, size_t len,
                                  uint8_t *reply, size_t cap, size_t *reply_len);

void pgl_pgwire_scram_server_free(pgl_pgwire_scram_server *s);

#endif
