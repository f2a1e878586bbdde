/*
 * pgl_conn — one side's byte stream, cut into protocol messages and
 * forwarded to the peer without copying (PgBouncer's sbuf idea).
 *
 * Bytes read from the socket land in `buf`. The protocol owner is asked
 * about each message at its 5-byte header (decide): stream it to the peer
 * (bodies of any size pass through in buffer-sized pieces), inspect it
 * first (the whole message must be in the buffer; small ones only in
 * practice), or wait (stop here; the owner resumes later). Consecutive
 * forwarded messages form one contiguous range of the buffer, written to
 * the peer with one call. If the peer cannot take it all, this side stops
 * reading until the peer is writable again: back-pressure, never unbounded
 * buffering.
 *
 * Messages pglease writes itself (authentication, errors, internal
 * queries) are built in place at the end of `out` and written once per
 * turn of the loop, just before it polls (Redis's beforeSleep): a login's
 * welcome of ~16 messages is one send(). `out` is always written before
 * forwarded bytes so the peer sees everything in order.
 *
 * Callbacks may close the connection's owner; pgl_conn then notices
 * `closed` and stops touching it. Owners free their object only from the
 * proxy's deferred-free list, never inside a callback.
 */
#ifndef PGL_CONN_H
#define PGL_CONN_H

#include "pgl_io.h"
#include "pgl_list.h"
#include "pgl_poller.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct pgl_conn pgl_conn;

/* decide() / inspect() answers. */
typedef enum {
    PGL_CONN_FORWARD = 0, /* pass the message to the peer */
    PGL_CONN_INSPECT,     /* decide: call inspect() with the whole message */
    PGL_CONN_PEEK,        /* decide: like INSPECT, but what precedes the message need
                             not be written first; inspect() must only look (no
                             output, no relinking) and answer FORWARD. Saves a
                             write per ReadyForQuery. */
    PGL_CONN_PEEK_HEAD,   /* decide: like PEEK, but inspect() gets only the first
                             PGL_CONN_HEAD_MAX bytes of the body (all of it when
                             shorter); the rest streams through. For messages whose
                             interesting part is at the start and whose size has no
                             bound (a Bind's names before its values). */
    PGL_CONN_SKIP,        /* inspect: drop the message */
    PGL_CONN_WAIT,        /* stop before this message; the owner resumes */
    PGL_CONN_STOP,        /* inspect: consume it, then stop (owner took over) */
} pgl_conn_action;

typedef enum {
    PGL_CONN_EOF = 0,      /* peer closed the connection */
    PGL_CONN_IO_ERROR,     /* reset, TLS failure */
    PGL_CONN_TOO_BIG,      /* a message to inspect is longer than max_packet_size */
    PGL_CONN_BAD_LENGTH,   /* length field below 4 */
    PGL_CONN_NO_MEMORY,
} pgl_conn_failure;

typedef struct {
    /* Called at each header; must be idempotent (it may be asked again). */
    pgl_conn_action (*decide)(pgl_conn *c, uint8_t type, uint32_t len);
    /* Called exactly once per inspected message; everything before it has
     * been written to the peer (not so for PEEK and PEEK_HEAD). `body`
     * excludes type and length. A PEEK may still edit the message on its
     * way (pgl_conn_edit and friends below). */
    pgl_conn_action (*inspect)(pgl_conn *c, uint8_t type, const uint8_t *body, uint32_t len);
    /* `after_flush` was set and everything forwarded so far is written. */
    void (*flushed)(pgl_conn *c);
    /* The stream failed; the owner must close. */
    void (*failed)(pgl_conn *c, pgl_conn_failure why);
} pgl_conn_ops;

/* Buffers are recycled through a free list so the forwarding path never
 * allocates once warm, and idle connections hold none. */
typedef struct pgl_bufpool {
    void **free;
    size_t nfree, cap;
    uint32_t size;
    size_t in_use;
} pgl_bufpool;

