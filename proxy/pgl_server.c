/*
 * Server connections (pgl_server.h).
 */
#include "pgl_server.h"

#include "pgl_client.h"
#include "pgl_log.h"
#include "pgl_msg.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_upstream.h"

#include "pgl_pgwire_decode.h"

#include <assert.h>
#include <jansson.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bound on the query applying a client's startup settings on a server. */
#define SETVARS_MAX (1024u * 1024)

static const char *const state_names[] = {"connecting", "idle", "active", "internal", "closed"};

/* The generation's list a server in state `st` belongs to. */
static pgl_clist *gen_list(pgl_generation *g, pgl_server_state st)
{
    switch (st) {
    case PGL_SERVER_CONNECTING:
        return &g->login;
    case PGL_SERVER_IDLE:
        return &g->idle;
    case PGL_SERVER_ACTIVE:
    case PGL_SERVER_INTERNAL:
        return &g->busy;
    case PGL_SERVER_CLOSED:
        break;
    }
    return NULL;
}

/*
 * The one place a server changes state. Moves it between its generation's
 * lists: idle servers most recently used first (the janitor retires from
 * the tail); a closed one leaves its generation for the zombie list, which
 * may retire the generation.
 */
static void set_state(pgl_server *s, pgl_server_state to)
{
    static const unsigned allowed[] = {
        [PGL_SERVER_CONNECTING] = 1u << PGL_SERVER_IDLE | 1u << PGL_SERVER_CLOSED,
        [PGL_SERVER_IDLE] = 1u << PGL_SERVER_ACTIVE | 1u << PGL_SERVER_INTERNAL |
                            1u << PGL_SERVER_CLOSED,
        [PGL_SERVER_ACTIVE] = 1u << PGL_SERVER_IDLE | 1u << PGL_SERVER_INTERNAL |
                              1u << PGL_SERVER_CLOSED,
        [PGL_SERVER_INTERNAL] = 1u << PGL_SERVER_IDLE | 1u << PGL_SERVER_ACTIVE |
                                1u << PGL_SERVER_CLOSED,
        [PGL_SERVER_CLOSED] = 0,
    };
    if (!(allowed[s->state] & (1u << to))) {
        pgl_log_error(s->log_ctx, "bug: server state %s -> %s", state_names[s->state],
                      state_names[to]);
        assert(0);
        return;
    }
    pgl_log_debug(s->log_ctx, "state %s -> %s", state_names[s->state], state_names[to]);
    pgl_clist *from = gen_list(s->gen, s->state), *into = gen_list(s->gen, to);
    s->state = to;
    if (from != into) {
        pgl_clist_remove(from, &s->node);
        if (into == &s->gen->idle)
            pgl_clist_prepend(into, &s->node);
        else if (into != NULL)
            pgl_clist_append(into, &s->node);
    }
    if (to == PGL_SERVER_CLOSED) {
        pgl_pool_count_server(s->pool, -1);
        pgl_list_append(&s->lp->zombie_servers, &s->node);
        pgl_loop_reap_later(s->lp);
        pgl_generation_server_left(s->gen); /* may free it */
        s->gen = NULL;
    }
}

bool pgl_server_between_transactions(const pgl_server *s)
{
    return s->link != NULL && s->state == PGL_SERVER_ACTIVE && s->rfq_status == 'I' &&
           s->expected_rfq == 0 && pgl_stmt_cache_settled(&s->stmts) &&
           !pgl_conn_mid_message(&s->conn) &&
           !pgl_conn_mid_message(&s->link->conn);
}

static pgl_server *server_of(pgl_conn *conn)
{
    return pgl_container_of(conn, pgl_server, conn);
}

/* ---- closing ------------------------------------------------------------------ */

