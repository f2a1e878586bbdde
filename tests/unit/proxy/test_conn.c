/*
 * pgl_conn's own output on a real loop and a socket pair: messages are
 * built in place, nothing is written until the loop is about to sleep, then
 * everything queued goes out in one send(); a connection closed with output
 * queued still writes it. Every test ends with uv_loop_close() == 0, so a
 * handle left open fails it. send() is wrapped (-Wl,--wrap=send) to count.
 */
#include "pgl_conn.h"
#include "pgl_msg.h"

#include "pgl_pgwire.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

ssize_t __real_send(int fd, const void *buf, size_t len, int flags);
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags);

static int sends;

ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags)
{
    sends++;
    return __real_send(fd, buf, len, flags);
}

static int failures;

static pgl_conn_action decide(pgl_conn *c, uint8_t type, uint32_t len)
{
    (void)c, (void)type, (void)len;
    return PGL_CONN_FORWARD;
}

static pgl_conn_action inspect(pgl_conn *c, uint8_t type, const uint8_t *body, uint32_t len)
{
    (void)c, (void)type, (void)body, (void)len;
    return PGL_CONN_SKIP;
}

static void flushed(pgl_conn *c)
{
    (void)c;
}

static void failed(pgl_conn *c, pgl_conn_failure why)
{
    (void)why;
    failures++;
    pgl_conn_close(c);
}

static const pgl_conn_ops ops = {decide, inspect, flushed, failed};

typedef struct {
    uv_loop_t loop;
    pgl_conn_loop cl;
    pgl_conn conn;
    int sv[2];
} fixture;

static int setup(void **state)
{
    static fixture f;
    memset(&f, 0, sizeof f);
    assert_int_equal(uv_loop_init(&f.loop), 0);
    pgl_conn_loop_init(&f.cl, &f.loop, 4096);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, f.sv), 0);
    assert_int_equal(pgl_conn_init(&f.conn, &f.cl, f.sv[0], NULL, &ops, 1u << 20), 0);
    sends = failures = 0;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    pgl_conn_close(&f->conn);
    close(f->sv[0]);
    close(f->sv[1]);
    pgl_conn_loop_close(&f->cl);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* close callbacks */
    pgl_conn_loop_free_buffers(&f->cl);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    return 0;
}

/* Reads what the peer got; -1 when nothing (EAGAIN). */
static ssize_t peer_read(fixture *f, uint8_t *buf, size_t cap)
{
    return recv(f->sv[1], buf, cap, 0);
}

/* A pool login's welcome: AuthenticationOk, 13 ParameterStatus,
 * BackendKeyData, ReadyForQuery. */
static size_t queue_welcome(pgl_conn *c)
{
    assert_int_equal(pgl_msg_auth_ok(c), 0);
    size_t total = 9;
    for (int i = 0; i < 13; i++) {
        char name[32];
        snprintf(name, sizeof name, "param_%02d", i);
        assert_int_equal(pgl_msg_param_status(c, name, "some value"), 0);
        total += 1 + 4 + strlen(name) + 1 + strlen("some value") + 1;
    }
    assert_int_equal(pgl_msg_backend_key(c, 1234, 5678), 0);
    assert_int_equal(pgl_msg_ready(c, 'I'), 0);
    return total + 13 + 6;
}

static void test_welcome_is_one_send_before_the_loop_sleeps(void **state)
{
    fixture *f = *state;
    size_t total = queue_welcome(&f->conn);
    uint8_t buf[8192];
    /* Queued, not written. */
    assert_int_equal(sends, 0);
    assert_int_equal(peer_read(f, buf, sizeof buf), -1);
    assert_int_equal(errno, EAGAIN);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(sends, 1);
    ssize_t n = peer_read(f, buf, sizeof buf);
    assert_int_equal(n, (ssize_t)total);
    /* In order: AuthenticationOk first, ReadyForQuery 'I' last. */
    assert_int_equal(buf[0], 'R');
    assert_int_equal(buf[n - 6], 'Z');
    assert_int_equal(buf[n - 1], 'I');
    /* Nothing more goes out on the next turns, and the buffer is given back. */
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(sends, 1);
    assert_null(f->conn.out);
    assert_int_equal(failures, 0);
}

