#include "pgl_pgwire_md5.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* hex(md5(a || b)) into out[33]. */
static int md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[33])
{
    static const char hexd[] = "0123456789abcdef";
    uint8_t digest[16];
    unsigned int dlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, a, alen) == 1 && EVP_DigestUpdate(ctx, b, blen) == 1 &&
             EVP_DigestFinal_ex(ctx, digest, &dlen) == 1 && dlen == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return PGL_ECRYPTO;
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hexd[digest[i] >> 4];
        out[2 * i + 1] = hexd[digest[i] & 15];
    }
    out[32] = '\0';
    OPENSSL_cleanse(digest, sizeof digest);
    return 0;
}

int pgl_pgwire_md5_secret(const char *password, const char *user,
                          char out[PGL_PGWIRE_MD5_LEN + 1])
{
    memcpy(out, "md5", 3);
    return md5_hex(password, strlen(password), user, strlen(user), out + 3);
}

int pgl_pgwire_md5_verify(const char *secret, int secret_is_md5, const char *user,
                          const uint8_t salt[4], const char *response, size_t response_len)
{
    char stored[PGL_PGWIRE_MD5_LEN + 1];
    char expect[PGL_PGWIRE_MD5_LEN + 1];
    int rc;
    if (secret_is_md5) {
        if (strlen(secret) != PGL_PGWIRE_MD5_LEN || strncmp(secret, "md5", 3) != 0)
            return PGL_EAUTH;
        memcpy(stored, secret, sizeof stored);
    } else if ((rc = pgl_pgwire_md5_secret(secret, user, stored)) != 0) {
        return rc;
    }
    memcpy(expect, "md5", 3);
    rc = md5_hex(stored + 3, 32, salt, 4, expect + 3);
    if (rc == 0)
        rc = response_len == PGL_PGWIRE_MD5_LEN &&
                     CRYPTO_memcmp(expect, response, PGL_PGWIRE_MD5_LEN) == 0
                 ? 0
                 : PGL_EAUTH;
    OPENSSL_cleanse(stored, sizeof stored);
    OPENSSL_cleanse(expect, sizeof expect);
    return rc;
}