void pgl_server_close(pgl_server *s, const char *why)
{
    if (s->state == PGL_SERVER_CLOSED)
        return;
    pgl_pool *pool = s->pool;
    pgl_log_info(s->log_ctx, "closing server connection: %s", why);
    if (s->up != NULL) {
        pgl_upstream_abort(s->up);
        s->up = NULL;
    }
    pgl_client *client = s->link;
    s->link = NULL;
    if (s->conn.poller != NULL)
        pgl_conn_close(&s->conn);
    /* Say goodbye properly so Postgres does not log an unexpected EOF. */
    if (s->pg != NULL)
        PQfinish(s->pg);
    s->pg = NULL;
    pgl_varcache_clear(&s->vars);
    pgl_stmt_cache_close(&s->stmts);
    free(s->query_settings);
    s->query_settings = NULL;
    set_state(s, PGL_SERVER_CLOSED);
    if (client != NULL) {
        pgl_conn_set_peer(&client->conn, NULL);
        pgl_client_server_lost(client, why);
    }
    /* Waiting clients may need a replacement. */
    pgl_pool_kick(pool);
}

/* ---- internal queries ---------------------------------------------------------- */

static void start_internal(pgl_server *s, pgl_server_query what, const char *sql)
{
    set_state(s, PGL_SERVER_INTERNAL);
    s->query = what;
    s->query_failed = false;
    s->query_sqlstate[0] = s->query_error[0] = s->query_result[0] = '\0';
    free(s->query_settings);
    s->query_settings = NULL;
    s->expected_rfq = 1;
    if (pgl_msg_query(&s->conn, sql) != 0)
        pgl_server_close(s, "out of memory");
}

/*
 * Settings a transaction changed in the session (the check's second
 * column, a JSON object name -> value) follow the client to every server it
 * gets, as startup settings do, instead of keeping it on this one: this
 * server records them as its own, so the next client without them gets
 * the defaults back. 0 or -ENOMEM.
 */
static int carry_settings(pgl_server *s)
{
    json_t *obj = json_loads(s->query_settings, 0, NULL);
    if (obj == NULL || !json_is_object(obj)) {
        json_decref(obj);
        return 0; /* not ours to judge: Postgres wrote it */
    }
    const char *name;
    json_t *jv;
    int rc = 0;
    json_object_foreach(obj, name, jv)
    {
        const char *value = json_string_value(jv);
        if (value == NULL)
            continue;
        int v = pgl_varcache_lookup(name);
        if (v >= 0)
            rc = pgl_client_set_var(s->link, (pgl_var)v, value) != 0 ||
                         pgl_varcache_set(&s->vars, (pgl_var)v, value, strlen(value)) != 0
                     ? -ENOMEM
                     : 0;
        else
            rc = pgl_client_set_extra(s->link, name, value) != 0 ||
                         pgl_varcache_set_extra(&s->vars, name, value) != 0
                     ? -ENOMEM
                     : 0;
        if (rc != 0)
            break;
        pgl_log_debug(s->log_ctx, "carrying the client's setting %s", name);
    }
    json_decref(obj);
    return rc;
}

