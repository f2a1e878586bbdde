/*
 * pgl_pgwire_frame — find message boundaries in a byte stream.
 *
 * The caller accumulates bytes as they arrive, in chunks of any size, and
 * asks after each chunk whether the buffer now starts with a message. The
 * answer is a view into the buffer; nothing is copied or allocated. The
 * header alone is enough to learn type and length, so a forwarder can pass
 * a large body through before it has all of it.
 */
#ifndef PGL_PGWIRE_FRAME_H
#define PGL_PGWIRE_FRAME_H

#include "pgl_pgwire.h"

/* Postgres's own cap for startup-phase packets (MAX_STARTUP_PACKET_LENGTH). */
#define PGL_PGWIRE_STARTUP_MAX 10000u

enum {
    PGL_PGWIRE_FRAME_MORE = 0,     /* header incomplete: feed more bytes */
    PGL_PGWIRE_FRAME_HEADER = 1,   /* type and length known, body incomplete */
    PGL_PGWIRE_FRAME_COMPLETE = 2, /* whole message in the buffer */
};

typedef struct pgl_pgwire_frame {
    uint8_t type;        /* 0 for startup-phase packets, which have no type byte */
    uint32_t hdr_len;    /* 4 (startup) or 5 */
    uint32_t body_len;   /* bytes after the length word */
    const uint8_t *body; /* into the buffer; valid with FRAME_COMPLETE */
} pgl_pgwire_frame;

/* Total bytes the message occupies in the stream. */
static inline size_t pgl_pgwire_frame_size(const pgl_pgwire_frame *f)
{
    return (size_t)f->hdr_len + f->body_len;
}

/*
 * Look at the message at the start of buf[0..avail). `startup` selects the
 * untyped startup-phase framing; `max_len` bounds the length word of typed
 * messages (max_packet_size). Returns one of PGL_PGWIRE_FRAME_* or
 * PGL_ESHORT / PGL_ETOOBIG; `f` is filled from FRAME_HEADER on.
 */
PGL_MUST_CHECK
int pgl_pgwire_frame_next(const uint8_t *buf, size_t avail, int startup, uint32_t max_len,
                          pgl_pgwire_frame *f);

#endif
