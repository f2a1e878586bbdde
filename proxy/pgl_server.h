/*
 * pgl_server — one upstream connection: libpq login (pgl_upstream), then
 * raw forwarding for whichever client it is linked to, pglease's own
 * queries (DISCARD ALL after a session, parameter SETs before a client's
 * first message), and retirement.
 *
 * Owned by its pool; it belongs to one credential generation and sits in
 * one of that generation's lists (login, idle, busy) according to its
 * state. set_state is the only place that changes the state, and it moves
 * the server between those lists; a closed server waits on the proxy's
 * zombie list until the reaper frees it outside every callback.
 */
#ifndef PGL_SERVER_H
#define PGL_SERVER_H

#include "pgl_conn.h"
#include "pgl_generation.h"
#include "pgl_list.h"
#include "pgl_stmt.h"
#include "pgl_upstream.h"
#include "pgl_varcache.h"

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

typedef struct pgl_server pgl_server;
typedef struct pgl_pool pgl_pool;
typedef struct pgl_client pgl_client;
typedef struct pgl_loop pgl_loop;

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
    PGL_SERVER_Q_RESET,   /* DISCARD ALL after a session: then idle */
    PGL_SERVER_Q_SETVARS, /* client parameters: then forward the client */
    PGL_SERVER_Q_CHECK,   /* did the transaction leave session state? then release or pin */
} pgl_server_query;

struct pgl_server {
    /* What every message and transaction touches first, together. */
    pgl_conn conn;
    pgl_loop *lp; /* the loop it lives on */
    pgl_pool *pool;
    pgl_generation *gen;
    pgl_client *link;
    pgl_server_state state;
    pgl_server_query query;
    char rfq_status;       /* last ReadyForQuery status: 'I', 'T', 'E' */
    bool query_failed;     /* the internal query got an ErrorResponse */
    /* Transaction mode with track_session_state on (set at assignment). */
    bool track_state;
    /* The transaction did something that may leave session state (a tag
     * like SET/PREPARE/LISTEN, a named Parse, a query naming advisory
     * locks or temporary objects): checked before the server goes back. */
    bool state_suspect;
    bool needs_reset;      /* DISCARD ALL before the next client (it served a pinned one) */
    /* Transaction mode with max_prepared_statements: named statements are
     * rewritten (pgl_client_stmt.c) and their answers checked (set at
     * assignment). */
    bool track_stmts;
    uint32_t expected_rfq; /* Query/Sync/FunctionCall sent and not yet answered */
    uint32_t syncs_since_execute; /* Syncs after the last Execute (ignored if it starts a COPY) */
    uint64_t query_start_us, xact_start_us; /* SHOW STATS clocks (pgl_stats.h); 0: none */
    uint64_t last_used;    /* ms */
    uint64_t created;      /* ms */
    uint64_t id;
    pgl_list node; /* gen->login / idle / busy by state; the zombie list once closed */
    pgl_upstream *up; /* while CONNECTING */
    PGconn *pg;       /* after login; PQfinish on close */
    int backend_pid;
    pgl_varcache vars;
    pgl_stmt_cache stmts; /* prepared here, and Parse/Close answers owed */
    /* Cold: log lines and pglease's own queries. */
    char log_ctx[160];
    char query_sqlstate[6];
    char query_error[200];  /* its message, for the client it was for */
    char query_result[160]; /* first column of the internal query's first row */
    char *query_settings;   /* the check's second column (settings to carry), or NULL */
};

/* Starts a login with `gen`. 0 or a negative error. */
int pgl_server_connect(pgl_pool *pool, pgl_generation *gen) __attribute__((warn_unused_result));

/* Starts a libpq login to the pool's database with `gen`'s credential
 * (what pgl_server_connect does, for other uses: testing a credential). */
int pgl_server_start_login(pgl_pool *pool, pgl_generation *gen, const char *log_ctx,
                           pgl_upstream_cb cb, void *arg, pgl_upstream **up)
    __attribute__((warn_unused_result));

/* Gives an idle server to a client (links both, applies session parameters). */
void pgl_server_assign(pgl_server *server, pgl_client *client);

/* The client is done with the server (transaction or session ended). */
void pgl_server_release(pgl_server *server);

/* Closes the connection (Terminate), tells a linked client, and queues the
 * struct for the reaper. Safe to call twice. */
void pgl_server_close(pgl_server *server, const char *why);

/* Cancels the running query (from the thread pool). 0 or a negative error. */
int pgl_server_cancel(pgl_server *server) __attribute__((warn_unused_result));

/* A client message of the running transaction may leave session state
 * behind (pgl_client.c looks at Query and Parse). */
void pgl_server_note_suspect(pgl_server *server);

/* Linked, forwarding, with nothing outstanding in either direction: the
 * client could be moved, closed or given another server without losing or
 * cutting anything. */
bool pgl_server_between_transactions(const pgl_server *server);

void pgl_server_free(pgl_server *server);

#endif
