#include "pgl_userlist.h"

#include "pgl_pgwire_scram.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

struct pgl_userlist {
    pgl_user *users; /* sorted by name for bsearch */
    size_t n;
};

static void free_secret(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/*
 * Reads one "quoted" field at *p (a doubled quote stands for one quote) into
 * a new string. Returns NULL with *p unchanged when there is none.
 */
static char *read_field(const char **p)
{
    const char *s = *p;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s != '"')
        return NULL;
    s++;
    size_t cap = strlen(s) + 1, n = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    for (;;) {
        if (*s == '\0' || *s == '\n') {
            OPENSSL_cleanse(out, cap);
            free(out);
            return NULL;
        }
        if (*s == '"') {
            if (s[1] != '"')
                break;
            s++;
        }
        out[n++] = *s++;
    }
    out[n] = '\0';
    *p = s + 1;
    return out;
}

static int cmp_user(const void *a, const void *b)
{
    return strcmp(((const pgl_user *)a)->name, ((const pgl_user *)b)->name);
}

static pgl_secret_kind classify(const char *secret)
{
    if (strncmp(secret, "SCRAM-SHA-256$", 14) == 0)
        return PGL_SECRET_SCRAM;
    if (strlen(secret) == 35 && strncmp(secret, "md5", 3) == 0) {
        for (int i = 3; i < 35; i++)
            if (!isxdigit((unsigned char)secret[i]))
                return PGL_SECRET_PLAIN;
        return PGL_SECRET_MD5;
    }
    return PGL_SECRET_PLAIN;
}

int pgl_userlist_load(const char *path, int derive_scram, pgl_userlist **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -errno;
    }
    pgl_userlist *ul = calloc(1, sizeof *ul);
    char *line = NULL;
    size_t linecap = 0;
    int lineno = 0, rc = 0;
    if (ul == NULL) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    while (getline(&line, &linecap, fp) >= 0) {
        lineno++;
        const char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '\n' || *p == '\r' || *p == ';' || *p == '#')
            continue;
        char *name = read_field(&p);
        char *secret = name ? read_field(&p) : NULL;
        if (name == NULL || secret == NULL || *name == '\0') {
            free(name);
            free_secret(secret);
            snprintf(err, errlen, "%s:%d: expected \"user\" \"secret\"", path, lineno);
            rc = -EINVAL;
            goto done;
        }
        pgl_user u = {.name = name, .kind = classify(secret), .secret = secret};
        if (u.kind == PGL_SECRET_SCRAM) {
            /* Refuse a malformed secret now rather than at every login. */
            pgl_pgwire_scram_secret parsed;
            if (pgl_pgwire_scram_secret_parse(secret, &parsed) != 0) {
                snprintf(err, errlen, "%s:%d: user \"%s\": malformed SCRAM-SHA-256 secret", path,
                         lineno, name);
                rc = -EINVAL;
            }
            pgl_pgwire_scram_secret_wipe(&parsed);
            u.scram_secret = rc == 0 ? strdup(secret) : NULL;
        } else if (u.kind == PGL_SECRET_PLAIN && derive_scram) {
            char buf[PGL_PGWIRE_SCRAM_SECRET_MAX];
            if (pgl_pgwire_scram_secret_make(secret, buf, sizeof buf) != 0) {
                snprintf(err, errlen, "%s:%d: user \"%s\": cannot derive a SCRAM secret", path,
                         lineno, name);
                rc = -EINVAL;
            } else {
                u.scram_secret = strdup(buf);
            }
            OPENSSL_cleanse(buf, sizeof buf);
        }
        if (rc == 0 && u.kind != PGL_SECRET_MD5 && u.scram_secret == NULL &&
            (u.kind == PGL_SECRET_SCRAM || derive_scram)) {
            rc = -ENOMEM;
            snprintf(err, errlen, "out of memory");
        }
        pgl_user *grown = rc == 0 ? realloc(ul->users, (ul->n + 1) * sizeof *grown) : NULL;
        if (grown == NULL) {
            if (rc == 0) {
                rc = -ENOMEM;
                snprintf(err, errlen, "out of memory");
            }
            free(u.name);
            free_secret(u.secret);
            free_secret(u.scram_secret);
            goto done;
        }
        ul->users = grown;
        ul->users[ul->n++] = u;
    }
    if (ferror(fp)) {
        rc = -EIO;
        snprintf(err, errlen, "%s: read error", path);
        goto done;
    }
    qsort(ul->users, ul->n, sizeof *ul->users, cmp_user);
    for (size_t i = 1; i < ul->n; i++) {
        if (strcmp(ul->users[i - 1].name, ul->users[i].name) == 0) {
            snprintf(err, errlen, "%s: user \"%s\" is listed twice", path, ul->users[i].name);
            rc = -EINVAL;
            goto done;
        }
    }

done:
    if (line != NULL) {
        OPENSSL_cleanse(line, linecap);
        free(line);
    }
    fclose(fp);
    if (rc != 0) {
        pgl_userlist_free(ul);
        return rc;
    }
    *out = ul;
    return 0;
}

void pgl_userlist_free(pgl_userlist *ul)
{
    if (ul == NULL)
        return;
    for (size_t i = 0; i < ul->n; i++) {
        free(ul->users[i].name);
        free_secret(ul->users[i].secret);
        free_secret(ul->users[i].scram_secret);
    }
    free(ul->users);
    free(ul);
}

const pgl_user *pgl_userlist_find(const pgl_userlist *ul, const char *name)
{
    pgl_user key = {.name = (char *)(uintptr_t)name};
    return bsearch(&key, ul->users, ul->n, sizeof *ul->users, cmp_user);
}

size_t pgl_userlist_count(const pgl_userlist *ul)
{
    return ul->n;
}

const pgl_user *pgl_userlist_at(const pgl_userlist *ul, size_t i)
{
    return ul != NULL && i < ul->n ? &ul->users[i] : NULL;
}