static void test_message_larger_than_the_first_buffer(void **state)
{
    fixture *f = *state;
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(pgl_msg_ready(&f->conn, 'I'), 0);
    assert_int_equal(pgl_msg_error(&f->conn, "ERROR", "22000", big, NULL, NULL), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(sends, 1);
    uint8_t buf[8192];
    ssize_t n = peer_read(f, buf, sizeof buf);
    assert_true(n > 3000);
    assert_int_equal(buf[0], 'Z');
    assert_int_equal(buf[6], 'E');
    assert_int_equal(pgl_pgwire_be32(buf + 7), (uint32_t)(n - 7));
}

static void test_close_writes_what_is_queued(void **state)
{
    fixture *f = *state;
    assert_int_equal(pgl_msg_error(&f->conn, "FATAL", "57P01", "bye", NULL, NULL), 0);
    pgl_conn_close(&f->conn);
    assert_int_equal(sends, 1);
    uint8_t buf[256];
    ssize_t n = peer_read(f, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(buf[0], 'E');
    /* Closed: nothing is queued any more and the flusher has nothing to do. */
    assert_int_equal(pgl_msg_ready(&f->conn, 'I'), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(sends, 1);
}

static void test_explicit_flush(void **state)
{
    fixture *f = *state;
    assert_int_equal(pgl_msg_byte(&f->conn, 'S'), 0);
    assert_true(pgl_conn_flush(&f->conn));
    assert_int_equal(sends, 1);
    uint8_t b = 0;
    assert_int_equal(peer_read(f, &b, 1), 1);
    assert_int_equal(b, 'S');
    uv_run(&f->loop, UV_RUN_NOWAIT); /* dequeued: no second write */
    assert_int_equal(sends, 1);
}

/* ---- keeping forwarded bytes and sending them again ---- */

static bool keep_next;

static pgl_conn_action keeping_decide(pgl_conn *c, uint8_t type, uint32_t len)
{
    (void)type, (void)len;
    if (keep_next) {
        pgl_conn_keep(c);
        keep_next = false;
    }
    return PGL_CONN_FORWARD;
}

static const pgl_conn_ops keeping_ops = {keeping_decide, inspect, flushed, failed};

typedef struct {
    uv_loop_t loop;
    pgl_conn_loop cl;
    pgl_conn src, dst1, dst2;
    int s[2], d1[2], d2[2];
} fwd_fixture;

static int fwd_setup(void **state)
{
    static fwd_fixture f;
    memset(&f, 0, sizeof f);
    assert_int_equal(uv_loop_init(&f.loop), 0);
    pgl_conn_loop_init(&f.cl, &f.loop, 4096);
    int *pairs[] = {f.s, f.d1, f.d2};
    pgl_conn *conns[] = {&f.src, &f.dst1, &f.dst2};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pairs[i]), 0);
        assert_int_equal(pgl_conn_init(conns[i], &f.cl, pairs[i][0], NULL, &keeping_ops, 1u << 20),
                         0);
    }
    keep_next = false;
    sends = failures = 0;
    *state = &f;
    return 0;
}

