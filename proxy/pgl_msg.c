#include "pgl_msg.h"

#include "pgl_pgwire_build.h"

#include <errno.h>

/* Builds with `expr` (which uses `out`/`cap`) straight into the end of the
 * connection's own output: once, unless it did not fit the room there, and
 * never copied. Written before the loop next sleeps. */
#define SEND_BUILT(c, expr)                                                                        \
    do {                                                                                           \
        if ((c)->closed)                                                                           \
            return 0;                                                                              \
        size_t cap = 0;                                                                            \
        uint8_t *out = pgl_conn_out_space((c), 0, &cap);                                           \
        if (out == NULL)                                                                           \
            return -ENOMEM;                                                                        \
        size_t need_ = (expr);                                                                     \
        if (need_ > cap) {                                                                         \
            if ((out = pgl_conn_out_space((c), need_, &cap)) == NULL)                              \
                return -ENOMEM;                                                                    \
            (void)(expr);                                                                          \
        }                                                                                          \
        pgl_conn_out_commit((c), need_);                                                           \
        return 0;                                                                                  \
    } while (0)

int pgl_msg_error(pgl_conn *c, const char *severity, const char *sqlstate, const char *message,
                  const char *detail, const char *hint)
{
    SEND_BUILT(c, pgl_pgwire_build_error(out, cap, 0, severity, sqlstate, message, detail, hint));
}

int pgl_msg_auth_ok(pgl_conn *c)
{
    SEND_BUILT(c, pgl_pgwire_build_auth_ok(out, cap));
}

int pgl_msg_auth_md5(pgl_conn *c, const uint8_t salt[4])
{
    SEND_BUILT(c, pgl_pgwire_build_auth_md5(out, cap, salt));
}

int pgl_msg_auth_sasl(pgl_conn *c, int plus)
{
    static const char *const mechs[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"};
    SEND_BUILT(c, pgl_pgwire_build_auth_sasl(out, cap, plus ? mechs : mechs + 1, plus ? 2 : 1));
}

int pgl_msg_auth_sasl_continue(pgl_conn *c, const void *data, size_t len)
{
    SEND_BUILT(c, pgl_pgwire_build_auth_sasl_continue(out, cap, data, len));
}

int pgl_msg_auth_sasl_final(pgl_conn *c, const void *data, size_t len)
{
    SEND_BUILT(c, pgl_pgwire_build_auth_sasl_final(out, cap, data, len));
}

int pgl_msg_param_status(pgl_conn *c, const char *name, const char *value)
{
    SEND_BUILT(c, pgl_pgwire_build_param_status(out, cap, name, value));
}

int pgl_msg_backend_key(pgl_conn *c, uint32_t pid, uint32_t key)
{
    SEND_BUILT(c, pgl_pgwire_build_backend_key(out, cap, pid, key));
}

int pgl_msg_ready(pgl_conn *c, char status)
{
    SEND_BUILT(c, pgl_pgwire_build_ready(out, cap, status));
}

int pgl_msg_query(pgl_conn *c, const char *sql)
{
    SEND_BUILT(c, pgl_pgwire_build_query(out, cap, sql));
}

int pgl_msg_negotiate(pgl_conn *c, uint32_t minor, const char *const *unsupported, size_t n)
{
    SEND_BUILT(c, pgl_pgwire_build_negotiate(out, cap, minor, unsupported, n));
}

int pgl_msg_byte(pgl_conn *c, char b)
{
    return pgl_conn_send(c, &b, 1);
}

int pgl_msg_row_description(pgl_conn *c, const char *const *names, const uint32_t *type_oids,
                            size_t n)
{
    SEND_BUILT(c, pgl_pgwire_build_row_description(out, cap, names, type_oids, n));
}

int pgl_msg_data_row(pgl_conn *c, const char *const *values, size_t n)
{
    SEND_BUILT(c, pgl_pgwire_build_data_row(out, cap, values, n));
}

int pgl_msg_command_complete(pgl_conn *c, const char *tag)
{
    SEND_BUILT(c, pgl_pgwire_build_command_complete(out, cap, tag));
}
