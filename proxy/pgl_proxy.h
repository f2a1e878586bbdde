/*
 * pgl_proxy — the objects of the running proxy and how they refer to each
 * other. Shared by the files of proxy/ only; nothing outside includes it.
 *
 *   pgl_proxy       one per process: loop, config snapshot, users, pools,
 *                   listeners, clients, cancel keys, janitor timer.
 *   pgl_pool        one per [databases] entry: generations, servers,
 *                   waiting clients, the ParameterStatus set new clients get.
 *   pgl_generation  one upstream credential of a pool; servers belong to it.
 *   pgl_client      one application connection.
 *   pgl_server      one upstream connection.
 *   pgl_conn        the byte stream of either side (pgl_conn.h).
 *
 * Ownership: the proxy owns pools and clients; a pool owns its generations
 * and servers. A client and a server are linked (client->link,
 * server->link) only while the server works for that client.
 *
 * Memory policy: allocation failure on the connection path closes that
 * connection (with 53200 when a message can still be sent); at start-up
 * it is fatal.
 */
#ifndef PGL_PROXY_H
#define PGL_PROXY_H

#include "pgl_conf.h"
#include "pgl_conn.h"
#include "pgl_list.h"
#include "pgl_pgwire_scram.h"
#include "pgl_upstream.h"
#include "pgl_userlist.h"
#include "pgl_varcache.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <libpq-fe.h>
#include <openssl/ssl.h>
#include <uv.h>

typedef struct pgl_proxy pgl_proxy;
typedef struct pgl_pool pgl_pool;
typedef struct pgl_generation pgl_generation;
typedef struct pgl_client pgl_client;
typedef struct pgl_server pgl_server;
typedef struct pgl_upstream pgl_upstream;

/* ---- clients ----------------------------------------------------------- */

/* A client's address: family 0 is a unix socket. */
typedef struct {
    uint8_t family; /* 0, AF_INET, AF_INET6 */
    uint16_t port;
    uint8_t ip[16];
} pgl_peer_addr;

/* "ip:port", "[ip6]:port" or "unix" into buf (at least 64 bytes). */
const char *pgl_peer_addr_format(const pgl_peer_addr *a, char *buf, size_t cap);

typedef enum {
    PGL_CLIENT_TLS_HANDSHAKE = 0, /* SSLRequest answered 'S', TLS accept running */
    PGL_CLIENT_STARTUP,           /* waiting for the startup packet */
    PGL_CLIENT_AUTH,              /* password / SASL exchange running */
    PGL_CLIENT_LOGIN_WAIT,        /* authenticated, waiting for the pool's parameters */
    PGL_CLIENT_IDLE,              /* logged in, no server */
    PGL_CLIENT_WAITING,           /* has a request, waits for a server */
    PGL_CLIENT_ACTIVE,            /* linked to a server */
    PGL_CLIENT_CLOSING,           /* flushing a last message, then closed */
} pgl_client_state;

typedef enum {
    PGL_AUTH_STEP_NONE = 0,
    PGL_AUTH_STEP_MD5,        /* sent AuthenticationMD5Password */
    PGL_AUTH_STEP_SASL_INIT,  /* sent AuthenticationSASL */
    PGL_AUTH_STEP_SASL_FINAL, /* sent AuthenticationSASLContinue */
} pgl_auth_step;

struct pgl_client {
    /* Fields ordered to leave no padding: every idle client carries one. */
    pgl_conn conn;
    pgl_proxy *px;
    uint64_t id;
    pgl_list node;      /* px->clients */
    pgl_list wait_node; /* pool->waiting while WAITING / LOGIN_WAIT */
    pgl_list hash_node; /* cancel key bucket */
    pgl_pool *pool;     /* NULL for the admin console */
    pgl_server *link;
    SSL *pending_ssl;   /* SSLRequest answered 'S', handshake not started yet */
    /* Names are one heap copy (NULL until the startup packet); the peer
     * address is kept binary and the log context is formatted only when a
     * line is written (pgl_client_ctx). */
    char *user;         /* one allocation holding both names */
    const char *database;
    pgl_varcache *vars; /* what the client set itself; NULL while nothing */

    /* Authentication in progress. */
    pgl_pgwire_scram_server *scram;
    const pgl_user *auth_user; /* NULL when unknown: the exchange still runs */

