/* Unit tests for pgl_worker: tasks posted between loops run in order on
 * their loop's thread, and parking gives the main thread the other loops'
 * data (run under TSan in CI: every access here must be ordered). */
#include "pgl_loop.h"
#include "pgl_proxy.h"
#include "pgl_worker.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define LOOPS 3
#define TASKS 1000

/* Owned by each loop's thread, read by the main one while it is parked. */
static int counted[LOOPS];
static int last_seen[LOOPS];
static int shared_value;
static int replies;

static void count(pgl_loop *lp, void *arg)
{
    int expect = (int)(intptr_t)arg;
    /* In order: the n-th task finds n-1 before it. */
    if (counted[lp->index] == expect)
        counted[lp->index]++;
}

static void reply(pgl_loop *main, void *arg)
{
    (void)main;
    replies += (int)(intptr_t)arg;
}

static void read_shared(pgl_loop *lp, void *arg)
{
    (void)arg;
    last_seen[lp->index] = shared_value;
    /* An answer to the main loop, which never waits for it. */
    assert_int_equal(pgl_loop_post(&lp->px->main, reply, (void *)(intptr_t)1), 0);
}

static void test_post_park_stop(void **state)
{
    (void)state;
    static pgl_proxy px;
    assert_int_equal(pgl_loop_init(&px.main, &px, 0, NULL), 0);
    pgl_loop_current = &px.main;
    char err[256];
    assert_int_equal(pgl_workers_init(&px, LOOPS, err, sizeof err), 0);
    assert_int_equal(px.nloops, LOOPS);
    assert_int_equal(pgl_workers_run(&px, err, sizeof err), 0);
    for (int round = 0; round < 20; round++) {
        for (int i = 1; i < LOOPS; i++)
            for (int n = 0; n < TASKS / 20; n++)
                assert_int_equal(pgl_loop_post(px.loops[i], count,
                                               (void *)(intptr_t)(round * (TASKS / 20) + n)),
                                 0);
        /* Parked behind the tasks posted before: all of them have run. */
        pgl_workers_park(&px);
        pgl_workers_park(&px); /* nests */
        for (int i = 1; i < LOOPS; i++)
            assert_int_equal(counted[i], (round + 1) * (TASKS / 20));
        shared_value = round + 1;
        pgl_workers_unpark(&px);
        pgl_workers_unpark(&px);
        for (int i = 1; i < LOOPS; i++)
            assert_int_equal(pgl_loop_post(px.loops[i], read_shared, NULL), 0);
        pgl_workers_park(&px);
        for (int i = 1; i < LOOPS; i++)
            assert_int_equal(last_seen[i], round + 1);
        pgl_workers_unpark(&px);
    }
    /* The answers run on the main loop. */
    while (replies < 20 * (LOOPS - 1))
        uv_run(&px.main.uv, UV_RUN_ONCE);
    assert_int_equal(replies, 20 * (LOOPS - 1));
    pgl_workers_stop(&px);
    assert_int_equal(pgl_loop_close(&px.main), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_park_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
