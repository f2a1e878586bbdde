/*
 * pgwire unit tests: framing fed in chunks, startup packets, every builder
 * round-tripped through its decoder, malformed bodies, SCRAM (RFC 7677
 * vector, wrong password, mock user, channel binding) and md5.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "pgl_pgwire_build.h"
#include "pgl_pgwire_decode.h"
#include "pgl_pgwire_frame.h"
#include "pgl_pgwire_md5.h"
#include "pgl_pgwire_scram.h"
#include "pgl_pgwire_startup.h"
#include "scram_client.h"

/* ---- malloc accounting: the forwarding path must not allocate ---- */

void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__wrap_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
/* volatile: the compiler assumes malloc leaves our globals alone. */
static volatile unsigned long allocations;

void *__wrap_malloc(size_t n)
{
    allocations++;
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
    allocations++;
    return __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
    allocations++;
    return __real_realloc(p, n);
}

/* ---- helpers ---- */

typedef struct {
    uint8_t type;
    const uint8_t *body;
    uint32_t len;
} msg;

/* Frame exactly one complete message at buf. */
static msg one(const uint8_t *buf, size_t len, int startup)
{
    pgl_pgwire_frame f;
    assert_int_equal(pgl_pgwire_frame_next(buf, len, startup, 1 << 20, &f),
                     PGL_PGWIRE_FRAME_COMPLETE);
    assert_int_equal(pgl_pgwire_frame_size(&f), len);
    return (msg){f.type, f.body, f.body_len};
}

/* ---- framing ---- */

static size_t sample_stream(uint8_t *buf, size_t cap)
{
    size_t n = 0;
    n += pgl_pgwire_build_query(buf + n, cap - n, "SELECT 1");
    n += pgl_pgwire_build_ready(buf + n, cap - n, 'I');
    n += pgl_pgwire_build_sync(buf + n, cap - n);
    n += pgl_pgwire_build_error(buf + n, cap - n, 0, "ERROR", "42601", "syntax error", "d", "h");
    const char *vals[] = {"a", NULL, "ccc"};
    n += pgl_pgwire_build_data_row(buf + n, cap - n, vals, 3);
    return n;
}

static void test_frame_chunked(void **state)
{
    (void)state;
    uint8_t stream[512];
    size_t total = sample_stream(stream, sizeof stream);
    assert_true(total < sizeof stream);
    const uint8_t types[] = {'Q', 'Z', 'S', 'E', 'D'};

    /* Split the stream in two at every position, and also feed it one byte
     * at a time; every message must come out whole, exactly once. */
    for (size_t step = 0; step <= total; step++) {
        uint8_t acc[512];
        size_t have = 0, start = 0, found = 0;
        size_t fed = 0;
        while (fed < total) {
            size_t chunk = step == 0 ? 1 : (fed < step ? step - fed : total - fed);
            memcpy(acc + have, stream + fed, chunk);
            have += chunk;
            fed += chunk;
            for (;;) {
                pgl_pgwire_frame f;
                int rc = pgl_pgwire_frame_next(acc + start, have - start, 0, 1024, &f);
                assert_true(rc >= 0);
                if (rc != PGL_PGWIRE_FRAME_COMPLETE) {
                    if (rc == PGL_PGWIRE_FRAME_HEADER)
                        assert_int_equal(f.type, types[found]);
                    break;
                }
                assert_int_equal(f.type, types[found]);
                assert_ptr_equal(f.body, acc + start + 5);
                found++;
                start += pgl_pgwire_frame_size(&f);
            }
        }
        assert_int_equal(found, 5);
        assert_int_equal(start, total);
    }
}

static void test_frame_limits(void **state)
{
    (void)state;
    pgl_pgwire_frame f;
    uint8_t b[16] = {'Q', 0, 0, 0, 3};
    assert_int_equal(pgl_pgwire_frame_next(b, 5, 0, 100, &f), PGL_ESHORT);
    b[4] = 4; /* empty body is fine */
    assert_int_equal(pgl_pgwire_frame_next(b, 5, 0, 100, &f), PGL_PGWIRE_FRAME_COMPLETE);
    assert_int_equal(f.body_len, 0);
    pgl_pgwire_put32(b + 1, 101);
    assert_int_equal(pgl_pgwire_frame_next(b, 5, 0, 100, &f), PGL_ETOOBIG);
    pgl_pgwire_put32(b + 1, 100);
    assert_int_equal(pgl_pgwire_frame_next(b, 5, 0, 100, &f), PGL_PGWIRE_FRAME_HEADER);
    assert_int_equal(f.body_len, 96);
    pgl_pgwire_put32(b + 1, 0xffffffffu);
    assert_int_equal(pgl_pgwire_frame_next(b, 5, 0, UINT32_MAX - 1, &f), PGL_ETOOBIG);
    assert_int_equal(pgl_pgwire_frame_next(b, 4, 0, 100, &f), PGL_PGWIRE_FRAME_MORE);
    /* startup: at least 8, at most 10000, whatever max_len says */
    pgl_pgwire_put32(b, 7);
    assert_int_equal(pgl_pgwire_frame_next(b, 4, 1, 100, &f), PGL_ESHORT);
    pgl_pgwire_put32(b, 10001);
    assert_int_equal(pgl_pgwire_frame_next(b, 4, 1, 1 << 30, &f), PGL_ETOOBIG);
    pgl_pgwire_put32(b, 8);
    assert_int_equal(pgl_pgwire_frame_next(b, 7, 1, 100, &f), PGL_PGWIRE_FRAME_HEADER);
    assert_int_equal(pgl_pgwire_frame_next(b, 3, 1, 100, &f), PGL_PGWIRE_FRAME_MORE);
}

