#include "pgl_pgwire_scram.h"
#include "pgl_pgwire_saslprep.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define SCRAM_PREFIX "SCRAM-SHA-256$"
#define MECH "SCRAM-SHA-256"
#define MECH_PLUS "SCRAM-SHA-256-PLUS"
#define CB_TYPE "tls-server-end-point"
#define RAW_NONCE_LEN 18 /* as Postgres: 24 base64 characters */
#define NONCE_MAX 512

typedef enum {
    SCRAM_WANT_FIRST,
    SCRAM_WANT_FINAL,
    SCRAM_FINISHED, /* succeeded, failed, or abandoned after an error */
} scram_state;

struct pgl_pgwire_scram_server {
    scram_state state;
    bool doomed; /* unknown user: run the exchange, fail at the end */
    pgl_pgwire_scram_secret secret;
    uint8_t cb[PGL_PGWIRE_SCRAM_CB_MAX];
    size_t cb_len;
    bool cb_used; /* client chose 'p' */
    char gs2[64 + sizeof CB_TYPE];
    size_t gs2_len;
    char fixed_nonce[NONCE_MAX];
    char nonce[2 * NONCE_MAX]; /* client nonce + server nonce */
    size_t nonce_len;
    char client_first_bare[PGL_PGWIRE_SCRAM_MSG_MAX];
    size_t cfb_len;
    char server_first[PGL_PGWIRE_SCRAM_MSG_MAX];
    size_t sf_len;
};

/* ---- base64 (OpenSSL's codec, with the strictness SCRAM needs) ---- */

static size_t b64_encode(const uint8_t *in, size_t len, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

static bool b64_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

/* Decode exactly `len` characters; only canonical padded base64 is
 * accepted (EVP_DecodeBlock alone would skip whitespace and keep padding). */
static int b64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    if (len == 0 || len % 4 != 0 || len > INT_MAX)
        return PGL_EFORMAT;
    size_t pad = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '=') {
            if (i < len - 2)
                return PGL_EFORMAT;
            pad++;
        } else if (!b64_char(in[i]) || pad > 0) {
            return PGL_EFORMAT;
        }
    }
    size_t n = len / 4 * 3;
    if (n > cap + pad)
        return PGL_EFORMAT;
    uint8_t tmp[PGL_PGWIRE_SCRAM_MSG_MAX];
    if (n > sizeof tmp)
        return PGL_EFORMAT;
    if (EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len) != (int)n)
        return PGL_EFORMAT;
    memcpy(out, tmp, n - pad);
    OPENSSL_cleanse(tmp, n);
    *out_len = n - pad;
    return 0;
}

/* ---- key derivation ---- */

static int hmac(const uint8_t *key, size_t klen, const void *data, size_t len,
                uint8_t out[PGL_PGWIRE_SCRAM_KEY_LEN])
{
    unsigned int olen = 0;
    if (HMAC(EVP_sha256(), key, (int)klen, data, len, out, &olen) == NULL ||
        olen != PGL_PGWIRE_SCRAM_KEY_LEN)
        return PGL_ECRYPTO;
    return 0;
}

static int derive(const char *password, const uint8_t *salt, size_t salt_len, uint32_t iterations,
                  pgl_pgwire_scram_secret *s)
{
    uint8_t salted[PGL_PGWIRE_SCRAM_KEY_LEN], client_key[PGL_PGWIRE_SCRAM_KEY_LEN];
    int rc = PGL_ECRYPTO;
    if (salt_len == 0 || salt_len > sizeof s->salt || iterations == 0 || iterations > INT_MAX)
        return -EINVAL;
    if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, (int)iterations,
                          EVP_sha256(), sizeof salted, salted) != 1)
        goto out;
    if (hmac(salted, sizeof salted, "Client Key", 10, client_key) != 0 ||
        hmac(salted, sizeof salted, "Server Key", 10, s->server_key) != 0)
        goto out;
    if (SHA256(client_key, sizeof client_key, s->stored_key) == NULL)
        goto out;
    memcpy(s->salt, salt, salt_len);
    s->salt_len = salt_len;
    s->iterations = iterations;
    rc = 0;
out:
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return rc;
}

