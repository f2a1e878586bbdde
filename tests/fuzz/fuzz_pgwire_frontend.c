/*
 * fuzz-pgwire-frontend: bytes as a client would send them. The first part is
 * framed as startup-phase packets, the rest as typed messages, and every
 * complete message goes through the decoder the proxy would use for it.
 */
#include <stddef.h>
#include <stdint.h>

#include "pgl_pgwire_decode.h"
#include "pgl_pgwire_frame.h"
#include "pgl_pgwire_startup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode(const pgl_pgwire_frame *f)
{
    const uint8_t *b = f->body;
    size_t n = f->body_len;
    const char *s1, *s2;
    uint32_t u;
    char ch;
    size_t sl;
    const uint8_t *d;
    pgl_pgwire_parse p;
    switch (f->type) {
    case 'Q': (void)pgl_pgwire_parse_query(b, n, &s1); break;
    case 'P': (void)pgl_pgwire_parse_parse(b, n, &p); break;
    case 'B': (void)pgl_pgwire_parse_bind(b, n, &s1, &s2); break;
    case 'D':
    case 'C': (void)pgl_pgwire_parse_describe(b, n, &ch, &s1); break;
    case 'E': (void)pgl_pgwire_parse_execute(b, n, &s1, &u); break;
    case 'S':
    case 'H':
    case 'X':
    case 'c': (void)pgl_pgwire_parse_empty(b, n); break;
    case 'p':
        (void)pgl_pgwire_parse_password(b, n, &s1, &sl);
        (void)pgl_pgwire_parse_sasl_initial(b, n, &s1, &d, &sl);
        break;
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    int startup = 1;
    while (off < size) {
        pgl_pgwire_frame f;
        int rc = pgl_pgwire_frame_next(data + off, size - off, startup, 1 << 16, &f);
        if (rc != PGL_PGWIRE_FRAME_COMPLETE)
            break;
        if (startup) {
            pgl_pgwire_startup st;
            if (pgl_pgwire_parse_startup(f.body, f.body_len, &st) == 0 &&
                st.kind == PGL_PGWIRE_STARTUP_MESSAGE) {
                pgl_pgwire_param_iter it;
                const char *name, *value;
                pgl_pgwire_startup_params(&st, &it);
                while (pgl_pgwire_param_next(&it, &name, &value))
                    ;
                startup = 0;
            }
        } else {
            decode(&f);
        }
        off += pgl_pgwire_frame_size(&f);
    }
    return 0;
}
