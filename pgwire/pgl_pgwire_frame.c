#include "pgl_pgwire_frame.h"

int pgl_pgwire_frame_next(const uint8_t *buf, size_t avail, int startup, uint32_t max_len,
                          pgl_pgwire_frame *f)
{
    uint32_t hdr = startup ? 4 : 5;
    if (avail < hdr)
        return PGL_PGWIRE_FRAME_MORE;
    uint32_t len = pgl_pgwire_be32(startup ? buf : buf + 1);
    /* A startup packet carries at least its 4-byte code after the length. */
    if (len < (startup ? 8u : 4u))
        return PGL_ESHORT;
    if (len > (startup ? PGL_PGWIRE_STARTUP_MAX : max_len))
        return PGL_ETOOBIG;
    f->type = startup ? 0 : buf[0];
    f->hdr_len = hdr;
    f->body_len = len - 4;
    if (avail - hdr < f->body_len) {
        f->body = NULL;
        return PGL_PGWIRE_FRAME_HEADER;
    }
    f->body = buf + hdr;
    return PGL_PGWIRE_FRAME_COMPLETE;
}
