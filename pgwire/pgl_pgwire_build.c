#include "pgl_pgwire_build.h"

#include "pgl_pgwire_writer.h"

size_t pgl_pgwire_build_error(uint8_t *out, size_t cap, int notice, const char *severity,
                              const char *sqlstate, const char *message, const char *detail,
                              const char *hint)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, notice ? 'N' : 'E');
    pgl_pgwire_w_u8(&w, 'S');
    pgl_pgwire_w_str(&w, severity);
    pgl_pgwire_w_u8(&w, 'V');
    pgl_pgwire_w_str(&w, severity);
    pgl_pgwire_w_u8(&w, 'C');
    pgl_pgwire_w_str(&w, sqlstate);
    pgl_pgwire_w_u8(&w, 'M');
    pgl_pgwire_w_str(&w, message);
    if (detail) {
        pgl_pgwire_w_u8(&w, 'D');
        pgl_pgwire_w_str(&w, detail);
    }
    if (hint) {
        pgl_pgwire_w_u8(&w, 'H');
        pgl_pgwire_w_str(&w, hint);
    }
    pgl_pgwire_w_u8(&w, 0);
    pgl_pgwire_w_end(&w);
    return w.len;
}

static size_t auth(uint8_t *out, size_t cap, uint32_t code, const void *data, size_t len)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'R');
    pgl_pgwire_w_u32(&w, code);
    pgl_pgwire_w_bytes(&w, data, len);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_auth_ok(uint8_t *out, size_t cap)
{
    return auth(out, cap, 0, NULL, 0);
}

size_t pgl_pgwire_build_auth_cleartext(uint8_t *out, size_t cap)
{
    return auth(out, cap, 3, NULL, 0);
}

size_t pgl_pgwire_build_auth_md5(uint8_t *out, size_t cap, const uint8_t salt[4])
{
    return auth(out, cap, 5, salt, 4);
}

size_t pgl_pgwire_build_auth_sasl(uint8_t *out, size_t cap, const char *const *mechs, size_t n)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'R');
    pgl_pgwire_w_u32(&w, 10);
    for (size_t i = 0; i < n; i++)
        pgl_pgwire_w_str(&w, mechs[i]);
    pgl_pgwire_w_u8(&w, 0);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_auth_sasl_continue(uint8_t *out, size_t cap, const void *data,
                                           size_t len)
{
    return auth(out, cap, 11, data, len);
}

size_t pgl_pgwire_build_auth_sasl_final(uint8_t *out, size_t cap, const void *data, size_t len)
{
    return auth(out, cap, 12, data, len);
}

size_t pgl_pgwire_build_param_status(uint8_t *out, size_t cap, const char *name,
                                     const char *value)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'S');
    pgl_pgwire_w_str(&w, name);
    pgl_pgwire_w_str(&w, value);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_backend_key(uint8_t *out, size_t cap, uint32_t pid, uint32_t key)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'K');
    pgl_pgwire_w_u32(&w, pid);
    pgl_pgwire_w_u32(&w, key);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_ready(uint8_t *out, size_t cap, char status)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'Z');
    pgl_pgwire_w_u8(&w, (uint8_t)status);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_negotiate(uint8_t *out, size_t cap, uint32_t minor,
                                  const char *const *options, size_t n)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'v');
    pgl_pgwire_w_u32(&w, minor);
    pgl_pgwire_w_u32(&w, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        pgl_pgwire_w_str(&w, options[i]);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_row_description(uint8_t *out, size_t cap, const char *const *names,
                                        const uint32_t *type_oids, size_t n)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'T');
    pgl_pgwire_w_u16(&w, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        pgl_pgwire_w_str(&w, names[i]);
        pgl_pgwire_w_u32(&w, 0);            /* table oid */
        pgl_pgwire_w_u16(&w, 0);            /* column number */
        pgl_pgwire_w_u32(&w, type_oids[i]);
        pgl_pgwire_w_u16(&w, 0xffff);       /* typlen -1: varlena, honest for text */
        pgl_pgwire_w_u32(&w, 0xffffffffu);  /* typmod -1 */
        pgl_pgwire_w_u16(&w, 0);            /* text format */
    }
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_data_row(uint8_t *out, size_t cap, const char *const *values, size_t n)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'D');
    pgl_pgwire_w_u16(&w, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        if (values[i] == NULL) {
            pgl_pgwire_w_u32(&w, 0xffffffffu);
            continue;
        }
        size_t len = strlen(values[i]);
        pgl_pgwire_w_u32(&w, (uint32_t)len);
        pgl_pgwire_w_bytes(&w, values[i], len);
    }
    pgl_pgwire_w_end(&w);
    return w.len;
}

static size_t one_string(uint8_t *out, size_t cap, uint8_t type, const char *s)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, type);
    pgl_pgwire_w_str(&w, s);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_command_complete(uint8_t *out, size_t cap, const char *tag)
{
    return one_string(out, cap, 'C', tag);
}

size_t pgl_pgwire_build_query(uint8_t *out, size_t cap, const char *sql)
{
    return one_string(out, cap, 'Q', sql);
}

size_t pgl_pgwire_build_parse(uint8_t *out, size_t cap, const char *name, const void *def,
                              size_t def_len)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'P');
    pgl_pgwire_w_bytes(&w, name, strlen(name) + 1);
    pgl_pgwire_w_bytes(&w, def, def_len);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_close(uint8_t *out, size_t cap, char what, const char *name)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'C');
    pgl_pgwire_w_u8(&w, (uint8_t)what);
    pgl_pgwire_w_bytes(&w, name, strlen(name) + 1);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_password(uint8_t *out, size_t cap, const char *password)
{
    return one_string(out, cap, 'p', password);
}

static size_t empty(uint8_t *out, size_t cap, uint8_t type)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, type);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_terminate(uint8_t *out, size_t cap)
{
    return empty(out, cap, 'X');
}

size_t pgl_pgwire_build_sync(uint8_t *out, size_t cap)
{
    return empty(out, cap, 'S');
}

size_t pgl_pgwire_build_sasl_initial(uint8_t *out, size_t cap, const char *mech, const void *data,
                                     size_t len)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'p');
    pgl_pgwire_w_str(&w, mech);
    pgl_pgwire_w_u32(&w, data ? (uint32_t)len : 0xffffffffu);
    pgl_pgwire_w_bytes(&w, data, data ? len : 0);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_sasl_response(uint8_t *out, size_t cap, const void *data, size_t len)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 'p');
    pgl_pgwire_w_bytes(&w, data, len);
    pgl_pgwire_w_end(&w);
    return w.len;
}