/* ---- startup ---- */

static void test_startup(void **state)
{
    (void)state;
    uint8_t buf[256];
    const char *kv[] = {"user", "alice", "database", "app", "application_name", "x"};
    size_t n = pgl_pgwire_build_startup(buf, sizeof buf, 0, kv, 3);
    msg m = one(buf, n, 1);
    pgl_pgwire_startup st;
    assert_int_equal(pgl_pgwire_parse_startup(m.body, m.len, &st), 0);
    assert_int_equal(st.kind, PGL_PGWIRE_STARTUP_MESSAGE);
    assert_int_equal(st.major, 3);
    assert_int_equal(st.minor, 0);
    assert_string_equal(st.user, "alice");
    assert_string_equal(st.database, "app");
    pgl_pgwire_param_iter it;
    const char *name, *value;
    int count = 0;
    pgl_pgwire_startup_params(&st, &it);
    while (pgl_pgwire_param_next(&it, &name, &value)) {
        assert_string_equal(name, kv[2 * count]);
        assert_string_equal(value, kv[2 * count + 1]);
        count++;
    }
    assert_int_equal(count, 3);

    n = pgl_pgwire_build_ssl_request(buf, sizeof buf);
    m = one(buf, n, 1);
    assert_int_equal(pgl_pgwire_parse_startup(m.body, m.len, &st), 0);
    assert_int_equal(st.kind, PGL_PGWIRE_STARTUP_SSL);

    n = pgl_pgwire_build_cancel(buf, sizeof buf, 1234, 0xdeadbeef);
    m = one(buf, n, 1);
    assert_int_equal(pgl_pgwire_parse_startup(m.body, m.len, &st), 0);
    assert_int_equal(st.kind, PGL_PGWIRE_STARTUP_CANCEL);
    assert_int_equal(st.cancel_pid, 1234);
    assert_int_equal(st.cancel_key, 0xdeadbeef);

    uint8_t gss[4];
    pgl_pgwire_put32(gss, PGL_PGWIRE_CODE_GSSENC);
    assert_int_equal(pgl_pgwire_parse_startup(gss, 4, &st), 0);
    assert_int_equal(st.kind, PGL_PGWIRE_STARTUP_GSSENC);

    /* A 3.2 client is parsed; the proxy negotiates it down. */
    n = pgl_pgwire_build_startup(buf, sizeof buf, 2, kv, 1);
    m = one(buf, n, 1);
    assert_int_equal(pgl_pgwire_parse_startup(m.body, m.len, &st), 0);
    assert_int_equal(st.minor, 2);
}

static void test_startup_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
        int rc;
    } cases[] = {
        {"too short", "\x00\x03", 2, PGL_EFORMAT},
        {"version 2", "\x00\x02\x00\x00user\0a\0\0", 12, PGL_EVERSION},
        {"version 4", "\x00\x04\x00\x00\0", 5, PGL_EVERSION},
        {"no params, no terminator", "\x00\x03\x00\x00", 4, PGL_EFORMAT},
        {"missing terminator", "\x00\x03\x00\x00user\0a\0", 11, PGL_EFORMAT},
        {"name without value", "\x00\x03\x00\x00user\0\0", 10, PGL_EFORMAT},
        {"empty name", "\x00\x03\x00\x00\0a\0\0", 8, PGL_EFORMAT},
        {"unterminated value", "\x00\x03\x00\x00user\0abc", 12, PGL_EFORMAT},
        {"ssl with payload", "\x04\xd2\x16\x2f\x00", 5, PGL_EFORMAT},
        {"cancel too short", "\x04\xd2\x16\x2e\x00\x00\x00\x01", 8, PGL_EFORMAT},
        {"cancel too long", "\x04\xd2\x16\x2e\x00\x00\x00\x01\x00\x00\x00\x02\x00", 13,
         PGL_EFORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pgl_pgwire_startup st;
        /* Copy into an exact-size heap buffer so ASan sees any overread. */
        uint8_t *b = malloc(cases[i].len);
        memcpy(b, cases[i].bytes, cases[i].len);
        int rc = pgl_pgwire_parse_startup(b, cases[i].len, &st);
        if (rc != cases[i].rc)
            fail_msg("%s: got %d want %d", cases[i].what, rc, cases[i].rc);
        free(b);
    }
    /* The empty parameter list is valid: just the terminator. */
    uint8_t ok[] = {0, 3, 0, 0, 0};
    pgl_pgwire_startup st;
    assert_int_equal(pgl_pgwire_parse_startup(ok, sizeof ok, &st), 0);
    assert_null(st.user);
}

