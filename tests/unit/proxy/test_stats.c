/*
 * Pool counters: PgBouncer's averages over a stats_period (rates per
 * second, times per query/transaction), the wait histogram's buckets, the
 * SQLSTATE classes, the Vault error table, and the metrics buffer's cap.
 */
#include "pgl_metrics.h"
#include "pgl_stats.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void test_averages_follow_pgbouncer(void **state)
{
    (void)state;
    pgl_stats st;
    memset(&st, 0, sizeof st);
    pgl_stats_tick(&st, 1000, 10); /* the first tick starts the period */
    st.total.query_count = 300;
    st.total.xact_count = 100;
    st.total.bytes_received = 50000;
    st.total.bytes_sent = 200000;
    st.total.query_time_us = 600000;
    st.total.xact_time_us = 900000;
    st.total.wait_time_us = 20000;
    pgl_stats_tick(&st, 6000, 10); /* 5 s in: the period is not over */
    assert_int_equal(st.avg.query_count, 0);
    pgl_stats_tick(&st, 11000, 10); /* 10 s: averages of that period */
    assert_int_equal(st.avg.query_count, 30);     /* per second */
    assert_int_equal(st.avg.xact_count, 10);
    assert_int_equal(st.avg.bytes_received, 5000);
    assert_int_equal(st.avg.bytes_sent, 20000);
    assert_int_equal(st.avg.query_time_us, 2000); /* per query */
    assert_int_equal(st.avg.xact_time_us, 9000);  /* per transaction */
    assert_int_equal(st.avg.wait_time_us, 2000);  /* waited per second */
    /* An idle period: rates drop to 0, times are not divided by 0. */
    pgl_stats_tick(&st, 21000, 10);
    assert_int_equal(st.avg.query_count, 0);
    assert_int_equal(st.avg.query_time_us, 0);
    assert_int_equal(st.avg.xact_time_us, 0);
}

static void test_wait_buckets(void **state)
{
    (void)state;
    pgl_stats st;
    memset(&st, 0, sizeof st);
    pgl_stats_wait(&st, 0);
    pgl_stats_wait(&st, 1000);     /* on a bound: that bucket (le) */
    pgl_stats_wait(&st, 1001);
    pgl_stats_wait(&st, 2000000);
    pgl_stats_wait(&st, 3600000000ull); /* above the last bound: +Inf */
    assert_int_equal(st.wait_buckets[0], 2);
    assert_int_equal(st.wait_buckets[1], 1);
    size_t two_s = 0;
    while (pgl_stats_wait_bounds_us[two_s] < 2000000)
        two_s++;
    assert_int_equal(st.wait_buckets[two_s], 1);
    assert_int_equal(st.wait_buckets[PGL_STATS_WAIT_BUCKETS], 1);
    assert_int_equal(st.total.wait_time_us, 1000 + 1001 + 2000000 + 3600000000ull);
}

static size_t slot_of(const char *cls)
{
    for (size_t i = 0; i <= PGL_STATS_ERROR_CLASSES; i++)
        if (strcmp(pgl_stats_error_class(i), cls) == 0)
            return i;
    fail_msg("no slot for %s", cls);
    return 0;
}

static void test_error_classes(void **state)
{
    (void)state;
    pgl_stats st;
    memset(&st, 0, sizeof st);
    pgl_stats_error(&st, "22012");
    pgl_stats_error(&st, "22P02");
    pgl_stats_error(&st, "42P01");
    pgl_stats_error(&st, "XX000");
    pgl_stats_error(&st, "ZZ999"); /* no such class */
    pgl_stats_error(&st, NULL);
    pgl_stats_error(&st, "4");
    assert_int_equal(st.errors[slot_of("22")], 2);
    assert_int_equal(st.errors[slot_of("42")], 1);
    assert_int_equal(st.errors[slot_of("XX")], 1);
    assert_int_equal(st.errors[PGL_STATS_ERROR_OTHER], 3);
    assert_string_equal(pgl_stats_error_class(PGL_STATS_ERROR_OTHER), "other");
}

static void test_vault_errors_by_cause(void **state)
{
    (void)state;
    pgl_stats_vault v;
    memset(&v, 0, sizeof v);
    pgl_stats_vault_error(&v, PGL_STATS_VAULT_READ, -ETIMEDOUT);
    pgl_stats_vault_error(&v, PGL_STATS_VAULT_RENEW, -ETIMEDOUT);
    pgl_stats_vault_error(&v, PGL_STATS_VAULT_READ, -EIO);
    assert_int_equal(v.errors[0].code, -ETIMEDOUT);
    assert_int_equal(v.errors[0].n[PGL_STATS_VAULT_READ], 1);
    assert_int_equal(v.errors[0].n[PGL_STATS_VAULT_RENEW], 1);
    assert_int_equal(v.errors[1].code, -EIO);
    for (int code = 1; code <= PGL_STATS_VAULT_CODES + 3; code++)
        pgl_stats_vault_error(&v, PGL_STATS_VAULT_REVOKE, -1000 - code);
    /* The table is full after 16 codes: the rest count as other. */
    assert_int_equal(v.errors_other[PGL_STATS_VAULT_REVOKE], 5);
}

static void test_metrics_buffer_is_capped(void **state)
{
    (void)state;
    pgl_metrics_buf b;
    pgl_metrics_buf_init(&b, 40000);
    for (int i = 0; i < 5000 && b.rc == 0; i++)
        pgl_metrics_printf(&b, "pglease_x{n=\"%d\"} %d\n", i, i);
    assert_int_equal(b.rc, -E2BIG);
    assert_true(b.len <= 40000);
    assert_true(b.len > 30000);
    assert_memory_equal(b.data, "pglease_x{n=\"0\"} 0\n", 19);
    pgl_metrics_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_averages_follow_pgbouncer),
        cmocka_unit_test(test_wait_buckets),
        cmocka_unit_test(test_error_classes),
        cmocka_unit_test(test_vault_errors_by_cause),
        cmocka_unit_test(test_metrics_buffer_is_capped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
