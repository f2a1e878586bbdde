/*
 * The process: builds the proxy context from a config snapshot, runs the
 * loop, and owns the things that are about time rather than bytes: the
 * janitor (timeouts, pool sizing, shutdown sweep), the reaper (freeing
 * closed objects outside callbacks), and the signals.
 */
#include "pgl_proxy.h"

#include "pgl_client.h"
#include "pgl_creds.h"
#include "pgl_listener.h"
#include "pgl_log.h"
#include "pgl_pool.h"
#include "pgl_server.h"
#include "pgl_tls.h"
#include "pgl_upstream.h"
#include "pgl_version.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define JANITOR_MS 1000
#define SHUTDOWN_SWEEP_MS 100
/* Connection buffers: large enough for a typical result batch per read. */
#define CONN_BUF_SIZE (32u * 1024)

uint64_t pgl_now_ms(const pgl_proxy *px)
{
    return uv_now(px->loop);
}

/* ---- reaper and exit ------------------------------------------------------------ */

static void stop_everything(pgl_proxy *px);

static void reap(uv_check_t *h)
{
    pgl_proxy *px = h->data;
    uv_check_stop(h);
    px->reap_pending = false;
    while (!pgl_list_empty(&px->zombie_clients)) {
        pgl_client *c = pgl_container_of(px->zombie_clients.next, pgl_client, node);
        pgl_list_remove(&c->node);
        pgl_client_free(c);
    }
    while (!pgl_list_empty(&px->zombie_servers)) {
        pgl_server *s = pgl_container_of(px->zombie_servers.next, pgl_server, node);
        pgl_list_remove(&s->node);
        pgl_server_free(s);
    }
    if (px->exit_requested)
        stop_everything(px);
}

void pgl_proxy_reap_later(pgl_proxy *px)
{
    if (!px->reap_pending) {
        px->reap_pending = true;
        uv_check_start(&px->reaper, reap);
    }
}

void pgl_proxy_maybe_exit(pgl_proxy *px)
{
    if (px->shutting_down && px->nclients == 0 && !px->exit_requested) {
        px->exit_requested = true;
        pgl_proxy_reap_later(px);
    }
}

static void stop_finish(pgl_proxy *px)
{
    pgl_pools_free(px);
    uv_stop(px->loop);
}

/* Last step of shutdown: no clients are left. Servers are closed (politely,
 * with Terminate), then leases revoked; uv_run returns when that is done. */
static void stop_everything(pgl_proxy *px)
{
    if (px->stopped)
        return;
    px->stopped = true;
    pgl_log_info(NULL, "shutting down: closing %s", "server connections");
    pgl_listeners_close(px->listeners);
    px->listeners = NULL;
    uv_timer_stop(&px->janitor);
    uv_signal_stop(&px->sig_term);
    uv_signal_stop(&px->sig_int);
    uv_signal_stop(&px->sig_hup);
    uv_signal_stop(&px->sig_usr1);
    uv_signal_stop(&px->sig_usr2);
    pgl_pools_close_servers(px);
    pgl_creds_shutdown(px, stop_finish);
}

/* ---- janitor ---------------------------------------------------------------------- */

/* During shutdown: close every client that is between transactions. */
static void shutdown_sweep(pgl_proxy *px, uint64_t now)
{
    bool deadline = now >= px->shutdown_deadline;
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &px->clients)
    {
        pgl_client *c = pgl_container_of(it, pgl_client, node);
        bool between = c->state != PGL_CLIENT_ACTIVE ||
                       (c->link != NULL && pgl_server_between_transactions(c->link));
        if (between || deadline)
            pgl_client_fail(c, "FATAL", "57P01", "terminating connection: pglease is shutting down");
    }
}

static void on_janitor(uv_timer_t *t)
{
    pgl_proxy *px = t->data;
    uint64_t now = pgl_now_ms(px);
    if (px->shutting_down) {
        shutdown_sweep(px, now);
        pgl_proxy_maybe_exit(px);
        return;
    }
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &px->clients)
    {
        pgl_client_janitor(pgl_container_of(it, pgl_client, node), now);
    }
    pgl_list_foreach(it, tmp, &px->pools)
    {
        pgl_pool_janitor(pgl_container_of(it, pgl_pool, node), now);
    }
}

/* ---- signals ----------------------------------------------------------------------- */

