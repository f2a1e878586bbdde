/*
 * pgl_msg — the messages pglease writes itself, built with pgwire and
 * queued on a connection. One place, so the proxy's files never assemble
 * protocol bytes by hand.
 *
 * Every function returns 0 or -ENOMEM (the connection's caller closes it).
 */
#ifndef PGL_MSG_H
#define PGL_MSG_H

#include "pgl_conn.h"

#include <stddef.h>
#include <stdint.h>

int pgl_msg_error(pgl_conn *c, const char *severity, const char *sqlstate, const char *message,
                  const char *detail, const char *hint);
int pgl_msg_auth_ok(pgl_conn *c);
int pgl_msg_auth_md5(pgl_conn *c, const uint8_t salt[4]);
/* AuthenticationSASL offering SCRAM-SHA-256 (and -PLUS when `plus`). */
int pgl_msg_auth_sasl(pgl_conn *c, int plus);
int pgl_msg_auth_sasl_continue(pgl_conn *c, const void *data, size_t len);
int pgl_msg_auth_sasl_final(pgl_conn *c, const void *data, size_t len);
int pgl_msg_param_status(pgl_conn *c, const char *name, const char *value);
int pgl_msg_backend_key(pgl_conn *c, uint32_t pid, uint32_t key);
int pgl_msg_ready(pgl_conn *c, char status);
int pgl_msg_query(pgl_conn *c, const char *sql);
/* NegotiateProtocolVersion: newest minor we speak, and options we ignored. */
int pgl_msg_negotiate(pgl_conn *c, uint32_t minor, const char *const *unsupported, size_t n);
/* A single byte answer to SSLRequest/GSSENCRequest ('S' or 'N'). */
int pgl_msg_byte(pgl_conn *c, char b);

/* Admin console result sets. */
int pgl_msg_row_description(pgl_conn *c, const char *const *names, const uint32_t *type_oids,
                            size_t n);
int pgl_msg_data_row(pgl_conn *c, const char *const *values, size_t n);
int pgl_msg_command_complete(pgl_conn *c, const char *tag);

#endif
