/*
 * pgl_admin_result — how the console writes a result set, shared by the
 * command dispatcher (pgl_admin.c) and the SHOW commands
 * (pgl_admin_show.c). Internal to the console.
 *
 * Columns carry PgBouncer's type OIDs (text, int4, int8, numeric) so that
 * tools reading RowDescription see the same types; values are always sent
 * in text format, formatted here. A write that runs out of memory sticks in
 * `rc` and the console fails the client once.
 */
#ifndef PGL_ADMIN_RESULT_H
#define PGL_ADMIN_RESULT_H

#include "pgl_client.h"

#include <stddef.h>
#include <stdint.h>

#define PGL_OID_BOOL 16
#define PGL_OID_INT8 20
#define PGL_OID_INT4 23
#define PGL_OID_TEXT 25
#define PGL_OID_NUMERIC 1700

#define PGL_ADMIN_MAX_COLS 32

typedef struct {
    const char *name;
    uint32_t oid;
} pgl_admin_col;

typedef struct {
    pgl_client *c;
    size_t ncols;
    int rc;
} pgl_admin_result;

/* RowDescription for `n` columns (at most PGL_ADMIN_MAX_COLS). */
void pgl_admin_begin(pgl_admin_result *r, pgl_client *c, const pgl_admin_col *cols, size_t n);
/* One DataRow; NULL values are SQL NULLs. */
void pgl_admin_row(pgl_admin_result *r, const char *const *values);
/* CommandComplete with `tag` (PgBouncer's SHOW answers "SHOW"). */
void pgl_admin_end(pgl_admin_result *r, const char *tag);

/* Formats into `buf` (at least 24 bytes) and returns it. */
const char *pgl_admin_u64(char *buf, uint64_t v);
/* A loop-clock time (ms) as PgBouncer writes times: "YYYY-MM-DD HH:MM:SS UTC"
 * (buf at least 32 bytes); NULL when `ms` is 0. */
const char *pgl_admin_time(char *buf, const pgl_client *c, uint64_t ms);

/* A SHOW command. */
typedef void (*pgl_admin_show_fn)(pgl_client *c, pgl_admin_result *r);

/* The SHOW commands (pgl_admin_show.c): the function for `what` (lower
 * case, e.g. "pools"), or NULL. */
pgl_admin_show_fn pgl_admin_show_lookup(const char *what);

#endif