static void begin_shutdown(pgl_proxy *px, bool fast)
{
    uint64_t now = pgl_now_ms(px);
    uint64_t grace = fast ? 0 : (uint64_t)px->conf->shutdown_timeout * 1000;
    if (px->shutting_down) {
        /* A second signal (or SIGINT after SIGTERM) shortens the wait. */
        if (now + grace < px->shutdown_deadline)
            px->shutdown_deadline = now + grace;
    } else {
        px->shutting_down = true;
        px->shutdown_deadline = now + grace;
        pgl_listeners_pause(px->listeners, true);
        uv_timer_start(&px->janitor, on_janitor, 0, SHUTDOWN_SWEEP_MS);
    }
    pgl_log_info(NULL, "%s shutdown: %d clients, waiting up to %llu ms for transactions",
                 fast ? "fast" : "graceful", px->nclients, (unsigned long long)grace);
    pgl_proxy_maybe_exit(px);
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
    case SIGHUP:
        /* Reload arrives with its own issue; until then say so. */
        pgl_log_warning(NULL, "SIGHUP: configuration reload is not supported yet; "
                              "restart to apply changes");
        break;
    case SIGUSR1:
        pgl_log_info(NULL, "SIGUSR1: pausing (no new server work)");
        px->paused = true;
        break;
    case SIGUSR2: {
        pgl_log_info(NULL, "SIGUSR2: resuming");
        px->paused = false;
        pgl_list *it, *tmp;
        pgl_list_foreach(it, tmp, &px->pools)
        {
            pgl_pool_kick(pgl_container_of(it, pgl_pool, node));
        }
        break;
    }
    default:
        break;
    }
}

/* ---- run ---------------------------------------------------------------------------- */

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int pgl_proxy_run(pgl_conf *conf, const char *conf_path, bool verbose)
{
    (void)conf_path;
    signal(SIGPIPE, SIG_IGN);
    pgl_proxy px_storage, *px = &px_storage;
    memset(px, 0, sizeof *px);
    px->conf = conf;
    px->loop = uv_default_loop();
    pgl_list_init(&px->pools);
    pgl_list_init(&px->clients);
    pgl_list_init(&px->zombie_clients);
    pgl_list_init(&px->zombie_servers);
    pgl_log_setup(conf->log_format == PGL_CONF_LOG_JSON, verbose ? PGL_LOG_DEBUG : PGL_LOG_INFO);
    char err[512] = "";
    int exit_code = 1;

    char pgvar[64];
    int npg = pgl_upstream_isolate_env(pgvar, sizeof pgvar);
    if (npg > 0)
        pgl_log_info(NULL, "ignoring %d PG* environment variable(s) such as %s: upstream "
                           "connections use only the configured parameters", npg, pgvar);
    if (RAND_bytes(px->scram_mock_key, sizeof px->scram_mock_key) != 1) {
        pgl_log(PGL_LOG_FATAL, NULL, "cannot draw random bytes");
        return 1;
    }
    if (conf->auth_file != NULL) {
        bool scram = conf->auth_type == PGL_CONF_AUTH_SCRAM;
        if (pgl_userlist_load(conf->auth_file, scram, &px->users, err, sizeof err) != 0) {
            pgl_log(PGL_LOG_FATAL, NULL, "auth_file: %s", err);
            goto out;
        }
    }
    if (pgl_tls_server_ctx(conf, &px->tls_ctx, px->tls_cert_hash, &px->tls_cert_hash_len, err,
                           sizeof err) != 0 ||
        pgl_cancel_table_init(&px->cancels) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "%s", err[0] ? err : "out of memory");
        goto out;
    }
    if (pgl_pools_init(px) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "cannot set up the pools");
        goto out;
    }
    if (pgl_creds_init(px, err, sizeof err) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "vault: %s", err);
        pgl_pools_free(px);
        goto stop;
    }
    pgl_conn_loop_init(&px->conns, px->loop, CONN_BUF_SIZE);
    uv_timer_init(px->loop, &px->janitor);
    px->janitor.data = px;
    uv_check_init(px->loop, &px->reaper);
    px->reaper.data = px;
    uv_signal_t *sigs[] = {&px->sig_term, &px->sig_int, &px->sig_hup, &px->sig_usr1,
                           &px->sig_usr2};
    int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < 5; i++) {
        uv_signal_init(px->loop, sigs[i]);
        sigs[i]->data = px;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }
    if (pgl_listeners_open(px->loop, conf, pgl_client_accept, px, &px->listeners, err,
                           sizeof err) != 0) {
        pgl_log(PGL_LOG_FATAL, NULL, "%s", err);
        pgl_pools_free(px);
        goto stop;
    }
    uv_timer_start(&px->janitor, on_janitor, JANITOR_MS, JANITOR_MS);
    pgl_log_info(NULL, "pglease %s ready: %zu database(s), pool_mode=%s, auth_type=%s",
                 PGL_VERSION, conf->ndatabases, pgl_conf_pool_mode_name(conf->pool_mode),
                 pgl_conf_auth_type_name(conf->auth_type));
    uv_run(px->loop, UV_RUN_DEFAULT);
    exit_code = 0;
    pgl_log_info(NULL, "bye");
stop:
    pgl_listeners_close(px->listeners);
    px->listeners = NULL;
    pgl_conn_loop_close(&px->conns);
    pgl_creds_free(px);
    uv_walk(px->loop, close_walk, NULL);
    uv_run(px->loop, UV_RUN_DEFAULT);
    reap(&px->reaper);
out:
    pgl_cancel_table_free(&px->cancels);
    pgl_userlist_free(px->users);
    if (px->tls_ctx)
        SSL_CTX_free(px->tls_ctx);
    pgl_conn_loop_free_buffers(&px->conns);
    uv_loop_close(px->loop);
    OPENSSL_cleanse(px->scram_mock_key, sizeof px->scram_mock_key);
    return exit_code;
}
