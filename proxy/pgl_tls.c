/*
 * The TLS context for clients (pgl_tls.h).
 */
#include "pgl_tls.h"

#include <errno.h>
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* RFC 5929 tls-server-end-point: the certificate hashed with its signature's
 * digest, SHA-256 when that is MD5 or SHA-1. */
static int certificate_hash(SSL_CTX *ctx, uint8_t *out, size_t *len)
{
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    int md_nid = NID_undef, pk_nid;
    if (cert == NULL || !OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid))
        return -1;
    const EVP_MD *md = (md_nid == NID_md5 || md_nid == NID_sha1 || md_nid == NID_undef)
                           ? EVP_sha256()
                           : EVP_get_digestbynid(md_nid);
    unsigned int n = 0;
    if (md == NULL || X509_digest(cert, md, out, &n) != 1)
        return -1;
    *len = n;
    return 0;
}

int pgl_tls_server_ctx(const pgl_conf *conf, SSL_CTX **out, uint8_t *cert_hash,
                       size_t *cert_hash_len, char *err, size_t errlen)
{
    *out = NULL;
    *cert_hash_len = 0;
    if (conf->client_tls_sslmode == PGL_CONF_TLS_DISABLE)
        return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create a TLS context");
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
    if (SSL_CTX_use_certificate_chain_file(ctx, conf->client_tls_cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, conf->client_tls_key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        unsigned long e = ERR_get_error();
        snprintf(err, errlen, "client TLS certificate/key (%s, %s): %s",
                 conf->client_tls_cert_file, conf->client_tls_key_file,
                 e ? ERR_reason_error_string(e) : "unusable");
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return -EINVAL;
    }
    if (conf->auth_type == PGL_CONF_AUTH_CERT) {
        /* The client must present a certificate signed by the CA our own
         * certificate chain file names; its CN is the user name. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        SSL_CTX_load_verify_locations(ctx, conf->client_tls_cert_file, NULL);
    }
    if (certificate_hash(ctx, cert_hash, cert_hash_len) != 0)
        *cert_hash_len = 0; /* no channel binding, still TLS */
    *out = ctx;
    return 0;
}