static int format_secret(const pgl_pgwire_scram_secret *s, char *out, size_t cap)
{
    char salt[PGL_PGWIRE_SCRAM_SALT_MAX * 2], stored[64], server[64];
    b64_encode(s->salt, s->salt_len, salt);
    b64_encode(s->stored_key, sizeof s->stored_key, stored);
    b64_encode(s->server_key, sizeof s->server_key, server);
    int n = snprintf(out, cap, SCRAM_PREFIX "%u:%s$%s:%s", s->iterations, salt, stored, server);
    OPENSSL_cleanse(stored, sizeof stored);
    OPENSSL_cleanse(server, sizeof server);
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            OPENSSL_cleanse(out, cap);
        return PGL_ESPACE;
    }
    return 0;
}

int pgl_pgwire_scram_secret_make_salted(const char *password, const uint8_t *salt,
                                        size_t salt_len, uint32_t iterations, char *out,
                                        size_t cap)
{
    /* As Postgres: derive from the SASLprep form, or from the raw bytes
     * when the password is not valid UTF-8 or SASLprep refuses it. */
    char *prepared = NULL;
    int rc = pgl_pgwire_saslprep(password, &prepared);
    if (rc != 0 && rc != -EILSEQ && rc != -EINVAL)
        return rc;
    pgl_pgwire_scram_secret s;
    rc = derive(prepared != NULL ? prepared : password, salt, salt_len, iterations, &s);
    pgl_pgwire_saslprep_free(prepared);
    if (rc == 0)
        rc = format_secret(&s, out, cap);
    pgl_pgwire_scram_secret_wipe(&s);
    return rc;
}

int pgl_pgwire_scram_secret_make(const char *password, char *out, size_t cap)
{
    uint8_t salt[PGL_PGWIRE_SCRAM_SALT_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1)
        return PGL_ECRYPTO;
    return pgl_pgwire_scram_secret_make_salted(password, salt, sizeof salt,
                                               PGL_PGWIRE_SCRAM_ITERATIONS, out, cap);
}

/* Decode the base64 field text[0..len) that must yield exactly `want` bytes
 * (or 1..want when `at_most`). */
static int field(const char *text, size_t len, uint8_t *out, size_t want, bool at_most,
                 size_t *got)
{
    size_t n = 0;
    if (b64_decode(text, len, out, want, &n) != 0 || n == 0 || (at_most ? n > want : n != want))
        return PGL_ESECRET;
    if (got)
        *got = n;
    return 0;
}

int pgl_pgwire_scram_secret_parse(const char *text, pgl_pgwire_scram_secret *out)
{
    memset(out, 0, sizeof *out);
    if (strncmp(text, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) != 0)
        return PGL_ESECRET;
    const char *p = text + strlen(SCRAM_PREFIX);
    /* <iterations>:<salt>$<stored>:<server> */
    const char *colon1 = strchr(p, ':');
    const char *dollar = colon1 ? strchr(colon1, '$') : NULL;
    const char *colon2 = dollar ? strchr(dollar, ':') : NULL;
    if (colon2 == NULL || strchr(colon2 + 1, ':') || strchr(colon2 + 1, '$'))
        return PGL_ESECRET;
    unsigned long iter = 0;
    for (const char *d = p; d < colon1; d++) {
        if (*d < '0' || *d > '9' || iter > INT_MAX / 10)
            return PGL_ESECRET;
        iter = iter * 10 + (unsigned long)(*d - '0');
    }
    if (colon1 == p || iter == 0 || iter > INT_MAX)
        return PGL_ESECRET;
    out->iterations = (uint32_t)iter;
    int rc = field(colon1 + 1, (size_t)(dollar - colon1 - 1), out->salt, sizeof out->salt, true,
                   &out->salt_len);
    if (rc == 0)
        rc = field(dollar + 1, (size_t)(colon2 - dollar - 1), out->stored_key,
                   sizeof out->stored_key, false, NULL);
    if (rc == 0)
        rc = field(colon2 + 1, strlen(colon2 + 1), out->server_key, sizeof out->server_key, false,
                   NULL);
    if (rc != 0)
        pgl_pgwire_scram_secret_wipe(out);
    return rc;
}

