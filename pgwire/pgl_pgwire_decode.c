#include "pgl_pgwire_decode.h"

#include "pgl_pgwire_cursor.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return PGL_EFORMAT;                                                             \
    } while (0)

int pgl_pgwire_parse_ready(const uint8_t *body, size_t len, char *status)
{
    CHECK(len == 1 && (body[0] == 'I' || body[0] == 'T' || body[0] == 'E'));
    *status = (char)body[0];
    return 0;
}

/* Exactly two strings, nothing after. */
static int two_strings(const uint8_t *body, size_t len, const char **a, const char **b)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    CHECK(pgl_pgwire_cursor_str(&c, a) && pgl_pgwire_cursor_str(&c, b) &&
          pgl_pgwire_cursor_done(&c));
    return 0;
}

/* Exactly one string filling the body. */
static int one_string(const uint8_t *body, size_t len, const char **s)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    CHECK(pgl_pgwire_cursor_str(&c, s) && pgl_pgwire_cursor_done(&c));
    return 0;
}

int pgl_pgwire_parse_param_status(const uint8_t *body, size_t len, const char **name,
                                  const char **value)
{
    int rc = two_strings(body, len, name, value);
    CHECK(rc == 0 && **name != '\0');
    return 0;
}

int pgl_pgwire_parse_backend_key(const uint8_t *body, size_t len, uint32_t *pid, uint32_t *key)
{
    CHECK(len == 8);
    *pid = pgl_pgwire_be32(body);
    *key = pgl_pgwire_be32(body + 4);
    return 0;
}

int pgl_pgwire_parse_auth(const uint8_t *body, size_t len, pgl_pgwire_auth *auth)
{
    memset(auth, 0, sizeof *auth);
    CHECK(len >= 4);
    auth->code = pgl_pgwire_be32(body);
    switch (auth->code) {
    case PGL_PGWIRE_AUTH_OK:
    case PGL_PGWIRE_AUTH_CLEARTEXT:
        CHECK(len == 4);
        return 0;
    case PGL_PGWIRE_AUTH_MD5:
        CHECK(len == 8);
        memcpy(auth->md5_salt, body + 4, 4);
        return 0;
    case PGL_PGWIRE_AUTH_SASL: {
        /* A list of mechanism names ended by an empty one. */
        pgl_pgwire_cursor c;
        pgl_pgwire_cursor_init(&c, body + 4, len - 4);
        const char *mech;
        int n = 0;
        do {
            CHECK(pgl_pgwire_cursor_str(&c, &mech));
            n += *mech != '\0';
        } while (*mech != '\0');
        CHECK(pgl_pgwire_cursor_done(&c) && n > 0);
        auth->data = body + 4;
        auth->data_len = len - 4;
        return 0;
    }
    case PGL_PGWIRE_AUTH_SASL_CONTINUE:
    case PGL_PGWIRE_AUTH_SASL_FINAL:
        auth->data = body + 4;
        auth->data_len = len - 4;
        return 0;
    default:
        /* Kerberos, GSS, SSPI...: well-formed but not ours to speak. */
        return PGL_ETYPE;
    }
}

void pgl_pgwire_fields_begin(pgl_pgwire_field_iter *it, const uint8_t *body, size_t len)
{
    it->p = body;
    it->end = body + len;
}

int pgl_pgwire_fields_next(pgl_pgwire_field_iter *it, char *code, const char **value)
{
    pgl_pgwire_cursor c = {it->p, it->end};
    uint8_t t;
    if (!pgl_pgwire_cursor_u8(&c, &t) || t == 0 || !pgl_pgwire_cursor_str(&c, value))
        return 0;
    *code = (char)t;
    it->p = c.p;
    return 1;
}