/* The internal query ended with ReadyForQuery. */
static void internal_done(pgl_server *s)
{
    pgl_server_query what = s->query;
    s->query = PGL_SERVER_Q_NONE;
    s->expected_rfq = 0; /* ours was answered; the client's count starts now */
    if (s->query_failed || s->rfq_status != 'I') {
        /* A setting the client asked for at startup that Postgres refuses
         * (unknown, read-only, bad value) ends that client with Postgres's
         * own error, as a direct login would. */
        if (what == PGL_SERVER_Q_SETVARS && s->link != NULL && s->query_sqlstate[0])
            pgl_client_fail(s->link, "FATAL", s->query_sqlstate, "%s", s->query_error);
        pgl_server_close(s, what == PGL_SERVER_Q_RESET    ? "DISCARD ALL failed"
                            : what == PGL_SERVER_Q_CHECK ? "checking the session's state failed"
                                                         : "setting session parameters failed");
        return;
    }
    switch (what) {
    case PGL_SERVER_Q_RESET:
        pgl_varcache_reset(&s->vars);
        pgl_stmt_cache_forget_all(&s->stmts);
        s->needs_reset = false;
        set_state(s, PGL_SERVER_IDLE);
        pgl_pool_serve(s->pool);
        return;
    case PGL_SERVER_Q_SETVARS:
        if (pgl_varcache_applied(s->link->vars, &s->pool->defaults, &s->vars) != 0) {
            pgl_server_close(s, "out of memory");
            return;
        }
        set_state(s, PGL_SERVER_ACTIVE);
        pgl_conn_set_peer(&s->conn, &s->link->conn);
        pgl_client_go(s->link);
        return;
    case PGL_SERVER_Q_CHECK:
        s->state_suspect = false;
        set_state(s, PGL_SERVER_ACTIVE);
        pgl_conn_set_peer(&s->conn, &s->link->conn);
        if (s->query_settings != NULL && carry_settings(s) != 0) {
            pgl_server_close(s, "out of memory");
            return;
        }
        if (s->query_result[0] == '\0') {
            pgl_server_release(s);
            return;
        }
        s->needs_reset = true;
        if (s->pool->px->conf->track_session_state == PGL_CONF_TRACK_RESET) {
            pgl_log_debug(s->log_ctx, "resetting the session a transaction left %s in",
                          s->query_result);
            pgl_server_release(s);
            return;
        }
        /* The client keeps this server for the rest of its session; it is
         * reset (DISCARD ALL) when the client leaves. */
        pgl_client_pin(s->link, s->query_result);
        return;
    case PGL_SERVER_Q_NONE:
        break;
    }
}

/* ---- assignment ------------------------------------------------------------------ */

void pgl_server_assign(pgl_server *s, pgl_client *client)
{
    pgl_pool *pool = s->pool;
    s->link = client;
    s->last_used = pgl_loop_now(s->lp);
    s->expected_rfq = 0;
    s->query_start_us = s->xact_start_us = 0;
    s->state_suspect = false;
    s->track_state = pgl_pool_mode(pool) == PGL_CONF_POOL_TRANSACTION &&
                     pool->px->conf->track_session_state != PGL_CONF_TRACK_OFF;
    s->track_stmts = pgl_pool_mode(pool) == PGL_CONF_POOL_TRANSACTION &&
                     pool->px->conf->max_prepared_statements > 0;
    s->stmts.max = (uint32_t)pool->px->conf->max_prepared_statements;
    pgl_client_link(client, s);
    pgl_conn_set_peer(&client->conn, &s->conn);

    /* Nearly always nothing, or a few parameters; a client with many startup
     * settings (a startup packet holds up to 10,000 bytes) gets a bigger
     * buffer. */
    char local[4096], *sql = local;
    size_t cap = sizeof local;
    int n;
    while ((n = pgl_varcache_apply_sql(client->vars, &pool->defaults, &s->vars, sql, cap)) < 0 &&
           cap < SETVARS_MAX) {
        if (sql != local)
            free(sql);
        cap *= 4;
        if ((sql = malloc(cap)) == NULL)
            break;
    }
    if (n > 0) {
        /* The server's answers to our SETs are ours: no peer until done. */
        pgl_conn_set_peer(&s->conn, NULL);
        pgl_log_debug(s->log_ctx, "applying client parameters");
        start_internal(s, PGL_SERVER_Q_SETVARS, sql);
    } else if (n < 0) {
        pgl_client_fail(client, "FATAL", "53200", "out of memory applying startup parameters");
    }
    if (sql != local)
        free(sql);
    if (n != 0)
        return;
    set_state(s, PGL_SERVER_ACTIVE);
    pgl_conn_set_peer(&s->conn, &client->conn);
    pgl_client_go(client);
}

