#include "pgl_io.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <uv.h>

/* A broken connection; notes whether the peer reset it. */
static ssize_t broken(pgl_io *io, int err)
{
    io->reset = err == ECONNRESET || err == EPIPE;
    return PGL_IO_ERROR;
}

static ssize_t plain_read(pgl_io *io, void *buf, size_t len, int *want)
{
    for (;;) {
        ssize_t n = recv(io->fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *want = UV_READABLE;
            return PGL_IO_AGAIN;
        }
        return broken(io, errno);
    }
}

static ssize_t plain_write(pgl_io *io, const void *buf, size_t len, int *want)
{
    for (;;) {
        /* MSG_NOSIGNAL: a peer that went away must not SIGPIPE the proxy. */
        ssize_t n = send(io->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *want = UV_WRITABLE;
            return PGL_IO_AGAIN;
        }
        return broken(io, errno);
    }
}

static size_t plain_pending(const pgl_io *io)
{
    (void)io;
    return 0;
}

/*
 * Maps a failed SSL_read_ex/SSL_write_ex onto the transport's results. A
 * clean TLS close (close_notify) is end of stream when reading and a broken
 * connection when writing.
 */
static ssize_t tls_failure(pgl_io *io, bool reading, int *want)
{
    int err = SSL_get_error(io->ssl, 0);
    int saved_errno = errno;
    /* The error queue is per thread and shared with libpq: leave it clean. */
    ERR_clear_error();
    switch (err) {
    case SSL_ERROR_WANT_READ:
        *want = UV_READABLE;
        return PGL_IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = UV_WRITABLE;
        return PGL_IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return reading ? 0 : PGL_IO_ERROR;
    case SSL_ERROR_SYSCALL:
        if (saved_errno == EAGAIN || saved_errno == EINTR) {
            *want = reading ? UV_READABLE : UV_WRITABLE;
            return PGL_IO_AGAIN;
        }
        return broken(io, saved_errno);
    default:
        return PGL_IO_ERROR;
    }
}

static ssize_t tls_read(pgl_io *io, void *buf, size_t len, int *want)
{
    ERR_clear_error();
    size_t got = 0;
    if (SSL_read_ex(io->ssl, buf, len, &got) == 1)
        return (ssize_t)got;
    return tls_failure(io, true, want);
}

static ssize_t tls_write(pgl_io *io, const void *buf, size_t len, int *want)
{
    ERR_clear_error();
    size_t put = 0;
    if (SSL_write_ex(io->ssl, buf, len, &put) == 1)
        return (ssize_t)put;
    return tls_failure(io, false, want);
}

static size_t tls_pending(const pgl_io *io)
{
    return (size_t)SSL_pending(io->ssl);
}

static const pgl_io_ops plain_ops = {"plain", plain_read, plain_write, plain_pending};
static const pgl_io_ops tls_ops = {"tls", tls_read, tls_write, tls_pending};

void pgl_io_init(pgl_io *io, int fd, SSL *ssl)
{
    io->fd = fd;
    io->ssl = ssl;
    io->ops = ssl != NULL ? &tls_ops : &plain_ops;
}
