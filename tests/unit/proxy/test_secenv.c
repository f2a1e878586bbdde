#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "pgl_secenv.h"

extern char **environ;

/* Entries built by hand, as the kernel's block is: environ points at them. */
static char token[] = "VAULT_TOKEN=hvs.secret-token";
static char pgpw[] = "PGPASSWORD=pw";
static char db_pw[] = "PGLEASE_DATABASES_APP=host=x password=conn-pw";
static char db_plain[] = "PGLEASE_DATABASES_B=host=x creds=database/creds/b";
static char other[] = "HOME=/root";

static void test_take_wipes_in_place(void **state)
{
    (void)state;
    char *env[] = {other, token, db_plain, pgpw, db_pw, NULL};
    char **saved = environ;
    environ = env;
    assert_int_equal(pgl_secenv_take(), 3);
    /* The values' bytes are zero where they were; the names are left. */
    assert_string_equal(token, "VAULT_TOKEN=");
    assert_null(memchr(token + 12, 't', sizeof token - 12));
    assert_string_equal(pgpw, "PGPASSWORD=");
    assert_string_equal(db_pw, "PGLEASE_DATABASES_APP=");
    /* environ[] keeps the rest, in order. */
    assert_ptr_equal(env[0], other);
    assert_ptr_equal(env[1], db_plain);
    assert_null(env[2]);
    assert_null(getenv("VAULT_TOKEN"));
    /* The copy pglease needs. */
    assert_string_equal(pgl_secenv_get("VAULT_TOKEN"), "hvs.secret-token");
    assert_null(pgl_secenv_get("PGPASSWORD"));
    pgl_secenv_forget("VAULT_TOKEN");
    assert_null(pgl_secenv_get("VAULT_TOKEN"));
    environ = saved;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_wipes_in_place),
    };
    return cmocka_run_group_tests_name("secenv", tests, NULL, NULL);
}