void pgl_pgwire_scram_secret_wipe(pgl_pgwire_scram_secret *s)
{
    OPENSSL_cleanse(s, sizeof *s);
}

/* ---- the exchange ---- */

int pgl_pgwire_scram_server_new(const char *secret, const char *user,
                                const uint8_t mock_key[PGL_PGWIRE_SCRAM_KEY_LEN],
                                const uint8_t *cb, size_t cb_len,
                                pgl_pgwire_scram_server **out)
{
    *out = NULL;
    if (cb_len > PGL_PGWIRE_SCRAM_CB_MAX || (cb_len > 0 && cb == NULL))
        return -EINVAL;
    pgl_pgwire_scram_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    s->state = SCRAM_WANT_FIRST;
    if (cb_len > 0)
        memcpy(s->cb, cb, cb_len);
    s->cb_len = cb_len;
    if (secret == NULL || pgl_pgwire_scram_secret_parse(secret, &s->secret) != 0) {
        /* Mock: a salt that is stable per user, so probing twice does not
         * reveal that the user is unknown. Keys stay zero; the proof can
         * never verify because `doomed` is checked regardless. */
        uint8_t salt[PGL_PGWIRE_SCRAM_KEY_LEN];
        int rc = hmac(mock_key, PGL_PGWIRE_SCRAM_KEY_LEN, user, strlen(user), salt);
        if (rc != 0) {
            free(s);
            return rc;
        }
        memset(&s->secret, 0, sizeof s->secret);
        memcpy(s->secret.salt, salt, PGL_PGWIRE_SCRAM_SALT_LEN);
        s->secret.salt_len = PGL_PGWIRE_SCRAM_SALT_LEN;
        s->secret.iterations = PGL_PGWIRE_SCRAM_ITERATIONS;
        s->doomed = true;
    }
    *out = s;
    return 0;
}

int pgl_pgwire_scram_server_set_nonce(pgl_pgwire_scram_server *s, const char *nonce)
{
    size_t n = strlen(nonce);
    if (s->state != SCRAM_WANT_FIRST || n == 0 || n >= sizeof s->fixed_nonce ||
        strchr(nonce, ','))
        return -EINVAL;
    memcpy(s->fixed_nonce, nonce, n + 1);
    return 0;
}

void pgl_pgwire_scram_server_free(pgl_pgwire_scram_server *s)
{
    if (s == NULL)
        return;
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
}

/* RFC 5802 "printable": %x21-2B / %x2D-7E (no comma). */
static bool printable(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
            return false;
    return n > 0;
}

/* Length of the attribute value starting at p (up to ',' or end). */
static size_t value_len(const char *p, const char *end)
{
    const char *c = memchr(p, ',', (size_t)(end - p));
    return (size_t)((c ? c : end) - p);
}

static int fail(pgl_pgwire_scram_server *s, int rc)
{
    s->state = SCRAM_FINISHED;
    return rc;
}

static int parse_gs2(pgl_pgwire_scram_server *s, bool plus, const char *p, const char *end,
                     const char **bare)
{
    const char *q = p;
    if (q >= end)
        return PGL_EFORMAT;
    switch (*q) {
    case 'p': {
        q++;
        if (q >= end || *q != '=')
            return PGL_EFORMAT;
        q++;
        size_t n = value_len(q, end);
        if (s->cb_len == 0 || !plus)
            /* Client insists on channel binding we did not offer, or binds
             * while having picked the mechanism without it. */
            return PGL_ECBIND;
        if (n != strlen(CB_TYPE) || memcmp(q, CB_TYPE, n) != 0)
            return PGL_ECBIND;
        q += n;
        s->cb_used = true;
        break;
    }
    case 'y':
        /* "I could bind but think you cannot": we offered -PLUS, so a 'y'
         * means someone stripped it on the way (downgrade). */
        if (s->cb_len > 0)
            return PGL_ECBIND;
        /* fall through */
    case 'n':
        if (plus)
            return PGL_ECBIND;
        q++;
        break;
    default:
        return PGL_EFORMAT;
    }
    if (q >= end || *q != ',')
        return PGL_EFORMAT;
    q++;
    /* authzid ("a=..."): Postgres refuses it, so do we. */
    if (q >= end || *q != ',')
        return PGL_EFORMAT;
    q++;
    size_t gs2_len = (size_t)(q - p);
    if (gs2_len >= sizeof s->gs2)
        return PGL_EFORMAT;
    memcpy(s->gs2, p, gs2_len);
    s->gs2_len = gs2_len;
    *bare = q;
    return 0;
}

