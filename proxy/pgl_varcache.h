/*
 * pgl_varcache — the session parameters a client expects to keep while it
 * moves between server connections (transaction pooling).
 *
 * Each client and each server keeps one cache. Values come from the
 * client's startup packet and from ParameterStatus messages; when a client
 * lands on a server whose cache differs, pgl_varcache_apply_sql() yields the
 * query that makes the server match.
 *
 * Besides the reported parameters, a cache holds "extra" settings: any
 * other GUC a client sent at startup (as a parameter, or as `-c name=value`
 * in `options`). A server's extras are those pglease set on it, so that the
 * next client without them gets the server's defaults back.
 */
#ifndef PGL_VARCACHE_H
#define PGL_VARCACHE_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    PGL_VAR_CLIENT_ENCODING = 0,
    PGL_VAR_DATESTYLE,
    PGL_VAR_TIMEZONE,
    PGL_VAR_STANDARD_CONFORMING_STRINGS,
    PGL_VAR_APPLICATION_NAME,
    PGL_VAR_INTERVALSTYLE,
    PGL_VAR_SEARCH_PATH, /* not reported by Postgres 15: known from startup only */
    PGL_VAR_COUNT,
} pgl_var;

/* One extra setting: name lower-cased, as Postgres compares them. */
typedef struct {
    char *name;
    char *value;
} pgl_guc;

typedef struct {
    char *values[PGL_VAR_COUNT]; /* NULL = unknown (a server: its own default) */
    pgl_guc *extra;              /* NULL while none */
    size_t nextra;
} pgl_varcache;

/* The variable called `name` (case-insensitive), or -1 when not tracked. */
int pgl_varcache_lookup(const char *name);

const char *pgl_varcache_name(pgl_var v);

/* Stores a copy of `value` (len bytes). 0 or -ENOMEM. */
int pgl_varcache_set(pgl_varcache *vc, pgl_var v, const char *value, size_t len);

void pgl_varcache_clear(pgl_varcache *vc);

/* Sets extra setting `name` (stored lower-cased) to `value`. 0 or -ENOMEM. */
int pgl_varcache_set_extra(pgl_varcache *vc, const char *name, const char *value);

/* Forgets the extra settings. */
void pgl_varcache_clear_extra(pgl_varcache *vc);

/* A server after DISCARD ALL: its extra settings and the variables Postgres
 * does not report (search_path) are back at its defaults; the reported
 * ones arrived as ParameterStatus. */
void pgl_varcache_reset(pgl_varcache *server);

/* Copies every known value of `src` into `dst`. 0 or -ENOMEM. */
int pgl_varcache_copy(pgl_varcache *dst, const pgl_varcache *src);

/*
 * Writes into `sql` (capacity `cap`) one query setting on the server every
 * variable whose wanted value the server has differently, through
 * pg_catalog.set_config (exact text semantics, quoting done here). The
 * wanted value is the client's own, else the one in `defaults` (the pool's;
 * may be NULL). `client` may be NULL (it set nothing), so idle clients need
 * not keep copies of the defaults.
 * A variable the server has a value for but that has no wanted value (no
 * default known: search_path, which Postgres 15 does not report) goes back
 * to the server's own default (pg_settings.reset_val). So does an extra
 * setting the server has and the client does not; the client's extras are
 * set as they are (Postgres's own error answers one it cannot take).
 * Returns the length, 0 when nothing differs, or -1 when `cap` is too small.
 */
int pgl_varcache_apply_sql(const pgl_varcache *client, const pgl_varcache *defaults,
                           const pgl_varcache *server, char *sql, size_t cap);

/* After that query succeeded: records in `server` what it now has, since
 * Postgres does not report every variable back. 0 or -ENOMEM. */
int pgl_varcache_applied(const pgl_varcache *client, const pgl_varcache *defaults,
                         pgl_varcache *server);

#endif
