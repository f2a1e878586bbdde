/*
 * Running a request again when its server was terminated before it
 * answered (pgl_client.h, PGL_REPLAY_*).
 *
 * `pg_ctl restart -m fast`, a failover's fencing or pg_terminate_backend
 * end every backend with FATAL 57P01. A backend that had not answered yet
 * has not committed anything the request asked for: Postgres processes
 * that interrupt only where it may abort the transaction (commit holds
 * interrupts, and the CommandComplete it writes after a commit would come
 * before the FATAL). So a request that started a transaction and got that
 * FATAL as its first answer can run again on another server, and the
 * client never sees the restart.
 *
 * A reset (ECONNRESET, EPIPE) instead of an answer qualifies too: the
 * kernel resets a connection whose process closed it with bytes unread,
 * or that gets bytes after it closed, so the backend never read all of
 * the request, and an autocommit request commits only once it is read
 * whole (at its Sync). That is what a request sent to an idle server of a
 * restarting Postgres gets, its FATAL not read yet. A plain end of stream
 * does not qualify: a backend killed after it read the request ends so.
 *
 * Kept: one simple Query, or extended-protocol messages that name no
 * prepared statement (unnamed Parse/Bind/Describe, Execute, Flush) up to
 * their Sync, at most REPLAY_MAX bytes, until the server answers with more
 * than ParseComplete, BindComplete, descriptions and rows (all before the
 * statement commits, and held in Postgres's send buffer with the FATAL
 * that follows). None of the answer may have been written to the client:
 * what was read of it is dropped with the server.
 * The bytes stay in the client's buffer (pgl_conn_keep): nothing is copied
 * on the way. A request that does not qualify (inside a transaction,
 * session mode, pinned, named statements, pipelined behind another) gets
 * the error as it would directly.
 */
#include "pgl_client.h"

#include "pgl_log.h"
#include "pgl_loop.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_server.h"

#include "pgl_pgwire_decode.h"

#include <string.h>

/* What a request may weigh to be kept. */
#define REPLAY_MAX 8192u
/* Runs of one request: the first and two more. A restart's idle servers
 * die with the busy one; a second run that lands on one of them (its
 * FATAL not yet read) may need a third. A statement that terminates its
 * own backend stops there too. */
#define REPLAY_RUNS 3

/* The message at hand opens a new transaction on the client's server. */
static bool starts_transaction(pgl_client *c)
{
    const pgl_server *s = c->link;
    return c->lp->px->conf->replay_terminated_statements && c->replayed + 1 < REPLAY_RUNS &&
           !c->pinned && s->rfq_status == 'I' && s->expected_rfq == 0 &&
           !pgl_conn_mid_message(&c->conn) &&
           pgl_pool_mode(c->pool) == PGL_CONF_POOL_TRANSACTION;
}

void pgl_client_replay_header(pgl_client *c, uint8_t type, uint32_t len)
{
    uint32_t total = len + 1;
    switch ((pgl_replay)c->replay) {
    case PGL_REPLAY_OFF:
        /* Cheapest tests first: this runs for every message. */
        if ((type != 'Q' && type != 'P') || total > REPLAY_MAX || !starts_transaction(c))
            return;
        if (type == 'Q') {
            c->replay = PGL_REPLAY_SENT;
        } else if (type == 'P' && c->link->track_stmts) {
            /* Names are only seen when statements are tracked (peeked). */
            c->replay = PGL_REPLAY_OPEN;
        } else {
            return;
        }
        pgl_conn_keep(&c->conn);
        /* The answer may run again only if none of it reached the client:
         * ParseComplete and the like, read before the FATAL, are dropped
         * with the server. */
        c->link->conn.wrote = false;
        return;
    case PGL_REPLAY_OPEN:
        if (pgl_conn_kept(&c->conn) + total > REPLAY_MAX)
            break;
        switch (type) {
        case 'S':
            c->replay = PGL_REPLAY_SENT;
            return;
        case 'P':
        case 'B':
        case 'D':
            if (!c->link->track_stmts)
                break;
            return; /* names looked at in pgl_client_replay_look */
        case 'E':
        case 'H':
            return;
        default:
            break;
        }
        break;
    case PGL_REPLAY_SENT:
        break; /* a second request behind the first */
    }
    pgl_client_replay_off(c);
}

void pgl_client_replay_look(pgl_client *c, uint8_t type, const uint8_t *body, uint32_t len)
{
    if (c->replay != PGL_REPLAY_OPEN)
        return;
    bool unnamed = false;
    switch (type) {
    case 'P':
        unnamed = len > 0 && body[0] == '\0';
        break;
    case 'B': {
        /* The portal's name, then the statement's. */
        const uint8_t *end = memchr(body, 0, len);
        unnamed = end != NULL && (uint32_t)(end - body) + 1 < len && end[1] == '\0';
        break;
    }
    case 'D':
        unnamed = len >= 2 && (body[0] == 'P' || body[1] == '\0');
        break;
    default:
        return;
    }
    if (!unnamed)
        pgl_client_replay_off(c);
}

void pgl_client_replay_off(pgl_client *c)
{
    if (c->replay == PGL_REPLAY_OFF)
        return;
    c->replay = PGL_REPLAY_OFF;
    pgl_conn_unkeep(&c->conn);
}

bool pgl_client_replay_wanted(pgl_client *c, const uint8_t *body, uint32_t len)
{
    pgl_pgwire_error e;
    if (c->replay != PGL_REPLAY_OFF && c->conn.fwd_left == 0 && !c->link->conn.wrote &&
        pgl_pgwire_parse_error(body, len, &e) == 0 && e.severity != NULL &&
        e.sqlstate != NULL && strcmp(e.severity, "FATAL") == 0 &&
        strcmp(e.sqlstate, "57P01") == 0) {
        c->replay_now = true;
        return true;
    }
    pgl_client_replay_off(c);
    return false;
}

bool pgl_client_replay_reset(pgl_client *c)
{
    if (c->replay != PGL_REPLAY_OFF && c->conn.fwd_left == 0 && !c->link->conn.wrote) {
        c->replay_now = true;
        return true;
    }
    return false;
}

bool pgl_client_replay_run(pgl_client *c)
{
    c->replay_now = false;
    c->replay = PGL_REPLAY_OFF;
    if (pgl_conn_rewind(&c->conn) != 0)
        return false;
    c->replayed++;
    pgl_log_info(PGL_CLIENT_CTX(c),
                 "its server was terminated (57P01) before answering; the request runs again "
                 "on another server (run %d of at most %d)",
                 c->replayed + 1, REPLAY_RUNS);
    pgl_conn_pause(&c->conn);
    /* Idle servers of the same Postgres usually went with it: close those
     * that have already said so, before the pool hands one out. */
    pgl_pool_drop_dead_idle(c->pool);
    c->wait_since = pgl_loop_now(c->lp);
    pgl_client_set_state(c, PGL_CLIENT_WAITING);
    return true;
}