    uint64_t connect_time;  /* ms, loop clock */
    uint64_t wait_since;    /* ms, when it started waiting for a server */
    uint64_t last_activity; /* ms */
    uint64_t queries;

    pgl_client_state state;
    pgl_auth_step auth_step;
    uint32_t cancel_pid, cancel_key;
    pgl_peer_addr peer;
    uint8_t md5_salt[4];
    bool admin;
    bool tls;
    bool closing;       /* pgl_client_close under way */
};

/* ---- servers ----------------------------------------------------------- */

typedef enum {
    PGL_SERVER_CONNECTING = 0, /* libpq login running */
    PGL_SERVER_IDLE,           /* in the pool, ready */
    PGL_SERVER_ACTIVE,         /* linked to a client, forwarding */
    PGL_SERVER_INTERNAL,       /* running pglease's own query (reset, SETs) */
    PGL_SERVER_CLOSED,         /* gone; freed when nothing refers to it */
} pgl_server_state;

/* What an internal query is for, i.e. what to do once it is done. */
typedef enum {
    PGL_SERVER_Q_NONE = 0,
    PGL_SERVER_Q_RESET,    /* DISCARD ALL after a session: then idle */
    PGL_SERVER_Q_SETVARS,  /* client parameters: then forward the client */
} pgl_server_query;

struct pgl_server {
    pgl_conn conn;
    pgl_pool *pool;
    pgl_generation *gen;
    pgl_server_state state;
    pgl_server_query query;
    uint64_t id;
    pgl_list node;    /* pool->idle or pool->active or pool->connecting */
    pgl_client *link;
    pgl_upstream *up; /* while CONNECTING */
    PGconn *pg;       /* after login; PQfinish on close */
    int backend_pid;
    pgl_varcache vars;
    char log_ctx[160];
    char rfq_status;        /* last ReadyForQuery status: 'I', 'T', 'E' */
    uint32_t expected_rfq;  /* Query/Sync/FunctionCall sent and not yet answered */
    bool query_failed;      /* the internal query got an ErrorResponse */
    uint64_t created;       /* ms */
    uint64_t last_used;     /* ms */
};

/* ---- pools and generations ------------------------------------------------ */

typedef enum {
    PGL_GEN_ACTIVE = 0, /* new servers use it */
    PGL_GEN_WARMING,    /* fresh from Vault: proving itself with a first login */
    PGL_GEN_DRAINING,   /* a newer generation took over; servers retire as they are replaced */
    PGL_GEN_DEAD,       /* its credential no longer works */
} pgl_generation_state;

struct pgl_generation {
    pgl_pool *pool;
    uint64_t id;
    pgl_generation_state state;
    pgl_list node; /* pool->generations, newest first */
    char *user;
    char *password; /* wiped on free */
    int nservers;
    /* Draining only: how many of its servers a server of the active
     * generation has already replaced; that many close at their next
     * release (never more than nservers). */
    int replaced;
    /* Draining and its deadline is near: every server closes at release,
     * replaced or not, so none is cut mid-transaction. */
    bool hurry;

    /* Vault-issued credentials only (lease_id NULL otherwise). Times are
     * loop milliseconds; UINT64_MAX means "not known to end". */
    char *lease_id;
    bool is_static;
    bool renewable;
    bool end_final;       /* `end` will not move: renewals are capped or over */
    long lease_duration;  /* seconds, as issued: the renewal increment */
    uint64_t issued, end, renew_at, rotate_at;
    uint64_t drain_since;
    uint64_t token_id;   /* which Vault token created the lease */
    uint64_t token_end;  /* that token's final end once known, else 0 */
    struct pgl_vault_op *renew_op;
};

/* A ParameterStatus pair a new client receives. */
typedef struct {
    char *name;
    char *value;
} pgl_param;