static int fwd_teardown(void **state)
{
    fwd_fixture *f = *state;
    int *pairs[] = {f->s, f->d1, f->d2};
    pgl_conn *conns[] = {&f->src, &f->dst1, &f->dst2};
    for (int i = 0; i < 3; i++) {
        pgl_conn_close(conns[i]);
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    pgl_conn_loop_close(&f->cl);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    pgl_conn_loop_free_buffers(&f->cl);
    assert_int_equal(f->cl.bufs.in_use, 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    return 0;
}

/* A Query message "Q<len><sql>\0" into buf; its size. */
static size_t query_msg(uint8_t *buf, const char *sql)
{
    size_t n = strlen(sql) + 1;
    buf[0] = 'Q';
    uint32_t len = (uint32_t)(4 + n);
    buf[1] = (uint8_t)(len >> 24), buf[2] = (uint8_t)(len >> 16), buf[3] = (uint8_t)(len >> 8);
    buf[4] = (uint8_t)len;
    memcpy(buf + 5, sql, n);
    return 5 + n;
}

static void test_kept_request_goes_again_to_another_peer(void **state)
{
    fwd_fixture *f = *state;
    uint8_t q1[64], q2[64], got[256];
    size_t n1 = query_msg(q1, "select 1"), n2 = query_msg(q2, "select 2");

    /* The first request is kept while it goes to dst1. */
    pgl_conn_set_peer(&f->src, &f->dst1);
    keep_next = true;
    assert_int_equal(write(f->s[1], q1, n1), (ssize_t)n1);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(recv(f->d1[1], got, sizeof got, 0), (ssize_t)n1);
    assert_memory_equal(got, q1, n1);
    assert_int_equal(pgl_conn_kept(&f->src), n1);
    /* Kept bytes keep their buffer. */
    assert_non_null(f->src.buf);

    /* dst1 dies; meanwhile the client sent its next request. */
    pgl_conn_pause(&f->src);
    assert_int_equal(write(f->s[1], q2, n2), (ssize_t)n2);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(pgl_conn_rewind(&f->src), 0);
    assert_int_equal(pgl_conn_kept(&f->src), 0);
    pgl_conn_set_peer(&f->src, &f->dst2);
    pgl_conn_resume(&f->src);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    /* dst2 gets both, in order, once. */
    assert_int_equal(recv(f->d2[1], got, sizeof got, 0), (ssize_t)(n1 + n2));
    assert_memory_equal(got, q1, n1);
    assert_memory_equal(got + n1, q2, n2);
    assert_int_equal(recv(f->d1[1], got, sizeof got, 0), -1);
    /* Nothing kept any more: the buffer went back to the pool. */
    assert_null(f->src.buf);
    assert_int_equal(failures, 0);
}

static void test_unkeep_lets_the_buffer_go(void **state)
{
    fwd_fixture *f = *state;
    uint8_t q[64], got[64];
    size_t n = query_msg(q, "select 3");
    pgl_conn_set_peer(&f->src, &f->dst1);
    keep_next = true;
    assert_int_equal(write(f->s[1], q, n), (ssize_t)n);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(recv(f->d1[1], got, sizeof got, 0), (ssize_t)n);
    assert_non_null(f->src.buf);
    /* Rewinding needs something kept. */
    pgl_conn_unkeep(&f->src);
    assert_null(f->src.buf);
    assert_int_equal(pgl_conn_rewind(&f->src), -EINVAL);
}

static void test_kept_bytes_survive_compaction(void **state)
{
    fwd_fixture *f = *state;
    /* Fill most of the 4096-byte buffer with a forwarded message, keep the
     * next one, then let more input arrive than fits at the end: the
     * buffer compacts down to the kept start, not past it. */
    static uint8_t big[3000], q[64], more[2000], got[8192];
    char sql[2994];
    memset(sql, 'x', sizeof sql - 1);
    sql[sizeof sql - 1] = '\0';
    size_t nb = query_msg(big, sql), nq = query_msg(q, "select 4");
    char sql2[1994];
    memset(sql2, 'y', sizeof sql2 - 1);
    sql2[sizeof sql2 - 1] = '\0';
    size_t nm = query_msg(more, sql2);
    pgl_conn_set_peer(&f->src, &f->dst1);
    assert_int_equal(write(f->s[1], big, nb), (ssize_t)nb);
    keep_next = false;
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(recv(f->d1[1], got, sizeof got, 0), (ssize_t)nb);
    keep_next = true;
    assert_int_equal(write(f->s[1], q, nq), (ssize_t)nq);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(recv(f->d1[1], got, sizeof got, 0), (ssize_t)nq);
    assert_int_equal(write(f->s[1], more, nm), (ssize_t)nm);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(recv(f->d1[1], got, sizeof got, 0), (ssize_t)nm);
    assert_int_equal(pgl_conn_kept(&f->src), nq + nm);
    assert_int_equal(pgl_conn_rewind(&f->src), 0);
    pgl_conn_set_peer(&f->src, &f->dst2);
    pgl_conn_resume(&f->src);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(recv(f->d2[1], got, sizeof got, 0), (ssize_t)(nq + nm));
    assert_memory_equal(got, q, nq);
    assert_memory_equal(got + nq, more, nm);
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_welcome_is_one_send_before_the_loop_sleeps, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_message_larger_than_the_first_buffer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_writes_what_is_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_explicit_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kept_request_goes_again_to_another_peer, fwd_setup,
                                        fwd_teardown),
        cmocka_unit_test_setup_teardown(test_unkeep_lets_the_buffer_go, fwd_setup, fwd_teardown),
        cmocka_unit_test_setup_teardown(test_kept_bytes_survive_compaction, fwd_setup,
                                        fwd_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