int pgl_pgwire_parse_error(const uint8_t *body, size_t len, pgl_pgwire_error *err)
{
    memset(err, 0, sizeof *err);
    /* Fields (code byte + string) until a zero byte that ends the body. */
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    const char *sev_s = NULL, *sev_v = NULL;
    for (;;) {
        uint8_t t;
        const char *v;
        CHECK(pgl_pgwire_cursor_u8(&c, &t));
        if (t == 0)
            break;
        CHECK(pgl_pgwire_cursor_str(&c, &v));
        switch (t) {
        case 'S': sev_s = v; break;
        case 'V': sev_v = v; break;
        case 'C': err->sqlstate = v; break;
        case 'M': err->message = v; break;
        case 'D': err->detail = v; break;
        case 'H': err->hint = v; break;
        default: break;
        }
    }
    CHECK(pgl_pgwire_cursor_done(&c));
    err->severity = sev_v ? sev_v : sev_s;
    return 0;
}

int pgl_pgwire_parse_command_complete(const uint8_t *body, size_t len, const char **tag)
{
    return one_string(body, len, tag);
}

int pgl_pgwire_parse_copy_response(const uint8_t *body, size_t len, pgl_pgwire_copy *copy)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    CHECK(pgl_pgwire_cursor_u8(&c, &copy->format) && copy->format <= 1);
    CHECK(pgl_pgwire_cursor_u16(&c, &copy->ncols));
    CHECK(pgl_pgwire_cursor_bytes(&c, (size_t)copy->ncols * 2, &copy->col_formats));
    CHECK(pgl_pgwire_cursor_done(&c));
    return 0;
}

int pgl_pgwire_parse_row_description(const uint8_t *body, size_t len, uint16_t *nfields,
                                     pgl_pgwire_rowdesc_iter *it)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    CHECK(pgl_pgwire_cursor_u16(&c, nfields));
    it->p = c.p;
    it->end = c.end;
    it->left = *nfields;
    /* Validate the whole message now so the iterator cannot fail later. */
    for (uint16_t i = 0; i < *nfields; i++) {
        const char *name;
        const uint8_t *rest;
        CHECK(pgl_pgwire_cursor_str(&c, &name) && pgl_pgwire_cursor_bytes(&c, 18, &rest));
    }
    CHECK(pgl_pgwire_cursor_done(&c));
    return 0;
}

int pgl_pgwire_rowdesc_next(pgl_pgwire_rowdesc_iter *it, const char **name, uint32_t *type_oid)
{
    if (it->left == 0)
        return 0;
    pgl_pgwire_cursor c = {it->p, it->end};
    const uint8_t *rest;
    if (!pgl_pgwire_cursor_str(&c, name) || !pgl_pgwire_cursor_bytes(&c, 18, &rest))
        return 0;
    /* table oid (4), column (2), then the type oid. */
    *type_oid = pgl_pgwire_be32(rest + 6);
    it->p = c.p;
    it->left--;
    return 1;
}

int pgl_pgwire_parse_data_row(const uint8_t *body, size_t len, uint16_t *ncols,
                              pgl_pgwire_datarow_iter *it)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    CHECK(pgl_pgwire_cursor_u16(&c, ncols));
    it->p = c.p;
    it->end = c.end;
    it->left = *ncols;
    for (uint16_t i = 0; i < *ncols; i++) {
        uint32_t vlen;
        const uint8_t *v;
        CHECK(pgl_pgwire_cursor_u32(&c, &vlen));
        if (vlen != 0xffffffffu)
            CHECK(vlen <= INT32_MAX && pgl_pgwire_cursor_bytes(&c, vlen, &v));
    }
    CHECK(pgl_pgwire_cursor_done(&c));
    return 0;
}

int pgl_pgwire_datarow_next(pgl_pgwire_datarow_iter *it, const uint8_t **data, int32_t *vlen)
{
    if (it->left == 0)
        return 0;
    pgl_pgwire_cursor c = {it->p, it->end};
    uint32_t n;
    if (!pgl_pgwire_cursor_u32(&c, &n))
        return 0;
    if (n == 0xffffffffu) {
        *data = NULL;
        *vlen = -1;
    } else {
        if (n > INT32_MAX || !pgl_pgwire_cursor_bytes(&c, n, data))
            return 0;
        *vlen = (int32_t)n;
    }
    it->p = c.p;
    it->left--;
    return 1;
}