/* ---- round trips ---- */

static void test_roundtrip_backend(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t n;
    msg m;

    n = pgl_pgwire_build_error(buf, sizeof buf, 0, "FATAL", "28P01", "bad", "det", NULL);
    m = one(buf, n, 0);
    assert_int_equal(m.type, 'E');
    pgl_pgwire_error e;
    assert_int_equal(pgl_pgwire_parse_error(m.body, m.len, &e), 0);
    assert_string_equal(e.severity, "FATAL");
    assert_string_equal(e.sqlstate, "28P01");
    assert_string_equal(e.message, "bad");
    assert_string_equal(e.detail, "det");
    assert_null(e.hint);
    pgl_pgwire_field_iter fit;
    char code;
    const char *v;
    int fields = 0;
    pgl_pgwire_fields_begin(&fit, m.body, m.len);
    while (pgl_pgwire_fields_next(&fit, &code, &v))
        fields++;
    assert_int_equal(fields, 5); /* S V C M D */

    n = pgl_pgwire_build_error(buf, sizeof buf, 1, "NOTICE", "00000", "hi", NULL, "hint");
    m = one(buf, n, 0);
    assert_int_equal(m.type, 'N');
    assert_int_equal(pgl_pgwire_parse_error(m.body, m.len, &e), 0);
    assert_string_equal(e.hint, "hint");

    pgl_pgwire_auth a;
    n = pgl_pgwire_build_auth_ok(buf, sizeof buf);
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_auth(m.body, m.len, &a), 0);
    assert_int_equal(a.code, PGL_PGWIRE_AUTH_OK);
    n = pgl_pgwire_build_auth_cleartext(buf, sizeof buf);
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_auth(m.body, m.len, &a), 0);
    assert_int_equal(a.code, PGL_PGWIRE_AUTH_CLEARTEXT);
    const uint8_t salt[4] = {9, 8, 7, 6};
    n = pgl_pgwire_build_auth_md5(buf, sizeof buf, salt);
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_auth(m.body, m.len, &a), 0);
    assert_int_equal(a.code, PGL_PGWIRE_AUTH_MD5);
    assert_memory_equal(a.md5_salt, salt, 4);
    const char *mechs[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"};
    n = pgl_pgwire_build_auth_sasl(buf, sizeof buf, mechs, 2);
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_auth(m.body, m.len, &a), 0);
    assert_int_equal(a.code, PGL_PGWIRE_AUTH_SASL);
    assert_string_equal((const char *)a.data, "SCRAM-SHA-256-PLUS");
    n = pgl_pgwire_build_auth_sasl_continue(buf, sizeof buf, "r=abc", 5);
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_auth(m.body, m.len, &a), 0);
    assert_int_equal(a.code, PGL_PGWIRE_AUTH_SASL_CONTINUE);
    assert_int_equal(a.data_len, 5);
    assert_memory_equal(a.data, "r=abc", 5);
    n = pgl_pgwire_build_auth_sasl_final(buf, sizeof buf, "v=xyz", 5);
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_auth(m.body, m.len, &a), 0);
    assert_int_equal(a.code, PGL_PGWIRE_AUTH_SASL_FINAL);

    const char *name, *value;
    n = pgl_pgwire_build_param_status(buf, sizeof buf, "TimeZone", "UTC");
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_param_status(m.body, m.len, &name, &value), 0);
    assert_string_equal(name, "TimeZone");
    assert_string_equal(value, "UTC");

    uint32_t pid, key;
    n = pgl_pgwire_build_backend_key(buf, sizeof buf, 42, 0x80000001u);
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_backend_key(m.body, m.len, &pid, &key), 0);
    assert_int_equal(pid, 42);
    assert_int_equal(key, 0x80000001u);

    char st;
    for (const char *s = "ITE"; *s; s++) {
        n = pgl_pgwire_build_ready(buf, sizeof buf, *s);
        m = one(buf, n, 0);
        assert_int_equal(pgl_pgwire_parse_ready(m.body, m.len, &st), 0);
        assert_int_equal(st, *s);
    }

    const char *opts[] = {"_pq_.foo", "_pq_.bar"};
    uint32_t minor, nopt;
    n = pgl_pgwire_build_negotiate(buf, sizeof buf, 0, opts, 2);
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_negotiate(m.body, m.len, &minor, &nopt), 0);
    assert_int_equal(minor, 0);
    assert_int_equal(nopt, 2);

    const char *names[] = {"database", "cl_active"};
    const uint32_t oids[] = {25, 20};
    n = pgl_pgwire_build_row_description(buf, sizeof buf, names, oids, 2);
    m = one(buf, n, 0);
    uint16_t nf;
    pgl_pgwire_rowdesc_iter rit;
    assert_int_equal(pgl_pgwire_parse_row_description(m.body, m.len, &nf, &rit), 0);
    assert_int_equal(nf, 2);
    uint32_t oid;
    for (int i = 0; i < 2; i++) {
        assert_true(pgl_pgwire_rowdesc_next(&rit, &name, &oid));
        assert_string_equal(name, names[i]);
        assert_int_equal(oid, oids[i]);
    }
    assert_false(pgl_pgwire_rowdesc_next(&rit, &name, &oid));

    const char *vals[] = {"app", NULL, ""};
    n = pgl_pgwire_build_data_row(buf, sizeof buf, vals, 3);
    m = one(buf, n, 0);
    pgl_pgwire_datarow_iter dit;
    assert_int_equal(pgl_pgwire_parse_data_row(m.body, m.len, &nf, &dit), 0);
    assert_int_equal(nf, 3);
    const uint8_t *d;
    int32_t dl;
    assert_true(pgl_pgwire_datarow_next(&dit, &d, &dl));
    assert_int_equal(dl, 3);
    assert_memory_equal(d, "app", 3);
    assert_true(pgl_pgwire_datarow_next(&dit, &d, &dl));
    assert_int_equal(dl, -1);
    assert_null(d);
    assert_true(pgl_pgwire_datarow_next(&dit, &d, &dl));
    assert_int_equal(dl, 0);
    assert_false(pgl_pgwire_datarow_next(&dit, &d, &dl));

    const char *tag;
    n = pgl_pgwire_build_command_complete(buf, sizeof buf, "SHOW");
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_command_complete(m.body, m.len, &tag), 0);
    assert_string_equal(tag, "SHOW");
}