void pgl_server_release(pgl_server *s)
{
    pgl_pool *pool = s->pool;
    pgl_client *client = s->link;
    s->link = NULL;
    pgl_conn_set_peer(&s->conn, NULL);
    s->last_used = pgl_loop_now(s->lp);
    if (client != NULL)
        pgl_client_unlinked(client);
    if (s->state == PGL_SERVER_CLOSED)
        return;
    const char *why = pgl_pool_server_released(pool, s);
    if (why != NULL) {
        pgl_server_close(s, why);
        return;
    }
    if (pgl_pool_mode(pool) == PGL_CONF_POOL_SESSION || s->needs_reset) {
        /* The next session must not inherit this one's state. */
        start_internal(s, PGL_SERVER_Q_RESET, "DISCARD ALL");
        return;
    }
    set_state(s, PGL_SERVER_IDLE);
    pgl_pool_serve(pool);
}

int pgl_server_cancel(pgl_server *s)
{
    if (s->pg == NULL)
        return -ENOTCONN;
    pgl_log_info(s->log_ctx, "cancelling the running query");
    return pgl_upstream_cancel(&s->lp->uv, s->pg, NULL, NULL);
}

/* ---- messages from the server ----------------------------------------------------- */

/* Column `col` of a DataRow, as text; false when NULL or malformed. */
static bool column(const uint8_t *body, uint32_t len, unsigned col, const char **v, size_t *vl)
{
    if (len < 2 || pgl_pgwire_be16(body) <= col)
        return false;
    uint32_t off = 2;
    for (unsigned i = 0;; i++) {
        if (len - off < 4)
            return false;
        int32_t n = (int32_t)pgl_pgwire_be32(body + off);
        off += 4;
        if (n > 0 && (uint32_t)n > len - off)
            return false;
        if (i == col) {
            if (n < 0)
                return false;
            *v = (const char *)body + off;
            *vl = (size_t)n;
            return true;
        }
        if (n > 0)
            off += (uint32_t)n;
    }
}

static void note_param(pgl_server *s, const uint8_t *body, uint32_t len)
{
    const char *name, *value;
    if (pgl_pgwire_parse_param_status(body, len, &name, &value) != 0)
        return;
    int v = pgl_varcache_lookup(name);
    if (v < 0)
        return;
    /* A server whose parameters pglease no longer knows cannot be given to
     * the next client. */
    if (pgl_varcache_set(&s->vars, (pgl_var)v, value, strlen(value)) != 0) {
        pgl_server_close(s, "out of memory");
        return;
    }
    /* What the client set (SET DateStyle...) it expects on its next server. */
    if (s->link != NULL && s->state == PGL_SERVER_ACTIVE &&
        pgl_client_set_var(s->link, (pgl_var)v, value) != 0)
        pgl_client_fail(s->link, "FATAL", "53200", "out of memory");
}

static pgl_conn_action server_decide(pgl_conn *conn, uint8_t type, uint32_t len)
{
    pgl_server *s = server_of(conn);
    if (s->state != PGL_SERVER_ACTIVE)
        return PGL_CONN_INSPECT;
    /* The first answer to a request kept for running again: read if it
     * may say the server was terminated, else the request is done with. */
    if (s->link != NULL && s->link->replay != PGL_REPLAY_OFF) {
        if (type == 'E' && len <= 4096)
            return PGL_CONN_PEEK;
        /* Parse, Bind and Describe answer before anything runs, and rows
         * come before the statement commits: dropped with the server if a
         * FATAL follows before any of them was written. CommandComplete
         * or anything else ends the chance. */
        if (type != '1' && type != '2' && type != 'n' && type != 't' && type != 'T' &&
            type != 'D')
            pgl_client_replay_off(s->link);
    }
    /* ReadyForQuery, ParameterStatus and (when session state or statements
     * are tracked) CommandComplete are only noted on their way through, so
     * they go out in the same write as the rows before. Tags are short; a
     * longer one is not a tag pglease knows. */
    if (type == 'Z' || type == 'S' ||
        (type == 'C' && (s->track_state || s->track_stmts) && len <= 256))
        return PGL_CONN_PEEK;
    /* An error is read on its way: its SQLSTATE class is counted, and for
     * a credential Vault may revoke a permission error may mean it is
     * gone. Only errors pay for this. */
    if (type == 'E' && len <= 4096)
        return PGL_CONN_PEEK;
    if (type == 'E')
        pgl_stats_error(&s->pool->stats, NULL); /* too long to hold: class unknown */
    if (s->stmts.owed_n > 0) {
        /* An answer to a Parse or Close: passed on here, dropped or
         * retyped in server_inspect (pgl_stmt.h). */
        if (type == '1' || type == '3') {
            if (pgl_stmt_cache_next(&s->stmts, type) != PGL_STMT_PASS)
                return PGL_CONN_PEEK;
            pgl_stmt_cache_answered(&s->stmts);
        } else if (type == 'E') {
            pgl_stmt_cache_error(&s->stmts);
        }
    }
    return PGL_CONN_FORWARD;
}

