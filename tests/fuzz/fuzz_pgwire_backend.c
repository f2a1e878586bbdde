/*
 * fuzz-pgwire-backend: bytes as a server would send them, framed as typed
 * messages and fed to the backend decoders; anything that decodes is
 * rebuilt with the matching builder and must decode to the same values.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgl_pgwire_build.h"
#include "pgl_pgwire_decode.h"
#include "pgl_pgwire_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t out[1 << 17];

static void roundtrip_error(const pgl_pgwire_error *e, int notice)
{
    size_t n = pgl_pgwire_build_error(out, sizeof out, notice, e->severity, e->sqlstate,
                                      e->message, e->detail, e->hint);
    if (n > sizeof out)
        return;
    pgl_pgwire_error e2;
    if (pgl_pgwire_parse_error(out + 5, n - 5, &e2) != 0)
        abort();
    if (strcmp(e2.message ? e2.message : "", e->message ? e->message : "") != 0)
        abort();
}

static void decode(const pgl_pgwire_frame *f)
{
    const uint8_t *b = f->body;
    size_t n = f->body_len;
    const char *s1, *s2;
    uint32_t u1, u2;
    uint16_t cnt;
    char ch;
    pgl_pgwire_error e;
    pgl_pgwire_auth a;
    pgl_pgwire_copy cp;
    switch (f->type) {
    case 'Z':
        if (pgl_pgwire_parse_ready(b, n, &ch) == 0 && pgl_pgwire_build_ready(out, 6, ch) != 6)
            abort();
        break;
    case 'S':
        if (pgl_pgwire_parse_param_status(b, n, &s1, &s2) == 0 &&
            pgl_pgwire_build_param_status(out, sizeof out, s1, s2) != n + 5)
            abort();
        break;
    case 'K': (void)pgl_pgwire_parse_backend_key(b, n, &u1, &u2); break;
    case 'R': (void)pgl_pgwire_parse_auth(b, n, &a); break;
    case 'E':
    case 'N':
        if (pgl_pgwire_parse_error(b, n, &e) == 0) {
            roundtrip_error(&e, f->type == 'N');
            pgl_pgwire_field_iter it;
            const char *v;
            pgl_pgwire_fields_begin(&it, b, n);
            while (pgl_pgwire_fields_next(&it, &ch, &v))
                ;
        }
        break;
    case 'C': (void)pgl_pgwire_parse_command_complete(b, n, &s1); break;
    case 'G':
    case 'H':
    case 'W': (void)pgl_pgwire_parse_copy_response(b, n, &cp); break;
    case 'T': {
        pgl_pgwire_rowdesc_iter it;
        uint32_t oid;
        if (pgl_pgwire_parse_row_description(b, n, &cnt, &it) == 0) {
            uint16_t seen = 0;
            while (pgl_pgwire_rowdesc_next(&it, &s1, &oid))
                seen++;
            if (seen != cnt)
                abort();
        }
        break;
    }
    case 'D': {
        pgl_pgwire_datarow_iter it;
        const uint8_t *v;
        int32_t vl;
        if (pgl_pgwire_parse_data_row(b, n, &cnt, &it) == 0) {
            uint16_t seen = 0;
            while (pgl_pgwire_datarow_next(&it, &v, &vl))
                seen++;
            if (seen != cnt)
                abort();
        }
        break;
    }
    case 'v': (void)pgl_pgwire_parse_negotiate(b, n, &u1, &u2); break;
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        pgl_pgwire_frame f;
        if (pgl_pgwire_frame_next(data + off, size - off, 0, 1 << 16, &f) !=
            PGL_PGWIRE_FRAME_COMPLETE)
            break;
        decode(&f);
        off += pgl_pgwire_frame_size(&f);
    }
    return 0;
}
