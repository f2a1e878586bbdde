/*
 * pgl_io — the transport table: reading and writing a connection's bytes
 * without caring whether they travel in clear or through TLS.
 *
 * Protocol code calls pgl_io_read/pgl_io_write and, on PGL_IO_AGAIN, waits
 * for the events reported in *want (TLS may need to write in order to read,
 * and the other way round). Sockets are non-blocking.
 */
#ifndef PGL_IO_H
#define PGL_IO_H

#include <errno.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#define PGL_IO_AGAIN (-EAGAIN) /* would block; see *want */
#define PGL_IO_ERROR (-EIO)    /* connection broken (reset, TLS failure) */

typedef struct pgl_io pgl_io;

typedef struct {
    const char *name;
    ssize_t (*read)(pgl_io *io, void *buf, size_t len, int *want);
    ssize_t (*write)(pgl_io *io, const void *buf, size_t len, int *want);
    /* Bytes already decrypted and buffered inside the transport. */
    size_t (*pending)(const pgl_io *io);
} pgl_io_ops;

struct pgl_io {
    int fd;
    int reset; /* the last PGL_IO_ERROR was the peer's reset (ECONNRESET, EPIPE) */
    SSL *ssl;  /* NULL for plain */
    const pgl_io_ops *ops;
};

/* Sets up `io` for `fd` in clear, or through `ssl` when not NULL. */
void pgl_io_init(pgl_io *io, int fd, SSL *ssl);

/* > 0 bytes read, 0 at end of stream, PGL_IO_AGAIN or PGL_IO_ERROR. */
static inline ssize_t pgl_io_read(pgl_io *io, void *buf, size_t len, int *want)
{
    return io->ops->read(io, buf, len, want);
}

/* > 0 bytes written (maybe fewer than len), PGL_IO_AGAIN or PGL_IO_ERROR. */
static inline ssize_t pgl_io_write(pgl_io *io, const void *buf, size_t len, int *want)
{
    return io->ops->write(io, buf, len, want);
}

static inline size_t pgl_io_pending(const pgl_io *io)
{
    return io->ops->pending(io);
}

#endif
