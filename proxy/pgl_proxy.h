/*
 * pgl_proxy — the running process: the config snapshot, the local users,
 * the client TLS context, Vault, the pools and the signals, plus the loop
 * everything runs on (pgl_loop: clients, listeners, cancel keys, timers,
 * the reaper).
 *
 * Ownership: the proxy owns its pools and its loop; a pool owns its
 * generations, a generation lists its servers; a loop owns its clients. A
 * client and a server are linked (client->link, server->link) only while
 * the server works for that client. Every object's state changes in its
 * own set_state, which also moves it between the counted lists its owner
 * keeps.
 *
 * Memory policy: allocation failure on the connection path closes that
 * connection (with 53200 when a message can still be sent); at start-up
 * it is fatal.
 */
#ifndef PGL_PROXY_H
#define PGL_PROXY_H

#include "pgl_client.h"
#include "pgl_conf.h"
#include "pgl_list.h"
#include "pgl_loop.h"
#include "pgl_pgwire_scram.h"
#include "pgl_stats.h"
#include "pgl_tls.h"
#include "pgl_userlist.h"

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

typedef struct pgl_proxy pgl_proxy;

/* A snapshot a reload replaced, kept while pools of databases it removed
 * drain (their entries point into it). */
typedef struct pgl_conf_ref {
    pgl_conf *conf;
    _Atomic int refs; /* the removed pools of every loop drop theirs */
} pgl_conf_ref;
void pgl_conf_ref_drop(pgl_conf_ref *ref);

/* A console command that completes later (pgl_admin.c). */
#define PGL_ADMIN_WAITS 8
typedef struct {
    pgl_client *client; /* NULL: free slot; checked against the loop's clients */
    uint64_t client_id;
    int loop;           /* the client's loop */
    char db[128];       /* "" for every database */
    char rest[1024];    /* the statements of the query string after this one */
} pgl_admin_wait;

struct pgl_proxy {
    /* The current snapshot. Swapped only by pgl_proxy_apply_conf; nothing
     * keeps a pointer into it across a return to the loop except through
     * this field (pools look their database up by name). */
    pgl_conf *conf;
    pgl_userlist *users;
    SSL_CTX *tls_ctx; /* client side, NULL when disabled */
    uint8_t tls_cert_hash[PGL_TLS_CERT_HASH_MAX];
    size_t tls_cert_hash_len;
    uint8_t scram_mock_key[PGL_PGWIRE_SCRAM_KEY_LEN];
    struct pgl_vault *vault; /* NULL when no database takes credentials from Vault */
    uv_timer_t creds_timer;
    uv_timer_t stop_timer;             /* bounds the wait for lease revocations at exit */
    void (*creds_done)(pgl_proxy *px); /* runs once revocations at exit are answered */
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
    const pgl_client_console *console; /* answers console clients (pgl_admin) */
    bool shutting_down;
    /* Every Vault-backed database has had a credential (pgl_creds.c);
     * always true without Vault. */
    bool ready;
    uint64_t not_ready_logged; /* ms: the last "not ready" line */
    bool stopped;
    bool paused;
    uint64_t shutdown_deadline; /* ms */
    char *pidfile;              /* written at start, removed at exit */
    char **env;                 /* what the configuration read from the environment
                                   at start (pgl_secenv_conf_env): a reload reads it again */
    bool verbose;               /* -v */
    /* Observability (pgl_stats.h, pgl_metrics.c): Vault request outcomes,
     * and reloads (the reload increments these). */
    pgl_stats_vault vault_stats;
    uint64_t reloads_ok, reloads_failed;
    uint64_t started_ms; /* loop clock at start, for uptime */
    /* Console commands waiting to complete (a PAUSE waits for busy
     * servers), polled by admin_timer; both set up on first use. */
    pgl_admin_wait admin_waits[PGL_ADMIN_WAITS];
    uv_timer_t admin_timer;
    bool admin_timer_ready;
    struct pgl_http *http;   /* the HTTP endpoint, NULL when off (pgl_http.c) */
    pgl_loop main;              /* loop 0: accepts, Vault, console, reload, signals, HTTP */
    /* Every loop, main first (pgl_worker.h); nloops = workers. */
    pgl_loop *loops[64];
    int nloops;
    int nloops_running; /* those whose thread runs (loop 0 counts) */
    _Atomic int nclients;  /* of every loop (max_client_conn) */
    unsigned next_loop; /* the loop the next accepted connection goes to */
    /* Parking the other loops (pgl_worker.c). */
    uv_mutex_t park_mu;
    uv_cond_t park_cond;
    int parked, park_depth;
    uint64_t park_epoch;
    uv_timer_t replica_timer; /* keeps the replicas in step (pgl_replica.c) */
    bool replica_timer_on;
};

/* The clock of the loop this thread runs, ms (every loop's clock counts
 * from the same origin). */
static inline uint64_t pgl_now_ms(const pgl_proxy *px)
{
    (void)px;
    return pgl_loop_now(pgl_loop_current);
}

/*
 * Makes `next` the current config snapshot, taking it, and frees the one
 * it replaces. Every database of the running pools must be in `next`;
 * settings the pools read (sizes, modes, timeouts) apply from now on. The
 * reload adds the diff on top of this seam (new and removed databases,
 * changed upstreams, listeners). 0, or a negative error with `err` saying
 * why; `next` is then freed and the old snapshot stays.
 */
int pgl_proxy_apply_conf(pgl_proxy *px, pgl_conf *next, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Starts a shutdown: `fast` as SIGINT (clients closed at once), else as
 * SIGTERM (transactions may finish within shutdown_timeout). */
void pgl_proxy_shutdown(pgl_proxy *px, bool fast);

/*
 * SIGHUP and the console's RELOAD (pgl_reload.c): reads the file and the
 * start-time environment again, validates everything, and only then
 * applies the difference live; on any error the running configuration
 * stays untouched and `err` says why (file, line, key). `why` names the
 * trigger for the log. 0 or a negative error.
 */
int pgl_proxy_reload(pgl_proxy *px, const char *why, char *err, size_t errlen);

/* Runs the proxy with `conf` (taken) until shutdown; `env` (taken) is what
 * the configuration read from the environment. Returns the process exit
 * code. */
int pgl_proxy_run(pgl_conf *conf, char **env, bool verbose);

#endif
