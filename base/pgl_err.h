/*
 * pgl_err — the one error space of pglease.
 *
 * Every function that can fail returns 0 on success or a negative code:
 * either a negative errno value (-ENOMEM, -EIO...) or one of the PGL_E*
 * codes below, for failures errno has no word for. The PGL_E* codes start
 * at -5000 so they never collide with -errno (Linux errno values are below
 * 4096) nor with libuv's UV_EAI_* codes (-3000..-3014); one int carries any
 * of them, and pgl_strerror() / pgl_errname() describe all of them.
 *
 * Messages are short English and never contain caller data, so they may be
 * shown to a client. Detail (which key, which file) travels separately, in
 * the caller's message buffer.
 *
 * Depends on nothing but libc.
 */
#ifndef PGL_ERR_H
#define PGL_ERR_H

#include <errno.h>

/* On a function whose result must not be dropped: ignoring it is a bug. */
#define PGL_MUST_CHECK __attribute__((warn_unused_result))

/*
 * The pglease codes: X(NAME, value, message). The one table: the enum,
 * pgl_errname() and pgl_strerror() are all generated from it. Values are
 * fixed (never renumber; append new codes at the end).
 */
#define PGL_ERR_MAP(X)                                                                  \
    X(ESHORT, -5001, "message length too small")                                        \
    X(ETOOBIG, -5002, "message length exceeds max_packet_size")                         \
    X(EVERSION, -5003, "unsupported protocol version")                                  \
    X(EFORMAT, -5004, "malformed message")                                              \
    X(ETYPE, -5005, "unexpected message type")                                          \
    X(EAUTH, -5006, "authentication failed")                                            \
    X(ESPACE, -5007, "output buffer too small")                                         \
    X(ECBIND, -5008, "channel binding negotiation failed")                              \
    X(EMECH, -5009, "SASL mechanism not supported")                                     \
    X(ESECRET, -5010, "malformed stored secret")                                        \
    X(ECRYPTO, -5011, "cryptographic library failure")                                  \
    X(ESTATE, -5012, "message out of sequence")                                         \
    X(ESYNTAX, -5013, "configuration syntax error")

enum {
#define PGL_ERR_ENUM_(name, value, msg) PGL_##name = (value),
    PGL_ERR_MAP(PGL_ERR_ENUM_)
#undef PGL_ERR_ENUM_
};

/* Bounds of the pglease codes (inclusive): PGL_ERR_MIN <= code <= PGL_ERR_MAX. */
#define PGL_ERR_MAX (-5000)
#define PGL_ERR_MIN (-5999)

/*
 * A short English description of `code`: a PGL_E* code, a negative errno
 * value, or 0 ("success"). Anything else is "unknown error". The string is
 * static and the call thread-safe.
 */
const char *pgl_strerror(int code);

/* The symbolic name: "PGL_EFORMAT", "ENOMEM", "OK" for 0, "UNKNOWN" otherwise. */
const char *pgl_errname(int code);

#endif