int pgl_pgwire_scram_server_first(pgl_pgwire_scram_server *s, const char *mech,
                                  const uint8_t *data, size_t len, uint8_t *reply, size_t cap,
                                  size_t *reply_len)
{
    if (s->state != SCRAM_WANT_FIRST)
        return fail(s, PGL_ESTATE);
    bool plus;
    if (strcmp(mech, MECH) == 0)
        plus = false;
    else if (strcmp(mech, MECH_PLUS) == 0 && s->cb_len > 0)
        plus = true;
    else
        return fail(s, PGL_EMECH);
    if (data == NULL || len == 0 || len > PGL_PGWIRE_SCRAM_MSG_MAX / 2 || memchr(data, 0, len))
        return fail(s, PGL_EFORMAT);
    const char *p = (const char *)data, *end = p + len, *bare;
    int rc = parse_gs2(s, plus, p, end, &bare);
    if (rc != 0)
        return fail(s, rc);
    /* client-first-message-bare: n=<user>,r=<nonce>[,extensions]. The user
     * name here is ignored: the startup packet's is authoritative. A
     * mandatory extension ("m=") is not supported. */
    const char *q = bare;
    if (end - q < 2 || q[0] != 'n' || q[1] != '=')
        return fail(s, PGL_EFORMAT);
    q += 2;
    q += value_len(q, end);
    if (end - q < 3 || memcmp(q, ",r=", 3) != 0)
        return fail(s, PGL_EFORMAT);
    q += 3;
    size_t cnonce_len = value_len(q, end);
    if (!printable(q, cnonce_len) || cnonce_len >= NONCE_MAX)
        return fail(s, PGL_EFORMAT);
    s->cfb_len = (size_t)(end - bare);
    memcpy(s->client_first_bare, bare, s->cfb_len);

    char snonce[NONCE_MAX];
    if (s->fixed_nonce[0] != '\0') {
        strcpy(snonce, s->fixed_nonce);
    } else {
        uint8_t raw[RAW_NONCE_LEN];
        if (RAND_bytes(raw, sizeof raw) != 1)
            return fail(s, PGL_ECRYPTO);
        b64_encode(raw, sizeof raw, snonce);
    }
    size_t sn = strlen(snonce);
    memcpy(s->nonce, q, cnonce_len);
    memcpy(s->nonce + cnonce_len, snonce, sn);
    s->nonce_len = cnonce_len + sn;

    char salt[PGL_PGWIRE_SCRAM_SALT_MAX * 2];
    b64_encode(s->secret.salt, s->secret.salt_len, salt);
    int n = snprintf(s->server_first, sizeof s->server_first, "r=%.*s,s=%s,i=%u",
                     (int)s->nonce_len, s->nonce, salt, s->secret.iterations);
    if (n < 0 || (size_t)n >= sizeof s->server_first)
        return fail(s, PGL_EFORMAT);
    s->sf_len = (size_t)n;
    if (s->sf_len > cap)
        return fail(s, PGL_ESPACE);
    memcpy(reply, s->server_first, s->sf_len);
    *reply_len = s->sf_len;
    s->state = SCRAM_WANT_FINAL;
    return 0;
}

/* Check the client-final "c=" value against what the client sent first. */
static bool channel_binding_matches(const pgl_pgwire_scram_server *s, const char *b64, size_t n)
{
    uint8_t expect[sizeof s->gs2 + PGL_PGWIRE_SCRAM_CB_MAX];
    uint8_t got[sizeof expect];
    size_t elen = s->gs2_len, glen = 0;
    memcpy(expect, s->gs2, s->gs2_len);
    if (s->cb_used) {
        memcpy(expect + elen, s->cb, s->cb_len);
        elen += s->cb_len;
    }
    if (b64_decode(b64, n, got, sizeof got, &glen) != 0)
        return false;
    return glen == elen && CRYPTO_memcmp(got, expect, elen) == 0;
}

