/*
 * pgl_stmt: the books behind shared named prepared statements.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pgl_stmt.h"

/* A Parse body after the name: query, no parameter types. */
#define DEF(q) (const uint8_t *)q "\0\0", sizeof q + 2

static void test_intern_shares_and_frees(void **state)
{
    (void)state;
    pgl_stmt_registry reg = {0};
    pgl_stmt *a = pgl_stmt_intern(&reg, DEF("SELECT 1"));
    pgl_stmt *b = pgl_stmt_intern(&reg, DEF("SELECT 1"));
    pgl_stmt *c = pgl_stmt_intern(&reg, DEF("SELECT 2"));
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    assert_string_equal(a->name, "PGL_1");
    assert_string_equal(c->name, "PGL_2");
    assert_int_equal(reg.count, 2);
    pgl_stmt_unref(a);
    pgl_stmt_unref(b);
    assert_int_equal(reg.count, 1);
    pgl_stmt_unref(c);
    assert_int_equal(reg.count, 0);
    assert_null(reg.root);
}

static void test_names_are_per_client(void **state)
{
    (void)state;
    pgl_stmt_registry reg = {0};
    pgl_stmt_names x = {0}, y = {0};
    pgl_stmt *q1 = pgl_stmt_intern(&reg, DEF("SELECT 1"));
    pgl_stmt *q2 = pgl_stmt_intern(&reg, DEF("SELECT 2"));
    assert_int_equal(pgl_stmt_names_put(&x, "S_1", q1), 0);
    assert_int_equal(pgl_stmt_names_put(&y, "S_1", q2), 0);
    pgl_stmt_unref(q1);
    pgl_stmt_unref(q2);
    assert_ptr_equal(pgl_stmt_names_get(&x, "S_1"), q1);
    assert_ptr_equal(pgl_stmt_names_get(&y, "S_1"), q2);
    assert_null(pgl_stmt_names_get(&x, "S_2"));
    /* Re-parsing a name points it at the new definition. */
    pgl_stmt *q3 = pgl_stmt_intern(&reg, DEF("SELECT 3"));
    assert_int_equal(pgl_stmt_names_put(&x, "S_1", q3), 0);
    pgl_stmt_unref(q3);
    assert_ptr_equal(pgl_stmt_names_get(&x, "S_1"), q3);
    assert_int_equal(reg.count, 2); /* q1 had no other user */
    assert_true(pgl_stmt_names_del(&y, "S_1"));
    assert_false(pgl_stmt_names_del(&y, "S_1"));
    pgl_stmt_names_clear(&x);
    assert_int_equal(reg.count, 0);
}

/* Runs the answer of `type` through the cache; returns the action. */
static pgl_stmt_action answer(pgl_stmt_cache *sc, uint8_t type)
{
    pgl_stmt_action a = pgl_stmt_cache_next(sc, type);
    if (a != PGL_STMT_DESYNC)
        pgl_stmt_cache_answered(sc);
    return a;
}

static void test_answers_in_order(void **state)
{
    (void)state;
    pgl_stmt_registry reg = {0};
    pgl_stmt_cache sc;
    pgl_stmt_cache_init(&sc, 10);
    pgl_stmt *q = pgl_stmt_intern(&reg, DEF("SELECT 1"));
    assert_false(pgl_stmt_cache_use(&sc, q));
    assert_int_equal(pgl_stmt_cache_adding(&sc, q), 0);
    assert_int_equal(pgl_stmt_cache_owe(&sc, PGL_STMT_OWED_PARSE_HIDDEN, q), 0);
    assert_int_equal(pgl_stmt_cache_owe(&sc, PGL_STMT_OWED_PARSE, NULL), 0);
    assert_int_equal(pgl_stmt_cache_owe(&sc, PGL_STMT_OWED_CLOSE_AS_PARSE, NULL), 0);
    assert_int_equal(pgl_stmt_cache_owe(&sc, PGL_STMT_OWED_CLOSE, NULL), 0);
    pgl_stmt_cache_sync_sent(&sc);
    assert_false(pgl_stmt_cache_settled(&sc));
    assert_int_equal(pgl_stmt_cache_next(&sc, '3'), PGL_STMT_DESYNC);
    assert_int_equal(answer(&sc, '1'), PGL_STMT_DROP);
    assert_int_equal(answer(&sc, '1'), PGL_STMT_PASS);
    assert_int_equal(answer(&sc, '3'), PGL_STMT_RETYPE);
    assert_int_equal(answer(&sc, '3'), PGL_STMT_PASS);
    pgl_stmt_cache_synced(&sc);
    assert_true(pgl_stmt_cache_settled(&sc));
    assert_true(pgl_stmt_cache_use(&sc, q));
    pgl_stmt_unref(q);
    pgl_stmt_cache_close(&sc);
    assert_int_equal(reg.count, 0);
}

