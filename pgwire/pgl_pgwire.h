/*
 * pgwire — the PostgreSQL v3 frontend/backend protocol as pure functions over
 * buffers: framing, decoders, builders, SCRAM-SHA-256 and md5. Nothing here
 * knows about sockets or the event loop, and nothing on the per-message path
 * allocates: parsers return views into the caller's buffer, builders write
 * into a buffer the caller provides.
 *
 * This header holds what every part shares: error codes and the big-endian
 * helpers.
 */
#ifndef PGL_PGWIRE_H
#define PGL_PGWIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Protocol errors are negative, distinct from -errno values (which are small)
 * so a caller may pass either through one int. */
enum {
    PGL_PGWIRE_ESHORT = -1001,    /* length field below its minimum */
    PGL_PGWIRE_ETOOBIG = -1002,   /* length above max_packet_size */
    PGL_PGWIRE_EVERSION = -1003,  /* startup packet with an unknown code */
    PGL_PGWIRE_EFORMAT = -1004,   /* malformed body: missing terminator, bad field */
    PGL_PGWIRE_ETYPE = -1005,     /* message type not the one the decoder handles */
    PGL_PGWIRE_EAUTH = -1006,     /* authentication failed (wrong password / unknown user) */
    PGL_PGWIRE_ESPACE = -1007,    /* output buffer too small */
    PGL_PGWIRE_ECBIND = -1008,    /* SCRAM channel binding mismatch or refused */
    PGL_PGWIRE_EMECH = -1009,     /* SASL mechanism not offered */
    PGL_PGWIRE_ESECRET = -1010,   /* malformed stored secret */
    PGL_PGWIRE_ECRYPTO = -1011,   /* OpenSSL failure */
    PGL_PGWIRE_ESTATE = -1012,    /* call out of sequence */
};

/* A short English description of a pgwire error code (or of -errno). Never
 * contains caller data, so it is safe to show to a client. */
const char *pgl_pgwire_strerror(int code);

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
