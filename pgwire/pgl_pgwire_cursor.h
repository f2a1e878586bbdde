/*
 * pgl_pgwire_cursor — bounds-checked reading of a message body. Private to
 * pgwire: every decoder goes through it, so "never read past the end" is
 * checked in one place.
 */
#ifndef PGL_PGWIRE_CURSOR_H
#define PGL_PGWIRE_CURSOR_H

#include "pgl_pgwire.h"

#include <stdbool.h>

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} pgl_pgwire_cursor;

static inline void pgl_pgwire_cursor_init(pgl_pgwire_cursor *c, const uint8_t *body, size_t len)
{
    c->p = body;
    c->end = body + len;
}

static inline size_t pgl_pgwire_cursor_left(const pgl_pgwire_cursor *c)
{
    return (size_t)(c->end - c->p);
}

/* A NUL-terminated string that ends inside the body. */
static inline bool pgl_pgwire_cursor_str(pgl_pgwire_cursor *c, const char **out)
{
    const uint8_t *nul = memchr(c->p, 0, pgl_pgwire_cursor_left(c));
    if (nul == NULL)
        return false;
    *out = (const char *)c->p;
    c->p = nul + 1;
    return true;
}

static inline bool pgl_pgwire_cursor_u32(pgl_pgwire_cursor *c, uint32_t *out)
{
    if (pgl_pgwire_cursor_left(c) < 4)
        return false;
    *out = pgl_pgwire_be32(c->p);
    c->p += 4;
    return true;
}

static inline bool pgl_pgwire_cursor_u16(pgl_pgwire_cursor *c, uint16_t *out)
{
    if (pgl_pgwire_cursor_left(c) < 2)
        return false;
    *out = pgl_pgwire_be16(c->p);
    c->p += 2;
    return true;
}

static inline bool pgl_pgwire_cursor_u8(pgl_pgwire_cursor *c, uint8_t *out)
{
    if (pgl_pgwire_cursor_left(c) < 1)
        return false;
    *out = *c->p++;
    return true;
}

static inline bool pgl_pgwire_cursor_bytes(pgl_pgwire_cursor *c, size_t n, const uint8_t **out)
{
    if (pgl_pgwire_cursor_left(c) < n)
        return false;
    *out = c->p;
    c->p += n;
    return true;
}

static inline bool pgl_pgwire_cursor_done(const pgl_pgwire_cursor *c)
{
    return c->p == c->end;
}

#endif
