/*
 * The process (pgl_proxy.h): builds the proxy from a config snapshot, runs
 * its loop, handles the signals, and shuts down in order: stop accepting,
 * let transactions finish (the janitor's sweep), close servers, revoke
 * leases, exit.
 */
#include "pgl_proxy.h"
#include "pgl_replica.h"
#include "pgl_worker.h"

#include "pgl_admin.h"
#include "pgl_client.h"
#include "pgl_creds.h"
#include "pgl_http.h"
#include "pgl_listener.h"
#include "pgl_log.h"
#include "pgl_notify.h"
#include "pgl_pool.h"
#include "pgl_secenv.h"
#include "pgl_upstream.h"
#include "pgl_version.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

/* ---- configuration ---------------------------------------------------------------- */

int pgl_proxy_apply_conf(pgl_proxy *px, pgl_conf *next, char *err, size_t errlen)
{
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        const pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (pgl_conf_database_find_for(next, pool->dbname, pool->for_user) == NULL) {
            snprintf(err, errlen, "database \"%s\" cannot be removed while pglease runs",
                     pool->name);
            pgl_conf_free(next);
            return -EINVAL;
        }
    }
    pgl_conf *old = px->conf;
    px->conf = next;
    pgl_conf_free(old);
    return 0;
}

/* ---- exit ------------------------------------------------------------------------ */

static void stop_everything(pgl_proxy *px);

/* Whatever was closed is freed: during a shutdown, the last client gone
 * means the servers can go and the leases be revoked. */
static void on_reaped(pgl_loop *lp)
{
    pgl_proxy *px = lp->px;
    if (px->shutting_down && atomic_load(&px->nclients) == 0)
        stop_everything(px);
}

static void stop_finish(pgl_proxy *px)
{
    /* The workers' pools go once their threads are joined (pgl_workers_stop). */
    pgl_pools_free_loop(&px->main);
    uv_stop(&px->main.uv);
}

/* Last step of shutdown: no clients are left. Servers are closed (politely,
 * with Terminate), then leases revoked; uv_run returns when that is done. */
static void stop_everything(pgl_proxy *px)
{
    if (px->stopped)
        return;
    px->stopped = true;
    pgl_log_info(NULL, "shutting down: closing %s", "server connections");
    pgl_listeners_close(px->main.listeners);
    px->main.listeners = NULL;
    pgl_replicas_stop(px);
    pgl_workers_park(px);
    pgl_loop *lp;
    PGL_FOREACH_LOOP(px, lp)
    {
        uv_timer_stop(&lp->janitor);
    }
    pgl_workers_unpark(px);
    uv_signal_t *sigs[] = {&px->sig_term, &px->sig_int, &px->sig_hup, &px->sig_usr1,
                           &px->sig_usr2};
    for (size_t i = 0; i < 5; i++)
        uv_signal_stop(sigs[i]);
    pgl_pools_close_servers(px);
    pgl_creds_shutdown(px, stop_finish);
}

/* ---- signals ----------------------------------------------------------------------- */

static void begin_shutdown(pgl_proxy *px, bool fast)
{
    uint64_t now = pgl_now_ms(px);
    uint64_t grace = fast ? 0 : (uint64_t)px->conf->shutdown_timeout * 1000;
    /* Every loop reads the flag and the deadline. */
    pgl_workers_park(px);
    if (px->shutting_down) {
        /* A second signal (or SIGINT after SIGTERM) shortens the wait. */
        if (now + grace < px->shutdown_deadline)
            px->shutdown_deadline = now + grace;
    } else {
        px->shutting_down = true;
        pgl_notify_stopping();
        px->shutdown_deadline = now + grace;
        pgl_listeners_pause(px->main.listeners, true);
    }
    pgl_log_info(NULL, "%s shutdown: %d clients, waiting up to %llu ms for transactions",
                 fast ? "fast" : "graceful", atomic_load(&px->nclients),
                 (unsigned long long)grace);
    /* Every loop sweeps its clients; with none left anywhere, it stops. */
    pgl_loop *lp;
    PGL_FOREACH_LOOP(px, lp)
    {
        pgl_janitor_shutdown(lp);
        pgl_loop_reap_later(lp);
    }
    pgl_workers_unpark(px);
}

