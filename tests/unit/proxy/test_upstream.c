/* Unit tests for proxy/pgl_upstream.c: the SQLSTATE a failed upstream login
 * gets from libpq's message (libpq gives no code for connection failures),
 * which decides between "credential rejected", "no slot" and "try later". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pgl_upstream.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_no_connection_slot),
        cmocka_unit_test(test_other_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