static void test_roundtrip_frontend(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n;
    msg m;
    const char *s;
    size_t sl;

    n = pgl_pgwire_build_query(buf, sizeof buf, "SELECT 1");
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_query(m.body, m.len, &s), 0);
    assert_string_equal(s, "SELECT 1");

    n = pgl_pgwire_build_password(buf, sizeof buf, "md5abc");
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_password(m.body, m.len, &s, &sl), 0);
    assert_string_equal(s, "md5abc");
    assert_int_equal(sl, 6);

    const char *mech;
    const uint8_t *d;
    size_t dl;
    n = pgl_pgwire_build_sasl_initial(buf, sizeof buf, "SCRAM-SHA-256", "n,,n=,r=x", 9);
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_sasl_initial(m.body, m.len, &mech, &d, &dl), 0);
    assert_string_equal(mech, "SCRAM-SHA-256");
    assert_int_equal(dl, 9);
    assert_memory_equal(d, "n,,n=,r=x", 9);
    n = pgl_pgwire_build_sasl_initial(buf, sizeof buf, "SCRAM-SHA-256", NULL, 0);
    m = one(buf, n, 0);
    assert_int_equal(pgl_pgwire_parse_sasl_initial(m.body, m.len, &mech, &d, &dl), 0);
    assert_null(d);

    n = pgl_pgwire_build_sasl_response(buf, sizeof buf, "c=biws", 6);
    m = one(buf, n, 0);
    assert_int_equal(m.len, 6);

    n = pgl_pgwire_build_terminate(buf, sizeof buf);
    m = one(buf, n, 0);
    assert_int_equal(m.type, 'X');
    assert_int_equal(pgl_pgwire_parse_empty(m.body, m.len), 0);

    /* Extended protocol, hand-assembled as a driver would send it. */
    static const uint8_t parse[] = "s1\0SELECT $1\0\x00\x01\x00\x00\x00\x17";
    pgl_pgwire_parse p;
    assert_int_equal(pgl_pgwire_parse_parse(parse, sizeof parse - 1, &p), 0);
    assert_string_equal(p.name, "s1");
    assert_string_equal(p.query, "SELECT $1");
    assert_int_equal(p.nparams, 1);
    assert_int_equal(pgl_pgwire_be32(p.param_oids), 23);

    static const uint8_t bind[] = "p1\0s1\0\x00\x01\x00\x00\x00\x02\x00\x00\x00\x01"
                                  "7\xff\xff\xff\xff\x00\x00";
    const char *portal, *stmt;
    assert_int_equal(pgl_pgwire_parse_bind(bind, sizeof bind - 1, &portal, &stmt), 0);
    assert_string_equal(portal, "p1");
    assert_string_equal(stmt, "s1");

    char kind;
    static const uint8_t desc[] = "Ss1";
    assert_int_equal(pgl_pgwire_parse_describe(desc, sizeof desc, &kind, &s), 0);
    assert_int_equal(kind, 'S');
    assert_string_equal(s, "s1");

    static const uint8_t exec[] = "p1\0\x00\x00\x00\x0a";
    uint32_t rows;
    assert_int_equal(pgl_pgwire_parse_execute(exec, sizeof exec - 1, &portal, &rows), 0);
    assert_int_equal(rows, 10);

    static const uint8_t copy[] = "\x00\x00\x02\x00\x00\x00\x00";
    pgl_pgwire_copy c;
    assert_int_equal(pgl_pgwire_parse_copy_response(copy, sizeof copy - 1, &c), 0);
    assert_int_equal(c.ncols, 2);
}

