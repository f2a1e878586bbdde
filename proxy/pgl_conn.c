#include "pgl_conn.h"

#include "pgl_pgwire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>

/* Own-output cap: the admin console's largest answers stay far below it. */
#define OUT_MAX (64u * 1024 * 1024)
/* First own-output buffer: a login's whole welcome fits. */
#define OUT_FIRST 1024u

/* ---- buffer pool ------------------------------------------------------------ */

static void pgl_bufpool_init(pgl_bufpool *bp, uint32_t size)
{
    memset(bp, 0, sizeof *bp);
    bp->size = size;
}

static void pgl_bufpool_free(pgl_bufpool *bp)
{
    for (size_t i = 0; i < bp->nfree; i++)
        free(bp->free[i]);
    free(bp->free);
    memset(bp, 0, sizeof *bp);
}

static void *bufpool_get(pgl_bufpool *bp)
{
    bp->in_use++;
    if (bp->nfree > 0)
        return bp->free[--bp->nfree];
    void *b = malloc(bp->size);
    if (b == NULL)
        bp->in_use--;
    return b;
}

static void bufpool_put(pgl_bufpool *bp, void *b)
{
    bp->in_use--;
    /* Keep at most as many spare buffers as are in use: a burst's worth. */
    if (bp->nfree < bp->in_use + 16) {
        if (bp->nfree == bp->cap) {
            size_t ncap = bp->cap ? bp->cap * 2 : 64;
            void **grown = realloc(bp->free, ncap * sizeof *grown);
            if (grown == NULL) {
                free(b);
                return;
            }
            bp->free = grown;
            bp->cap = ncap;
        }
        bp->free[bp->nfree++] = b;
        return;
    }
    free(b);
}

static void step_handshake(pgl_conn *c);
static void on_flusher(uv_prepare_t *h);

/* ---- helpers ------------------------------------------------------------------- */

static void fail(pgl_conn *c, pgl_conn_failure why)
{
    if (!c->closed)
        c->ops->failed(c, why);
}

static int ensure_buf(pgl_conn *c)
{
    if (c->buf != NULL)
        return 0;
    c->buf = bufpool_get(&c->cl->bufs);
    if (c->buf == NULL)
        return -ENOMEM;
    c->cap = c->cl->bufs.size;
    c->head = c->scan = c->tail = 0;
    return 0;
}

/* Returns an empty standard buffer to the pool; big ones are just freed. */
static void maybe_release_buf(pgl_conn *c)
{
    if (c->buf == NULL || c->head != c->tail || c->fwd_left != 0 || c->keeping)
        return;
    if (c->cap == c->cl->bufs.size) {
        bufpool_put(&c->cl->bufs, c->buf);
    } else {
        free(c->buf);
        c->cl->bufs.in_use--;
    }
    c->buf = NULL;
    c->cap = c->head = c->scan = c->tail = 0;
}

/* Moves unwritten bytes to the front to make room at the end. */
static void compact(pgl_conn *c)
{
    uint32_t from = c->keeping ? c->keep : c->head;
    if (from == 0)
        return;
    memmove(c->buf, c->buf + from, c->tail - from);
    c->head -= from;
    c->scan -= from;
    c->tail -= from;
    c->keep = 0;
}

/* Grows the buffer so one whole message of `total` bytes fits. */
static int grow_for(pgl_conn *c, uint32_t total)
{
    compact(c);
    if (total <= c->cap)
        return 0;
    uint8_t *nb = malloc(total);
    if (nb == NULL)
        return -ENOMEM;
    memcpy(nb, c->buf, c->tail);
    if (c->cap == c->cl->bufs.size) {
        bufpool_put(&c->cl->bufs, c->buf);
        c->cl->bufs.in_use++; /* the big buffer counts as one in use */
    } else {
        free(c->buf);
    }
    c->buf = nb;
    c->cap = total;
    return 0;
}

/* ---- output ---------------------------------------------------------------------- */

