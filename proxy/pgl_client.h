/*
 * pgl_client — one application connection.
 *
 * pgl_client.c: its life (accept, states, close, timeouts) and forwarding
 * to whatever server the pool links. pgl_client_login.c: the startup
 * packet, TLS, local authentication and the welcome.
 *
 * States change only through pgl_client_set_state, which checks that the
 * move is one the protocol allows and moves the client between its pool's
 * counted lists (login_wait, idle, waiting, active); a client that is not
 * logged in yet, or that talks to the admin console, is in none of them.
 * A closed client waits on the proxy's zombie list until the reaper frees
 * it outside every callback.
 */
#ifndef PGL_CLIENT_H
#define PGL_CLIENT_H

#include "pgl_cancel.h"
#include "pgl_conn.h"
#include "pgl_list.h"
#include "pgl_pgwire_scram.h"
#include "pgl_stmt.h"
#include "pgl_userlist.h"
#include "pgl_varcache.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

typedef struct pgl_loop pgl_loop;
typedef struct pgl_pool pgl_pool;
typedef struct pgl_server pgl_server;
typedef struct pgl_client pgl_client;

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
    PGL_CLIENT_CLOSING,           /* closed; freed by the reaper */
} pgl_client_state;

/*
 * Running a request again when its server was terminated before answering
 * (pgl_client_replay.c). Only a request that starts a transaction in
 * transaction mode qualifies: one simple Query, or unnamed extended-protocol
 * messages up to their Sync, kept (pgl_conn_keep) until the first answer.
 */
typedef enum {
    PGL_REPLAY_OFF = 0, /* nothing kept */
    PGL_REPLAY_OPEN,    /* keeping an extended-protocol request; its Sync not seen yet */
    PGL_REPLAY_SENT,    /* the whole request is kept; no answer yet */
} pgl_replay;

typedef enum {
    PGL_AUTH_STEP_NONE = 0,
    PGL_AUTH_STEP_MD5,        /* sent AuthenticationMD5Password */
    PGL_AUTH_STEP_SASL_INIT,  /* sent AuthenticationSASL */
    PGL_AUTH_STEP_SASL_FINAL, /* sent AuthenticationSASLContinue */
} pgl_auth_step;

struct pgl_client {
    /* Fields ordered to leave no padding: every idle client carries one. */
    pgl_conn conn;
    pgl_loop *lp;       /* the loop it lives on; lp->px the process */
    uint64_t id;
    pgl_list node;      /* lp->clients; the zombie list once closed */
    pgl_list pool_node; /* pool->login_wait / idle / waiting / active by state */
    pgl_cancel_key cancel;
    pgl_pool *pool;     /* NULL for the admin console */
    pgl_server *link;
    SSL *pending_ssl;   /* SSLRequest answered 'S', handshake not started yet */
    /* Names are one heap copy (NULL until the startup packet); the peer
     * address is kept binary and the log context is formatted only when a
     * line is written (PGL_CLIENT_CTX). */
    char *user;         /* one allocation holding both names */
    const char *database;
    pgl_varcache *vars; /* what the client set itself; NULL while nothing */
    pgl_stmt_names *stmts; /* transaction mode: its named statements; NULL while none */
    /* Set when the client must go but is idle (a rotation asks a session to
     * reconnect, its database was removed): the FATAL answers its next
     * message, so the client reads it as that query's error rather than as
     * a message arriving while idle, which libpq only hands to its notice
     * processor. A static string. */
    const char *doomed;

    /* Authentication in progress. */
    pgl_pgwire_scram_server *scram;
    const pgl_user *auth_user; /* NULL when unknown: the exchange still runs */

    uint64_t connect_time;  /* ms, loop clock */
    uint64_t wait_since;    /* ms, when it started waiting for a server */
    uint64_t last_activity; /* ms */
    uint64_t queries;

    pgl_client_state state;
    pgl_auth_step auth_step;
    pgl_peer_addr peer;
    uint8_t md5_salt[4];
    bool admin;
    bool tls;
    bool pinned; /* transaction mode: keeps its server (it left session state there) */
    bool counted; /* the message being peeked was counted at its header */
    uint8_t replay; /* pgl_replay */
    uint8_t replayed; /* times the current request ran again */
    bool replay_now; /* its server is closing because it was terminated: run it again */
};

/* "C-<id> db/user@addr" for log lines, into buf (PGL_CLIENT_CTX_LEN). */
#define PGL_CLIENT_CTX_LEN 256
const char *pgl_client_ctx(const pgl_client *c, char *buf, size_t cap);
/* A context formatted into a buffer that lives for the enclosing
 * statement: only evaluated when the line is logged. */
#define PGL_CLIENT_CTX(c) pgl_client_ctx((c), (char[PGL_CLIENT_CTX_LEN]){0}, PGL_CLIENT_CTX_LEN)

/* What answers console clients (the admin console, pgl_admin.c): the
 * process sets it, so clients need not call up into the console. */