/* Builders report the size they need and write nothing when short. */
static void test_build_short_buffer(void **state)
{
    (void)state;
    uint8_t buf[64];
    memset(buf, 0xaa, sizeof buf);
    size_t need = pgl_pgwire_build_error(NULL, 0, 0, "ERROR", "XX000", "message", NULL, NULL);
    assert_true(need > 10);
    for (size_t cap = 0; cap < need; cap++) {
        assert_int_equal(pgl_pgwire_build_error(buf, cap, 0, "ERROR", "XX000", "message", NULL,
                                                NULL),
                         need);
    }
    assert_int_equal(pgl_pgwire_build_error(buf, need, 0, "ERROR", "XX000", "message", NULL, NULL),
                     need);
    assert_int_equal(buf[need], 0xaa);
    one(buf, need, 0);
}

static void test_decode_malformed(void **state)
{
    (void)state;
    static const struct {
        char type;
        const char *bytes;
        size_t len;
    } cases[] = {
        {'Z', "", 0},
        {'Z', "X", 1},
        {'Z', "II", 2},
        {'S', "name", 4},
        {'S', "name\0value", 10},
        {'S', "\0v\0", 3},
        {'S', "a\0b\0c", 5},
        {'K', "\0\0\0\1", 4},
        {'E', "SERROR", 6},
        {'E', "SERROR\0", 7},
        {'E', "SERROR\0\0x", 9},
        {'R', "\0\0", 2},
        {'R', "\0\0\0\5\1\2\3", 7},
        {'R', "\0\0\0\0\1", 5},
        {'R', "\0\0\0\x0a", 4},
        {'R', "\0\0\0\x0a\0", 5},
        {'R', "\0\0\0\x0aSCRAM", 9},
        {'C', "SELECT", 6},
        {'G', "\0\0\1", 3},
        {'G', "\2\0\0", 3},
        {'T', "\0\1name\0", 7},
        {'D', "\0\1\0\0\0\5ab", 8},
        {'D', "\0\1\x7f\xff\xff\xff", 6},
        {'v', "\0\0\0\0\0\0\0\5a\0", 10},
        {'Q', "SELECT 1", 8},
        {'Q', "SELECT 1\0\0", 10},
        {'P', "s\0q\0\0\2\0\0\0\1", 10},
        {'B', "p\0s\0\0\1", 6},
        {'B', "p\0s\0\0\0\0\1\0\0\0\x09" "ab", 14},
        {'d', "X", 1},
        {'d', "Sname", 5},
        {'E' + 0x20, "p", 1}, /* 'e': Execute without max_rows */
        {'X', "x", 1},
        {'p', "pw", 2},
        {'i', "SCRAM\0\0\0\0\5ab", 11},
        {'i', "SCRAM", 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *b = malloc(cases[i].len + 1);
        memcpy(b, cases[i].bytes, cases[i].len);
        const uint8_t *body = b;
        size_t len = cases[i].len;
        const char *s1, *s2;
        uint32_t u1, u2;
        uint16_t n16;
        char ch;
        int rc;
        pgl_pgwire_error e;
        pgl_pgwire_auth a;
        pgl_pgwire_copy cp;
        pgl_pgwire_rowdesc_iter ri;
        pgl_pgwire_datarow_iter di;
        pgl_pgwire_parse p;
        const uint8_t *d;
        size_t dl;
        switch (cases[i].type) {
        case 'Z': rc = pgl_pgwire_parse_ready(body, len, &ch); break;
        case 'S': rc = pgl_pgwire_parse_param_status(body, len, &s1, &s2); break;
        case 'K': rc = pgl_pgwire_parse_backend_key(body, len, &u1, &u2); break;
        case 'E': rc = pgl_pgwire_parse_error(body, len, &e); break;
        case 'R': rc = pgl_pgwire_parse_auth(body, len, &a); break;
        case 'C': rc = pgl_pgwire_parse_command_complete(body, len, &s1); break;
        case 'G': rc = pgl_pgwire_parse_copy_response(body, len, &cp); break;
        case 'T': rc = pgl_pgwire_parse_row_description(body, len, &n16, &ri); break;
        case 'D': rc = pgl_pgwire_parse_data_row(body, len, &n16, &di); break;
        case 'v': rc = pgl_pgwire_parse_negotiate(body, len, &u1, &u2); break;
        case 'Q': rc = pgl_pgwire_parse_query(body, len, &s1); break;
        case 'P': rc = pgl_pgwire_parse_parse(body, len, &p); break;
        case 'B': rc = pgl_pgwire_parse_bind(body, len, &s1, &s2); break;
        case 'd': rc = pgl_pgwire_parse_describe(body, len, &ch, &s1); break;
        case 'e': rc = pgl_pgwire_parse_execute(body, len, &s1, &u1); break;
        case 'X': rc = pgl_pgwire_parse_empty(body, len); break;
        case 'p': rc = pgl_pgwire_parse_password(body, len, &s1, &dl); break;
        case 'i': rc = pgl_pgwire_parse_sasl_initial(body, len, &s1, &d, &dl); break;
        default: fail_msg("bad case"); return;
        }
        if (rc == 0)
            fail_msg("case %zu (%c): malformed input accepted", i, cases[i].type);
        free(b);
    }
}

/* Framing and decoding a long stream allocates nothing. */
static void test_no_allocation(void **state)
{
    (void)state;
    uint8_t stream[512];
    size_t total = sample_stream(stream, sizeof stream);
    /* The counter must see allocations, or the check below proves nothing. */
    unsigned long probe = allocations;
    void *volatile probe_block = malloc(16); /* volatile: the pair must not be elided */
    free(probe_block);
    assert_int_equal(allocations, probe + 1);
    unsigned long before = allocations;
    size_t messages = 0;
    for (int round = 0; round < 100000; round++) {
        size_t off = 0;
        while (off < total) {
            pgl_pgwire_frame f;
            if (pgl_pgwire_frame_next(stream + off, total - off, 0, 1 << 20, &f) !=
                PGL_PGWIRE_FRAME_COMPLETE)
                fail();
            char st;
            const char *s;
            pgl_pgwire_error e;
            switch (f.type) {
            case 'Z': assert_int_equal(pgl_pgwire_parse_ready(f.body, f.body_len, &st), 0); break;
            case 'Q': assert_int_equal(pgl_pgwire_parse_query(f.body, f.body_len, &s), 0); break;
            case 'E': assert_int_equal(pgl_pgwire_parse_error(f.body, f.body_len, &e), 0); break;
            default: break;
            }
            off += pgl_pgwire_frame_size(&f);
            messages++;
        }
    }
    assert_int_equal(messages, 500000);
    assert_int_equal(allocations - before, 0);
}

/* ---- SCRAM ---- */

static const uint8_t mock_key[32] = {1, 2, 3};

/* Full exchange; returns the result of server_final. */
static int exchange(const char *secret, const char *password, const char *mech, const char *gs2,
                    const uint8_t *server_cb, size_t server_cb_len, const uint8_t *client_cb,
                    size_t client_cb_len)
{
    pgl_pgwire_scram_server *s;
    assert_int_equal(pgl_pgwire_scram_server_new(secret, "alice", mock_key, server_cb,
                                                 server_cb_len, &s),
                     0);
    scram_client c;
    char first[512], final[1024];
    uint8_t reply[PGL_PGWIRE_SCRAM_MSG_MAX];
    size_t rlen;
    int n = scram_client_first(&c, gs2, "fyko+d2lbbFgONRv9qkxdawL", first, sizeof first);
    int rc = pgl_pgwire_scram_server_first(s, mech, (const uint8_t *)first, (size_t)n, reply,
                                           sizeof reply, &rlen);
    if (rc == 0) {
        reply[rlen] = '\0';
        n = scram_client_final(&c, password, (const char *)reply, client_cb, client_cb_len, final,
                               sizeof final);
        assert_true(n > 0);
        rc = pgl_pgwire_scram_server_final(s, (const uint8_t *)final, (size_t)n, reply,
                                           sizeof reply, &rlen);
        if (rc == 0)
            assert_int_equal(scram_client_verify(&c, (const char *)reply, rlen), 0);
    }
    pgl_pgwire_scram_server_free(s);
    return rc;
}

static void test_scram_rfc7677(void **state)
{
    (void)state;
    /* RFC 7677 section 3. */
    uint8_t salt[16];
    assert_int_equal(EVP_DecodeBlock(salt, (const unsigned char *)"W22ZaJ0SNY7soEsUEjb6gQ==", 24), 18);
    char secret[PGL_PGWIRE_SCRAM_SECRET_MAX];
    assert_int_equal(pgl_pgwire_scram_secret_make_salted("pencil", salt, 16, 4096, secret,
                                                         sizeof secret),
                     0);
    pgl_pgwire_scram_server *s;
    assert_int_equal(pgl_pgwire_scram_server_new(secret, "user", mock_key, NULL, 0, &s), 0);
    assert_int_equal(pgl_pgwire_scram_server_set_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"), 0);
    const char *cf = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    uint8_t reply[PGL_PGWIRE_SCRAM_MSG_MAX];
    size_t rlen;
    assert_int_equal(pgl_pgwire_scram_server_first(s, "SCRAM-SHA-256", (const uint8_t *)cf,
                                                   strlen(cf), reply, sizeof reply, &rlen),
                     0);
    const char *sf = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    assert_int_equal(rlen, strlen(sf));
    assert_memory_equal(reply, sf, rlen);
    const char *cfinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                         "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert_int_equal(pgl_pgwire_scram_server_final(s, (const uint8_t *)cfinal, strlen(cfinal),
                                                   reply, sizeof reply, &rlen),
                     0);
    const char *sfinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    assert_int_equal(rlen, strlen(sfinal));
    assert_memory_equal(reply, sfinal, rlen);
    /* A second final is out of sequence. */
    assert_int_equal(pgl_pgwire_scram_server_final(s, (const uint8_t *)cfinal, strlen(cfinal),
                                                   reply, sizeof reply, &rlen),
                     PGL_ESTATE);
    pgl_pgwire_scram_server_free(s);
}

