/*
 * pgl_secenv — secrets handed to pglease through its environment.
 *
 * unsetenv() only drops a pointer from environ[]: the bytes stay in the
 * block the kernel set up at exec, and /proc/<pid>/environ keeps showing
 * them to anyone allowed to read it. pgl_secenv_take() copies the secrets
 * pglease needs, overwrites their values in that block and removes them
 * from environ[], so neither getenv() nor /proc shows them afterwards.
 *
 * Variables treated as secret:
 *   VAULT_TOKEN              kept: the Vault token for auth_method = token
 *   PGPASSWORD               wiped: libpq's, never used (upstream logins use
 *                            only the configured parameters)
 *   PGLEASE_DATABASES_<db>   wiped when the value contains "password": a
 *                            conninfo override; the configuration snapshot
 *                            has its own copy by then
 *
 * Call once, from the main thread, before any other thread exists and after
 * the configuration has been loaded (it reads the same variables). Not
 * thread-safe; the copy kept is owned here until pgl_secenv_forget().
 */
#ifndef PGL_SECENV_H
#define PGL_SECENV_H

#include <stddef.h>

/*
 * Copies the kept secrets, wipes every secret variable's value in place and
 * removes it from environ[]. Returns the number of variables wiped (>= 0)
 * or -ENOMEM (nothing is wiped then: the caller decides whether to go on).
 */
int pgl_secenv_take(void);

/* The kept value of `name` (only "VAULT_TOKEN" is kept), or NULL when it was
 * not set or has been forgotten. Borrowed: valid until pgl_secenv_forget(). */
const char *pgl_secenv_get(const char *name);

/* Wipes (OPENSSL_cleanse) and frees the kept copy of `name`. NULL: all. */
void pgl_secenv_forget(const char *name);

/*
 * A private copy of what pgl_conf_load() reads from `env`: PGLEASE_*
 * overrides and the VAULT_ADDR / VAULT_NAMESPACE / VAULT_CACERT fallbacks,
 * so a reload sees the overrides the process started with after
 * pgl_secenv_take() wiped the secret ones. VAULT_TOKEN is recorded as set
 * with an empty value (its value is pgl_secenv_get's). NULL-terminated;
 * NULL when out of memory. Free with pgl_secenv_conf_env_free (wipes).
 */
char **pgl_secenv_conf_env(char *const *env);
void pgl_secenv_conf_env_free(char **copy);

#endif
