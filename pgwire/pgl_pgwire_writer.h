/*
 * pgl_pgwire_writer — snprintf-style message assembly. Private to pgwire.
 * Writes past `cap` are counted but not stored, so one pass tells the
 * caller the exact size needed when its buffer was too small.
 */
#ifndef PGL_PGWIRE_WRITER_H
#define PGL_PGWIRE_WRITER_H

#include "pgl_pgwire.h"

typedef struct {
    uint8_t *out;
    size_t cap;
    size_t len;
    size_t start; /* offset of the message being built */
} pgl_pgwire_writer;

static inline void pgl_pgwire_w_init(pgl_pgwire_writer *w, uint8_t *out, size_t cap)
{
    w->out = out;
    w->cap = out ? cap : 0;
    w->len = 0;
    w->start = 0;
}

static inline void pgl_pgwire_w_bytes(pgl_pgwire_writer *w, const void *data, size_t n)
{
    if (n > 0 && w->len <= w->cap && n <= w->cap - w->len)
        memcpy(w->out + w->len, data, n);
    w->len += n;
}

static inline void pgl_pgwire_w_u8(pgl_pgwire_writer *w, uint8_t v)
{
    pgl_pgwire_w_bytes(w, &v, 1);
}

static inline void pgl_pgwire_w_u16(pgl_pgwire_writer *w, uint16_t v)
{
    uint8_t b[2];
    pgl_pgwire_put16(b, v);
    pgl_pgwire_w_bytes(w, b, 2);
}

static inline void pgl_pgwire_w_u32(pgl_pgwire_writer *w, uint32_t v)
{
    uint8_t b[4];
    pgl_pgwire_put32(b, v);
    pgl_pgwire_w_bytes(w, b, 4);
}

/* A string with its NUL terminator; NULL is written as the empty string. */
static inline void pgl_pgwire_w_str(pgl_pgwire_writer *w, const char *s)
{
    pgl_pgwire_w_bytes(w, s ? s : "", (s ? strlen(s) : 0) + 1);
}

/* Start a typed message (type 0: untyped startup packet); the length word
 * is a placeholder until pgl_pgwire_w_end. */
static inline void pgl_pgwire_w_begin(pgl_pgwire_writer *w, uint8_t type)
{
    if (type != 0)
        pgl_pgwire_w_u8(w, type);
    w->start = w->len;
    pgl_pgwire_w_u32(w, 0);
}

static inline void pgl_pgwire_w_end(pgl_pgwire_writer *w)
{
    if (w->len <= w->cap)
        pgl_pgwire_put32(w->out + w->start, (uint32_t)(w->len - w->start));
}

#endif