static void test_scram_passwords(void **state)
{
    (void)state;
    char secret[PGL_PGWIRE_SCRAM_SECRET_MAX];
    assert_int_equal(pgl_pgwire_scram_secret_make("s3cret", secret, sizeof secret), 0);
    assert_int_equal(strncmp(secret, "SCRAM-SHA-256$4096:", 19), 0);
    pgl_pgwire_scram_secret parsed;
    assert_int_equal(pgl_pgwire_scram_secret_parse(secret, &parsed), 0);
    assert_int_equal(parsed.iterations, 4096);
    assert_int_equal(parsed.salt_len, 16);

    assert_int_equal(exchange(secret, "s3cret", "SCRAM-SHA-256", "n,,", NULL, 0, NULL, 0), 0);
    assert_int_equal(exchange(secret, "wrong", "SCRAM-SHA-256", "n,,", NULL, 0, NULL, 0),
                     PGL_EAUTH);
    /* Unknown user: the exchange runs and fails at the end, whatever the password. */
    assert_int_equal(exchange(NULL, "s3cret", "SCRAM-SHA-256", "n,,", NULL, 0, NULL, 0),
                     PGL_EAUTH);
    /* 'y' without channel binding on offer is fine. */
    assert_int_equal(exchange(secret, "s3cret", "SCRAM-SHA-256", "y,,", NULL, 0, NULL, 0), 0);
}