/* CommandComplete tags of commands that may leave state in the session:
 * settings, prepared statements, notifications, holdable cursors, objects
 * that may be temporary, loaded libraries. */
static bool tag_leaves_state(const uint8_t *body, uint32_t len)
{
#define TAG(s) {s, sizeof s - 1}
    static const struct {
        const char *tag;
        size_t len;
    } tags[] = {
        TAG("SET"), TAG("RESET"), TAG("PREPARE"), TAG("DEALLOCATE"), TAG("LISTEN"),
        TAG("UNLISTEN"), TAG("DECLARE CURSOR"), TAG("CREATE TABLE"), TAG("CREATE SEQUENCE"),
        TAG("CREATE VIEW"), TAG("CREATE FUNCTION"), TAG("CREATE TYPE"), TAG("CREATE PROCEDURE"),
        TAG("LOAD"),
    };
#undef TAG
    size_t n = strnlen((const char *)body, len);
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        size_t tl = tags[i].len;
        if (n >= tl && body[0] == (uint8_t)tags[i].tag[0] && memcmp(body, tags[i].tag, tl) == 0 &&
            (n == tl || body[tl] == ' '))
            return true;
    }
    return false;
}

/* DISCARD ALL and DEALLOCATE ALL drop every prepared statement. */
static bool forgets_statements(const uint8_t *body, uint32_t len)
{
    size_t n = strnlen((const char *)body, len);
    return (n == 11 && memcmp(body, "DISCARD ALL", 11) == 0) ||
           (n == 14 && memcmp(body, "DEALLOCATE ALL", 14) == 0);
}

/* A ParseComplete or CloseComplete that server_decide could not pass on
 * as it is (pgl_stmt.h). */
static void stmt_answer(pgl_server *s, uint8_t type)
{
    pgl_stmt_action act = pgl_stmt_cache_next(&s->stmts, type);
    if (act == PGL_STMT_DESYNC) {
        pgl_log_error(s->log_ctx, "bug: unexpected %s from the server",
                      type == '1' ? "ParseComplete" : "CloseComplete");
        pgl_server_close(s, "prepared statement bookkeeping lost track");
        return;
    }
    pgl_stmt_cache_answered(&s->stmts);
    if (act == PGL_STMT_DROP)
        pgl_conn_drop(&s->conn);
    else if (act == PGL_STMT_RETYPE)
        pgl_conn_retype(&s->conn, '1');
}

void pgl_server_note_suspect(pgl_server *s)
{
    s->state_suspect = true;
}

/* What a session may keep after a transaction: first column, what
 * keeps the client on this server, as one line ('' when nothing); second,
 * settings changed in the session that pglease can carry (carry_settings).
 * Settings Postgres reports (and pglease carries anyway) and settings back
 * at their defaults do not count. SET ROLE and SET SESSION AUTHORIZATION
 * (not in pg_settings) keep the client. */
#define STATE_CHECK_SETTINGS                                                                        \
    "FROM pg_catalog.pg_settings WHERE source = 'session' AND setting IS DISTINCT FROM reset_val "  \
    "AND pg_catalog.lower(name) NOT IN ('client_encoding', 'datestyle', 'timezone', "               \
    "'standard_conforming_strings', 'application_name', 'intervalstyle')"