typedef struct {
    /* The console's ParameterStatus set, queued on the client. 0 or -ENOMEM. */
    int (*welcome_params)(pgl_client *c);
    /* One message from a console client. */
    void (*query)(pgl_client *c, uint8_t type, const uint8_t *body, uint32_t len);
} pgl_client_console;

/* `sa` is the peer's address, NULL for a unix socket (a listener's accept
 * callback; `arg` is the loop). */
void pgl_client_accept(void *arg, int fd, const struct sockaddr *sa);

/* The one place a client changes state (see above). */
void pgl_client_set_state(pgl_client *c, pgl_client_state to);

/* The pool assigned `server` to a waiting client; start forwarding. */
void pgl_client_link(pgl_client *client, pgl_server *server);
/* The pool's ParameterStatus set is known (or login failed): finish the login. */
void pgl_client_login_ready(pgl_client *client);
/* Ends a client, first sending an ErrorResponse when sqlstate is not NULL. */
void pgl_client_fail(pgl_client *client, const char *severity, const char *sqlstate,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void pgl_client_close(pgl_client *client);
/* The linked server went away while the client needed it. */
void pgl_client_server_lost(pgl_client *client, const char *why);

/* The client must go (`why`, static): it gives its server back now (the
 * caller checked it is between transactions) and gets FATAL 57P01 `why` at
 * its next message. */
void pgl_client_doom(pgl_client *c, const char *why);
#define PGL_CLIENT_DB_REMOVED                                                                      \
    "terminating connection: its database was removed from the configuration"
#define PGL_CLIENT_USER_REMOVED                                                                    \
    "terminating connection: its user's [users] entry was removed from the configuration"

/* ---- replay (pgl_client_replay.c) ---- */

/* At the header of each message the client sends to its server. */
void pgl_client_replay_header(pgl_client *c, uint8_t type, uint32_t len);
/* A peeked Parse/Bind/Describe: only unnamed statements can run again. */
void pgl_client_replay_look(pgl_client *c, uint8_t type, const uint8_t *body, uint32_t len);
/* The server answered: what was kept is no longer needed. */
void pgl_client_replay_off(pgl_client *c);
/* The server's first answer is this ErrorResponse: true when it says the
 * server was terminated (57P01) and the request can run again, which
 * happens once the server is closed (pgl_client_server_lost). */
bool pgl_client_replay_wanted(pgl_client *c, const uint8_t *body, uint32_t len);
/* The server connection was reset (pgl_io's `reset`) before answering:
 * true when the request can run again (see pgl_client_replay.c). */
bool pgl_client_replay_reset(pgl_client *c);
/* From pgl_client_server_lost: puts the kept request back in front of what
 * the client sent since, and the client back in the pool's queue. false
 * when it cannot run again (the client then gets the error). */
bool pgl_client_replay_run(pgl_client *c);
void pgl_client_janitor(pgl_client *client, uint64_t now);
/* The linked server is ready for the client's bytes (after SETs). */
void pgl_client_go(pgl_client *client);
/* A transaction left session state on the client's server (`what`, for
 * the log): the client keeps that server until it leaves. */
void pgl_client_pin(pgl_client *client, const char *what);
/* The server went back to the pool; the client idles until its next query. */
void pgl_client_unlinked(pgl_client *client);
void pgl_client_free(pgl_client *client);
/* Records a session parameter the client expects to keep. 0 or -ENOMEM. */
int pgl_client_set_var(pgl_client *client, pgl_var v, const char *value)
    __attribute__((warn_unused_result));
/* Records any other setting it expects to keep (set on each server it gets). */
int pgl_client_set_extra(pgl_client *client, const char *name, const char *value)
    __attribute__((warn_unused_result));

/* ---- pgl_client_stmt.c -------------------------------------------------- */

/* A Parse, Bind, Describe or Close on its way to a server that shares
 * named statements (pgl_stmt.h): rewritten in place. `whole` is false when
 * `body` is only the start of the message. Fails the client when out of
 * memory. */
void pgl_client_stmt_message(pgl_client *c, uint8_t type, const uint8_t *body, uint32_t len,
                             bool whole);
/* The client's statements are gone (it ran DISCARD ALL / DEALLOCATE ALL). */
void pgl_client_stmt_forget_all(pgl_client *c);
void pgl_client_stmt_free(pgl_client *c);

/* ---- pgl_client_login.c ------------------------------------------------- */

/* The startup packet (body after the length word). */
void pgl_client_on_startup(pgl_client *c, const uint8_t *body, uint32_t len);
/* A PasswordMessage / SASLInitialResponse / SASLResponse ('p'). */
void pgl_client_on_password(pgl_client *c, const uint8_t *body, uint32_t len);
/* The 'S' answer to SSLRequest is written: start the TLS handshake. */
void pgl_client_start_tls(pgl_client *c);

#endif