/* Writes own output. true when all of it is out. Failure is reported. */
static bool flush_out(pgl_conn *c)
{
    while (c->out_pos < c->out_len) {
        int want = 0;
        ssize_t n = pgl_io_write(&c->io, c->out + c->out_pos, c->out_len - c->out_pos, &want);
        if (n == PGL_IO_AGAIN) {
            /* Tried: from now on the socket's writability drives it. */
            pgl_list_remove(&c->pending_node);
            c->writing_wanted = true;
            return false;
        }
        if (n < 0) {
            pgl_list_remove(&c->pending_node);
            fail(c, PGL_CONN_IO_ERROR);
            return false;
        }
        c->out_pos += (uint32_t)n;
    }
    pgl_list_remove(&c->pending_node);
    c->out_pos = c->out_len = 0;
    /* pglease's own messages are rare after login (errors, SET batches):
     * an idle connection should not keep a buffer for them. */
    if (c->out_cap > 0) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    return true;
}

uint8_t *pgl_conn_out_space(pgl_conn *c, size_t min, size_t *room)
{
    size_t free_room = c->out_cap - c->out_len;
    if (c->out_cap == 0 || free_room < min) {
        if (min > OUT_MAX - c->out_len)
            return NULL;
        size_t ncap = c->out_cap ? c->out_cap : OUT_FIRST;
        while (ncap < c->out_len + min)
            ncap *= 2;
        if (ncap > OUT_MAX)
            ncap = OUT_MAX;
        uint8_t *grown = realloc(c->out, ncap);
        if (grown == NULL)
            return NULL;
        c->out = grown;
        c->out_cap = (uint32_t)ncap;
        free_room = ncap - c->out_len;
    }
    *room = free_room;
    return c->out + c->out_len;
}

void pgl_conn_out_commit(pgl_conn *c, size_t len)
{
    c->out_len += (uint32_t)len;
    /* Queued once; a connection the socket already refused (writing_wanted)
     * is written when it becomes writable. */
    if (!c->closed && !c->writing_wanted && pgl_list_empty(&c->pending_node)) {
        pgl_conn_loop *cl = c->cl;
        if (pgl_list_empty(&cl->pending))
            uv_prepare_start(&cl->flusher, on_flusher);
        pgl_list_append(&cl->pending, &c->pending_node);
    }
}

int pgl_conn_send(pgl_conn *c, const void *data, size_t len)
{
    if (c->closed)
        return 0;
    size_t room;
    uint8_t *out = pgl_conn_out_space(c, len, &room);
    if (out == NULL)
        return -ENOMEM;
    memcpy(out, data, len);
    pgl_conn_out_commit(c, len);
    return 0;
}

bool pgl_conn_flush(pgl_conn *c)
{
    if (c->closed)
        return false;
    bool done = flush_out(c);
    if (!c->closed)
        pgl_conn_update_events(c);
    return done;
}

/* Before the loop sleeps: one write per connection with own output. A
 * failure closes that connection's owner, which may close others: take
 * them one at a time from the head. */
static void on_flusher(uv_prepare_t *h)
{
    pgl_conn_loop *cl = h->data;
    while (!pgl_list_empty(&cl->pending)) {
        pgl_conn *c = pgl_container_of(cl->pending.next, pgl_conn, pending_node);
        pgl_conn_flush(c);
        pgl_list_remove(&c->pending_node);
    }
    uv_prepare_stop(h);
}

/*
 * Writes [head, scan) to the peer. true when all of it is written; false
 * when blocked (we wait for the peer to be writable) or when something
 * failed (check `closed`).
 */
static bool flush_range(pgl_conn *c)
{
    pgl_conn *p = c->peer;
    if (c->head == c->scan)
        return true;
    if (p == NULL || p->closed) {
        c->head = c->scan; /* nobody to give them to */
        return true;
    }
    if (!flush_out(p)) {
        if (p->closed)
            return false;
        c->blocked_on = p;
        pgl_conn_update_events(p);
        return false;
    }
    while (c->head < c->scan) {
        int want = 0;
        ssize_t n = pgl_io_write(&p->io, c->buf + c->head, c->scan - c->head, &want);
        if (n == PGL_IO_AGAIN) {
            c->blocked_on = p;
            p->writing_wanted = true;
            pgl_conn_update_events(p);
            return false;
        }
        if (n < 0) {
            fail(p, PGL_CONN_IO_ERROR);
            return false;
        }
        c->head += (uint32_t)n;
        c->wrote = true;
        if (c->fwd_count != NULL)
            *c->fwd_count += (uint64_t)n;
    }
    c->blocked_on = NULL;
    if (c->head == c->tail && c->fwd_left == 0 && !c->keeping)
        c->head = c->scan = c->tail = 0;
    return true;
}

