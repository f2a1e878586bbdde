/*
 * pgl_proxy — the running process: one config snapshot, the local users,
 * the client TLS context, Vault, the pools, the loop and what lives on it
 * (clients, listeners, cancel keys, timers, the reaper), and the signals.
 *
 * Ownership: the proxy owns pools and clients; a pool owns its generations,
 * a generation lists its servers. A client and a server are linked
 * (client->link, server->link) only while the server works for that
 * client. Every object's state changes in its own set_state, which also
 * moves it between the counted lists its owner keeps.
 *
 * Memory policy: allocation failure on the connection path closes that
 * connection (with 53200 when a message can still be sent); at start-up
 * it is fatal.
 */
#ifndef PGL_PROXY_H
#define PGL_PROXY_H

#include "pgl_cancel.h"
#include "pgl_conf.h"
#include "pgl_conn.h"
#include "pgl_list.h"
#include "pgl_pgwire_scram.h"
#include "pgl_userlist.h"

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

typedef struct pgl_proxy pgl_proxy;
typedef struct pgl_listener pgl_listener;

/* ---- the process ------------------------------------------------------------ */

struct pgl_proxy {
    uv_loop_t *loop;
    pgl_conf *conf;
    pgl_userlist *users;
    SSL_CTX *tls_ctx; /* client side, NULL when disabled */
    uint8_t tls_cert_hash[64];
    size_t tls_cert_hash_len;
    uint8_t scram_mock_key[PGL_PGWIRE_SCRAM_KEY_LEN];
    pgl_conn_loop conns;
    pgl_list pools;
    pgl_list clients;
    int nclients;
    /* Closed objects wait here until the loop is outside every callback
     * that may still hold a pointer to them; the reaper frees them. */
    pgl_list zombie_clients;
    pgl_list zombie_servers;
    uv_check_t reaper;
    bool reap_pending;
    pgl_listener *listeners;
    uv_timer_t janitor;
    struct pgl_vault *vault; /* NULL when no database takes credentials from Vault */
    uv_timer_t creds_timer;
    uv_timer_t stop_timer;    /* bounds the wait for lease revocations at exit */
    void (*creds_done)(pgl_proxy *px); /* runs once revocations at exit are answered */
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
    pgl_cancel_table cancels;
    uint64_t next_client_id, next_server_id;
    bool shutting_down;
    bool exit_requested; /* no clients left: stop at the next reap */
    bool stopped;
    bool fast_shutdown;
    bool paused;
    uint64_t shutdown_deadline; /* ms */
    int exit_code;
};


uint64_t pgl_now_ms(const pgl_proxy *px);

/* No clients are left during a shutdown: stop at the next reap. */
void pgl_proxy_maybe_exit(pgl_proxy *px);
/* Schedules the reaper for the zombie lists. */
void pgl_proxy_reap_later(pgl_proxy *px);
/* Runs the proxy until shutdown; returns the process exit code. */
int pgl_proxy_run(pgl_conf *conf, const char *conf_path, bool verbose);

#endif