#define STATE_CHECK_SQL                                                                             \
    "SELECT pg_catalog.concat_ws(', ', "                                                            \
    "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements WHERE NOT "                 \
    "pg_catalog.starts_with(name, 'PGL_')) "                                                       \
    "THEN 'prepared statements' END, "                                                              \
    "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_cursors) THEN 'cursors' END, "                  \
    "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_listening_channels()) THEN 'LISTEN' END, "      \
    "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND "         \
    "pid = pg_catalog.pg_backend_pid()) THEN 'advisory locks' END, "                                \
    "CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relnamespace = "                     \
    "pg_catalog.pg_my_temp_schema()) OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE "            \
    "pronamespace = pg_catalog.pg_my_temp_schema()) THEN 'temporary objects' END, "                 \
    "CASE WHEN pg_catalog.current_setting('role') <> 'none' OR session_user <> (SELECT usename "   \
    "FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()) "                    \
    "THEN 'a role change' END), "                                                                   \
    "(SELECT pg_catalog.json_object_agg(name, setting) " STATE_CHECK_SETTINGS ")"

/* SHOW STATS: a ReadyForQuery ends a query, and with 'I' a transaction
 * (PgBouncer counts the same way). */
static void count_rfq(pgl_server *s)
{
    pgl_stats_counters *t = &s->pool->stats.total;
    uint64_t now_us = uv_hrtime() / 1000;
    t->query_count++;
    if (s->query_start_us != 0) {
        t->query_time_us += now_us - s->query_start_us;
        s->query_start_us = 0;
    }
    if (s->rfq_status == 'I' && s->xact_start_us != 0) {
        t->xact_count++;
        t->xact_time_us += now_us - s->xact_start_us;
        s->xact_start_us = 0;
    }
}

static pgl_conn_action server_inspect(pgl_conn *conn, uint8_t type, const uint8_t *body,
                                      uint32_t len)
{
    pgl_server *s = server_of(conn);
    if (type == 'S')
        note_param(s, body, len);
    switch (s->state) {
    case PGL_SERVER_ACTIVE:
        if (type == '1' || type == '3') {
            stmt_answer(s, type);
            return PGL_CONN_FORWARD;
        }
        if (type == 'E') {
            if (s->link != NULL && s->link->replay != PGL_REPLAY_OFF &&
                pgl_client_replay_wanted(s->link, body, len)) {
                pgl_server_close(s, "terminated (57P01) before answering; its request runs "
                                    "again on another server");
                return PGL_CONN_STOP;
            }
            pgl_stmt_cache_error(&s->stmts);
            pgl_pgwire_error e;
            bool parsed = pgl_pgwire_parse_error(body, len, &e) == 0;
            pgl_stats_error(&s->pool->stats, parsed ? e.sqlstate : NULL);
            if (parsed && s->pool->creds != NULL && e.sqlstate != NULL &&
                (strcmp(e.sqlstate, "42501") == 0 || strncmp(e.sqlstate, "28", 2) == 0))
                pgl_pool_credential_suspect(s->pool, s->gen);
            return PGL_CONN_FORWARD;
        }
        if (type == 'C' && s->track_state && tag_leaves_state(body, len))
            s->state_suspect = true;
        if (type == 'C' && s->track_stmts && forgets_statements(body, len)) {
            /* Every statement of the session is gone, and the client
             * expects its own to be. */
            pgl_stmt_cache_forget_all(&s->stmts);
            if (s->link != NULL)
                pgl_client_stmt_forget_all(s->link);
        }
        if (type == 'Z' && len >= 1) {
            s->rfq_status = (char)body[0];
            pgl_stmt_cache_synced(&s->stmts);
            if (s->expected_rfq > 0)
                s->expected_rfq--;
            count_rfq(s);
            /* Transaction pooling: give the server back once the client
             * has the ReadyForQuery and nothing else is outstanding. */
            if (s->rfq_status == 'I' && s->expected_rfq == 0 &&
                pgl_pool_mode(s->pool) == PGL_CONF_POOL_TRANSACTION)
                conn->after_flush = true;
        }
        return PGL_CONN_FORWARD;
    case PGL_SERVER_INTERNAL:
        if (type == 'D' && s->query_result[0] == '\0') {
            const char *v;
            size_t vl;
            if (column(body, len, 0, &v, &vl))
                snprintf(s->query_result, sizeof s->query_result, "%.*s", (int)vl, v);
            if (s->query == PGL_SERVER_Q_CHECK && s->query_settings == NULL &&
                column(body, len, 1, &v, &vl))
                s->query_settings = strndup(v, vl); /* NULL: carried nothing, no harm */
        }
        if (type == 'E') {
            s->query_failed = true;
            pgl_pgwire_error e;
            if (pgl_pgwire_parse_error(body, len, &e) == 0 && e.sqlstate && e.message) {
                snprintf(s->query_sqlstate, sizeof s->query_sqlstate, "%s", e.sqlstate);
                snprintf(s->query_error, sizeof s->query_error, "%s", e.message);
            }
        }
        if (type == 'Z' && len >= 1) {
            s->rfq_status = (char)body[0];
            internal_done(s);
            /* Keep reading: the server now works for a client (or idles). */
            return s->state == PGL_SERVER_CLOSED ? PGL_CONN_STOP : PGL_CONN_SKIP;
        }
        return PGL_CONN_SKIP;
    case PGL_SERVER_IDLE:
        /* Asynchronous chatter on an idle server: notices and parameter
         * changes are harmless; anything else means it is in a state we do
         * not know, e.g. FATAL before a shutdown. */
        if (type == 'N' || type == 'S' || type == 'A')
            return PGL_CONN_SKIP;
        pgl_server_close(s, type == 'E' ? "server sent an error while idle"
                                        : "unexpected message from an idle server");
        return PGL_CONN_STOP;
    case PGL_SERVER_CONNECTING:
    case PGL_SERVER_CLOSED:
        break;
    }
    return PGL_CONN_STOP;
}