/* ---- input -------------------------------------------------------------------------- */

/*
 * Walks the messages in [scan, tail). Returns when more input is needed,
 * when the owner said wait/stop, or when a message must wait for a flush.
 */
static void process(pgl_conn *c)
{
    while (!c->closed && !c->paused && !c->after_flush) {
        if (c->fwd_left > 0) {
            uint32_t take = c->tail - c->scan;
            if (take > c->fwd_left)
                take = c->fwd_left;
            c->scan += take;
            c->fwd_left -= take;
            if (c->fwd_left > 0)
                return;
            continue;
        }
        uint32_t hdr = c->startup ? 4 : 5;
        if (c->tail - c->scan < hdr)
            return;
        const uint8_t *h = c->buf + c->scan;
        uint8_t type = c->startup ? 0 : h[0];
        uint32_t len = pgl_pgwire_be32(c->startup ? h : h + 1);
        /* The length word is a signed int32 in the protocol. */
        if (len < 4 || len > INT32_MAX) {
            fail(c, PGL_CONN_BAD_LENGTH);
            return;
        }
        uint32_t total = len + (hdr - 4);
        pgl_conn_action act = c->ops->decide(c, type, len);
        if (c->closed)
            return;
        /* Forwarded messages stream through in buffer-sized pieces, whatever
         * their size (Postgres's own limits apply at the other end); only
         * what pglease must hold whole is bounded by max_packet_size. */
        if ((act == PGL_CONN_INSPECT || act == PGL_CONN_PEEK) && len > c->max_packet) {
            fail(c, PGL_CONN_TOO_BIG);
            return;
        }
        /* How much of the message inspect() sees. */
        uint32_t shown = total;
        if (act == PGL_CONN_PEEK_HEAD) {
            if (len - 4 > PGL_CONN_HEAD_MAX)
                shown = hdr + PGL_CONN_HEAD_MAX;
            act = PGL_CONN_PEEK;
        }
        switch (act) {
        case PGL_CONN_FORWARD:
            c->fwd_left = total;
            continue;
        case PGL_CONN_WAIT:
            c->paused = true;
            return;
        case PGL_CONN_INSPECT:
        case PGL_CONN_PEEK:
            break;
        case PGL_CONN_PEEK_HEAD:
        case PGL_CONN_SKIP:
        case PGL_CONN_STOP:
            /* Not valid answers at a header: treat as a protocol failure. */
            fail(c, PGL_CONN_BAD_LENGTH);
            return;
        }
        if (shown > c->cap && grow_for(c, shown) != 0) {
            fail(c, PGL_CONN_NO_MEMORY);
            return;
        }
        if (c->tail - c->scan < shown)
            return;
        /* The owner sees the message only once everything before it is out,
         * unless it only peeks. */
        bool peek = act == PGL_CONN_PEEK;
        if (!peek && !flush_range(c))
            return;
        c->msg_total = total;
        c->msg_pre = 0;
        act = c->ops->inspect(c, type, c->buf + c->scan + hdr, shown - hdr);
        if (c->closed)
            return;
        if (peek && act != PGL_CONN_FORWARD) {
            fail(c, PGL_CONN_BAD_LENGTH); /* a bug in the owner, not the peer */
            return;
        }
        switch (act) {
        case PGL_CONN_FORWARD:
        {
            /* What is here goes now (inspect() may have asked for a flush);
             * the part it did not see streams through like any forwarded
             * message. */
            uint32_t take = c->tail - c->scan;
            if (take > c->msg_total)
                take = c->msg_total;
            c->scan += take;
            c->fwd_left = c->msg_total - take;
            break;
        }
        case PGL_CONN_SKIP:
            c->scan += c->msg_total;
            c->head = c->scan;
            break;
        case PGL_CONN_STOP:
            c->scan += c->msg_total;
            c->head = c->scan;
            c->paused = true;
            return;
        case PGL_CONN_WAIT:
            c->paused = true;
            return;
        case PGL_CONN_INSPECT:
        case PGL_CONN_PEEK:
        case PGL_CONN_PEEK_HEAD:
            fail(c, PGL_CONN_BAD_LENGTH);
            return;
        }
    }
}

