#include "pgl_pgwire_startup.h"

#include "pgl_pgwire_cursor.h"
#include "pgl_pgwire_writer.h"

static int parse_params(pgl_pgwire_startup *st, const uint8_t *p, size_t len)
{
    /* name\0value\0 ... \0 : the last byte is the list terminator, and
     * every name must be non-empty and followed by a value. */
    if (len == 0 || p[len - 1] != 0)
        return PGL_EFORMAT;
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, p, len - 1);
    while (!pgl_pgwire_cursor_done(&c)) {
        const char *name, *value;
        if (!pgl_pgwire_cursor_str(&c, &name) || *name == '\0' ||
            !pgl_pgwire_cursor_str(&c, &value))
            return PGL_EFORMAT;
        if (strcmp(name, "user") == 0)
            st->user = value;
        else if (strcmp(name, "database") == 0)
            st->database = value;
    }
    st->params = p;
    st->params_len = len - 1;
    return 0;
}

int pgl_pgwire_parse_startup(const uint8_t *body, size_t len, pgl_pgwire_startup *st)
{
    memset(st, 0, sizeof *st);
    if (len < 4)
        return PGL_EFORMAT;
    uint32_t code = pgl_pgwire_be32(body);
    switch (code) {
    case PGL_PGWIRE_CODE_SSL:
    case PGL_PGWIRE_CODE_GSSENC:
        if (len != 4)
            return PGL_EFORMAT;
        st->kind = code == PGL_PGWIRE_CODE_SSL ? PGL_PGWIRE_STARTUP_SSL : PGL_PGWIRE_STARTUP_GSSENC;
        return 0;
    case PGL_PGWIRE_CODE_CANCEL:
        if (len != 12)
            return PGL_EFORMAT;
        st->kind = PGL_PGWIRE_STARTUP_CANCEL;
        st->cancel_pid = pgl_pgwire_be32(body + 4);
        st->cancel_key = pgl_pgwire_be32(body + 8);
        return 0;
    default:
        break;
    }
    st->kind = PGL_PGWIRE_STARTUP_MESSAGE;
    st->major = (uint16_t)(code >> 16);
    st->minor = (uint16_t)(code & 0xffff);
    if (st->major != 3)
        return PGL_EVERSION;
    return parse_params(st, body + 4, len - 4);
}

void pgl_pgwire_startup_params(const pgl_pgwire_startup *st, pgl_pgwire_param_iter *it)
{
    it->p = st->params;
    it->end = st->params ? st->params + st->params_len : NULL;
}

int pgl_pgwire_param_next(pgl_pgwire_param_iter *it, const char **name, const char **value)
{
    /* The list was validated by pgl_pgwire_parse_startup. */
    if (it->p == NULL || it->p >= it->end)
        return 0;
    *name = (const char *)it->p;
    it->p += strlen(*name) + 1;
    *value = (const char *)it->p;
    it->p += strlen(*value) + 1;
    return 1;
}

size_t pgl_pgwire_build_startup(uint8_t *out, size_t cap, uint16_t minor, const char *const *kv,
                                size_t n)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 0);
    pgl_pgwire_w_u32(&w, (3u << 16) | minor);
    for (size_t i = 0; i < n; i++) {
        pgl_pgwire_w_str(&w, kv[2 * i]);
        pgl_pgwire_w_str(&w, kv[2 * i + 1]);
    }
    pgl_pgwire_w_u8(&w, 0);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_ssl_request(uint8_t *out, size_t cap)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 0);
    pgl_pgwire_w_u32(&w, PGL_PGWIRE_CODE_SSL);
    pgl_pgwire_w_end(&w);
    return w.len;
}

size_t pgl_pgwire_build_cancel(uint8_t *out, size_t cap, uint32_t pid, uint32_t key)
{
    pgl_pgwire_writer w;
    pgl_pgwire_w_init(&w, out, cap);
    pgl_pgwire_w_begin(&w, 0);
    pgl_pgwire_w_u32(&w, PGL_PGWIRE_CODE_CANCEL);
    pgl_pgwire_w_u32(&w, pid);
    pgl_pgwire_w_u32(&w, key);
    pgl_pgwire_w_end(&w);
    return w.len;
}
