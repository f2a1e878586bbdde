/*
 * Splitting a libpq key=value conninfo string ourselves, because [databases]
 * entries carry pglease's own keys (creds=, pool_size=...) that libpq's
 * PQconninfoParse would reject. Quoting and escaping follow libpq
 * (libpq-connect.html, "Keyword/Value Connection Strings"); the list of
 * valid keywords comes from libpq itself.
 */
#ifndef PGL_CONF_CONNINFO_H
#define PGL_CONF_CONNINFO_H

#include "pgl_conf.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * Splits `conninfo` into key/value pairs (values unquoted and unescaped).
 * On error returns -EINVAL or -ENOMEM with a message in
 * `why` that names keys but never quotes a value (it may be a password).
 */
PGL_MUST_CHECK int pgl_conf_conninfo_split(const char *conninfo, pgl_conf_kv **out,
                                           size_t *nout, char *why, size_t whylen);

/* Frees what pgl_conf_conninfo_split returned, wiping the values. */
void pgl_conf_conninfo_free(pgl_conf_kv *kv, size_t n);

/* Whether libpq knows `key` as a connection keyword. */
bool pgl_conf_conninfo_is_libpq_key(const char *key);

#endif