/* ---- editing the inspected message ------------------------------------------------ */

/* Replaces `cut` bytes at `rel` (from `scan`) with `ins`. */
static int msg_splice(pgl_conn *c, uint32_t rel, uint32_t cut, const void *ins, uint32_t ins_len)
{
    if (ins_len > cut) {
        uint32_t extra = ins_len - cut;
        if (c->tail + extra > c->cap) {
            compact(c);
            if (c->tail + extra > c->cap && grow_for(c, c->tail + extra) != 0)
                return -ENOMEM;
        }
    }
    uint8_t *at = c->buf + c->scan + rel;
    memmove(at + ins_len, at + cut, c->tail - (c->scan + rel + cut));
    if (ins_len > 0)
        memcpy(at, ins, ins_len);
    c->tail = c->tail - cut + ins_len;
    c->msg_total = c->msg_total - cut + ins_len;
    return 0;
}

int pgl_conn_edit(pgl_conn *c, uint32_t off, uint32_t cut, const void *ins, uint32_t ins_len)
{
    int rc = msg_splice(c, c->msg_pre + 5 + off, cut, ins, ins_len);
    if (rc != 0)
        return rc;
    uint8_t *lw = c->buf + c->scan + c->msg_pre + 1;
    uint32_t len = pgl_pgwire_be32(lw) - cut + ins_len;
    lw[0] = (uint8_t)(len >> 24);
    lw[1] = (uint8_t)(len >> 16);
    lw[2] = (uint8_t)(len >> 8);
    lw[3] = (uint8_t)len;
    return 0;
}

int pgl_conn_insert(pgl_conn *c, const void *msgs, uint32_t len)
{
    int rc = msg_splice(c, c->msg_pre, 0, msgs, len);
    if (rc == 0)
        c->msg_pre += len;
    return rc;
}

void pgl_conn_drop(pgl_conn *c)
{
    /* Only whole messages are dropped (PEEK/INSPECT): all of it is here. */
    (void)msg_splice(c, c->msg_pre, c->msg_total - c->msg_pre, NULL, 0);
}

void pgl_conn_retype(pgl_conn *c, uint8_t type)
{
    c->buf[c->scan + c->msg_pre] = type;
}

/* Reads what the socket has, as long as there is room. false on failure. */
static bool read_some(pgl_conn *c)
{
    if (ensure_buf(c) != 0) {
        fail(c, PGL_CONN_NO_MEMORY);
        return false;
    }
    if (c->tail == c->cap)
        compact(c);
    while (c->tail < c->cap) {
        int want = 0;
        size_t room = c->cap - c->tail;
        ssize_t n = pgl_io_read(&c->io, c->buf + c->tail, room, &want);
        if (n == PGL_IO_AGAIN) {
            c->read_wants_write = want == UV_WRITABLE;
            break;
        }
        if (n == 0) {
            fail(c, PGL_CONN_EOF);
            return false;
        }
        if (n < 0) {
            fail(c, PGL_CONN_IO_ERROR);
            return false;
        }
        c->read_wants_write = false;
        c->tail += (uint32_t)n;
        /* A short plain read drained the socket: skip the extra EAGAIN call. */
        if ((size_t)n < room && pgl_io_pending(&c->io) == 0)
            break;
    }
    return true;
}

/* Processes, flushes and runs after-flush hooks until nothing moves. */
static void run_rounds(pgl_conn *c);

static void run(pgl_conn *c)
{
    c->running++;
    run_rounds(c);
    c->running--;
}

static void run_rounds(pgl_conn *c)
{
    for (int rounds = 0; !c->closed && rounds < 64; rounds++) {
        process(c);
        if (c->closed)
            return;
        if (!flush_range(c))
            return;
        if (c->after_flush) {
            c->after_flush = false;
            c->ops->flushed(c);
            continue;
        }
        /* TLS may hold decrypted bytes the socket will not signal again. */
        if (!c->paused && c->buf != NULL && c->tail < c->cap && c->fwd_left == 0 &&
            pgl_io_pending(&c->io) > 0) {
            if (!read_some(c))
                return;
            continue;
        }
        break;
    }
    maybe_release_buf(c);
}

