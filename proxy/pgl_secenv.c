/*
 * Secrets in the process environment: copy, wipe in place, forget.
 */
#include "pgl_secenv.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

extern char **environ;

/* Variables whose value pglease needs after the wipe. */
static const char *const kept_names[] = {"VAULT_TOKEN"};
#define NKEPT (sizeof kept_names / sizeof kept_names[0])

static char *kept[NKEPT];

static bool is_secret(const char *entry, size_t namelen)
{
    static const char *const names[] = {"VAULT_TOKEN", "PGPASSWORD"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == namelen && strncmp(entry, names[i], namelen) == 0)
            return true;
    /* A conninfo override may carry password=...; [databases] overrides are
     * read once, by pgl_conf_load(), before this runs. */
    return strncmp(entry, "PGLEASE_", 8) == 0 && strncasecmp(entry + 8, "DATABASES_", 10) == 0 &&
           strstr(entry + namelen + 1, "password") != NULL;
}

int pgl_secenv_take(void)
{
    /* Copy first: a failed allocation must not lose a secret we need. */
    for (size_t i = 0; i < NKEPT; i++) {
        const char *v = getenv(kept_names[i]);
        if (v == NULL || kept[i] != NULL)
            continue;
        if ((kept[i] = strdup(v)) == NULL) {
            pgl_secenv_forget(NULL);
            return -ENOMEM;
        }
    }
    int wiped = 0;
    /* Remove by compacting environ[] ourselves rather than unsetenv(): the
     * entry's name is about to be the only trace left, and unsetenv would
     * need a copy of it. The array is the one the kernel's block points
     * from at exec (or libc's copy after a setenv); either way the strings
     * are what /proc/<pid>/environ or getenv() would show. */
    char **out = environ;
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        char *eq = strchr(*e, '=');
        if (eq == NULL || !is_secret(*e, (size_t)(eq - *e))) {
            *out++ = *e;
            continue;
        }
        size_t vlen = strlen(eq + 1);
        OPENSSL_cleanse(eq + 1, vlen);
        wiped++;
    }
    if (out != NULL)
        *out = NULL;
    return wiped;
}

const char *pgl_secenv_get(const char *name)
{
    for (size_t i = 0; i < NKEPT; i++)
        if (strcmp(kept_names[i], name) == 0)
            return kept[i];
    return NULL;
}

void pgl_secenv_forget(const char *name)
{
    for (size_t i = 0; i < NKEPT; i++) {
        if (kept[i] == NULL || (name != NULL && strcmp(kept_names[i], name) != 0))
            continue;
        OPENSSL_cleanse(kept[i], strlen(kept[i]));
        free(kept[i]);
        kept[i] = NULL;
    }
}

/* ---- the environment a reload reads --------------------------------------------------- */

static bool conf_reads(const char *entry)
{
    static const char *const fallbacks[] = {"VAULT_ADDR=", "VAULT_NAMESPACE=", "VAULT_CACERT="};
    if (strncmp(entry, "PGLEASE_", 8) == 0)
        return true;
    for (size_t i = 0; i < sizeof fallbacks / sizeof fallbacks[0]; i++)
        if (strncmp(entry, fallbacks[i], strlen(fallbacks[i])) == 0)
            return true;
    return false;
}

char **pgl_secenv_conf_env(char *const *env)
{
    size_t n = 0;
    for (char *const *e = env; e != NULL && *e != NULL; e++)
        n++;
    char **copy = calloc(n + 2, sizeof *copy);
    if (copy == NULL)
        return NULL;
    size_t k = 0;
    for (char *const *e = env; e != NULL && *e != NULL; e++) {
        const char *entry = conf_reads(*e) ? *e
                            : strncmp(*e, "VAULT_TOKEN=", 12) == 0 ? "VAULT_TOKEN="
                                                                   : NULL;
        if (entry != NULL && (copy[k++] = strdup(entry)) == NULL) {
            pgl_secenv_conf_env_free(copy);
            return NULL;
        }
    }
    return copy;
}

void pgl_secenv_conf_env_free(char **copy)
{
    if (copy == NULL)
        return;
    for (char **e = copy; *e != NULL; e++) {
        OPENSSL_cleanse(*e, strlen(*e));
        free(*e);
    }
    free(copy);
}
