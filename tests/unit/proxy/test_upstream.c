/* Unit tests for proxy/pgl_upstream.c: the SQLSTATE a failed upstream login
 * gets from libpq's message (libpq gives no code for connection failures),
 * which decides between "credential rejected", "no slot" and "try later";
 * and that a login's SCRAM key derivation does not stop the loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pgl_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void expect_code(const char *message, const char *code)
{
    char sqlstate[6];
    pgl_upstream_classify(message, sqlstate);
    assert_string_equal(sqlstate, code);
}

static void test_credentials(void **state)
{
    (void)state;
    expect_code("connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password "
                "authentication failed for user \"v-app-1\"", "28P01");
    expect_code("FATAL:  role \"v-app-1\" does not exist", "28000");
    expect_code("FATAL:  role \"v-app-1\" is not permitted to log in", "28000");
    expect_code("FATAL:  no pg_hba.conf entry for host \"127.0.0.1\"", "28000");
}

static void test_no_connection_slot(void **state)
{
    (void)state;
    /* These name a database or a role too: the slot wins. */
    expect_code("FATAL:  too many connections for database \"vdb\"", "53300");
    expect_code("FATAL:  too many connections for role \"v-app-1\"", "53300");
    expect_code("FATAL:  sorry, too many clients already", "53300");
    expect_code("FATAL:  remaining connection slots are reserved for non-replication "
                "superuser connections", "53300");
}

static void test_other_failures(void **state)
{
    (void)state;
    expect_code("FATAL:  database \"nope\" does not exist", "3D000");
    expect_code("FATAL:  the database system is starting up", "57P03");
    expect_code("timeout expired", "08001");
    expect_code("connection refused", "08001");
}

/* ---- a login whose SCRAM derivation takes long ------------------------------------ */

/* A server that asks for SCRAM-SHA-256 with this many PBKDF2 rounds (a real
 * one asks 4096, ~3 ms of CPU): libpq spends about a second deriving the
 * key, and then gets a password failure. */
#define SLOW_ITERATIONS "1500000"

typedef struct {
    int listener;
    int conn;
} fake_server;

static int read_full(int fd, void *buf, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* One message: a type byte (none for the startup packet), a length. */
static int read_message(int fd, int typed, char *body, size_t cap)
{
    char type;
    uint32_t len;
    if ((typed && read_full(fd, &type, 1) != 0) || read_full(fd, &len, 4) != 0)
        return -1;
    len = ntohl(len) - 4;
    if (len >= cap || read_full(fd, body, len) != 0)
        return -1;
    body[len] = '\0';
    return (int)len;
}

static void send_message(int fd, char type, const void *body, size_t n)
{
    char buf[512];
    uint32_t len = htonl((uint32_t)n + 4);
    buf[0] = type;
    memcpy(buf + 1, &len, 4);
    memcpy(buf + 5, body, n);
    assert_int_equal(write(fd, buf, n + 5), (ssize_t)(n + 5));
}

static void send_auth(int fd, uint32_t code, const char *data, size_t n)
{
    char body[256];
    uint32_t c = htonl(code);
    memcpy(body, &c, 4);
    memcpy(body + 4, data, n);
    send_message(fd, 'R', body, n + 4);
}

static void *serve_slow_scram(void *arg)
{
    fake_server *fs = arg;
    char body[1024];
    fs->conn = accept(fs->listener, NULL, NULL);
    if (fs->conn < 0 || read_message(fs->conn, 0, body, sizeof body) < 0)
        return NULL;
    send_auth(fs->conn, 10, "SCRAM-SHA-256\0", 15); /* AuthenticationSASL */
    int n = read_message(fs->conn, 1, body, sizeof body); /* SASLInitialResponse */
    if (n < 0)
        return NULL;
    /* mechanism\0, int32 length, "n,,n=,r=<client nonce>" */
    const char *first = body + strlen(body) + 1 + 4;
    const char *nonce = strstr(first, "r=");
    if (nonce == NULL)
        return NULL;
    char reply[256];
    int m = snprintf(reply, sizeof reply, "%sSERVERNONCE,s=c2FsdHNhbHRzYWx0,i=" SLOW_ITERATIONS,
                     nonce);
    send_auth(fs->conn, 11, reply, (size_t)m); /* AuthenticationSASLContinue */
    if (read_message(fs->conn, 1, body, sizeof body) < 0) /* the client's proof */
        return NULL;
    static const char err[] = "SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for "
                              "user \"slow\"\0\0";
    send_message(fs->conn, 'E', err, sizeof err - 1);
    return NULL;
}

typedef struct {
    uv_timer_t tick;
    int ticks;
    int ticks_at_end;
    bool done;
    char sqlstate[6];
} slow_login;

static void on_tick(uv_timer_t *t)
{
    slow_login *sl = t->data;
    sl->ticks++;
}

static void on_slow_login(void *arg, pgl_upstream_result *res)
{
    slow_login *sl = arg;
    sl->done = true;
    sl->ticks_at_end = sl->ticks;
    memcpy(sl->sqlstate, res->sqlstate, 6);
    uv_timer_stop(&sl->tick);
}

static void test_scram_derivation_leaves_the_loop_running(void **state)
{
    (void)state;
    fake_server fs = {.conn = -1};
    fs.listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    assert_int_equal(bind(fs.listener, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(fs.listener, 1), 0);
    assert_int_equal(getsockname(fs.listener, (struct sockaddr *)&addr, &alen), 0);
    char port[8];
    snprintf(port, sizeof port, "%d", ntohs(addr.sin_port));
    pthread_t server;
    assert_int_equal(pthread_create(&server, NULL, serve_slow_scram, &fs), 0);

    uv_loop_t loop;
    uv_loop_init(&loop);
    slow_login sl = {0};
    uv_timer_init(&loop, &sl.tick);
    sl.tick.data = &sl;
    uv_timer_start(&sl.tick, on_tick, 10, 10);
    const char *keys[] = {"host", "port", "dbname", "sslmode", "gssencmode"};
    const char *values[] = {"127.0.0.1", port, "db", "disable", "disable"};
    pgl_upstream_params p = {.keys = keys, .values = values, .n = 5, .user = "slow",
                             .password = "pw", .application_name = "test",
                             .connect_timeout_ms = 60000, .log_ctx = "test"};
    pgl_upstream *u;
    assert_int_equal(pgl_upstream_start(&loop, &p, on_slow_login, &sl, &u), 0);
    uint64_t started = uv_hrtime();
    while (!sl.done)
        uv_run(&loop, UV_RUN_ONCE);
    double seconds = (double)(uv_hrtime() - started) / 1e9;
    uv_close((uv_handle_t *)&sl.tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    pthread_join(server, NULL);
    close(fs.conn);
    close(fs.listener);

    assert_string_equal(sl.sqlstate, "28P01");
    /* The derivation took most of the login. Had it run on the loop, the
     * timer would have fired about once in that time (late, all at once);
     * in the thread pool it kept firing every 10 ms. */
    print_message("login took %.2f s, %d ticks of 10 ms\n", seconds, sl.ticks_at_end);
    assert_true(seconds > 0.2);
    assert_true(sl.ticks_at_end >= (int)(seconds * 100 / 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_no_connection_slot),
        cmocka_unit_test(test_other_failures),
        cmocka_unit_test(test_scram_derivation_leaves_the_loop_running),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
