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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_welcome_is_one_send_before_the_loop_sleeps, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_message_larger_than_the_first_buffer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_writes_what_is_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_explicit_flush, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