static void test_scram_channel_binding(void **state)
{
    (void)state;
    char secret[PGL_PGWIRE_SCRAM_SECRET_MAX];
    assert_int_equal(pgl_pgwire_scram_secret_make("pw", secret, sizeof secret), 0);
    uint8_t cb[32], other[32];
    memset(cb, 0x5a, sizeof cb);
    memset(other, 0x5b, sizeof other);
    const char *tsep = "p=tls-server-end-point,,";
    assert_int_equal(exchange(secret, "pw", "SCRAM-SHA-256-PLUS", tsep, cb, 32, cb, 32), 0);
    /* Client bound to a different certificate (a man in the middle). */
    assert_int_equal(exchange(secret, "pw", "SCRAM-SHA-256-PLUS", tsep, cb, 32, other, 32),
                     PGL_ECBIND);
    /* No TLS on our side: -PLUS is not offered and 'p' is refused. */
    assert_int_equal(exchange(secret, "pw", "SCRAM-SHA-256-PLUS", tsep, NULL, 0, cb, 32),
                     PGL_EMECH);
    assert_int_equal(exchange(secret, "pw", "SCRAM-SHA-256", tsep, NULL, 0, cb, 32),
                     PGL_ECBIND);
    /* Downgrade: we offered binding, the client says it thinks we cannot. */
    assert_int_equal(exchange(secret, "pw", "SCRAM-SHA-256", "y,,", cb, 32, NULL, 0),
                     PGL_ECBIND);
    /* Without binding while TLS is up is allowed (sslmode=require clients). */
    assert_int_equal(exchange(secret, "pw", "SCRAM-SHA-256", "n,,", cb, 32, NULL, 0), 0);
    assert_int_equal(exchange(secret, "pw", "SCRAM-SHA-256", "p=tls-unique,,", cb, 32, NULL, 0),
                     PGL_ECBIND);
    assert_int_equal(exchange(secret, "pw", "SCRAM-SHA-1", "n,,", NULL, 0, NULL, 0),
                     PGL_EMECH);
}