void pgl_conn_update_events(pgl_conn *c)
{
    if (c->closed || c->poller == NULL)
        return;
    int ev = 0;
    if (c->handshake != NULL) {
        if (pgl_poller_want(c->poller, c->handshake_want) != 0)
            fail(c, PGL_CONN_IO_ERROR);
        return;
    }
    bool room = c->buf == NULL || c->tail < c->cap || (c->keeping ? c->keep : c->head) > 0;
    if (!c->paused && c->blocked_on == NULL && room && !c->after_flush)
        ev |= UV_READABLE;
    /* Own output still queued for the flusher needs no POLLOUT yet. */
    if (c->writing_wanted || c->read_wants_write)
        ev |= UV_WRITABLE;
    if (pgl_poller_want(c->poller, ev) != 0)
        fail(c, PGL_CONN_IO_ERROR);
}

static void on_poll(pgl_poller *p, void *arg, int status, int events)
{
    pgl_conn *c = arg;
    (void)p;
    if (status < 0) {
        /* libuv reports a socket error (POLLERR) without saying which:
         * whether the peer reset the connection matters (pgl_io). */
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0)
            c->io.reset = err == ECONNRESET || err == EPIPE;
        fail(c, PGL_CONN_IO_ERROR);
        return;
    }
    if (c->handshake != NULL) {
        step_handshake(c);
        return;
    }
    if (events & UV_WRITABLE) {
        c->writing_wanted = false;
        if (!flush_out(c))
            goto out;
        /* Whoever waited to write to us may go on. */
        pgl_conn *src = c->peer;
        if (src != NULL && src->blocked_on == c) {
            src->blocked_on = NULL;
            run(src);
            if (!src->closed)
                pgl_conn_update_events(src);
            if (c->closed)
                return;
        }
    }
    if ((events & UV_READABLE) || (c->read_wants_write && (events & UV_WRITABLE))) {
        if (!c->paused && c->blocked_on == NULL && read_some(c))
            run(c);
    }
out:
    if (!c->closed)
        pgl_conn_update_events(c);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

void pgl_conn_loop_init(pgl_conn_loop *cl, uv_loop_t *loop, uint32_t buf_size)
{
    cl->loop = loop;
    pgl_bufpool_init(&cl->bufs, buf_size);
    pgl_list_init(&cl->pending);
    uv_prepare_init(loop, &cl->flusher);
    cl->flusher.data = cl;
    uv_unref((uv_handle_t *)&cl->flusher);
}

void pgl_conn_loop_close(pgl_conn_loop *cl)
{
    if (cl->loop == NULL)
        return; /* never set up */
    on_flusher(&cl->flusher);
    if (!uv_is_closing((uv_handle_t *)&cl->flusher))
        uv_close((uv_handle_t *)&cl->flusher, NULL);
}

void pgl_conn_loop_free_buffers(pgl_conn_loop *cl)
{
    pgl_bufpool_free(&cl->bufs);
}

static void setup(pgl_conn *c, pgl_conn_loop *cl, SSL *ssl, int fd, const pgl_conn_ops *ops,
                  uint32_t max_packet)
{
    memset(c, 0, sizeof *c);
    pgl_io_init(&c->io, fd, ssl);
    c->ops = ops;
    c->cl = cl;
    c->max_packet = max_packet;
    pgl_list_init(&c->pending_node);
}

int pgl_conn_init(pgl_conn *c, pgl_conn_loop *cl, int fd, SSL *ssl, const pgl_conn_ops *ops,
                  uint32_t max_packet)
{
    setup(c, cl, ssl, fd, ops, max_packet);
    int rc = pgl_poller_open(cl->loop, fd, on_poll, c, &c->poller);
    if (rc != 0)
        return rc;
    pgl_conn_update_events(c);
    return 0;
}

