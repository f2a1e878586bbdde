/* Unit tests for proxy/pgl_varcache.c: the query that gives a server the
 * session parameters of the client landing on it, and what the server is
 * known to have afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "pgl_varcache.h"

static void set(pgl_varcache *vc, pgl_var v, const char *value)
{
    assert_int_equal(pgl_varcache_set(vc, v, value, strlen(value)), 0);
}

static void test_nothing_to_do_when_values_match(void **state)
{
    (void)state;
    pgl_varcache defaults = {0}, server = {0};
    char sql[512];
    set(&defaults, PGL_VAR_TIMEZONE, "UTC");
    set(&server, PGL_VAR_TIMEZONE, "UTC");
    /* A client that set nothing gets the pool's defaults. */
    assert_int_equal(pgl_varcache_apply_sql(NULL, &defaults, &server, sql, sizeof sql), 0);
    pgl_varcache_clear(&defaults);
    pgl_varcache_clear(&server);
}

static void test_client_value_is_quoted_and_remembered(void **state)
{
    (void)state;
    pgl_varcache client = {0}, server = {0};
    char sql[512];
    set(&client, PGL_VAR_SEARCH_PATH, "o'brien\\x, public");
    int n = pgl_varcache_apply_sql(&client, NULL, &server, sql, sizeof sql);
    assert_true(n > 0);
    assert_string_equal(sql, "SELECT pg_catalog.set_config(E'search_path', "
                             "E'o\\'brien\\\\x, public', false)");
    /* Postgres 15 will not report it: the cache must learn it from us. */
    assert_int_equal(pgl_varcache_applied(&client, NULL, &server), 0);
    assert_string_equal(server.values[PGL_VAR_SEARCH_PATH], "o'brien\\x, public");
    assert_int_equal(pgl_varcache_apply_sql(&client, NULL, &server, sql, sizeof sql), 0);
    pgl_varcache_clear(&client);
    pgl_varcache_clear(&server);
}

static void test_previous_clients_value_goes_back_to_the_default(void **state)
{
    (void)state;
    pgl_varcache server = {0};
    char sql[512];
    set(&server, PGL_VAR_SEARCH_PATH, "a_schema");
    int n = pgl_varcache_apply_sql(NULL, NULL, &server, sql, sizeof sql);
    assert_true(n > 0);
    assert_string_equal(sql, "SELECT pg_catalog.set_config(E'search_path', (SELECT reset_val "
                             "FROM pg_catalog.pg_settings WHERE name = E'search_path'), false)");
    assert_int_equal(pgl_varcache_applied(NULL, NULL, &server), 0);
    assert_null(server.values[PGL_VAR_SEARCH_PATH]);
    assert_int_equal(pgl_varcache_apply_sql(NULL, NULL, &server, sql, sizeof sql), 0);
}

static void test_too_small_buffer(void **state)
{
    (void)state;
    pgl_varcache client = {0}, server = {0};
    char sql[16];
    set(&client, PGL_VAR_APPLICATION_NAME, "a long application name");
    assert_int_equal(pgl_varcache_apply_sql(&client, NULL, &server, sql, sizeof sql), -1);
    pgl_varcache_clear(&client);
}

/* Other GUCs from the startup packet: set on the server, remembered there,
 * and put back to the server's default for the next client without them. */
static void test_extra_settings_follow_the_client(void **state)
{
    (void)state;
    pgl_varcache client = {0}, server = {0};
    char sql[1024];
    assert_int_equal(pgl_varcache_set_extra(&client, "Work_Mem", "64MB"), 0);
    assert_int_equal(pgl_varcache_set_extra(&client, "work_mem", "77MB"), 0); /* replaces */
    assert_int_equal(pgl_varcache_set_extra(&client, "myapp.tenant", "it's"), 0);
    assert_int_equal(client.nextra, 2);
    int n = pgl_varcache_apply_sql(&client, NULL, &server, sql, sizeof sql);
    assert_true(n > 0);
    assert_string_equal(sql, "SELECT pg_catalog.set_config(E'work_mem', E'77MB', false), "
                             "pg_catalog.set_config(E'myapp.tenant', E'it\\'s', false)");
    assert_int_equal(pgl_varcache_applied(&client, NULL, &server), 0);
    assert_int_equal(pgl_varcache_apply_sql(&client, NULL, &server, sql, sizeof sql), 0);
    /* The next client set nothing: both go back to the server's defaults. */
    n = pgl_varcache_apply_sql(NULL, NULL, &server, sql, sizeof sql);
    assert_true(n > 0);
    assert_non_null(strstr(sql, "set_config(E'work_mem', (SELECT reset_val FROM "
                                "pg_catalog.pg_settings WHERE name = E'work_mem'), false)"));
    assert_non_null(strstr(sql, "name = E'myapp.tenant'"));
    assert_int_equal(pgl_varcache_applied(NULL, NULL, &server), 0);
    assert_int_equal(server.nextra, 0);
    /* After DISCARD ALL a server has no extras and its default search_path. */
    assert_int_equal(pgl_varcache_applied(&client, NULL, &server), 0);
    set(&server, PGL_VAR_SEARCH_PATH, "a_schema");
    pgl_varcache_reset(&server);
    assert_int_equal(server.nextra, 0);
    assert_null(server.values[PGL_VAR_SEARCH_PATH]);
    pgl_varcache_clear(&client);
    pgl_varcache_clear(&server);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_to_do_when_values_match),
        cmocka_unit_test(test_client_value_is_quoted_and_remembered),
        cmocka_unit_test(test_previous_clients_value_goes_back_to_the_default),
        cmocka_unit_test(test_too_small_buffer),
        cmocka_unit_test(test_extra_settings_follow_the_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
