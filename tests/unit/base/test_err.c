/* Unit tests for base/: the error space and its one table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "pgl_err.h"

static const int codes[] = {
#define CODE_(name, value, msg) PGL_##name,
    PGL_ERR_MAP(CODE_)
#undef CODE_
};
#define NCODES (sizeof codes / sizeof codes[0])

static void test_codes_outside_errno_and_uv(void **state)
{
    for (size_t i = 0; i < NCODES; i++) {
        int c = codes[i];
        /* -errno: Linux errno values stay below 4096. */
        assert_false(c >= -4095 && c <= -1);
        /* libuv's UV_EAI_* codes. */
        assert_false(c >= -3014 && c <= -3000);
        assert_true(c >= PGL_ERR_MIN && c <= PGL_ERR_MAX);
    }
}

static void test_codes_have_distinct_names_and_messages(void **state)
{
    for (size_t i = 0; i < NCODES; i++) {
        const char *name = pgl_errname(codes[i]), *msg = pgl_strerror(codes[i]);
        assert_int_equal(strncmp(name, "PGL_E", 5), 0);
        assert_string_not_equal(msg, "unknown error");
        assert_non_null(msg);
        assert_true(strlen(msg) > 0);
        assert_null(strchr(msg, '%'));
        for (size_t j = 0; j < i; j++) {
            assert_int_not_equal(codes[i], codes[j]);
            assert_string_not_equal(name, pgl_errname(codes[j]));
            assert_string_not_equal(msg, pgl_strerror(codes[j]));
        }
    }
    assert_string_equal(pgl_errname(PGL_EFORMAT), "PGL_EFORMAT");
    assert_string_equal(pgl_strerror(PGL_EAUTH), "authentication failed");
}

static void test_errno_values_map(void **state)
{
    static const struct {
        int code;
        const char *name;
    } cases[] = {
        {-ENOMEM, "ENOMEM"}, {-EINVAL, "EINVAL"}, {-EIO, "EIO"},
        {-EAGAIN, "EAGAIN"}, {-EPROTO, "EPROTO"}, {-ENOENT, "ENOENT"},
        {-ENAMETOOLONG, "ENAMETOOLONG"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_string_equal(pgl_errname(cases[i].code), cases[i].name);
        const char *msg = pgl_strerror(cases[i].code);
        assert_string_not_equal(msg, "unknown error");
        /* No errno message is mistaken for a pglease one. */
        for (size_t j = 0; j < NCODES; j++)
            assert_string_not_equal(msg, pgl_strerror(codes[j]));
    }
    assert_string_not_equal(pgl_strerror(-ENOMEM), pgl_strerror(-EINVAL));
}

static void test_zero_and_unknown(void **state)
{
    assert_string_equal(pgl_strerror(0), "success");
    assert_string_equal(pgl_errname(0), "OK");
    static const int unknown[] = {1, ENOMEM, 4242, -4096, -4500, PGL_ERR_MAX, PGL_ERR_MIN,
                                  -6000, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_string_equal(pgl_strerror(unknown[i]), "unknown error");
        assert_string_equal(pgl_errname(unknown[i]), "UNKNOWN");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_outside_errno_and_uv),
        cmocka_unit_test(test_codes_have_distinct_names_and_messages),
        cmocka_unit_test(test_errno_values_map),
        cmocka_unit_test(test_zero_and_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