int pgl_pgwire_scram_server_final(pgl_pgwire_scram_server *s, const uint8_t *data, size_t len,
                                  uint8_t *reply, size_t cap, size_t *reply_len)
{
    if (s->state != SCRAM_WANT_FINAL)
        return fail(s, PGL_ESTATE);
    s->state = SCRAM_FINISHED; /* one attempt, whatever happens */
    if (len == 0 || len > PGL_PGWIRE_SCRAM_MSG_MAX / 2 || memchr(data, 0, len))
        return PGL_EFORMAT;
    const char *p = (const char *)data, *end = p + len, *q = p;
    /* c=<cbind>,r=<nonce>[,ext]*,p=<proof>  (the proof is last) */
    if (end - q < 2 || memcmp(q, "c=", 2) != 0)
        return PGL_EFORMAT;
    q += 2;
    size_t cn = value_len(q, end);
    if (!channel_binding_matches(s, q, cn))
        return PGL_ECBIND;
    q += cn;
    if (end - q < 3 || memcmp(q, ",r=", 3) != 0)
        return PGL_EFORMAT;
    q += 3;
    size_t rn = value_len(q, end);
    if (rn != s->nonce_len || memcmp(q, s->nonce, rn) != 0)
        return PGL_EFORMAT;
    q += rn;
    /* Skip extensions up to ",p=". */
    while (q < end && !(end - q >= 3 && memcmp(q, ",p=", 3) == 0)) {
        q++;
        q += value_len(q, end);
    }
    if (q >= end)
        return PGL_EFORMAT;
    size_t without_proof = (size_t)(q - p);
    q += 3;
    uint8_t proof[PGL_PGWIRE_SCRAM_KEY_LEN];
    size_t plen = 0;
    if (value_len(q, end) != (size_t)(end - q) ||
        b64_decode(q, (size_t)(end - q), proof, sizeof proof, &plen) != 0 || plen != sizeof proof)
        return PGL_EFORMAT;

    /* AuthMessage = client-first-bare , server-first , client-final-without-proof */
    char auth[3 * PGL_PGWIRE_SCRAM_MSG_MAX];
    size_t alen = 0;
    memcpy(auth, s->client_first_bare, s->cfb_len);
    alen += s->cfb_len;
    auth[alen++] = ',';
    memcpy(auth + alen, s->server_first, s->sf_len);
    alen += s->sf_len;
    auth[alen++] = ',';
    memcpy(auth + alen, p, without_proof);
    alen += without_proof;

    uint8_t client_sig[PGL_PGWIRE_SCRAM_KEY_LEN], client_key[PGL_PGWIRE_SCRAM_KEY_LEN];
    uint8_t check[PGL_PGWIRE_SCRAM_KEY_LEN], server_sig[PGL_PGWIRE_SCRAM_KEY_LEN];
    int rc = hmac(s->secret.stored_key, sizeof s->secret.stored_key, auth, alen, client_sig);
    if (rc == 0) {
        for (size_t i = 0; i < sizeof client_key; i++)
            client_key[i] = proof[i] ^ client_sig[i];
        if (SHA256(client_key, sizeof client_key, check) == NULL)
            rc = PGL_ECRYPTO;
    }
    if (rc == 0) {
        bool match = CRYPTO_memcmp(check, s->secret.stored_key, sizeof check) == 0;
        rc = match && !s->doomed ? 0 : PGL_EAUTH;
    }
    if (rc == 0)
        rc = hmac(s->secret.server_key, sizeof s->secret.server_key, auth, alen, server_sig);
    if (rc == 0) {
        char sig64[64];
        b64_encode(server_sig, sizeof server_sig, sig64);
        size_t n = 2 + strlen(sig64);
        if (n > cap) {
            rc = PGL_ESPACE;
        } else {
            memcpy(reply, "v=", 2);
            memcpy(reply + 2, sig64, n - 2);
            *reply_len = n;
        }
    }
    OPENSSL_cleanse(proof, sizeof proof);
    OPENSSL_cleanse(client_sig, sizeof client_sig);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(check, sizeof check);
    OPENSSL_cleanse(server_sig, sizeof server_sig);
    return rc;
}
