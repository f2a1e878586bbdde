/*
 * pgl_limits — the process's own resource limits: core dumps and file
 * descriptors, set once at start-up from main().
 */
#ifndef PGL_LIMITS_H
#define PGL_LIMITS_H

#include "pgl_conf.h"

#include <sys/resource.h>

/*
 * Core dumps off: a core holds Vault tokens, leased passwords and SCRAM
 * keys. Sets RLIMIT_CORE to 0 (soft and hard) and PR_SET_DUMPABLE to 0; the
 * latter also makes /proc/<pid>/{environ,mem,maps...} root-owned and stops
 * ptrace by the same user. Returns 0 or the first -errno.
 */
PGL_MUST_CHECK int pgl_limits_no_core_dumps(void);

/* Descriptors a configuration may need at once: max_client_conn, every
 * pool's servers (per worker), and a margin for listeners, Vault, the HTTP
 * endpoint, logs and libuv's own. */
rlim_t pgl_limits_nofile_wanted(const pgl_conf *conf);

/*
 * Raises the soft RLIMIT_NOFILE to `want`, or as far as the hard limit
 * allows; never lowers it. *soft gets the soft limit in force afterwards and
 * *hard the hard one. Returns 0 when `want` fits, -EMFILE when it does not
 * (the limit is still raised to the hard one), or -errno from getrlimit.
 */
PGL_MUST_CHECK int pgl_limits_raise_nofile(rlim_t want, rlim_t *soft, rlim_t *hard);

#endif
