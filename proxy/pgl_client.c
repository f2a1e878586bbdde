/*
 * Client connections: their life and forwarding (pgl_client.h).
 */
#include "pgl_client.h"

#include "pgl_log.h"
#include "pgl_loop.h"
#include "pgl_msg.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_server.h"

#include "pgl_pgwire_frame.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

static const char *const state_names[] = {
    "tls-handshake", "startup", "auth", "login-wait", "idle", "waiting", "active", "closing",
};

/* The pool's list for a client in state `st`, or NULL (not logged in, or
 * closing). */
static pgl_clist *pool_list(pgl_pool *pool, pgl_client_state st)
{
    switch (st) {
    case PGL_CLIENT_LOGIN_WAIT:
        return &pool->login_wait;
    case PGL_CLIENT_IDLE:
        return &pool->idle;
    case PGL_CLIENT_WAITING:
        return &pool->waiting;
    case PGL_CLIENT_ACTIVE:
        return &pool->active;
    case PGL_CLIENT_TLS_HANDSHAKE:
    case PGL_CLIENT_STARTUP:
    case PGL_CLIENT_AUTH:
    case PGL_CLIENT_CLOSING:
        break;
    }
    return NULL;
}

void pgl_client_set_state(pgl_client *c, pgl_client_state to)
{
    /* Legal moves; anything else is a bug worth stopping on in debug builds. */
    static const unsigned allowed[] = {
        [PGL_CLIENT_TLS_HANDSHAKE] = 1u << PGL_CLIENT_STARTUP | 1u << PGL_CLIENT_CLOSING,
        [PGL_CLIENT_STARTUP] = 1u << PGL_CLIENT_TLS_HANDSHAKE | 1u << PGL_CLIENT_AUTH |
                               1u << PGL_CLIENT_LOGIN_WAIT | 1u << PGL_CLIENT_IDLE |
                               1u << PGL_CLIENT_CLOSING,
        [PGL_CLIENT_AUTH] = 1u << PGL_CLIENT_LOGIN_WAIT | 1u << PGL_CLIENT_IDLE |
                            1u << PGL_CLIENT_CLOSING,
        [PGL_CLIENT_LOGIN_WAIT] = 1u << PGL_CLIENT_IDLE | 1u << PGL_CLIENT_CLOSING,
        [PGL_CLIENT_IDLE] = 1u << PGL_CLIENT_WAITING | 1u << PGL_CLIENT_CLOSING,
        [PGL_CLIENT_WAITING] = 1u << PGL_CLIENT_ACTIVE | 1u << PGL_CLIENT_CLOSING,
        /* Back to waiting: its server was terminated and the request runs
         * again (pgl_client_replay.c). */
        [PGL_CLIENT_ACTIVE] = 1u << PGL_CLIENT_IDLE | 1u << PGL_CLIENT_WAITING |
                              1u << PGL_CLIENT_CLOSING,
        [PGL_CLIENT_CLOSING] = 0,
    };
    if (!(allowed[c->state] & (1u << to))) {
        pgl_log_error(PGL_CLIENT_CTX(c), "bug: client state %s -> %s", state_names[c->state],
                      state_names[to]);
        assert(0);
        return;
    }
    pgl_log_debug(PGL_CLIENT_CTX(c), "state %s -> %s", state_names[c->state], state_names[to]);
    if (c->pool != NULL) {
        pgl_clist *from = pool_list(c->pool, c->state), *into = pool_list(c->pool, to);
        if (from != NULL)
            pgl_clist_remove(from, &c->pool_node);
        if (into != NULL)
            pgl_clist_append(into, &c->pool_node);
    }
    c->state = to;
}

static pgl_client *client_of(pgl_conn *conn)
{
    return pgl_container_of(conn, pgl_client, conn);
}

const char *pgl_peer_addr_format(const pgl_peer_addr *a, char *buf, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    switch (a->family) {
    case AF_INET:
        inet_ntop(AF_INET, a->ip, host, sizeof host);
        snprintf(buf, cap, "%s:%u", host, (unsigned)a->port);
        break;
    case AF_INET6:
        inet_ntop(AF_INET6, a->ip, host, sizeof host);
        snprintf(buf, cap, "[%s]:%u", host, (unsigned)a->port);
        break;
    default:
        snprintf(buf, cap, "unix");
        break;
    }
    return buf;
}

