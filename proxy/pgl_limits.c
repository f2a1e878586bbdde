/*
 * Process resource limits at start-up: no core dumps, enough descriptors.
 */
#include "pgl_limits.h"

#include <errno.h>
#include <sys/prctl.h>

/* Listeners, Vault and HTTP sockets, the log, libuv's eventfd/epoll/signal
 * pipes, files read at login. */
#define NOFILE_MARGIN 64

int pgl_limits_no_core_dumps(void)
{
    int rc = 0;
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0)
        rc = -errno;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

rlim_t pgl_limits_nofile_wanted(const pgl_conf *conf)
{
    rlim_t servers = 0;
    for (size_t i = 0; i < conf->ndatabases; i++)
        servers += (rlim_t)pgl_conf_database_pool_size(conf, &conf->databases[i]);
    for (size_t i = 0; i < conf->nuser_databases; i++)
        servers += (rlim_t)pgl_conf_database_pool_size(conf, &conf->user_databases[i]);
    /* A pool's size bounds its servers on every loop together; each loop's
     * own descriptors (epoll, eventfd) fit in the margin. */
    return (rlim_t)conf->max_client_conn + servers + NOFILE_MARGIN;
}

int pgl_limits_raise_nofile(rlim_t want, rlim_t *soft, rlim_t *hard)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -errno;
    *soft = rl.rlim_cur;
    *hard = rl.rlim_max;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t to = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want) ? want : rl.rlim_max;
        rl.rlim_cur = to;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            *soft = to;
    }
    return *soft == RLIM_INFINITY || *soft >= want ? 0 : -EMFILE;
}
