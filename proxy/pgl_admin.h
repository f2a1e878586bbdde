/*
 * pgl_admin — the admin console: clients that connect to the database
 * "pglease" (or "pgbouncer", so PgBouncer's tooling finds it) get
 * simple-query commands answered by pglease itself.
 */
#ifndef PGL_ADMIN_H
#define PGL_ADMIN_H

#include <stdint.h>

typedef struct pgl_client pgl_client;

/* The console's ParameterStatus set, queued on the client. 0 or -ENOMEM. */
int pgl_admin_welcome_params(pgl_client *client) __attribute__((warn_unused_result));
/* One message from a console client. */
void pgl_admin_query(pgl_client *client, uint8_t type, const uint8_t *body, uint32_t len);

#endif