int pgl_pgwire_parse_negotiate(const uint8_t *body, size_t len, uint32_t *minor,
                               uint32_t *noptions)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    CHECK(pgl_pgwire_cursor_u32(&c, minor) && pgl_pgwire_cursor_u32(&c, noptions));
    /* Each option needs at least its terminator, which bounds the loop. */
    CHECK(*noptions <= pgl_pgwire_cursor_left(&c));
    for (uint32_t i = 0; i < *noptions; i++) {
        const char *opt;
        CHECK(pgl_pgwire_cursor_str(&c, &opt));
    }
    CHECK(pgl_pgwire_cursor_done(&c));
    return 0;
}

int pgl_pgwire_parse_query(const uint8_t *body, size_t len, const char **sql)
{
    return one_string(body, len, sql);
}

int pgl_pgwire_parse_parse(const uint8_t *body, size_t len, pgl_pgwire_parse *p)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    CHECK(pgl_pgwire_cursor_str(&c, &p->name) && pgl_pgwire_cursor_str(&c, &p->query));
    CHECK(pgl_pgwire_cursor_u16(&c, &p->nparams));
    CHECK(pgl_pgwire_cursor_bytes(&c, (size_t)p->nparams * 4, &p->param_oids));
    CHECK(pgl_pgwire_cursor_done(&c));
    return 0;
}

static bool skip_int16_array(pgl_pgwire_cursor *c)
{
    uint16_t n;
    const uint8_t *arr;
    return pgl_pgwire_cursor_u16(c, &n) && pgl_pgwire_cursor_bytes(c, (size_t)n * 2, &arr);
}

int pgl_pgwire_parse_bind(const uint8_t *body, size_t len, const char **portal,
                          const char **statement)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    CHECK(pgl_pgwire_cursor_str(&c, portal) && pgl_pgwire_cursor_str(&c, statement));
    CHECK(skip_int16_array(&c));
    uint16_t nparams;
    CHECK(pgl_pgwire_cursor_u16(&c, &nparams));
    for (uint16_t i = 0; i < nparams; i++) {
        uint32_t vlen;
        const uint8_t *v;
        CHECK(pgl_pgwire_cursor_u32(&c, &vlen));
        if (vlen != 0xffffffffu)
            CHECK(vlen <= INT32_MAX && pgl_pgwire_cursor_bytes(&c, vlen, &v));
    }
    CHECK(skip_int16_array(&c));
    CHECK(pgl_pgwire_cursor_done(&c));
    return 0;
}

int pgl_pgwire_parse_describe(const uint8_t *body, size_t len, char *kind, const char **name)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    uint8_t k;
    CHECK(pgl_pgwire_cursor_u8(&c, &k) && (k == 'S' || k == 'P'));
    CHECK(pgl_pgwire_cursor_str(&c, name) && pgl_pgwire_cursor_done(&c));
    *kind = (char)k;
    return 0;
}

int pgl_pgwire_parse_execute(const uint8_t *body, size_t len, const char **portal,
                             uint32_t *max_rows)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    CHECK(pgl_pgwire_cursor_str(&c, portal) && pgl_pgwire_cursor_u32(&c, max_rows) &&
          pgl_pgwire_cursor_done(&c));
    return 0;
}

int pgl_pgwire_parse_empty(const uint8_t *body, size_t len)
{
    (void)body;
    CHECK(len == 0);
    return 0;
}

int pgl_pgwire_parse_password(const uint8_t *body, size_t len, const char **pw, size_t *pwlen)
{
    int rc = one_string(body, len, pw);
    if (rc == 0)
        *pwlen = len - 1;
    return rc;
}

int pgl_pgwire_parse_sasl_initial(const uint8_t *body, size_t len, const char **mech,
                                  const uint8_t **data, size_t *dlen)
{
    pgl_pgwire_cursor c;
    pgl_pgwire_cursor_init(&c, body, len);
    uint32_t n;
    CHECK(pgl_pgwire_cursor_str(&c, mech) && pgl_pgwire_cursor_u32(&c, &n));
    if (n == 0xffffffffu) {
        *data = NULL;
        *dlen = 0;
    } else {
        CHECK(pgl_pgwire_cursor_bytes(&c, n, data));
        *dlen = n;
    }
    CHECK(pgl_pgwire_cursor_done(&c));
    return 0;
}
