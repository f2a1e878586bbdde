/*
 * A credential generation's life on a fake clock: its deadlines, what is
 * due when, what a released server must do, and when it retires.
 */
#include "pgl_generation.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static int retired_calls;
static uint64_t retired_id;

static void on_retired(pgl_generation *g)
{
    retired_calls++;
    retired_id = g->id;
}

static pgl_generation *make(pgl_generation_state st)
{
    pgl_generation *g = pgl_generation_new(7, "v-app-abc", "s3cret", st);
    assert_non_null(g);
    g->retired = on_retired;
    retired_calls = 0;
    retired_id = 0;
    return g;
}

static void test_new_generation(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_WARMING);
    assert_int_equal(g->id, 7);
    assert_string_equal(g->user, "v-app-abc");
    assert_string_equal(g->password, "s3cret");
    assert_int_equal(pgl_generation_nservers(g), 0);
    assert_false(pgl_generation_retiring(g));
    assert_true(pgl_generation_end(g) == UINT64_MAX);
    assert_true(pgl_generation_deadline(g) == UINT64_MAX);
    pgl_generation_free(g);
}

/* A 30 s non-renewable lease issued at t = 1 s. */
static void test_clock_of_a_fixed_lease(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    g->lease_id = strdup("database/creds/app/abcd");
    pgl_generation_issued(g, 1000, 30, false, false, 0, -1);
    assert_true(pgl_generation_end(g) == 31000);
    /* Safety margin: min(5 s, 10% of 30 s) = 3 s. */
    assert_true(pgl_generation_deadline(g) == 28000);
    /* Default rotate_before: a third of its life. */
    assert_true(g->rotate_at == 21000);
    assert_false(pgl_generation_renew_due(g, 30000));
    /* rotate_before = 5 s; and never more than half the life. */
    pgl_generation_schedule_rotation(g, 5);
    assert_true(g->rotate_at == 26000);
    pgl_generation_schedule_rotation(g, 100);
    assert_true(g->rotate_at == 16000);
    pgl_generation_free(g);
}

static void test_renewal_until_capped(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    g->lease_id = strdup("database/creds/app/abcd");
    pgl_generation_issued(g, 0, 30, true, false, 0, -1);
    /* Renewable: the end is not final, so no deadline and no rotation yet. */
    assert_true(pgl_generation_end(g) == UINT64_MAX);
    assert_true(g->rotate_at == UINT64_MAX);
    assert_true(g->renew_at == 20000);
    assert_false(pgl_generation_renew_due(g, 19999));
    assert_true(pgl_generation_renew_due(g, 20000));
    assert_false(pgl_generation_renew_due(g, 20001)); /* taken once */
    /* Renewed for the full increment: renew again at 2/3. */
    assert_false(pgl_generation_renewed(g, 20000, 30, -1));
    assert_true(g->renew_at == 40000);
    assert_true(pgl_generation_end(g) == UINT64_MAX);
    /* Capped by max_ttl: the end is final, rotation is scheduled. */
    assert_true(pgl_generation_renewed(g, 40000, 12, -1));
    assert_true(pgl_generation_end(g) == 52000);
    assert_true(g->renew_at == UINT64_MAX);
    assert_true(g->rotate_at < 52000);
    assert_false(pgl_generation_renew_due(g, 60000));
    pgl_generation_free(g);
}

static void test_unanswered_renewal_keeps_the_deadline(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    g->lease_id = strdup("database/creds/app/abcd");
    pgl_generation_issued(g, 0, 30, true, false, 0, -1);
    /* Renewable, not final: still, the lease ends at 30 s unless renewed. */
    assert_true(pgl_generation_deadline(g) == 27000);
    assert_false(pgl_generation_rotation_due(g, 26000));
    assert_true(pgl_generation_renew_due(g, 20000));
    /* Vault does not answer: a successor is fetched halfway to the
     * deadline, and the deadline stands. */
    assert_false(pgl_generation_rotation_due(g, 23000));
    assert_true(pgl_generation_rotation_due(g, 23500));
    assert_int_equal(pgl_generation_check(g, 27000, 30), PGL_GEN_DUE_DEADLINE);
    assert_int_equal(g->state, PGL_GEN_DEAD);
    pgl_generation_free(g);

    /* Answered in time: the deadline moves with the lease. */
    g = make(PGL_GEN_ACTIVE);
    g->lease_id = strdup("database/creds/app/abcd");
    pgl_generation_issued(g, 0, 30, true, false, 0, -1);
    assert_true(pgl_generation_renew_due(g, 20000));
    assert_false(pgl_generation_renewed(g, 20100, 30, -1));
    assert_true(pgl_generation_deadline(g) == 45100);
    assert_false(pgl_generation_rotation_due(g, 40000));
    pgl_generation_free(g);

    /* A short lease keeps at least 1.5 s of margin (VALID UNTIL has whole
     * seconds). */
    g = make(PGL_GEN_ACTIVE);
    g->lease_id = strdup("database/creds/app/abcd");
    pgl_generation_issued(g, 0, 6, false, false, 0, -1);
    assert_true(pgl_generation_deadline(g) == 4500);
    pgl_generation_free(g);
}