static void server_flushed(pgl_conn *conn)
{
    pgl_server *s = server_of(conn);
    /* The client may have sent more while the ReadyForQuery was on its way. */
    if (!pgl_server_between_transactions(s) ||
        pgl_pool_mode(s->pool) != PGL_CONF_POOL_TRANSACTION || s->link->pinned)
        return;
    if (s->state_suspect) {
        /* Before another client may get this server: did the transaction
         * leave anything in the session? */
        pgl_conn_set_peer(&s->conn, NULL);
        start_internal(s, PGL_SERVER_Q_CHECK, STATE_CHECK_SQL);
        return;
    }
    pgl_server_release(s);
}

static void server_failed(pgl_conn *conn, pgl_conn_failure why)
{
    pgl_server *s = server_of(conn);
    static const char *const reasons[] = {
        [PGL_CONN_EOF] = "server closed the connection",
        [PGL_CONN_IO_ERROR] = "server connection broken",
        [PGL_CONN_TOO_BIG] = "server message larger than max_packet_size",
        [PGL_CONN_BAD_LENGTH] = "invalid message from server",
        [PGL_CONN_NO_MEMORY] = "out of memory",
    };
    if (why == PGL_CONN_IO_ERROR && conn->io.reset && s->link != NULL &&
        pgl_client_replay_reset(s->link)) {
        pgl_server_close(s, "reset before it answered; its request runs again on another server");
        return;
    }
    pgl_server_close(s, reasons[why]);
}

static const pgl_conn_ops server_ops = {server_decide, server_inspect, server_flushed,
                                        server_failed};

/* ---- login -------------------------------------------------------------------------- */

