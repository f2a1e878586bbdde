/*
 * pgl_filecreds — upstream credentials from a file something else writes
 * (`creds=file:/path`): Vault Agent's template, the Secrets Store CSI
 * driver, a Kubernetes Secret volume.
 *
 * The file is JSON: {"username": ..., "password": ..., "expires_at":
 * optional RFC 3339}; the shape of a Vault secret rendered whole
 * ({"data": {"username", "password"}, "lease_duration": seconds}) is read
 * too. pglease follows the file with inotify (uv_fs_event on its
 * directory, so an atomic rename is seen) and a one-second check of its
 * modification time: a new username or password is a new generation that
 * warms, takes over and drains the old one as a rotation does. A vanished,
 * unreadable or unparsable file keeps the last valid credential, and the
 * log says why once per change. Without a credential the database is not
 * ready and its clients wait (query_wait_timeout).
 */
#ifndef PGL_FILECREDS_H
#define PGL_FILECREDS_H

typedef struct pgl_pool pgl_pool;
typedef struct pgl_filecreds pgl_filecreds;

/* Starts following the pool's file (its database's creds_path) and reads
 * it now. 0 or -ENOMEM. */
int pgl_filecreds_start(pgl_pool *pool) __attribute__((warn_unused_result));

/* Stops following (the handles close on the loop's next turn). */
void pgl_filecreds_stop(pgl_pool *pool);

#endif