static void test_renew_failure_and_token_end(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    g->lease_id = strdup("database/creds/app/abcd");
    pgl_generation_issued(g, 0, 60, true, false, 0, -1);
    pgl_generation_renew_failed(g, -1);
    assert_true(pgl_generation_end(g) == 60000);
    /* The token that created the lease ends first: the lease goes with it. */
    pgl_generation_token_ends(g, 30000, -1);
    assert_true(pgl_generation_end(g) == 30000);
    assert_true(g->token_end == 30000);
    /* An unknown token end changes nothing. */
    pgl_generation_token_ends(g, UINT64_MAX, -1);
    assert_true(pgl_generation_end(g) == 30000);
    pgl_generation_free(g);
}

static void test_static_role_has_no_deadline(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    g->lease_id = strdup("database/static-creds/reports");
    pgl_generation_issued(g, 5000, 0, false, true, 120, -1);
    assert_true(g->rotate_at == 5000 + 120000 + 1000);
    assert_true(pgl_generation_deadline(g) == UINT64_MAX);
    assert_int_equal(pgl_generation_check(g, 999999999, 30), PGL_GEN_DUE_NOTHING);
    /* Unchanged at the re-read: Vault's rotation is due (ttl 0) but not
     * done, so ask again a second later, not a default period later. */
    pgl_generation_static_reread(g, 126000, 0);
    assert_true(g->rotate_at == 127000);
    assert_false(pgl_generation_rotation_due(g, 126999));
    assert_true(pgl_generation_rotation_due(g, 127000));
    pgl_generation_static_reread(g, 127000, -1);
    assert_true(g->rotate_at == 127000 + 60000 + 1000);
    /* Nothing to renew: no lease. */
    assert_false(pgl_generation_renew_due(g, 999999999));
    pgl_generation_free(g);
}

static void test_kv_secret_is_polled(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    pgl_generation_issued(g, 5000, 0, false, true, -1, -1);
    pgl_generation_poll_after(g, 5000, 30);
    assert_false(pgl_generation_rotation_due(g, 34999));
    assert_true(pgl_generation_rotation_due(g, 35000));
    /* No lease, no deadline, nothing to renew; a token's end is not its. */
    assert_true(pgl_generation_deadline(g) == UINT64_MAX);
    assert_false(pgl_generation_renew_due(g, 999999999));
    pgl_generation_token_ends(g, 10000, -1);
    assert_true(pgl_generation_deadline(g) == UINT64_MAX);
    assert_int_equal(pgl_generation_check(g, 999999999, 30), PGL_GEN_DUE_NOTHING);
    pgl_generation_free(g);
}

static void test_active_past_its_deadline_dies(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    pgl_generation_issued(g, 0, 30, false, false, 0, -1);
    assert_int_equal(pgl_generation_check(g, 26999, 30), PGL_GEN_DUE_NOTHING);
    assert_int_equal(pgl_generation_check(g, 27000, 30), PGL_GEN_DUE_DEADLINE);
    assert_int_equal(g->state, PGL_GEN_DEAD);
    assert_true(g->drain_since == 27000);
    assert_true(pgl_generation_retiring(g));
    pgl_generation_free(g);
}

static void test_draining_hurries_then_times_out(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    pgl_generation_issued(g, 0, 600, false, false, 0, -1); /* deadline far away */
    pgl_generation_set_state(g, PGL_GEN_DRAINING, 1000);
    assert_true(g->drain_since == 1000);
    /* drain_timeout 10 s: stop at 11 s, hurry 2 s before, once. */
    assert_int_equal(pgl_generation_check(g, 8999, 10), PGL_GEN_DUE_NOTHING);
    assert_int_equal(pgl_generation_check(g, 9000, 10), PGL_GEN_DUE_HURRY);
    assert_true(g->hurry);
    assert_int_equal(pgl_generation_check(g, 9500, 10), PGL_GEN_DUE_NOTHING);
    assert_int_equal(pgl_generation_check(g, 11000, 10), PGL_GEN_DUE_DRAIN_OVER);
    /* No drain timeout: only the deadline bounds it. */
    g->hurry = false;
    assert_int_equal(pgl_generation_check(g, 11000, -1), PGL_GEN_DUE_NOTHING);
    pgl_generation_free(g);
}

/* What the pool paces its replacement logins against: the hurry point. */
static void test_stop_serving_is_the_hurry_point(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    pgl_generation_issued(g, 0, 30, false, false, 0, -1); /* deadline 27 s */
    assert_true(pgl_generation_stop_serving(g, 10) == 25000); /* not retiring: no drain end */
    pgl_generation_set_state(g, PGL_GEN_DRAINING, 20000);
    assert_true(pgl_generation_stop_serving(g, 30) == 25000);
    assert_true(pgl_generation_stop_serving(g, 3) == 21000); /* drain_timeout first */
    assert_true(pgl_generation_stop_serving(g, 1) == 19000);
    pgl_generation_free(g);
    g = make(PGL_GEN_ACTIVE); /* no lease: only drain_timeout bounds it */
    assert_true(pgl_generation_stop_serving(g, 30) == UINT64_MAX);
    pgl_generation_set_state(g, PGL_GEN_DRAINING, 1000);
    assert_true(pgl_generation_stop_serving(g, -1) == UINT64_MAX);
    assert_true(pgl_generation_stop_serving(g, 10) == 9000);
    assert_true(pgl_generation_stop_serving(g, 0) == 0);
    pgl_generation_free(g);
}

