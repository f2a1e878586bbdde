/*
 * pgl_pgwire_startup — the untyped packets a client may send first:
 * StartupMessage (protocol 3.x with its parameters), SSLRequest,
 * GSSENCRequest and CancelRequest; and the StartupMessage builder.
 */
#ifndef PGL_PGWIRE_STARTUP_H
#define PGL_PGWIRE_STARTUP_H

#include "pgl_pgwire.h"

#define PGL_PGWIRE_CODE_CANCEL 80877102u
#define PGL_PGWIRE_CODE_SSL 80877103u
#define PGL_PGWIRE_CODE_GSSENC 80877104u

typedef enum {
    PGL_PGWIRE_STARTUP_MESSAGE,
    PGL_PGWIRE_STARTUP_SSL,
    PGL_PGWIRE_STARTUP_GSSENC,
    PGL_PGWIRE_STARTUP_CANCEL,
} pgl_pgwire_startup_kind;

typedef struct pgl_pgwire_startup {
    pgl_pgwire_startup_kind kind;
    uint16_t major, minor;              /* StartupMessage */
    uint32_t cancel_pid, cancel_key;    /* CancelRequest */
    const char *user, *database;        /* into the body; NULL when absent */
    const uint8_t *params;              /* name/value pairs, NUL-terminated each */
    size_t params_len;                  /* excluding the list terminator */
} pgl_pgwire_startup;

typedef struct pgl_pgwire_param_iter {
    const uint8_t *p, *end;
} pgl_pgwire_param_iter;

/*
 * Parse a startup-phase packet body (everything after the length word).
 * On success every parameter name is non-empty, has a value, and the list is
 * terminated. A 3.x StartupMessage without `user` is accepted here (the
 * proxy decides what that means). Returns 0, PGL_EVERSION (major
 * version not 3; `major`/`minor` are still set so the caller can say which)
 * or PGL_EFORMAT.
 */
PGL_MUST_CHECK
int pgl_pgwire_parse_startup(const uint8_t *body, size_t len, pgl_pgwire_startup *st);

void pgl_pgwire_startup_params(const pgl_pgwire_startup *st, pgl_pgwire_param_iter *it);
/* Next name/value pair; returns 0 at the end. */
PGL_MUST_CHECK
int pgl_pgwire_param_next(pgl_pgwire_param_iter *it, const char **name, const char **value);

/*
 * Build a StartupMessage for protocol 3.`minor` from `n` name/value pairs
 * (kv[2i], kv[2i+1]). Like snprintf: returns the size needed and writes only
 * when it fits in `cap`.
 */
size_t pgl_pgwire_build_startup(uint8_t *out, size_t cap, uint16_t minor, const char *const *kv,
                                size_t n);
/* SSLRequest, GSSENCRequest and CancelRequest are fixed-size. */
size_t pgl_pgwire_build_ssl_request(uint8_t *out, size_t cap);
size_t pgl_pgwire_build_cancel(uint8_t *out, size_t cap, uint32_t pid, uint32_t key);

#endif
