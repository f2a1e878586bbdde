/*
 * pgwire — the PostgreSQL v3 frontend/backend protocol as pure functions over
 * buffers: framing, decoders, builders, SCRAM-SHA-256 and md5. Nothing here
 * knows about sockets or the event loop, and nothing on the per-message path
 * allocates: parsers return views into the caller's buffer, builders write
 * into a buffer the caller provides.
 *
 * This header holds what every part shares: the big-endian helpers. Errors
 * are 0 or a negative code of base/pgl_err.h (PGL_EFORMAT, -ENOMEM...).
 */
#ifndef PGL_PGWIRE_H
#define PGL_PGWIRE_H

#include "pgl_err.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t pgl_pgwire_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint16_t pgl_pgwire_be16(const uint8_t *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

static inline void pgl_pgwire_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void pgl_pgwire_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

#endif
