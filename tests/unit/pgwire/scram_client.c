#include "scram_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

int scram_client_first(scram_client *c, const char *gs2, const char *nonce, char *out,
                       size_t cap)
{
    snprintf(c->gs2, sizeof c->gs2, "%s", gs2);
    snprintf(c->first_bare, sizeof c->first_bare, "n=,r=%s", nonce);
    int n = snprintf(out, cap, "%s%s", c->gs2, c->first_bare);
    return n > 0 && (size_t)n < cap ? n : -1;
}

int scram_client_final(scram_client *c, const char *password, const char *server_first,
                       const uint8_t *cb, size_t cb_len, char *out, size_t cap)
{
    char sf[512];
    snprintf(sf, sizeof sf, "%s", server_first);
    char *r = strstr(sf, "r="), *s = strstr(sf, ",s="), *i = strstr(sf, ",i=");
    if (r != sf || s == NULL || i == NULL)
        return -1;
    *s = '\0';
    *i = '\0';
    const char *nonce = r + 2, *salt64 = s + 3;
    int iter = atoi(i + 3);
    uint8_t salt[128];
    int slen = EVP_DecodeBlock(salt, (const unsigned char *)salt64, (int)strlen(salt64));
    if (slen < 0 || iter <= 0)
        return -1;
    slen -= (int)(strlen(salt64) > 0 && salt64[strlen(salt64) - 1] == '=') +
            (int)(strlen(salt64) > 1 && salt64[strlen(salt64) - 2] == '=');

    uint8_t cbind[256];
    size_t cblen = strlen(c->gs2);
    memcpy(cbind, c->gs2, cblen);
    if (cb) {
        memcpy(cbind + cblen, cb, cb_len);
        cblen += cb_len;
    }
    char cbind64[400];
    EVP_EncodeBlock((unsigned char *)cbind64, cbind, (int)cblen);
    char without_proof[1024];
    snprintf(without_proof, sizeof without_proof, "c=%s,r=%s", cbind64, nonce);
    char auth[3072];
    snprintf(auth, sizeof auth, "%s,%s,%s", c->first_bare, server_first, without_proof);

    uint8_t salted[32], ck[32], sk[32], stored[32], csig[32], proof[32];
    unsigned int l;
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, slen, iter, EVP_sha256(), 32, salted);
    HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Client Key", 10, ck, &l);
    HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Server Key", 10, sk, &l);
    SHA256(ck, 32, stored);
    HMAC(EVP_sha256(), stored, 32, (const uint8_t *)auth, strlen(auth), csig, &l);
    for (int k = 0; k < 32; k++)
        proof[k] = ck[k] ^ csig[k];
    HMAC(EVP_sha256(), sk, 32, (const uint8_t *)auth, strlen(auth), c->server_sig, &l);
    char proof64[64];
    EVP_EncodeBlock((unsigned char *)proof64, proof, 32);
    int n = snprintf(out, cap, "%s,p=%s", without_proof, proof64);
    snprintf(c->final_msg, sizeof c->final_msg, "%s", out);
    return n > 0 && (size_t)n < cap ? n : -1;
}

int scram_client_verify(const scram_client *c, const char *server_final, size_t len)
{
    char want[64] = "v=";
    EVP_EncodeBlock((unsigned char *)want + 2, c->server_sig, 32);
    return strlen(want) == len && memcmp(want, server_final, len) == 0 ? 0 : -1;
}