static void test_error_skips_to_the_sync(void **state)
{
    (void)state;
    pgl_stmt_registry reg = {0};
    pgl_stmt_cache sc;
    pgl_stmt_cache_init(&sc, 10);
    pgl_stmt *a = pgl_stmt_intern(&reg, DEF("SELECT 1"));
    pgl_stmt *b = pgl_stmt_intern(&reg, DEF("SELECT 2"));
    /* Batch 0: Parse a, (error), Parse b; Sync. Batch 1: Parse b; Sync. */
    assert_int_equal(pgl_stmt_cache_adding(&sc, a), 0);
    assert_int_equal(pgl_stmt_cache_owe(&sc, PGL_STMT_OWED_PARSE, a), 0);
    assert_int_equal(pgl_stmt_cache_adding(&sc, b), 0);
    assert_int_equal(pgl_stmt_cache_owe(&sc, PGL_STMT_OWED_PARSE, b), 0);
    pgl_stmt_cache_sync_sent(&sc);
    assert_int_equal(pgl_stmt_cache_owe(&sc, PGL_STMT_OWED_CLOSE, NULL), 0);
    pgl_stmt_cache_sync_sent(&sc);
    assert_int_equal(answer(&sc, '1'), PGL_STMT_PASS); /* a */
    pgl_stmt_cache_error(&sc);                          /* b skipped */
    pgl_stmt_cache_synced(&sc);
    assert_true(pgl_stmt_cache_use(&sc, a));
    assert_false(pgl_stmt_cache_use(&sc, b));
    /* The next batch's answer is still owed, not skipped by that error. */
    assert_int_equal(answer(&sc, '3'), PGL_STMT_PASS);
    pgl_stmt_cache_synced(&sc);
    assert_true(pgl_stmt_cache_settled(&sc));
    pgl_stmt_unref(a);
    pgl_stmt_unref(b);
    pgl_stmt_cache_close(&sc);
    assert_int_equal(reg.count, 0);
}

static void test_eviction_least_recently_used_and_answered(void **state)
{
    (void)state;
    pgl_stmt_registry reg = {0};
    pgl_stmt_cache sc;
    pgl_stmt_cache_init(&sc, 2);
    pgl_stmt *q[3];
    q[0] = pgl_stmt_intern(&reg, DEF("SELECT 0"));
    q[1] = pgl_stmt_intern(&reg, DEF("SELECT 1"));
    q[2] = pgl_stmt_intern(&reg, DEF("SELECT 2"));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pgl_stmt_cache_adding(&sc, q[i]), 0);
        assert_int_equal(pgl_stmt_cache_owe(&sc, PGL_STMT_OWED_PARSE, q[i]), 0);
    }
    /* Over the limit, but nothing answered yet: nothing to evict. */
    assert_null(pgl_stmt_cache_excess(&sc, NULL));
    for (int i = 0; i < 3; i++)
        assert_int_equal(answer(&sc, '1'), PGL_STMT_PASS);
    assert_true(pgl_stmt_cache_use(&sc, q[0])); /* q[1] is now the least recent */
    pgl_stmt *ev = pgl_stmt_cache_excess(&sc, q[0]);
    assert_ptr_equal(ev, q[1]);
    assert_null(pgl_stmt_cache_excess(&sc, q[0]));
    /* Its Close is skipped by an error: the server still has it. */
    assert_int_equal(pgl_stmt_cache_owe(&sc, PGL_STMT_OWED_CLOSE_HIDDEN, ev), 0);
    pgl_stmt_unref(ev);
    pgl_stmt_cache_error(&sc);
    assert_true(pgl_stmt_cache_use(&sc, q[1]));
    for (int i = 0; i < 3; i++)
        pgl_stmt_unref(q[i]);
    pgl_stmt_cache_forget_all(&sc);
    assert_int_equal(sc.n, 0);
    pgl_stmt_cache_close(&sc);
    assert_int_equal(reg.count, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intern_shares_and_frees),
        cmocka_unit_test(test_names_are_per_client),
        cmocka_unit_test(test_answers_in_order),
        cmocka_unit_test(test_error_skips_to_the_sync),
        cmocka_unit_test(test_eviction_least_recently_used_and_answered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