struct pgl_pool {
    pgl_proxy *px;
    char *name;
    const pgl_conf_database *db; /* in px->conf */
    pgl_list node;               /* px->pools */
    pgl_list generations;
    pgl_list idle;       /* servers, most recently used first */
    pgl_list active;     /* linked or running an internal query */
    pgl_list connecting; /* login in progress */
    pgl_list waiting;    /* clients, FIFO */
    pgl_list login_wait; /* clients waiting for `params` */
    int nservers;        /* all of the above lists */
    int pool_size, min_pool_size;
    pgl_conf_pool_mode mode;
    pgl_param *params; /* NULL until the first server logged in */
    size_t nparams;
    pgl_varcache defaults; /* the tracked ones among `params` */
    uint64_t next_gen_id;
    /* Last upstream login failure, given to clients that waited for it. */
    char fail_sqlstate[6];
    char fail_message[256];
    uint64_t fail_time;
    int consecutive_failures;
    uint64_t retry_after; /* ms: no new login attempt before this */
    bool room_wanted;     /* the next server released closes: a new credential needs its slot */
    /* Vault: at most one credential request in flight per pool. */
    struct pgl_vault_op *fetch_op;
    int fetch_failures;
    char vault_error[256];
    uint64_t refetch_at;
    /* Counters for SHOW STATS. */
    uint64_t total_xact, total_query, total_wait_us;
};

/* ---- the process ------------------------------------------------------------ */

typedef struct pgl_listener pgl_listener;

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
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1, sig_usr2;
    pgl_list *cancel_buckets;
    size_t ncancel_buckets;
    uint64_t next_client_id, next_server_id;
    bool shutting_down;
    bool exit_requested; /* no clients left: stop at the next reap */
    bool stopped;
    bool fast_shutdown;
    bool paused;
    uint64_t shutdown_deadline; /* ms */
    int exit_code;
};

/* ---- functions across files ------------------------------------------------- */

uint64_t pgl_now_ms(const pgl_proxy *px);

/* pgl_listener.c: TCP and unix listeners, accept loop */
int pgl_listeners_open(pgl_proxy *px, char *err, size_t errlen);
/* Stops (or resumes) accepting, keeping the sockets: SIGUSR1/SIGUSR2, shutdown. */
void pgl_listeners_pause(pgl_proxy *px, bool pause);
void pgl_listeners_close(pgl_proxy *px);