void pgl_proxy_shutdown(pgl_proxy *px, bool fast)
{
    begin_shutdown(px, fast);
}

static void on_signal(uv_signal_t *h, int signum)
{
    pgl_proxy *px = h->data;
    switch (signum) {
    case SIGTERM:
        begin_shutdown(px, false);
        break;
    case SIGINT:
        begin_shutdown(px, true);
        break;
    case SIGHUP: {
        char err[PGL_CONF_ERRLEN];
        pgl_proxy_reload(px, "SIGHUP", err, sizeof err); /* logged either way */
        break;
    }
    case SIGUSR1:
        pgl_log_info(NULL, "SIGUSR1: pausing (no new server work)");
        pgl_workers_park(px);
        px->paused = true;
        pgl_workers_unpark(px);
        break;
    case SIGUSR2: {
        pgl_log_info(NULL, "SIGUSR2: resuming");
        pgl_workers_park(px);
        px->paused = false;
        pgl_pools_each(px, pgl_pool_kick);
        pgl_workers_unpark(px);
        break;
    }
    default:
        break;
    }
}

static int start_signals(pgl_proxy *px)
{
    uv_signal_t *sigs[] = {&px->sig_term, &px->sig_int, &px->sig_hup, &px->sig_usr1,
                           &px->sig_usr2};
    int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < 5; i++) {
        int rc = uv_signal_init(&px->main.uv, sigs[i]);
        sigs[i]->data = px;
        if (rc == 0)
            rc = uv_signal_start(sigs[i], on_signal, signums[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- pidfile ------------------------------------------------------------------------ */

/* Writes the pid (and a newline) to `path`, replacing what was there. */
static int write_pidfile(const char *path)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = write(fd, buf, (size_t)n) == n ? 0 : -EIO;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

/* ---- run ---------------------------------------------------------------------------- */

/* Everything up to the first accepted client. false when pglease cannot
 * start (logged). */
static bool start(pgl_proxy *px)
{
    const pgl_conf *conf = px->conf;
    char err[512] = "";
    char pgvar[64];
    int npg = pgl_upstream_isolate_env(pgvar, sizeof pgvar);
    if (npg > 0)
        pgl_log_info(NULL, "ignoring %d PG* environment variable(s) such as %s: upstream "
                           "connections use only the configured parameters", npg, pgvar);
    if (RAND_bytes(px->scram_mock_key, sizeof px->scram_mock_key) != 1) {
        pgl_log(PGL_LOG_FATAL, NULL, "cannot draw random bytes");
        return false;
    }
    if (conf->auth_file != NULL &&
        pgl_userlist_load(conf->auth_file, conf->auth_type == PGL_CONF_AUTH_SCRAM, &px->users,
                          err, sizeof err) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "auth_file: %s", err);
        return false;
    }
    if (pgl_tls_server_ctx(conf, &px->tls_ctx, px->tls_cert_hash, &px->tls_cert_hash_len, err,
                           sizeof err) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "%s", err);
        return false;
    }
    if (pgl_pools_init(px) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "cannot set up the pools: out of memory");
        return false;
    }
    if (pgl_creds_init(px, err, sizeof err) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "vault: %s", err);
        return false;
    }
    int rc = start_signals(px);
    if (rc != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "cannot handle signals: %s", pgl_strerror(rc));
        return false;
    }
    if (conf->pidfile != NULL) {
        /* A copy: the one removed at exit is the one written, whatever a
         * reload says by then. */
        if ((px->pidfile = strdup(conf->pidfile)) == NULL) {
            pgl_log(PGL_LOG_FATAL, NULL, "out of memory");
            return false;
        }
        if ((rc = write_pidfile(px->pidfile)) != 0) {
            pgl_log(PGL_LOG_FATAL, NULL, "pidfile %s: %s", px->pidfile, pgl_strerror(rc));
            free(px->pidfile);
            px->pidfile = NULL;
            return false;
        }
    }
    if (pgl_listeners_open(&px->main.uv, conf, pgl_workers_accept, px,
                           &px->main.listeners, err, sizeof err) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "%s", err);
        return false;
    }
    if ((rc = pgl_http_start(px, err, sizeof err)) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "%s", err);
        return false;
    }
    px->started_ms = pgl_now_ms(px);
    pgl_janitor_start(&px->main);
    if ((rc = pgl_workers_run(px, err, sizeof err)) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "%s", err);
        return false;
    }
    /* With Vault, ready only once every database has a credential: the
     * credentials module says so (or why not). */
    px->ready = !conf->vault_needed;
    pgl_log_info(NULL, "pglease %s %s: %zu database(s), pool_mode=%s, auth_type=%s",
                 PGL_VERSION, px->ready ? "ready" : "started, waiting for credentials",
                 conf->ndatabases, pgl_conf_pool_mode_name(conf->pool_mode),
                 pgl_conf_auth_type_name(conf->auth_type));
    if (px->ready)
        pgl_notify_ready();
    /* The first "not ready" line 2 s in, then every 10 s (pgl_creds.c);
     * unsigned arithmetic makes the difference right. */
    px->not_ready_logged = pgl_now_ms(px) - 8000;
    return true;
}

