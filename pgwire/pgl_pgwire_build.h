/*
 * pgl_pgwire_build — the messages pglease writes itself.
 *
 * Every builder works like snprintf: it returns the number of bytes the
 * whole message needs and writes it only when that fits in `cap` (out may
 * be NULL with cap 0 to ask for the size). Nothing allocates.
 */
#ifndef PGL_PGWIRE_BUILD_H
#define PGL_PGWIRE_BUILD_H

#include "pgl_pgwire.h"

/* ErrorResponse ('E') or, with notice set, NoticeResponse ('N'). detail and
 * hint may be NULL. The severity is sent both localized (S) and not (V). */
size_t pgl_pgwire_build_error(uint8_t *out, size_t cap, int notice, const char *severity,
                              const char *sqlstate, const char *message, const char *detail,
                              const char *hint);

size_t pgl_pgwire_build_auth_ok(uint8_t *out, size_t cap);
size_t pgl_pgwire_build_auth_cleartext(uint8_t *out, size_t cap);
size_t pgl_pgwire_build_auth_md5(uint8_t *out, size_t cap, const uint8_t salt[4]);
/* AuthenticationSASL listing `n` mechanism names. */
size_t pgl_pgwire_build_auth_sasl(uint8_t *out, size_t cap, const char *const *mechs, size_t n);
size_t pgl_pgwire_build_auth_sasl_continue(uint8_t *out, size_t cap, const void *data,
                                           size_t len);
size_t pgl_pgwire_build_auth_sasl_final(uint8_t *out, size_t cap, const void *data, size_t len);

size_t pgl_pgwire_build_param_status(uint8_t *out, size_t cap, const char *name,
                                     const char *value);
size_t pgl_pgwire_build_backend_key(uint8_t *out, size_t cap, uint32_t pid, uint32_t key);
size_t pgl_pgwire_build_ready(uint8_t *out, size_t cap, char status);
/* NegotiateProtocolVersion with the newest minor and the refused options. */
size_t pgl_pgwire_build_negotiate(uint8_t *out, size_t cap, uint32_t minor,
                                  const char *const *options, size_t n);

/* Result sets for the admin console: text format, type OIDs per column. */
size_t pgl_pgwire_build_row_description(uint8_t *out, size_t cap, const char *const *names,
                                        const uint32_t *type_oids, size_t n);
/* values[i] NULL is SQL NULL. */
size_t pgl_pgwire_build_data_row(uint8_t *out, size_t cap, const char *const *values, size_t n);
size_t pgl_pgwire_build_command_complete(uint8_t *out, size_t cap, const char *tag);

/* Frontend messages: used toward servers and by tests. */
size_t pgl_pgwire_build_query(uint8_t *out, size_t cap, const char *sql);
size_t pgl_pgwire_build_terminate(uint8_t *out, size_t cap);
/* Parse of statement `name`; `def` is the rest of a Parse body (query,
 * parameter types) as a client sent it. */
size_t pgl_pgwire_build_parse(uint8_t *out, size_t cap, const char *name, const void *def,
                              size_t def_len);
/* Close of a statement ('S') or portal ('P'). */
size_t pgl_pgwire_build_close(uint8_t *out, size_t cap, char what, const char *name);
size_t pgl_pgwire_build_sync(uint8_t *out, size_t cap);
size_t pgl_pgwire_build_password(uint8_t *out, size_t cap, const char *password);
size_t pgl_pgwire_build_sasl_initial(uint8_t *out, size_t cap, const char *mech, const void *data,
                                     size_t len);
size_t pgl_pgwire_build_sasl_response(uint8_t *out, size_t cap, const void *data, size_t len);

#endif