static void test_scram_malformed(void **state)
{
    (void)state;
    char secret[PGL_PGWIRE_SCRAM_SECRET_MAX];
    assert_int_equal(pgl_pgwire_scram_secret_make("pw", secret, sizeof secret), 0);
    static const char *firsts[] = {
        "", "x,,n=,r=abc", "n,a=bob,n=,r=abc", "n,,m=ext,n=,r=abc", "n,,n=", "n,,n=,r=",
        "n,,n=,x=abc", "n", "n,", "p=,,n=,r=a", "n,,n=,r=a\x01b",
    };
    for (size_t i = 0; i < sizeof firsts / sizeof firsts[0]; i++) {
        pgl_pgwire_scram_server *s;
        assert_int_equal(pgl_pgwire_scram_server_new(secret, "u", mock_key, NULL, 0, &s), 0);
        uint8_t reply[PGL_PGWIRE_SCRAM_MSG_MAX];
        size_t rlen;
        int rc = pgl_pgwire_scram_server_first(s, "SCRAM-SHA-256", (const uint8_t *)firsts[i],
                                               strlen(firsts[i]), reply, sizeof reply, &rlen);
        if (rc == 0)
            fail_msg("client-first %zu accepted: %s", i, firsts[i]);
        pgl_pgwire_scram_server_free(s);
    }
    static const char *finals[] = {
        "", "c=biws", "c=biws,r=cnonce", "c=biws,r=WRONG,p=AAAA",
        "c=bad!,r=NONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,r=NONCE,p=short", "c=biws,r=NONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x",
        "c=biws,r=NONCE",
    };
    for (size_t i = 0; i < sizeof finals / sizeof finals[0]; i++) {
        pgl_pgwire_scram_server *s;
        assert_int_equal(pgl_pgwire_scram_server_new(secret, "u", mock_key, NULL, 0, &s), 0);
        assert_int_equal(pgl_pgwire_scram_server_set_nonce(s, "SRV"), 0);
        uint8_t reply[PGL_PGWIRE_SCRAM_MSG_MAX];
        size_t rlen;
        const char *cf = "n,,n=,r=cnonce";
        assert_int_equal(pgl_pgwire_scram_server_first(s, "SCRAM-SHA-256", (const uint8_t *)cf,
                                                       strlen(cf), reply, sizeof reply, &rlen),
                         0);
        char fin[256];
        const char *at = strstr(finals[i], "NONCE");
        if (at)
            snprintf(fin, sizeof fin, "%.*scnonceSRV%s", (int)(at - finals[i]), finals[i], at + 5);
        else
            snprintf(fin, sizeof fin, "%s", finals[i]);
        int rc = pgl_pgwire_scram_server_final(s, (const uint8_t *)fin, strlen(fin), reply,
                                               sizeof reply, &rlen);
        if (rc == 0 || rc == PGL_ESTATE)
            fail_msg("client-final %zu: rc %d: %s", i, rc, fin);
        pgl_pgwire_scram_server_free(s);
    }
    /* Out of order and stored-secret syntax. */
    pgl_pgwire_scram_server *s;
    assert_int_equal(pgl_pgwire_scram_server_new(secret, "u", mock_key, NULL, 0, &s), 0);
    uint8_t reply[64];
    size_t rlen;
    assert_int_equal(pgl_pgwire_scram_server_final(s, (const uint8_t *)"c=biws", 6, reply,
                                                   sizeof reply, &rlen),
                     PGL_ESTATE);
    pgl_pgwire_scram_server_free(s);
    static const char *secrets[] = {
        "", "SCRAM-SHA-256$", "SCRAM-SHA-256$4096:c2FsdA==$", "SCRAM-SHA-256$x:c2FsdA==$a:b",
        "SCRAM-SHA-256$0:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "SCRAM-SHA-256$4096:!!!!$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "md5abcdef",
    };
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        pgl_pgwire_scram_secret p;
        if (pgl_pgwire_scram_secret_parse(secrets[i], &p) == 0)
            fail_msg("secret %zu accepted", i);
    }
}

static void test_md5(void **state)
{
    (void)state;
    char stored[PGL_PGWIRE_MD5_LEN + 1];
    assert_int_equal(pgl_pgwire_md5_secret("secret", "alice", stored), 0);
    assert_string_equal(stored, "md54a0a68b43b6cd5cf266fa02f196e2371");
    const uint8_t salt[4] = {1, 2, 3, 4};
    const char *resp = "md598a0412b9c31436fc53776e863350083";
    assert_int_equal(pgl_pgwire_md5_verify(stored, 1, "alice", salt, resp, strlen(resp)), 0);
    assert_int_equal(pgl_pgwire_md5_verify("secret", 0, "alice", salt, resp, strlen(resp)), 0);
    assert_int_equal(pgl_pgwire_md5_verify("secreT", 0, "alice", salt, resp, strlen(resp)),
                     PGL_EAUTH);
    assert_int_equal(pgl_pgwire_md5_verify("secret", 0, "bob", salt, resp, strlen(resp)),
                     PGL_EAUTH);
    const uint8_t salt2[4] = {1, 2, 3, 5};
    assert_int_equal(pgl_pgwire_md5_verify(stored, 1, "alice", salt2, resp, strlen(resp)),
                     PGL_EAUTH);
    assert_int_equal(pgl_pgwire_md5_verify(stored, 1, "alice", salt, resp, 10), PGL_EAUTH);
    assert_int_equal(pgl_pgwire_md5_verify("md5short", 1, "alice", salt, resp, strlen(resp)),
                     PGL_EAUTH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_chunked),
        cmocka_unit_test(test_frame_limits),
        cmocka_unit_test(test_startup),
        cmocka_unit_test(test_startup_malformed),
        cmocka_unit_test(test_roundtrip_backend),
        cmocka_unit_test(test_roundtrip_frontend),
        cmocka_unit_test(test_build_short_buffer),
        cmocka_unit_test(test_decode_malformed),
        cmocka_unit_test(test_no_allocation),
        cmocka_unit_test(test_scram_rfc7677),
        cmocka_unit_test(test_scram_passwords),
        cmocka_unit_test(test_scram_channel_binding),
        cmocka_unit_test(test_scram_malformed),
        cmocka_unit_test(test_md5),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
