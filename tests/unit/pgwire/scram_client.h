/*
 * The client side of SCRAM-SHA-256, written independently of the server
 * code under test so the two check each other. Test code only.
 */
#ifndef PGL_TEST_SCRAM_CLIENT_H
#define PGL_TEST_SCRAM_CLIENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char gs2[128];
    char first_bare[512];
    char final_msg[2048];
    uint8_t server_sig[32];
} scram_client;

/* Build client-first into out ("n,,n=,r=<nonce>" or with cbind flag). */
int scram_client_first(scram_client *c, const char *gs2, const char *nonce, char *out,
                       size_t cap);
/* Given server-first, compute client-final (channel binding data cb may be
 * NULL). Returns 0 or -1 when server-first is malformed. */
int scram_client_final(scram_client *c, const char *password, const char *server_first,
                       const uint8_t *cb, size_t cb_len, char *out, size_t cap);
/* Check server-final ("v=..."). */
int scram_client_verify(const scram_client *c, const char *server_final, size_t len);

#endif
