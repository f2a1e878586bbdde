/*
 * pgl_userlist — the local users clients log in as (auth_file), in
 * PgBouncer's userlist.txt format:
 *
 *     "user" "secret"
 *
 * one per line; a double quote inside a field is doubled; lines starting
 * with ';' or '#' and blank lines are ignored. The secret is a plaintext
 * password, "md5" + md5(password || user) in hex, or a SCRAM-SHA-256 secret
 * as Postgres stores it. For SCRAM logins a plaintext entry is turned into a
 * SCRAM secret once, here, not at every login.
 */
#ifndef PGL_USERLIST_H
#define PGL_USERLIST_H

#include <stddef.h>

typedef enum {
    PGL_SECRET_PLAIN = 0,
    PGL_SECRET_MD5,
    PGL_SECRET_SCRAM,
} pgl_secret_kind;

typedef struct {
    char *name;
    pgl_secret_kind kind;
    char *secret;       /* as written (plaintext, md5..., SCRAM-SHA-256$...) */
    char *scram_secret; /* SCRAM form: the secret itself, or derived from plaintext */
} pgl_user;

typedef struct pgl_userlist pgl_userlist;

/*
 * Loads `path`. With `derive_scram`, plaintext entries also get a SCRAM
 * secret (4096 iterations, random salt). On error returns a negative code
 * and writes "path:line: what" into err (never a secret).
 */
int pgl_userlist_load(const char *path, int derive_scram, pgl_userlist **out, char *err,
                      size_t errlen) __attribute__((warn_unused_result));

/* Wipes every secret and frees. NULL is fine. */
void pgl_userlist_free(pgl_userlist *ul);

/* The user called `name`, or NULL. */
const pgl_user *pgl_userlist_find(const pgl_userlist *ul, const char *name);

size_t pgl_userlist_count(const pgl_userlist *ul);

/* The i-th user by name (SHOW USERS), NULL past the end. */
const pgl_user *pgl_userlist_at(const pgl_userlist *ul, size_t i);

#endif
