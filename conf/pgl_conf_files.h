/*
 * pgl_conf_files — the files a configuration names, checked before they are
 * needed: one place for `pglease --check` and for start-up, so a config
 * that passes --check does not fail its first Vault login over a missing
 * secret_id_file.
 */
#ifndef PGL_CONF_FILES_H
#define PGL_CONF_FILES_H

#include "pgl_conf.h"

/* Called once per warning with one line naming file and key. */
typedef void (*pgl_conf_warn_fn)(void *arg, const char *msg);

/*
 * Every file the configuration will read (auth_file, client TLS cert and
 * key, and for Vault token_file, role_id_file, secret_id_file, jwt_file as
 * the auth method uses them, client_cert_file and client_key_file) must exist, be a regular file and be readable
 * by this process (its effective uid: open(), not access()). The first one
 * that is not fails the check: returns its -errno with "config: [section]
 * key: cannot read "path": reason" in `err`.
 *
 * A file holding a secret (everything above but the TLS certificates and
 * jwt_file, which Kubernetes mounts 0644 unless told otherwise) that its
 * group or others may read gets one call of `warn` (which may be NULL);
 * that is not an error.
 */
PGL_MUST_CHECK int pgl_conf_check_files(const pgl_conf *conf, pgl_conf_warn_fn warn,
                                        void *arg, char *err, size_t errlen);

#endif
