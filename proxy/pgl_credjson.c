/*
 * Credential JSON (pgl_credjson.h).
 */
#define _XOPEN_SOURCE 700 /* strptime */
#include "pgl_credjson.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

static void wipe_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void pgl_credjson_clear(pgl_credjson *c)
{
    wipe_free(c->username);
    wipe_free(c->password);
    c->username = c->password = NULL;
}

/* "2026-12-03T10:00:00Z", with optional fraction and a Z or ±hh:mm zone:
 * seconds since the epoch, or -1. */
static long long parse_rfc3339(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (p == NULL)
        return -1;
    if (*p == '.')
        while (*++p >= '0' && *p <= '9')
            ;
    long long t = (long long)timegm(&tm);
    if (*p == 'Z' && p[1] == '\0')
        return t;
    int hh, mm;
    if ((*p == '+' || *p == '-') && strlen(p) == 6 && sscanf(p + 1, "%2d:%2d", &hh, &mm) == 2)
        return *p == '+' ? t - (hh * 3600 + mm * 60) : t + (hh * 3600 + mm * 60);
    return -1;
}

int pgl_credjson_parse(const char *buf, size_t len, time_t written, const char *what,
                       pgl_credjson *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, 0, &jerr);
    if (root == NULL) {
        /* jerr.text may quote the content: say only where it broke. */
        snprintf(why, whylen, "%s is not valid JSON (line %d, column %d)", what, jerr.line,
                 jerr.column);
        return -1;
    }
    const json_t *from = root;
    if (json_is_object(json_object_get(root, "data")))
        from = json_object_get(root, "data"); /* a Vault secret rendered whole */
    const char *user = json_string_value(json_object_get(from, "username"));
    const char *pass = json_string_value(json_object_get(from, "password"));
    int rc = 0;
    if (user == NULL || pass == NULL || *user == '\0') {
        snprintf(why, whylen, "%s has no \"username\" and \"password\" strings", what);
        rc = -1;
    }
    const char *exp = json_string_value(json_object_get(root, "expires_at"));
    json_int_t lease = json_integer_value(json_object_get(root, "lease_duration"));
    long long left = 0;
    if (rc == 0 && exp != NULL) {
        long long end = parse_rfc3339(exp);
        if (end < 0) {
            snprintf(why, whylen, "%s: expires_at \"%.40s\" is not an RFC 3339 time", what, exp);
            rc = -1;
        }
        left = end - (long long)time(NULL);
    } else if (rc == 0 && lease > 0) {
        left = (long long)written + lease - (long long)time(NULL);
    }
    if (rc == 0 && (exp != NULL || lease > 0) && left <= 0) {
        snprintf(why, whylen, "the credential in %s has expired", what);
        rc = -1;
    }
    out->duration_s = (long)left;
    if (rc == 0 &&
        ((out->username = strdup(user)) == NULL || (out->password = strdup(pass)) == NULL)) {
        snprintf(why, whylen, "out of memory");
        rc = -1;
    }
    if (rc != 0)
        pgl_credjson_clear(out);
    /* jansson frees its strings without wiping: the password was one. */
    if (pass != NULL)
        OPENSSL_cleanse((char *)(uintptr_t)pass, strlen(pass));
    json_decref(root);
    return rc;
}
