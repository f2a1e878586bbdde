#include "pgl_conf_conninfo.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

void pgl_conf_conninfo_free(pgl_conf_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        if (kv[i].value != NULL) {
            OPENSSL_cleanse(kv[i].value, strlen(kv[i].value));
            free(kv[i].value);
        }
    }
    free(kv);
}

bool pgl_conf_conninfo_is_libpq_key(const char *key)
{
    PQconninfoOption *opts = PQconndefaults();
    bool found = false;
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++)
        found |= strcmp(o->keyword, key) == 0;
    PQconninfoFree(opts);
    return found;
}

int pgl_conf_conninfo_split(const char *conninfo, pgl_conf_kv **out, size_t *nout, char *why,
                            size_t whylen)
{
    size_t len = strlen(conninfo);
    /* Every value is at most the input's length; one scratch buffer serves all. */
    char *buf = malloc(len + 1);
    pgl_conf_kv *kv = NULL;
    size_t n = 0;
    int rc = -EINVAL;
    if (buf == NULL)
        goto nomem;

    const char *p = conninfo;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            break;
        const char *key = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        size_t klen = (size_t)(p - key);
        while (isspace((unsigned char)*p))
            p++;
        if (*p != '=') {
            snprintf(why, whylen, "missing \"=\" after \"%.*s\" in the connection string",
                     (int)(klen > 64 ? 64 : klen), key);
            goto fail;
        }
        if (klen == 0) {
            snprintf(why, whylen, "empty keyword before \"=\" in the connection string");
            goto fail;
        }
        p++;
        while (isspace((unsigned char)*p))
            p++;
        size_t vlen = 0;
        if (*p == '\'') {
            p++;
            while (*p != '\'') {
                if (*p == '\0') {
                    snprintf(why, whylen, "unterminated quoted value for \"%.*s\"",
                             (int)(klen > 64 ? 64 : klen), key);
                    goto fail;
                }
                if (*p == '\\' && p[1] != '\0')
                    p++;
                buf[vlen++] = *p++;
            }
            p++;
        } else {
            while (*p && !isspace((unsigned char)*p)) {
                if (*p == '\\' && p[1] != '\0')
                    p++;
                buf[vlen++] = *p++;
            }
        }
        pgl_conf_kv *grown = realloc(kv, (n + 1) * sizeof *kv);
        if (grown == NULL)
            goto nomem;
        kv = grown;
        kv[n].key = strndup(key, klen);
        kv[n].value = strndup(buf, vlen);
        n++;
        if (kv[n - 1].key == NULL || kv[n - 1].value == NULL)
            goto nomem;
    }
    OPENSSL_cleanse(buf, len + 1);
    free(buf);
    *out = kv;
    *nout = n;
    return 0;

nomem:
    rc = -ENOMEM;
    snprintf(why, whylen, "out of memory");
fail:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, len + 1);
        free(buf);
    }
    pgl_conf_conninfo_free(kv, n);
    return rc;
}