int pgl_proxy_run(pgl_conf *conf, char **env, bool verbose)
{
    signal(SIGPIPE, SIG_IGN);
    pgl_proxy px_storage, *px = &px_storage;
    memset(px, 0, sizeof *px);
    pgl_list_init(&px->main.pools);
    px->env = env;
    px->verbose = verbose;
    pgl_log_configure(conf, verbose);
    char err[512];
    px->console = &pgl_admin_console;
    int rc = pgl_loop_init(&px->main, px, 0, on_reaped);
    pgl_loop_current = &px->main;
    if (rc != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "cannot set up the event loop: %s", pgl_strerror(rc));
        pgl_conf_free(conf);
        pgl_secenv_conf_env_free(env);
        return 1;
    }
    if (pgl_proxy_apply_conf(px, conf, err, sizeof err) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "%s", err); /* no pool yet: cannot happen */
        (void)pgl_loop_close(&px->main);
        pgl_secenv_conf_env_free(env);
        return 1;
    }
    if (pgl_workers_init(px, px->conf->workers, err, sizeof err) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "%s", err);
        (void)pgl_loop_close(&px->main);
        pgl_conf_free(px->conf);
        pgl_secenv_conf_env_free(env);
        return 1;
    }
    int exit_code = 1;
    if (start(px)) {
        uv_run(&px->main.uv, UV_RUN_DEFAULT);
        exit_code = 0;
        pgl_log_info(NULL, "bye");
    } else {
        pgl_pools_free_loop(&px->main);
    }
    pgl_workers_stop(px);
    pgl_creds_free(px);
    if (px->pidfile != NULL && unlink(px->pidfile) != 0)
        pgl_log_warning(NULL, "pidfile %s: %s", px->pidfile, pgl_strerror(-errno));
    free(px->pidfile);
    pgl_http_stop(px);
    rc = pgl_loop_close(&px->main);
    if (rc != 0)
        pgl_log_warning(NULL, "event loop closed with handles open: %s", pgl_strerror(rc));
    pgl_http_free(px);
    pgl_userlist_free(px->users);
    if (px->tls_ctx)
        SSL_CTX_free(px->tls_ctx);
    pgl_conf_free(px->conf);
    pgl_secenv_conf_env_free(px->env);
    OPENSSL_cleanse(px->scram_mock_key, sizeof px->scram_mock_key);
    return exit_code;
}
