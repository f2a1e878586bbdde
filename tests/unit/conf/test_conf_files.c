#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgl_conf_files.h"

static char dir[64];
static char warnings[4][PGL_CONF_ERRLEN + 128];
static int nwarnings;

static void on_warn(void *arg, const char *msg)
{
    (void)arg;
    if (nwarnings < 4)
        snprintf(warnings[nwarnings], sizeof warnings[0], "%s", msg);
    nwarnings++;
}

static char *make_file(const char *name, mode_t mode)
{
    static char paths[8][128];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("secret\n", f);
    fclose(f);
    assert_int_equal(chmod(p, mode), 0);
    return p;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/pgl-conf-files-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

/* An approle configuration naming the given files. */
static pgl_conf approle(char *userlist, char *role_id_file, char *secret_id_file)
{
    pgl_conf c = {.path = "pglease.ini", .auth_file = userlist, .vault_needed = true};
    c.vault.auth_method = PGL_CONF_VAULT_APPROLE;
    c.vault.role_id_file = role_id_file;
    c.vault.secret_id_file = secret_id_file;
    return c;
}

static void test_private_files_pass(void **state)
{
    (void)state;
    pgl_conf c = approle(make_file("users", 0600), make_file("role-id", 0400),
                         make_file("secret-id", 0600));
    char err[PGL_CONF_ERRLEN] = "";
    nwarnings = 0;
    assert_int_equal(pgl_conf_check_files(&c, on_warn, NULL, err, sizeof err), 0);
    assert_int_equal(nwarnings, 0);
}

static void test_missing_file_fails_naming_key(void **state)
{
    (void)state;
    char missing[128];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    pgl_conf c = approle(make_file("users", 0600), make_file("role-id", 0600), missing);
    char err[PGL_CONF_ERRLEN] = "";
    assert_int_equal(pgl_conf_check_files(&c, on_warn, NULL, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "pglease.ini: [vault] secret_id_file: cannot read"));
    assert_non_null(strstr(err, missing));
    /* Without a Vault database, the [vault] files are not needed. */
    c.vault_needed = false;
    assert_int_equal(pgl_conf_check_files(&c, on_warn, NULL, err, sizeof err), 0);
}

static void test_directory_is_not_a_file(void **state)
{
    (void)state;
    pgl_conf c = approle(dir, NULL, NULL);
    char err[PGL_CONF_ERRLEN] = "";
    assert_int_equal(pgl_conf_check_files(&c, NULL, NULL, err, sizeof err), -EISDIR);
    assert_non_null(strstr(err, "[pglease] auth_file"));
}

static void test_loose_secret_warns(void **state)
{
    (void)state;
    pgl_conf c = approle(make_file("users", 0644), make_file("role-id", 0600),
                         make_file("secret-id", 0640));
    char err[PGL_CONF_ERRLEN] = "";
    nwarnings = 0;
    assert_int_equal(pgl_conf_check_files(&c, on_warn, NULL, err, sizeof err), 0);
    assert_int_equal(nwarnings, 2);
    assert_non_null(strstr(warnings[0], "[pglease] auth_file"));
    assert_non_null(strstr(warnings[0], "group- and world-readable (mode 0644)"));
    assert_non_null(strstr(warnings[1], "[vault] secret_id_file"));
    assert_non_null(strstr(warnings[1], "group-readable (mode 0640)"));
}

static void test_public_files_do_not_warn(void **state)
{
    (void)state;
    /* A TLS certificate is public; Kubernetes mounts its token 0644. */
    pgl_conf c = {.path = "pglease.ini", .vault_needed = true,
                  .client_tls_sslmode = PGL_CONF_TLS_REQUIRE};
    c.client_tls_cert_file = make_file("crt", 0644);
    c.client_tls_key_file = make_file("key", 0600);
    c.vault.auth_method = PGL_CONF_VAULT_KUBERNETES;
    c.vault.jwt_file = make_file("jwt", 0644);
    char err[PGL_CONF_ERRLEN] = "";
    nwarnings = 0;
    assert_int_equal(pgl_conf_check_files(&c, on_warn, NULL, err, sizeof err), 0);
    assert_int_equal(nwarnings, 0);
}

static void test_vault_client_key_is_a_secret(void **state)
{
    (void)state;
    /* cert auth: the certificate is public, its key warns when loose and
     * fails the check when missing; a jwt method's token file is read. */
    pgl_conf c = {.path = "pglease.ini", .vault_needed = true};
    c.vault.auth_method = PGL_CONF_VAULT_CERT;
    c.vault.client_cert_file = make_file("vault-crt", 0644);
    c.vault.client_key_file = make_file("vault-key", 0640);
    char err[PGL_CONF_ERRLEN] = "";
    nwarnings = 0;
    assert_int_equal(pgl_conf_check_files(&c, on_warn, NULL, err, sizeof err), 0);
    assert_int_equal(nwarnings, 1);
    assert_non_null(strstr(warnings[0], "[vault] client_key_file"));
    assert_non_null(strstr(warnings[0], "group-readable (mode 0640)"));

    c.vault.client_key_file = "/nonexistent/vault-key";
    assert_int_equal(pgl_conf_check_files(&c, on_warn, NULL, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "[vault] client_key_file: cannot read \"/nonexistent/vault-key\""));

    pgl_conf j = {.path = "pglease.ini", .vault_needed = true};
    j.vault.auth_method = PGL_CONF_VAULT_JWT;
    j.vault.jwt_file = "/nonexistent/jwt";
    assert_int_equal(pgl_conf_check_files(&j, on_warn, NULL, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "[vault] jwt_file: cannot read"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_private_files_pass),
        cmocka_unit_test(test_missing_file_fails_naming_key),
        cmocka_unit_test(test_directory_is_not_a_file),
        cmocka_unit_test(test_loose_secret_warns),
        cmocka_unit_test(test_public_files_do_not_warn),
        cmocka_unit_test(test_vault_client_key_is_a_secret),
    };
    return cmocka_run_group_tests_name("conf_files", tests, setup, teardown);
}