/* What the connections of one loop share: the buffer pool, and the
 * connections holding own output not yet tried, written by `flusher`
 * before the loop next sleeps. */
typedef struct pgl_conn_loop {
    uv_loop_t *loop;
    pgl_bufpool bufs;
    pgl_list pending;
    uv_prepare_t flusher;
} pgl_conn_loop;

struct pgl_conn {
    pgl_io io;
    pgl_poller *poller;
    const pgl_conn_ops *ops;
    pgl_conn_loop *cl;
    pgl_conn *peer;       /* forwarding target, NULL when unlinked */
    pgl_conn *blocked_on; /* the peer we wait to become writable */
    /* Bytes forwarded to the peer are added here (a pool's counter, set by
     * the owner; NULL: not counted). Per written range, never per message. */
    uint64_t *fwd_count;

    /* Fields ordered to leave no padding: every idle client carries one. */
    uint8_t *buf; /* NULL while empty and idle */
    uint32_t max_packet;
    uint32_t cap;
    uint32_t head; /* first byte not yet written to the peer (or consumed) */
    uint32_t scan; /* first byte not yet given to decide/forward */
    uint32_t tail; /* end of data read */
    uint32_t fwd_left;  /* bytes of the message being streamed, not yet in [head, scan) */
    /* While inspect() runs: the bytes from `scan` that now stand for the
     * message (edits change it), and how many of them were inserted before
     * the message itself. */
    uint32_t msg_total;
    uint32_t msg_pre;
    /* While `keeping`: bytes from `keep` on stay in `buf` after they are
     * written, so they can be sent again (pgl_conn_rewind). */
    uint32_t keep;
    bool keeping;
    bool wrote; /* forwarded bytes were written to the peer (the owner clears it) */
    bool startup;  /* messages have no type byte (startup phase) */
    bool paused;   /* the owner stopped reading (e.g. waiting for a server) */
    bool closed;   /* owner closed: stop everything */
    bool after_flush;
    bool writing_wanted; /* own output or a peer's range is waiting for us */
    bool read_wants_write; /* TLS: the read needs the socket writable */
    int16_t running; /* run() depth: resume() from a callback must not nest */
    int handshake_want;

    SSL *handshake; /* server-side TLS handshake running */
    void (*handshake_done)(pgl_conn *c, int ok);

    uint8_t *out; /* pglease's own messages */
    uint32_t out_len, out_pos, out_cap;
    pgl_list pending_node; /* in cl->pending while out holds untried bytes */
};

/* Buffers of `buf_size` bytes; the flusher is a handle of `loop` that does
 * not keep it alive. Close with pgl_conn_loop_close before the loop ends. */
void pgl_conn_loop_init(pgl_conn_loop *cl, uv_loop_t *loop, uint32_t buf_size);
/* Writes what is pending, closes the flusher handle (uv_close, so the loop
 * must run once more) and frees the spare buffers. */
void pgl_conn_loop_close(pgl_conn_loop *cl);
/* Frees the spare buffers of the pool (after the loop is done). */
void pgl_conn_loop_free_buffers(pgl_conn_loop *cl);

/* Sets up `c` around an open socket; starts watching it. */
int pgl_conn_init(pgl_conn *c, pgl_conn_loop *cl, int fd, SSL *ssl, const pgl_conn_ops *ops,
                  uint32_t max_packet) __attribute__((warn_unused_result));

/* Takes over a poller already watching the socket (from libpq login). */
int pgl_conn_init_with_poller(pgl_conn *c, pgl_conn_loop *cl, pgl_poller *poller, SSL *ssl,
                              const pgl_conn_ops *ops, uint32_t max_packet)
    __attribute__((warn_unused_result));

/*
 * Runs a server-side TLS handshake (SSL_accept) on the socket, then reads
 * and writes through `ssl`. `done` gets 0, or -1 when the handshake failed.
 * Bytes the client sent before the handshake and not yet processed are a
 * protocol violation (they would be trusted as if encrypted): -1 as well.
 */