static void test_session_clients_are_asked_to_reconnect(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    pgl_generation_issued(g, 0, 30, false, false, 0, -1); /* deadline 27 s */
    pgl_generation_set_state(g, PGL_GEN_DRAINING, 20000);
    assert_int_equal(pgl_generation_check(g, 24000, -1), PGL_GEN_DUE_NOTHING);
    assert_int_equal(pgl_generation_check(g, 25000, -1), PGL_GEN_DUE_HURRY);
    assert_int_equal(pgl_generation_check(g, 25100, -1), PGL_GEN_DUE_RECONNECT);
    assert_int_equal(pgl_generation_check(g, 26999, -1), PGL_GEN_DUE_RECONNECT);
    assert_int_equal(pgl_generation_check(g, 27000, -1), PGL_GEN_DUE_DEADLINE);
    assert_int_equal(g->state, PGL_GEN_DRAINING); /* only an active one dies here */
    pgl_generation_free(g);
}

static void test_released_server_verdicts(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    pgl_list s[3];
    for (int i = 0; i < 3; i++)
        pgl_clist_append(&g->busy, &s[i]);
    assert_null(pgl_generation_released(g, true));
    pgl_generation_set_state(g, PGL_GEN_DRAINING, 0);
    assert_int_equal(pgl_generation_unreplaced(g), 3);
    /* Make-before-break: one replacement promised, one server closes. */
    g->replaced = 1;
    assert_int_equal(pgl_generation_unreplaced(g), 2);
    assert_string_equal(pgl_generation_released(g, true),
                        "replaced by a server with the new credential");
    assert_int_equal(g->replaced, 0);
    /* Unreplaced servers serve on... */
    assert_null(pgl_generation_released(g, true));
    /* ...unless the end is near, or the pool is in session mode. */
    g->hurry = true;
    assert_string_equal(pgl_generation_released(g, true), "its credential generation ends soon");
    g->hurry = false;
    assert_string_equal(pgl_generation_released(g, false), "its credential generation is retiring");
    pgl_generation_set_state(g, PGL_GEN_DEAD, 0);
    assert_string_equal(pgl_generation_released(g, true), "its credential generation is retiring");
    for (int i = 0; i < 3; i++)
        pgl_clist_remove(&g->busy, &s[i]);
    pgl_generation_free(g);
}

static void test_retires_with_its_last_server_unless_held(void **state)
{
    (void)state;
    pgl_generation *g = make(PGL_GEN_ACTIVE);
    pgl_list a, b;
    pgl_clist_append(&g->idle, &a);
    pgl_clist_append(&g->busy, &b);
    /* An active generation never retires, even empty. */
    pgl_clist_remove(&g->idle, &a);
    assert_false(pgl_generation_server_left(g));
    pgl_generation_set_state(g, PGL_GEN_DRAINING, 0);
    g->replaced = 5; /* more than it has: clamped when a server leaves */
    pgl_generation_hold(g);
    pgl_clist_remove(&g->busy, &b);
    assert_false(pgl_generation_server_left(g)); /* held */
    assert_int_equal(g->replaced, 0);
    assert_int_equal(retired_calls, 0);
    assert_true(pgl_generation_unhold(g)); /* freed */
    assert_int_equal(retired_calls, 1);
    assert_true(retired_id == 7);
}

static void test_state_names(void **state)
{
    (void)state;
    assert_string_equal(pgl_generation_state_name(PGL_GEN_WARMING), "warming");
    assert_string_equal(pgl_generation_state_name(PGL_GEN_RETIRED), "retired");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_generation),
        cmocka_unit_test(test_clock_of_a_fixed_lease),
        cmocka_unit_test(test_renewal_until_capped),
        cmocka_unit_test(test_unanswered_renewal_keeps_the_deadline),
        cmocka_unit_test(test_renew_failure_and_token_end),
        cmocka_unit_test(test_static_role_has_no_deadline),
        cmocka_unit_test(test_kv_secret_is_polled),
        cmocka_unit_test(test_active_past_its_deadline_dies),
        cmocka_unit_test(test_draining_hurries_then_times_out),
        cmocka_unit_test(test_stop_serving_is_the_hurry_point),
        cmocka_unit_test(test_session_clients_are_asked_to_reconnect),
        cmocka_unit_test(test_released_server_verdicts),
        cmocka_unit_test(test_retires_with_its_last_server_unless_held),
        cmocka_unit_test(test_state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