const char *pgl_client_ctx(const pgl_client *c, char *buf, size_t cap)
{
    char addr[64];
    pgl_peer_addr_format(&c->peer, addr, sizeof addr);
    if (c->user != NULL)
        snprintf(buf, cap, "C-%llu %s/%s@%s", (unsigned long long)c->id, c->database, c->user,
                 addr);
    else
        snprintf(buf, cap, "C-%llu %s", (unsigned long long)c->id, addr);
    return buf;
}

/* ---- ending -------------------------------------------------------------------- */

void pgl_client_close(pgl_client *c)
{
    if (c->state == PGL_CLIENT_CLOSING)
        return;
    /* Closing a server below calls back into the client (server lost):
     * that must find it already on its way out. */
    pgl_client_set_state(c, PGL_CLIENT_CLOSING);
    pgl_loop *lp = c->lp;
    pgl_log_debug(PGL_CLIENT_CTX(c), "closing");
    if (c->link != NULL) {
        pgl_server *s = c->link;
        /* A server that is between transactions can serve someone else;
         * one in the middle of something is closed: its state is unknown. */
        bool clean = pgl_server_between_transactions(s);
        c->link = NULL;
        s->link = NULL;
        pgl_conn_set_peer(&s->conn, NULL);
        if (clean)
            pgl_server_release(s);
        else
            pgl_server_close(s, "client went away in the middle of a transaction");
    }
    pgl_cancel_unregister(&c->cancel);
    if (c->scram != NULL) {
        pgl_pgwire_scram_server_free(c->scram);
        c->scram = NULL;
    }
    if (c->pending_ssl != NULL) {
        SSL_free(c->pending_ssl);
        c->pending_ssl = NULL;
    }
    SSL *ssl = c->conn.io.ssl != NULL ? c->conn.io.ssl : c->conn.handshake;
    pgl_conn_close(&c->conn);
    if (ssl != NULL) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
        c->conn.io.ssl = NULL;
        c->conn.handshake = NULL;
    }
    /* Bytes the client sent that pglease did not read make close() reset
     * the connection, and a reset can destroy the ErrorResponse just
     * written before the client reads it (a query racing a FATAL). */
    char sink[4096];
    for (int i = 0; i < 16 && recv(c->conn.io.fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
        ;
    close(c->conn.io.fd);
    pgl_client_stmt_free(c);
    if (c->pinned)
        c->pool->pinned--;
    if (c->vars != NULL) {
        pgl_varcache_clear(c->vars);
        free(c->vars);
        c->vars = NULL;
    }
    pgl_list_remove(&c->node);
    lp->nclients--;
    atomic_fetch_sub_explicit(&lp->px->nclients, 1, memory_order_relaxed);
    pgl_list_append(&lp->zombie_clients, &c->node);
    pgl_loop_reap_later(lp);
}

/*
 * Sends one ErrorResponse (FATAL ones end the session) and closes. The
 * message is written at once; if the socket cannot take it now, it is lost
 * with the connection, which is what Postgres does too.
 */
void pgl_client_fail(pgl_client *c, const char *severity, const char *sqlstate, const char *fmt,
                     ...)
{
    if (c->state == PGL_CLIENT_CLOSING)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (sqlstate != NULL) {
        pgl_log_info(PGL_CLIENT_CTX(c), "%s %s: %s", severity, sqlstate, msg);
        if (pgl_msg_error(&c->conn, severity, sqlstate, msg, NULL, NULL) != 0)
            pgl_log_warning(PGL_CLIENT_CTX(c), "out of memory sending an error");
    }
    pgl_client_close(c);
}

void pgl_client_server_lost(pgl_client *c, const char *why)
{
    c->link = NULL;
    if (c->replay_now && pgl_client_replay_run(c))
        return;
    /* Cut in the middle of a message, an ErrorResponse would corrupt the
     * stream: only closing is safe then. */
    if (pgl_conn_mid_message(&c->conn) || c->conn.after_flush)
        pgl_client_close(c);
    else
        pgl_client_fail(c, "FATAL", "08006", "server connection lost: %s", why);
}

/* ---- forwarding ------------------------------------------------------------------------ */

/* What a frontend may send once logged in (protocol 3.0); Postgres answers
 * anything else with 08P01, and so does pglease, before it reaches a
 * server. CopyData/CopyDone/CopyFail outside COPY are ignored by Postgres. */
static bool frontend_message(uint8_t type)
{
    switch (type) {
    case 'Q': case 'P': case 'B': case 'E': case 'D': case 'C': case 'H': case 'S': case 'F':
    case 'd': case 'c': case 'f': case 'X':
        return true;
    default:
        return false;
    }
}

/* Queries and Parses up to this size are read for session state. */
#define SCAN_MAX (64u * 1024)

/* Each of these is answered by exactly one ReadyForQuery: counting them
 * tells when a pipelined client's transaction really ended. */
static void count_request(pgl_client *c, uint8_t type)
{
    pgl_server *s = c->link;
    /* SHOW STATS times: the first message of a request (and of a
     * transaction) starts its clock; its ReadyForQuery stops it. */
    if (s->query_start_us == 0) {
        s->query_start_us = uv_hrtime() / 1000;
        if (s->xact_start_us == 0)
            s->xact_start_us = s->query_start_us;
    }
    switch (type) {
    case 'Q':
        c->queries++;
        s->syncs_since_execute = 0;
        s->expected_rfq++;
        pgl_stmt_cache_sync_sent(&s->stmts);
        break;
    case 'S':
        s->syncs_since_execute++;
        /* fall through */
    case 'F':
        s->expected_rfq++;
        pgl_stmt_cache_sync_sent(&s->stmts);
        break;
    case 'E':
        s->syncs_since_execute = 0;
        break;
    case 'c':
    case 'f':
        /* The end of a COPY FROM STDIN. Postgres ignores Sync during
         * copy-in, and libpq sends one right after the Execute that starts
         * an extended-protocol COPY: no ReadyForQuery will answer it. */
        if (s->syncs_since_execute <= s->expected_rfq) {
            s->expected_rfq -= s->syncs_since_execute;
            s->stmts.syncs_sent -= s->syncs_since_execute;
        }
        s->syncs_since_execute = 0;
        break;
    default:
        break;
    }
}

/* decide(): the message is looked at on its way (client_inspect). Counted
 * now, not again if decide is asked again while it arrives. */
static pgl_conn_action peek(pgl_client *c, pgl_conn_action how)
{
    c->counted = true;
    return how;
}

/* `s` at `i` (of `len`) starts with `word` (lower case), ignoring case. */
static bool word_at(const char *s, size_t len, size_t i, const char *word, size_t wl)
{
    if (len - i < wl)
        return false;
    for (size_t j = 1; j < wl; j++)
        if ((char)tolower((unsigned char)s[i + j]) != word[j])
            return false;
    return true;
}

/*
 * A Query or Parse that may leave session state the CommandComplete tag
 * would not tell: a named Parse (a protocol-level prepared statement) when
 * the server does not share them, or SQL naming advisory locks,
 * set_config() or temporary objects (SELECT INTO TEMP and CREATE TEMP
 * TABLE ... AS end with a SELECT tag). Words are chosen so that ordinary
 * statements (INSERT INTO, UPDATE ... SET) do not match: each match costs a
 * check query. A function that does such things inside is not seen
 * (docs/operations.md).
 */
static bool may_leave_state(uint8_t type, const uint8_t *body, uint32_t len, bool shared_names)
{
    const char *sql = (const char *)body;
    size_t n = strnlen(sql, len);
    if (type == 'P') {
        if (n > 0 && !shared_names)
            return true; /* a statement name */
        sql += n + 1;
        n = n + 1 < len ? strnlen(sql, len - n - 1) : 0;
    }
    /* One pass: this runs for every query of every transaction. */
    for (size_t i = 0; i < n; i++) {
        switch (sql[i] | 0x20) { /* ASCII letters to lower case */
        case 'a':
            if (word_at(sql, n, i, "advisory", 8))
                return true;
            break;
        case 's':
            if (word_at(sql, n, i, "set_config", 10))
                return true;
            break;
        case 't':
            if (word_at(sql, n, i, "temp", 4))
                return true;
            break;
        default:
            break;
        }
    }
    return false;
}

static pgl_conn_action client_decide(pgl_conn *conn, uint8_t type, uint32_t len)
{
    pgl_client *c = client_of(conn);
    if ((c->state == PGL_CLIENT_IDLE || c->state == PGL_CLIENT_ACTIVE) && !frontend_message(type)) {
        pgl_client_fail(c, "FATAL", "08P01", "invalid frontend message type %d", type);
        return PGL_CONN_WAIT;
    }
    switch (c->state) {
    case PGL_CLIENT_STARTUP:
        if (len > PGL_PGWIRE_STARTUP_MAX) {
            pgl_client_fail(c, "FATAL", "08P01", "invalid startup packet length %u", len);
            return PGL_CONN_WAIT;
        }
        return PGL_CONN_INSPECT;
    case PGL_CLIENT_AUTH:
        if (type != 'p') {
            pgl_client_fail(c, "FATAL", "08P01", "expected password response, got message type 0x%02x",
                            type);
            return PGL_CONN_WAIT;
        }
        return PGL_CONN_INSPECT;
    case PGL_CLIENT_IDLE:
        c->last_activity = pgl_loop_now(c->lp);
        if (type == 'X' || c->admin)
            return PGL_CONN_INSPECT;
        if (c->doomed != NULL) {
            pgl_client_fail(c, "FATAL", "57P01", "%s", c->doomed);
            return PGL_CONN_WAIT;
        }
        /* Anything else needs a server: wait here until the pool links one. */
        c->wait_since = c->last_activity;
        pgl_client_set_state(c, PGL_CLIENT_WAITING);
        pgl_pool_kick(c->pool);
        return c->state == PGL_CLIENT_ACTIVE ? client_decide(conn, type, len) : PGL_CONN_WAIT;
    case PGL_CLIENT_ACTIVE:
        if (type == 'X')
            return PGL_CONN_INSPECT;
        /* Linked, but the server still runs our own SETs: its answers are
         * not the client's, so the client's bytes wait (pgl_client_go). */
        if (c->link == NULL || c->link->state != PGL_SERVER_ACTIVE)
            return PGL_CONN_WAIT;
        /* Counted at its header, once even if decide is asked again while
         * a peeked message arrives: until its ReadyForQuery the server is
         * not between transactions. */
        if (!c->counted) {
            pgl_client_replay_header(c, type, len);
            count_request(c, type);
        }
        if (c->link->track_stmts) {
            /* Statement names are rewritten (pgl_client_stmt.c). A Bind's
             * names come first, its values may be of any size. */
            switch (type) {
            case 'P':
                return peek(c, len <= c->conn.max_packet ? PGL_CONN_PEEK : PGL_CONN_PEEK_HEAD);
            case 'B':
                return peek(c, PGL_CONN_PEEK_HEAD);
            case 'D':
            case 'C':
                return peek(c, PGL_CONN_PEEK);
            default:
                break;
            }
        }
        if ((type == 'Q' || type == 'P') && c->link->track_state && !c->pinned) {
            /* Looked at on its way through; one too long to hold is
             * suspect unread. */
            if (len <= SCAN_MAX && len <= c->conn.max_packet)
                return peek(c, PGL_CONN_PEEK);
            pgl_server_note_suspect(c->link);
        }
        return PGL_CONN_FORWARD;
    case PGL_CLIENT_TLS_HANDSHAKE:
    case PGL_CLIENT_LOGIN_WAIT:
    case PGL_CLIENT_WAITING:
    case PGL_CLIENT_CLOSING:
        break;
    }
    return PGL_CONN_WAIT;
}

static pgl_conn_action client_inspect(pgl_conn *conn, uint8_t type, const uint8_t *body,
                                      uint32_t len)
{
    pgl_client *c = client_of(conn);
    switch (c->state) {
    case PGL_CLIENT_STARTUP:
        /* The framing gave us the body after the length word. */
        pgl_client_on_startup(c, body, len);
        /* STOP while TLS is being set up: nothing more is read in clear. */
        return c->conn.closed || c->state == PGL_CLIENT_TLS_HANDSHAKE ? PGL_CONN_STOP
                                                                      : PGL_CONN_SKIP;
    case PGL_CLIENT_AUTH:
        pgl_client_on_password(c, body, len);
        return PGL_CONN_SKIP;
    case PGL_CLIENT_IDLE:
    case PGL_CLIENT_ACTIVE:
        if (c->state == PGL_CLIENT_ACTIVE && !c->admin && c->counted) {
            /* Peeked (see client_decide): look, maybe rewrite, pass it on. */
            c->counted = false;
            pgl_server *s = c->link;
            bool whole = len == c->conn.msg_total - 5;
            if ((type == 'Q' || type == 'P') && s->track_state && !c->pinned &&
                (!whole || len > SCAN_MAX || may_leave_state(type, body, len, s->track_stmts)))
                pgl_server_note_suspect(s);
            if (c->replay == PGL_REPLAY_OPEN)
                pgl_client_replay_look(c, type, body, len);
            if (s->track_stmts)
                pgl_client_stmt_message(c, type, body, len, whole);
            return PGL_CONN_FORWARD;
        }
        if (type == 'X') {
            pgl_log_debug(PGL_CLIENT_CTX(c), "client terminated");
            pgl_client_close(c);
            return PGL_CONN_STOP;
        }
        if (c->admin) {
            c->lp->px->console->query(c, type, body, len);
            return PGL_CONN_SKIP;
        }
        return PGL_CONN_FORWARD;
    case PGL_CLIENT_TLS_HANDSHAKE:
    case PGL_CLIENT_LOGIN_WAIT:
    case PGL_CLIENT_WAITING:
    case PGL_CLIENT_CLOSING:
        break;
    }
    return PGL_CONN_WAIT;
}

static void client_flushed(pgl_conn *conn)
{
    pgl_client *c = client_of(conn);
    if (c->state == PGL_CLIENT_TLS_HANDSHAKE && c->pending_ssl != NULL)
        pgl_client_start_tls(c);
}

static void client_failed(pgl_conn *conn, pgl_conn_failure why)
{
    pgl_client *c = client_of(conn);
    switch (why) {
    case PGL_CONN_EOF:
        pgl_log_debug(PGL_CLIENT_CTX(c), "client closed the connection");
        pgl_client_close(c);
        break;
    case PGL_CONN_IO_ERROR:
        pgl_log_info(PGL_CLIENT_CTX(c), "client connection broken");
        pgl_client_close(c);
        break;
    case PGL_CONN_TOO_BIG:
        pgl_client_fail(c, "FATAL", "08P01", "message larger than max_packet_size (%d bytes)",
                        c->lp->px->conf->max_packet_size);
        break;
    case PGL_CONN_BAD_LENGTH:
        pgl_client_fail(c, "FATAL", "08P01", "invalid message length");
        break;
    case PGL_CONN_NO_MEMORY:
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
        break;
    }
}

static const pgl_conn_ops client_ops = {client_decide, client_inspect, client_flushed,
                                        client_failed};

/* ---- linking ------------------------------------------------------------------------------ */

void pgl_client_link(pgl_client *c, pgl_server *s)
{
    c->link = s;
    pgl_conn_set_peer(&c->conn, &s->conn);
    uint64_t now = pgl_loop_now(c->lp);
    if (c->pool != NULL && c->wait_since != 0)
        pgl_stats_wait(&c->pool->stats, (now - c->wait_since) * 1000);
    if (c->pool != NULL)
        c->conn.fwd_count = &c->pool->stats.total.bytes_received;
    c->wait_since = 0;
    pgl_client_set_state(c, PGL_CLIENT_ACTIVE);
}

/* Called by the server once it may carry the client's bytes. */
void pgl_client_go(pgl_client *c)
{
    pgl_conn_resume(&c->conn);
}

void pgl_client_doom(pgl_client *c, const char *why)
{
    if (c->state == PGL_CLIENT_CLOSING)
        return;
    c->doomed = why;
    /* The server goes back (or closes, its generation retiring) and the
     * client waits idle for its next message. */
    if (c->link != NULL)
        pgl_server_release(c->link);
}

void pgl_client_pin(pgl_client *c, const char *what)
{
    if (!c->pinned) {
        pgl_log_info(PGL_CLIENT_CTX(c), "keeps its server for the rest of its session: a "
                                        "transaction left %s there", what);
        c->pool->pinned++;
    }
    c->pinned = true;
    pgl_client_go(c);
}

/* The server is back in the pool; the client may ask for another. */
void pgl_client_unlinked(pgl_client *c)
{
    c->link = NULL;
    c->replayed = 0;
    pgl_conn_set_peer(&c->conn, NULL);
    pgl_client_set_state(c, PGL_CLIENT_IDLE);
    c->last_activity = pgl_loop_now(c->lp);
    if (c->pool->removed && c->doomed == NULL)
        c->doomed = c->pool->for_user != NULL ? PGL_CLIENT_USER_REMOVED : PGL_CLIENT_DB_REMOVED;
    pgl_conn_resume(&c->conn);
}

void pgl_client_janitor(pgl_client *c, uint64_t now)
{
    const pgl_conf *conf = c->lp->px->conf;
    switch (c->state) {
    case PGL_CLIENT_TLS_HANDSHAKE:
    case PGL_CLIENT_STARTUP:
    case PGL_CLIENT_AUTH:
        /* Postgres gives a login authentication_timeout of one minute. */
        if (now - c->connect_time > 60000)
            pgl_client_fail(c, "FATAL", "08P01", "login timed out");
        break;
    case PGL_CLIENT_LOGIN_WAIT:
    case PGL_CLIENT_WAITING:
        if (conf->query_wait_timeout > 0 &&
            now - c->wait_since > (uint64_t)conf->query_wait_timeout * 1000) {
            /* A wait that outlived an upstream failure says which. */
            char sqlstate[6], cause[400];
            if (pgl_pool_wait_cause(c->pool, sqlstate, cause, sizeof cause) != NULL)
                pgl_client_fail(c, "FATAL", sqlstate,
                                "no server connection within query_wait_timeout (%d s): %s",
                                conf->query_wait_timeout, cause);
            else
                pgl_client_fail(c, "FATAL", "08P01",
                                "no server connection became free within query_wait_timeout "
                                "(%d s)",
                                conf->query_wait_timeout);
        }
        break;
    case PGL_CLIENT_IDLE:
        if (conf->client_idle_timeout > 0 &&
            now - c->last_activity > (uint64_t)conf->client_idle_timeout * 1000)
            pgl_client_fail(c, "FATAL", "57P05", "client_idle_timeout (%d s) reached",
                            conf->client_idle_timeout);
        break;
    case PGL_CLIENT_ACTIVE:
    case PGL_CLIENT_CLOSING:
        break;
    }
}

/* ---- accept ------------------------------------------------------------------------------- */

void pgl_client_accept(void *arg, int fd, const struct sockaddr *sa)
{
    pgl_loop *lp = arg;
    pgl_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        pgl_log_error(NULL, "out of memory accepting a client");
        close(fd);
        return;
    }
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        c->peer.family = AF_INET;
        c->peer.port = ntohs(in->sin_port);
        memcpy(c->peer.ip, &in->sin_addr, 4);
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        c->peer.family = AF_INET6;
        c->peer.port = ntohs(in6->sin6_port);
        memcpy(c->peer.ip, &in6->sin6_addr, 16);
    }
    c->lp = lp;
    c->id = pgl_loop_next_id(lp, &lp->next_client_id);
    c->state = PGL_CLIENT_STARTUP;
    pgl_list_init(&c->node);
    pgl_list_init(&c->pool_node);
    pgl_cancel_key_init(&c->cancel);
    c->connect_time = c->last_activity = pgl_loop_now(lp);
    if (pgl_conn_init(&c->conn, &lp->conns, fd, NULL, &client_ops,
                      (uint32_t)lp->px->conf->max_packet_size) != 0) {
        pgl_log_error(PGL_CLIENT_CTX(c), "cannot watch the client socket");
        close(fd);
        free(c);
        return;
    }
    c->conn.startup = true;
    pgl_list_append(&lp->clients, &c->node);
    lp->nclients++;
    atomic_fetch_add_explicit(&lp->px->nclients, 1, memory_order_relaxed);
    pgl_log_debug(PGL_CLIENT_CTX(c), "accepted");
}

/* The client's own settings; most clients never set one, so the cache is
 * allocated on first use. NULL when out of memory. */
static pgl_varcache *own_vars(pgl_client *c)
{
    if (c->vars == NULL)
        c->vars = calloc(1, sizeof *c->vars);
    return c->vars;
}

int pgl_client_set_var(pgl_client *c, pgl_var v, const char *value)
{
    pgl_varcache *vc = own_vars(c);
    return vc != NULL && pgl_varcache_set(vc, v, value, strlen(value)) == 0 ? 0 : -ENOMEM;
}

int pgl_client_set_extra(pgl_client *c, const char *name, const char *value)
{
    pgl_varcache *vc = own_vars(c);
    return vc != NULL ? pgl_varcache_set_extra(vc, name, value) : -ENOMEM;
}

void pgl_client_free(pgl_client *c)
{
    free(c->user); /* and c->database, see set_names */
    free(c);
}