static void on_login(void *arg, pgl_upstream_result *res)
{
    pgl_server *s = arg;
    pgl_pool *pool = s->pool;
    s->up = NULL;
    if (res->status != 0) {
        pgl_log_warning(s->log_ctx, "upstream login failed: %s %s", res->sqlstate, res->message);
        pgl_pool_login_failed(pool, s->gen, res->sqlstate, res->message);
        pgl_server_close(s, "login failed");
        return;
    }
    s->pg = res->pg;
    s->backend_pid = res->backend_pid;
    snprintf(s->log_ctx, sizeof s->log_ctx, "S-%llu %s pid=%d", (unsigned long long)s->id,
             pool->label, s->backend_pid);
    if (pgl_conn_init_with_poller(&s->conn, &s->lp->conns, res->poller, res->ssl, &server_ops,
                                  (uint32_t)pool->px->conf->max_packet_size) != 0) {
        pgl_poller_close(res->poller);
        pgl_server_close(s, "cannot watch the server socket");
        return;
    }
    s->conn.fwd_count = &pool->stats.total.bytes_sent;
    for (int v = 0; v < PGL_VAR_COUNT; v++) {
        const char *value = PQparameterStatus(s->pg, pgl_varcache_name((pgl_var)v));
        if (value != NULL && pgl_varcache_set(&s->vars, (pgl_var)v, value, strlen(value)) != 0) {
            pgl_server_close(s, "out of memory");
            return;
        }
    }
    uint64_t now = pgl_loop_now(s->lp);
    pgl_log_info(s->log_ctx, "logged in as generation %llu in %llu ms%s",
                 (unsigned long long)s->gen->id, (unsigned long long)(now - s->created),
                 res->ssl ? " (TLS)" : "");
    s->created = s->last_used = now;
    s->rfq_status = 'I';
    set_state(s, PGL_SERVER_IDLE);
    pgl_pool_login_succeeded(pool, s->gen, s->pg);
    bool replaces = s->gen->state == PGL_GEN_ACTIVE;
    pgl_pool_serve(pool);
    if (replaces)
        pgl_pool_retire_one(pool);
}

int pgl_server_connect(pgl_pool *pool, pgl_generation *gen)
{
    pgl_proxy *px = pool->px;
    pgl_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    s->lp = pool->lp;
    s->pool = pool;
    s->gen = gen;
    s->id = pgl_loop_next_id(s->lp, &s->lp->next_server_id);
    s->state = PGL_SERVER_CONNECTING;
    s->created = pgl_loop_now(s->lp); /* the login's start until it succeeds */
    pgl_list_init(&s->node);
    pgl_stmt_cache_init(&s->stmts, (uint32_t)px->conf->max_prepared_statements);
    snprintf(s->log_ctx, sizeof s->log_ctx, "S-%llu %s", (unsigned long long)s->id, pool->label);
    int rc = pgl_server_start_login(pool, gen, s->log_ctx, on_login, s, &s->up);
    if (rc != 0) {
        free(s);
        return rc;
    }
    pgl_clist_append(&gen->login, &s->node);
    pgl_pool_count_server(pool, +1);
    return 0;
}

int pgl_server_start_login(pgl_pool *pool, pgl_generation *gen, const char *log_ctx,
                           pgl_upstream_cb cb, void *arg, pgl_upstream **up)
{
    pgl_proxy *px = pool->px;
    const pgl_conf_database *db = pgl_pool_db(pool);
    const char *keys[64], *values[64];
    size_t n = 0;
    for (size_t i = 0; i < db->nparams && n < 64; i++) {
        if (strcmp(db->params[i].key, "user") == 0 || strcmp(db->params[i].key, "password") == 0)
            continue;
        keys[n] = db->params[i].key;
        values[n++] = db->params[i].value;
    }
    pgl_upstream_params p = {
        .keys = keys,
        .values = values,
        .n = n,
        .user = gen->user,
        .password = gen->password,
        .application_name = "pglease",
        .connect_timeout_ms = px->conf->server_connect_timeout * 1000,
        .log_ctx = log_ctx,
    };
    return pgl_upstream_start(&pool->lp->uv, &p, cb, arg, up);
}

void pgl_server_free(pgl_server *s)
{
    free(s);
}