/* pgl_client.c */
/* `sa` is the peer's address, NULL for a unix socket. */
void pgl_client_accept(pgl_proxy *px, int fd, const struct sockaddr *sa);
/* "C-<id> db/user@addr" for log lines; a static buffer, valid until the next call. */
const char *pgl_client_ctx(const pgl_client *c);
/* The pool assigned `server` to a waiting client; start forwarding. */
void pgl_client_link(pgl_client *client, pgl_server *server);
/* The pool's ParameterStatus set is known (or login failed): finish logins. */
void pgl_client_login_ready(pgl_client *client);
/* Ends a client, first sending an ErrorResponse when sqlstate is not NULL. */
void pgl_client_fail(pgl_client *client, const char *severity, const char *sqlstate,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void pgl_client_close(pgl_client *client);
/* The linked server went away while the client needed it. */
void pgl_client_server_lost(pgl_client *client, const char *why);
/* Server bytes were flushed to the client: server may continue. */
void pgl_client_janitor(pgl_client *client, uint64_t now);
/* The linked server is ready for the client's bytes (after SETs). */
void pgl_client_go(pgl_client *client);
/* The server went back to the pool; the client idles until its next query. */
void pgl_client_unlinked(pgl_client *client);
void pgl_client_free(pgl_client *client);
/* Records a session parameter the client expects to keep. 0 or -ENOMEM. */
int pgl_client_set_var(pgl_client *client, pgl_var v, const char *value);

/* pgl_server.c */
int pgl_server_connect(pgl_pool *pool, pgl_generation *gen);
/* Gives a server to a client (links both, applies session parameters). */
void pgl_server_assign(pgl_server *server, pgl_client *client);
/* The client is done with the server (transaction or session ended). */
void pgl_server_release(pgl_server *server);
void pgl_server_close(pgl_server *server, const char *why);
int pgl_server_cancel(pgl_server *server);
void pgl_server_free(pgl_server *server);

/* pgl_pool.c */
/* min_ms doubled per failure after the first, capped at max_ms: the
 * backoff bound for logins (used as is) and Vault reads (full jitter). */
uint64_t pgl_backoff_ceiling(uint64_t min_ms, uint64_t max_ms, int failures);
int pgl_pools_init(pgl_proxy *px);
void pgl_pools_free(pgl_proxy *px);
/* Closes every server connection of every pool (shutdown). */
void pgl_pools_close_servers(pgl_proxy *px);
pgl_pool *pgl_pool_find(pgl_proxy *px, const char *name);
/* A client needs a server: queue it and make sure one is coming. */
void pgl_pool_want_server(pgl_pool *pool, pgl_client *client);
/* A server became idle (or a new one logged in): serve the next waiter. */
void pgl_pool_server_ready(pgl_pool *pool, pgl_server *server);
/* Makes sure enough servers are coming for the waiting clients. */
void pgl_pool_kick(pgl_pool *pool);
/* A login succeeded: learn the ParameterStatus set, reset the backoff. */
void pgl_pool_login_succeeded(pgl_pool *pool, pgl_generation *gen, PGconn *pg);
/* A login failed: back off, and tell the clients that waited for it. */
void pgl_pool_login_failed(pgl_pool *pool, pgl_generation *gen, const char *sqlstate,
                           const char *message);
void pgl_generation_server_gone(pgl_generation *gen);
void pgl_pool_janitor(pgl_pool *pool, uint64_t now);
/* The client stopped waiting (closed, timed out). */
void pgl_pool_forget_client(pgl_client *client);

/* pgl_creds.c: Vault credentials, generations, renewal, rotation, drain, revoke */
int pgl_creds_init(pgl_proxy *px, char *err, size_t errlen);
/* A login with `gen` succeeded: a warming generation takes over. */
void pgl_creds_login_succeeded(pgl_pool *pool, pgl_generation *gen);
/* A login with `gen` failed; true when the credential was rejected and a
 * new one is on its way (waiting clients should keep waiting). */
bool pgl_creds_login_failed(pgl_pool *pool, pgl_generation *gen, const char *sqlstate);
/* A non-active generation lost its last server: revoke its lease. */
void pgl_creds_retire(pgl_generation *gen);
/* Shutdown: revoke every lease; `done` runs when finished (bounded). */
void pgl_creds_shutdown(pgl_proxy *px, void (*done)(pgl_proxy *px));
void pgl_creds_free(pgl_proxy *px);
/* Frees a generation's memory, wiping its secrets. */
void pgl_generation_free(pgl_generation *gen);
/* The newest generation new servers should use, or NULL. */
pgl_generation *pgl_pool_generation(pgl_pool *pool);
/* Adds a generation (newest first). */
pgl_generation *pgl_pool_add_generation(pgl_pool *pool, const char *user, const char *password,
                                        pgl_generation_state state);
pgl_server *pgl_pool_find_server(pgl_list *list, const pgl_generation *gen);
/* Starts retiring `gen` (draining or dead): closes its logins in progress
 * and, unless they serve on until replaced, its idle servers; frees it when
 * it has none left. */
void pgl_pool_drain_generation(pgl_pool *pool, pgl_generation *gen);
/* A server of the active generation logged in: one old server goes (now
 * if idle, else at its release); false when none is left to retire. */
bool pgl_pool_retire_one(pgl_pool *pool);
/* Why a server whose client let go must close, or NULL when it serves on. */
const char *pgl_pool_must_close(pgl_server *server);
/* Fails the clients waiting on a pool with `sqlstate`/`message`. */
void pgl_pool_fail_waiters(pgl_pool *pool, const char *sqlstate, const char *message);

/* pgl_cancel.c */
int pgl_cancel_init(pgl_proxy *px);
void pgl_cancel_free(pgl_proxy *px);
void pgl_cancel_register(pgl_proxy *px, pgl_client *client);
void pgl_cancel_unregister(pgl_client *client);
void pgl_cancel_request(pgl_proxy *px, uint32_t pid, uint32_t key);

/* pgl_proxy.c */
void pgl_proxy_maybe_exit(pgl_proxy *px);
/* Schedules the reaper for the zombie lists. */
void pgl_proxy_reap_later(pgl_proxy *px);
/* Runs the proxy until shutdown; returns the process exit code. */
int pgl_proxy_run(pgl_conf *conf, const char *conf_path, bool verbose);

/* pgl_admin.c: the admin console (database "pglease" or "pgbouncer") */
int pgl_admin_welcome_params(pgl_client *client);
void pgl_admin_query(pgl_client *client, uint8_t type, const uint8_t *body, uint32_t len);

#endif
