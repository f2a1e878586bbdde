/*
 * SASLprep of plaintext passwords (pgl_pgwire_saslprep) and the SCRAM
 * secrets derived from them: mapped, normalised and ASCII passwords give
 * the secret of their prepared form; invalid UTF-8 and passwords SASLprep
 * refuses give the secret of their raw bytes, as Postgres's pg_saslprep
 * and libpq do (tests/integration/test_saslprep.py checks the same
 * passwords against a real Postgres).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pgl_pgwire_saslprep.h"
#include "pgl_pgwire_scram.h"
#include "scram_client.h"

static const uint8_t salt[16] = "0123456789abcdef";
static const uint8_t mock_key[32] = {7};

static void secret_of(const char *password, char out[PGL_PGWIRE_SCRAM_SECRET_MAX])
{
    assert_int_equal(pgl_pgwire_scram_secret_make_salted(password, salt, sizeof salt, 4096, out,
                                                         PGL_PGWIRE_SCRAM_SECRET_MAX),
                     0);
}

/* A full exchange with the test client, which sends `password`'s bytes as
 * they are: 0 when the secret accepts them. */
static int login(const char *secret, const char *password)
{
    pgl_pgwire_scram_server *s;
    assert_int_equal(pgl_pgwire_scram_server_new(secret, "u", mock_key, NULL, 0, &s), 0);
    scram_client c;
    char first[512], final[1024];
    uint8_t reply[PGL_PGWIRE_SCRAM_MSG_MAX];
    size_t rlen;
    int n = scram_client_first(&c, "n,,", "clientnonce0123456789", first, sizeof first);
    int rc = pgl_pgwire_scram_server_first(s, "SCRAM-SHA-256", (const uint8_t *)first,
                                           (size_t)n, reply, sizeof reply, &rlen);
    assert_int_equal(rc, 0);
    reply[rlen] = '\0';
    n = scram_client_final(&c, password, (const char *)reply, NULL, 0, final, sizeof final);
    assert_true(n > 0);
    rc = pgl_pgwire_scram_server_final(s, (const uint8_t *)final, (size_t)n, reply, sizeof reply,
                                       &rlen);
    pgl_pgwire_scram_server_free(s);
    return rc;
}

static void expect_prep(const char *in, const char *want)
{
    char *out = NULL;
    assert_int_equal(pgl_pgwire_saslprep(in, &out), 0);
    assert_non_null(out);
    assert_string_equal(out, want);
    pgl_pgwire_saslprep_free(out);
}

static void expect_refused(const char *in, int want)
{
    char *out = (char *)1;
    assert_int_equal(pgl_pgwire_saslprep(in, &out), want);
    assert_null(out);
}

static void test_saslprep_maps(void **state)
{
    (void)state;
    expect_prep("I\xc2\xadX", "IX");                  /* U+00AD soft hyphen: nothing */
    expect_prep("\xe2\x85\xa8", "IX");                /* U+2168 ROMAN NUMERAL NINE: NFKC */
    expect_prep("a\xc2\xa0" "b", "a b");              /* U+00A0 NBSP: space */
    expect_prep("a\xe3\x80\x80" "b", "a b");          /* U+3000 ideographic space */
    expect_prep("e\xcc\x81", "\xc3\xa9");             /* e + U+0301: composed */
    expect_prep("\xef\xbc\xa1" "1", "A1");            /* U+FF21 fullwidth A */
    expect_prep("\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9"); /* already prepared */
    expect_prep("\xd7\x90\xd7\x91", "\xd7\x90\xd7\x91");   /* all right-to-left */
    /* ASCII is used unchanged, control characters included (Postgres
     * skips SASLprep for pure ASCII). */
    expect_prep("pencil", "pencil");
    expect_prep("a\x07" "b", "a\x07" "b");
    expect_prep("", "");
}

