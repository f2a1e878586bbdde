/*
 * Files named by a configuration: present, readable, and private when
 * secret.
 */
#include "pgl_conf_files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *section, *key, *path;
    bool secret; /* warn when group/world-readable */
} named_file;

static int check_one(const pgl_conf *conf, const named_file *f, pgl_conf_warn_fn warn,
                     void *arg, char *err, size_t errlen)
{
    /* open(), not access(): access() answers for the real uid, and root
     * passes it for any file. */
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    int rc = 0;
    if (fd < 0 || fstat(fd, &st) != 0)
        rc = -errno;
    else if (S_ISDIR(st.st_mode))
        rc = -EISDIR;
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        snprintf(err, errlen, "%s: [%s] %s: cannot read \"%s\": %s", conf->path, f->section,
                 f->key, f->path, pgl_strerror(rc));
        return rc;
    }
    if (f->secret && (st.st_mode & 077) != 0 && warn != NULL) {
        char msg[PGL_CONF_ERRLEN + 128];
        snprintf(msg, sizeof msg,
                 "%s: [%s] %s: \"%s\" holds a secret but is %s-readable (mode %04o); "
                 "chmod 600 it",
                 conf->path, f->section, f->key, f->path,
                 (st.st_mode & 044) == 044 ? "group- and world"
                 : (st.st_mode & 004)      ? "world"
                                           : "group",
                 (unsigned)(st.st_mode & 07777));
        warn(arg, msg);
    }
    return 0;
}

int pgl_conf_check_files(const pgl_conf *conf, pgl_conf_warn_fn warn, void *arg, char *err,
                         size_t errlen)
{
    named_file files[10];
    size_t n = 0;
    if (conf->auth_file != NULL)
        files[n++] = (named_file){"pglease", "auth_file", conf->auth_file, true};
    if (conf->client_tls_sslmode != PGL_CONF_TLS_DISABLE) {
        if (conf->client_tls_cert_file != NULL)
            files[n++] = (named_file){"pglease", "client_tls_cert_file",
                                      conf->client_tls_cert_file, false};
        if (conf->client_tls_key_file != NULL)
            files[n++] = (named_file){"pglease", "client_tls_key_file",
                                      conf->client_tls_key_file, true};
    }
    if (conf->vault_needed) {
        const pgl_conf_vault *v = &conf->vault;
        switch (v->auth_method) {
        case PGL_CONF_VAULT_TOKEN:
            if (v->token_file != NULL)
                files[n++] = (named_file){"vault", "token_file", v->token_file, true};
            break;
        case PGL_CONF_VAULT_APPROLE:
            if (v->role_id_file != NULL)
                files[n++] = (named_file){"vault", "role_id_file", v->role_id_file, true};
            if (v->secret_id_file != NULL)
                files[n++] = (named_file){"vault", "secret_id_file", v->secret_id_file, true};
            break;
        case PGL_CONF_VAULT_KUBERNETES:
        case PGL_CONF_VAULT_JWT:
            /* Projected service account tokens are mounted 0644 unless told
             * otherwise: short-lived and audience-bound, not warned about. */
            if (v->jwt_file != NULL)
                files[n++] = (named_file){"vault", "jwt_file", v->jwt_file, false};
            break;
        case PGL_CONF_VAULT_CERT:
            break; /* the client certificate, below, is the credential */
        }
        if (v->client_cert_file != NULL)
            files[n++] = (named_file){"vault", "client_cert_file", v->client_cert_file, false};
        if (v->client_key_file != NULL)
            files[n++] = (named_file){"vault", "client_key_file", v->client_key_file, true};
    }
    for (size_t i = 0; i < n; i++) {
        int rc = check_one(conf, &files[i], warn, arg, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}