int pgl_conn_init_with_poller(pgl_conn *c, pgl_conn_loop *cl, pgl_poller *poller, SSL *ssl,
                              const pgl_conn_ops *ops, uint32_t max_packet)
{
    setup(c, cl, ssl, pgl_poller_fd(poller), ops, max_packet);
    c->poller = poller;
    pgl_poller_retarget(poller, on_poll, c);
    pgl_conn_update_events(c);
    return 0;
}

/* Advances the TLS handshake; reports the outcome once. */
static void step_handshake(pgl_conn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->handshake);
    if (rc == 1) {
        pgl_io_init(&c->io, c->io.fd, c->handshake);
        c->handshake = NULL;
        c->handshake_want = 0;
        c->handshake_done(c, 0);
        return;
    }
    int err = SSL_get_error(c->handshake, rc);
    ERR_clear_error();
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        c->handshake_want = err == SSL_ERROR_WANT_READ ? UV_READABLE : UV_WRITABLE;
        pgl_conn_update_events(c);
        return;
    }
    c->handshake_want = 0;
    c->handshake_done(c, -1);
}

void pgl_conn_start_tls(pgl_conn *c, SSL *ssl, void (*done)(pgl_conn *c, int ok))
{
    if (pgl_conn_has_input(c)) {
        done(c, -1);
        return;
    }
    c->handshake = ssl;
    c->handshake_done = done;
    SSL_set_accept_state(ssl);
    step_handshake(c);
}

void pgl_conn_close(pgl_conn *c)
{
    if (c->closed)
        return;
    /* A last message (an ErrorResponse before closing) goes out if the
     * socket takes it now; otherwise it is lost with the connection, as in
     * Postgres. */
    if (c->out_pos < c->out_len && c->handshake == NULL) {
        int want = 0;
        (void)pgl_io_write(&c->io, c->out + c->out_pos, c->out_len - c->out_pos, &want);
    }
    pgl_list_remove(&c->pending_node);
    c->closed = true;
    pgl_poller_close(c->poller);
    c->poller = NULL;
    if (c->peer != NULL && c->peer->blocked_on == c)
        c->peer->blocked_on = NULL;
    if (c->buf != NULL) {
        c->head = c->tail;
        c->fwd_left = 0;
        c->keeping = false;
        maybe_release_buf(c);
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_pos = c->out_cap = 0;
}

void pgl_conn_keep(pgl_conn *c)
{
    c->keep = c->scan;
    c->keeping = true;
}

void pgl_conn_unkeep(pgl_conn *c)
{
    if (!c->keeping)
        return;
    c->keeping = false;
    if (c->head == c->tail && c->fwd_left == 0 && c->running == 0) {
        c->head = c->scan = c->tail = 0;
        maybe_release_buf(c);
    }
}

uint32_t pgl_conn_kept(const pgl_conn *c)
{
    return c->keeping ? c->scan - c->keep : 0;
}

int pgl_conn_rewind(pgl_conn *c)
{
    if (!c->keeping || c->fwd_left != 0 || c->buf == NULL)
        return -EINVAL;
    c->head = c->scan = c->keep;
    c->keeping = false;
    return 0;
}

bool pgl_conn_input_waiting(pgl_conn *c)
{
    if (c->closed || pgl_conn_has_input(c) || pgl_io_pending(&c->io) > 0)
        return true;
    char b;
    ssize_t n = recv(c->io.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void pgl_conn_set_peer(pgl_conn *c, pgl_conn *peer)
{
    c->peer = peer;
    c->blocked_on = NULL;
}

void pgl_conn_pause(pgl_conn *c)
{
    c->paused = true;
    pgl_conn_update_events(c);
}

void pgl_conn_resume(pgl_conn *c)
{
    if (c->closed)
        return;
    c->paused = false;
    /* Resumed from inside our own decide()/inspect() (the pool linked a
     * server synchronously): the outer loop carries on by itself, and a
     * nested run would hand the same message over twice. */
    if (c->running > 0)
        return;
    if (c->buf != NULL)
        run(c);
    if (!c->closed)
        pgl_conn_update_events(c);
}

bool pgl_conn_mid_message(const pgl_conn *c)
{
    return c->fwd_left > 0 || c->head < c->scan;
}

bool pgl_conn_has_input(const pgl_conn *c)
{
    return c->buf != NULL && c->scan < c->tail;
}
