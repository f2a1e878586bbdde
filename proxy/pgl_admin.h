/*
 * pgl_admin — the admin console: clients that connect to the database
 * "pglease" (or "pgbouncer", so PgBouncer's tooling finds it) get
 * simple-query commands answered by pglease itself.
 */
#ifndef PGL_ADMIN_H
#define PGL_ADMIN_H

#include "pgl_client.h"

/* What clients of the console database are answered with. */
extern const pgl_client_console pgl_admin_console;

#endif