void pgl_conn_start_tls(pgl_conn *c, SSL *ssl, void (*done)(pgl_conn *c, int ok));

/* Stops watching and releases buffers; the socket is closed by the owner. */
void pgl_conn_close(pgl_conn *c);

/*
 * Own output is built in place: pgl_conn_out_space() returns room for at
 * least `min` bytes at the end of `out` (min 0: whatever room there is,
 * allocating a first buffer), NULL when that would pass the output cap or
 * memory is short; *room gets its size. pgl_conn_out_commit() adds the
 * `len` bytes written there and queues the connection for the flusher.
 */
uint8_t *pgl_conn_out_space(pgl_conn *c, size_t min, size_t *room);
void pgl_conn_out_commit(pgl_conn *c, size_t len);

/* Queues a copy of `data` as own output. 0 or -ENOMEM. */
int pgl_conn_send(pgl_conn *c, const void *data, size_t len) __attribute__((warn_unused_result));

/* Writes own output now rather than before the loop sleeps. true when all
 * of it is out; false when the socket cannot take it yet (or failed, which
 * is reported to the owner). */
bool pgl_conn_flush(pgl_conn *c);

/*
 * Keeping what was forwarded, to send it again to another peer (a request
 * whose server died before answering). pgl_conn_keep starts at the message
 * whose header decide() is looking at; pgl_conn_unkeep lets the bytes go;
 * pgl_conn_rewind makes everything from the kept start unprocessed again
 * (decide() sees those messages anew) and stops keeping. The owner bounds
 * what it keeps: kept bytes hold their room in the buffer. Rewind needs
 * no message half-streamed: 0, or -EINVAL.
 */
void pgl_conn_keep(pgl_conn *c);
void pgl_conn_unkeep(pgl_conn *c);
int pgl_conn_rewind(pgl_conn *c) __attribute__((warn_unused_result));
/* Bytes kept so far (through what decide() has been given). */
uint32_t pgl_conn_kept(const pgl_conn *c);

/* Something came in that was not processed yet, or the socket is at its
 * end or broken (a peek, no read): for a connection that should be quiet. */
bool pgl_conn_input_waiting(pgl_conn *c);

/* Links `c` so its forwarded messages go to `peer` (NULL to unlink). */
void pgl_conn_set_peer(pgl_conn *c, pgl_conn *peer);

/* Stops reading and processing (the owner waits for something). */
void pgl_conn_pause(pgl_conn *c);

/* Resumes processing what is buffered, then reading. Safe to call any time. */
void pgl_conn_resume(pgl_conn *c);

/*
 * Editing the message being inspected (from inspect(), for any action that
 * called it): what the peer gets instead. Each returns 0 or -ENOMEM (the
 * message is then unchanged), and leaves the `body` inspect() was given
 * invalid: take what is needed from it first.
 *
 * pgl_conn_edit replaces `cut` bytes at body offset `off` with `ins`
 * (within what inspect() was shown) and fixes the length word.
 * pgl_conn_insert puts whole messages before the current one.
 * pgl_conn_drop removes the current message (not what was inserted).
 * pgl_conn_retype changes its type byte.
 */
#define PGL_CONN_HEAD_MAX 1024u
int pgl_conn_edit(pgl_conn *c, uint32_t off, uint32_t cut, const void *ins, uint32_t ins_len)
    __attribute__((warn_unused_result));
int pgl_conn_insert(pgl_conn *c, const void *msgs, uint32_t len)
    __attribute__((warn_unused_result));
void pgl_conn_drop(pgl_conn *c);
void pgl_conn_retype(pgl_conn *c, uint8_t type);

/* Whether a message is half forwarded (a server lost now leaves the client's
 * stream cut in the middle of a message). */
bool pgl_conn_mid_message(const pgl_conn *c);

/* Unprocessed bytes are buffered (e.g. the client sent more than one message). */
bool pgl_conn_has_input(const pgl_conn *c);

/* Recomputes the poll events from the state. */
void pgl_conn_update_events(pgl_conn *c);

#endif
