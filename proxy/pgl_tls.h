/*
 * pgl_tls — the server-side TLS context clients' SSLRequests are answered
 * with (client_tls_*), and the hash of its certificate that SCRAM-PLUS
 * channel binding (tls-server-end-point) needs.
 */
#ifndef PGL_TLS_H
#define PGL_TLS_H

#include "pgl_conf.h"

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

/* Room for the certificate hash (up to SHA-512). */
#define PGL_TLS_CERT_HASH_MAX 64

/* *out is NULL when client_tls_sslmode is disable. cert_hash gets
 * PGL_TLS_CERT_HASH_MAX bytes of room; *cert_hash_len is 0 when no channel
 * binding can be offered. 0, or a negative error with `err` naming the
 * files. */
int pgl_tls_server_ctx(const pgl_conf *conf, SSL_CTX **out, uint8_t *cert_hash,
                       size_t *cert_hash_len, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
