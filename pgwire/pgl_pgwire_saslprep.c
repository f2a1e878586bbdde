#include "pgl_pgwire_saslprep.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/types.h>

#include <openssl/crypto.h>
#include <stringprep.h>

#define PROFILE_MAX 64 /* libidn's SASLprep profile has about 20 steps */

static bool is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s & 0x80)
            return false;
    return true;
}

/* Strict UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF), as Postgres's pg_utf8_islegal: decode `s` into `out` (room
 * for strlen(s) code points). Returns the count, or -EILSEQ. */
static ssize_t utf8_decode(const char *s, uint32_t *out)
{
    const unsigned char *p = (const unsigned char *)s;
    ssize_t n = 0;
    while (*p) {
        uint32_t c = *p, min;
        int more;
        if (c < 0x80) {
            more = 0;
            min = 0;
        } else if ((c & 0xe0) == 0xc0) {
            more = 1;
            min = 0x80;
            c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2;
            min = 0x800;
            c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3;
            min = 0x10000;
            c &= 0x07;
        } else {
            return -EILSEQ;
        }
        p++;
        for (int i = 0; i < more; i++, p++) {
            if ((*p & 0xc0) != 0x80) /* also stops at the NUL */
                return -EILSEQ;
            c = (c << 6) | (*p & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return -EILSEQ;
        out[n++] = c;
    }
    return n;
}

static int stringprep_err(int rc)
{
    switch (rc) {
    case STRINGPREP_CONTAINS_UNASSIGNED:
    case STRINGPREP_CONTAINS_PROHIBITED:
    case STRINGPREP_BIDI_BOTH_L_AND_RAL:
    case STRINGPREP_BIDI_LEADTRAIL_NOT_RAL:
    case STRINGPREP_BIDI_CONTAINS_PROHIBITED:
        return -EINVAL;
    case STRINGPREP_MALLOC_ERROR:
        return -ENOMEM;
    default: /* profile or buffer trouble: a library fault, not the password's */
        return -EPROTO;
    }
}

static void wipe_ucs4(uint32_t *s, size_t n)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, n * sizeof *s);
        free(s);
    }
}

static size_t ucs4_len(const uint32_t *s)
{
    size_t n = 0;
    while (s[n] != 0)
        n++;
    return n;
}

int pgl_pgwire_saslprep(const char *password, char **out)
{
    *out = NULL;
    if (is_ascii(password)) {
        *out = strdup(password);
        return *out != NULL ? 0 : -ENOMEM;
    }

    /* Map and check with libidn's SASLprep profile minus its NFKC step:
     * Postgres checks the mapped string, then normalises. */
    Stringprep_profile profile[PROFILE_MAX];
    size_t steps = 0;
    for (const Stringprep_profile *st = stringprep_saslprep; st->operation != 0; st++) {
        if (st->operation == STRINGPREP_NFKC)
            continue;
        if (steps == PROFILE_MAX - 1)
            return -EPROTO;
        profile[steps++] = *st;
    }
    memset(&profile[steps], 0, sizeof profile[steps]);

    size_t cap = strlen(password);
    uint32_t *ucs4 = malloc((cap + 1) * sizeof *ucs4), *nfkc = NULL;
    char *utf8 = NULL;
    int rc = 0;
    if (ucs4 == NULL)
        return -ENOMEM;
    ssize_t n = utf8_decode(password, ucs4);
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    size_t len = (size_t)n;
    /* Mapping only removes or replaces one for one: it fits in place. */
    int src = stringprep_4i(ucs4, &len, cap, STRINGPREP_NO_UNASSIGNED, profile);
    if (src != STRINGPREP_OK) {
        rc = stringprep_err(src);
        goto out;
    }
    if (len == 0) { /* only characters mapped to nothing: Postgres refuses it */
        rc = -EINVAL;
        goto out;
    }
    nfkc = stringprep_ucs4_nfkc_normalize(ucs4, (ssize_t)len);
    if (nfkc == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    size_t written = 0;
    utf8 = stringprep_ucs4_to_utf8(nfkc, -1, NULL, &written);
    if (utf8 == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    *out = utf8;
out:
    wipe_ucs4(ucs4, cap + 1);
    if (nfkc != NULL)
        wipe_ucs4(nfkc, ucs4_len(nfkc) + 1);
    return rc;
}

void pgl_pgwire_saslprep_free(char *prepared)
{
    if (prepared != NULL) {
        OPENSSL_cleanse(prepared, strlen(prepared));
        free(prepared);
    }
}