static void test_saslprep_refuses(void **state)
{
    (void)state;
    expect_refused("a\xff", -EILSEQ);                  /* not UTF-8 */
    expect_refused("a\xc3", -EILSEQ);                  /* truncated sequence */
    expect_refused("\xc0\xaf", -EILSEQ);               /* overlong '/' */
    expect_refused("\xed\xa0\x80", -EILSEQ);           /* surrogate U+D800 */
    expect_refused("\xf4\x90\x80\x80", -EILSEQ);       /* past U+10FFFF */
    expect_refused("\xc2\xad", -EINVAL);               /* empty once mapped */
    expect_refused("\xc3\xa9\x07", -EINVAL);           /* U+0007 (C.2.1) */
    expect_refused("\xc3\xa9\xc2\x80", -EINVAL);       /* U+0080 (C.2.2) */
    expect_refused("\xee\x80\x80", -EINVAL);           /* U+E000 private use (C.3) */
    expect_refused("I\xc2\xadX\xc8\xa1", -EINVAL);     /* U+0221: unassigned in 3.2 */
    expect_refused("\xd7\x90" "a", -EINVAL);           /* RandAL with L */
    expect_refused("\xd7\x90" "1", -EINVAL);           /* RandAL not last */
    /* U+0340 (C.8) is checked before NFKC turns it into U+0300, as
     * Postgres does: refused, so the raw bytes are used. */
    expect_refused("a\xcd\x80", -EINVAL);
}

static void test_secret_prepared(void **state)
{
    (void)state;
    char ix[PGL_PGWIRE_SCRAM_SECRET_MAX], got[PGL_PGWIRE_SCRAM_SECRET_MAX];
    secret_of("IX", ix);
    secret_of("I\xc2\xadX", got);
    assert_string_equal(got, ix);
    secret_of("\xe2\x85\xa8", got);
    assert_string_equal(got, ix);
    /* The client sends the prepared form (libpq does SASLprep too). */
    assert_int_equal(login(got, "IX"), 0);
    assert_int_equal(login(got, "\xe2\x85\xa8"), PGL_EAUTH);

    char sp[PGL_PGWIRE_SCRAM_SECRET_MAX];
    secret_of("a b", sp);
    secret_of("a\xc2\xa0" "b", got);
    assert_string_equal(got, sp);

    /* ASCII unchanged: the secret differs from its neighbours and the
     * password itself logs in. */
    secret_of("pencil", got);
    assert_int_equal(login(got, "pencil"), 0);
    assert_string_not_equal(got, ix);

    /* Random salt path too. */
    assert_int_equal(pgl_pgwire_scram_secret_make("I\xc2\xadX", got, sizeof got), 0);
    assert_int_equal(login(got, "IX"), 0);
}

static void test_secret_raw(void **state)
{
    (void)state;
    /* Passwords SASLprep refuses give the secret of their raw bytes. */
    static const char *raw[] = {
        "a\xff",                  /* not UTF-8 */
        "\xc3\xa9\x07",           /* prohibited U+0007 */
        "I\xc2\xadX\xc8\xa1",     /* unassigned U+0221: the soft hyphen stays */
        "a\xcd\x80",              /* prohibited U+0340, not its NFKC U+0300 */
        "\xd7\x90" "a",           /* bidi */
        "\xc2\xad",               /* empty once mapped */
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        char got[PGL_PGWIRE_SCRAM_SECRET_MAX];
        secret_of(raw[i], got);
        if (login(got, raw[i]) != 0)
            fail_msg("password %zu: raw bytes refused", i);
    }
    char got[PGL_PGWIRE_SCRAM_SECRET_MAX];
    secret_of("I\xc2\xadX\xc8\xa1", got);
    assert_int_equal(login(got, "IX\xc8\xa1"), PGL_EAUTH);
    secret_of("a\xcd\x80", got);
    assert_int_equal(login(got, "\xc3\xa0"), PGL_EAUTH);
    secret_of("\xc2\xad", got);
    assert_int_equal(login(got, ""), PGL_EAUTH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_saslprep_maps),
        cmocka_unit_test(test_saslprep_refuses),
        cmocka_unit_test(test_secret_prepared),
        cmocka_unit_test(test_secret_raw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
