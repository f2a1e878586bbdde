/*
 * The admin console: clients that connect to the database "pglease" (or
 * "pgbouncer", so PgBouncer's tooling finds it) get simple-query commands
 * answered by pglease itself. Column names follow PgBouncer's where the
 * concept is the same, so prometheus-pgbouncer-exporter and scripts keep
 * working.
 */
#include "pgl_admin.h"

#include "pgl_client.h"
#include "pgl_log.h"
#include "pgl_msg.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_server.h"
#include "pgl_version.h"

#include "pgl_pgwire_decode.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define OID_TEXT 25
#define OID_INT8 20

static int welcome_params(pgl_client *c)
{
    static const char *const params[][2] = {
        {"server_version", PGL_VERSION "/pglease"},
        {"server_encoding", "UTF8"},
        {"client_encoding", "UTF8"},
        {"DateStyle", "ISO, MDY"},
        {"TimeZone", "UTC"},
        {"standard_conforming_strings", "on"},
        {"integer_datetimes", "on"},
        {"application_name", ""},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof params / sizeof params[0] && rc == 0; i++)
        rc = pgl_msg_param_status(&c->conn, params[i][0], params[i][1]);
    return rc;
}

/* A result set being written: all columns text, values formatted by us. */
typedef struct {
    pgl_client *c;
    size_t ncols;
    size_t rows;
    int rc;
} result;

static void begin(result *r, pgl_client *c, const char *const *names, size_t n)
{
    uint32_t oids[32];
    r->c = c;
    r->ncols = n;
    r->rows = 0;
    for (size_t i = 0; i < n; i++)
        oids[i] = OID_TEXT;
    r->rc = pgl_msg_row_description(&c->conn, names, oids, n);
}

static void row(result *r, const char *const *values)
{
    if (r->rc == 0)
        r->rc = pgl_msg_data_row(&r->c->conn, values, r->ncols);
    r->rows++;
}

static void end(result *r, const char *verb)
{
    char tag[64];
    snprintf(tag, sizeof tag, "%s %zu", verb, r->rows);
    if (r->rc == 0)
        r->rc = pgl_msg_command_complete(&r->c->conn, tag);
}

#define U64(buf, v) (snprintf(buf, sizeof buf, "%llu", (unsigned long long)(v)), buf)

static void show_pools(pgl_client *c, result *r)
{
    static const char *const cols[] = {"database", "user", "cl_active", "cl_waiting", "sv_active",
                                       "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait",
                                       "maxwait_us", "pool_mode", "cl_pinned", "statements"};
    begin(r, c, cols, 14);
    pgl_proxy *px = c->lp->px;
    uint64_t now = pgl_now_ms(px);
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &px->pools)
    {
        pgl_pool *pool = pgl_container_of(it, pgl_pool, node);
        /* Counts are the lists' own; the longest wait is the head of a FIFO. */
        uint64_t cl_active = pgl_clist_count(&pool->idle) + pgl_clist_count(&pool->active);
        uint64_t cl_waiting = pgl_clist_count(&pool->waiting) + pgl_clist_count(&pool->login_wait);
        uint64_t maxwait_ms = 0;
        const pgl_clist *queues[] = {&pool->waiting, &pool->login_wait};
        for (size_t i = 0; i < 2; i++) {
            pgl_list *first = pgl_clist_first(queues[i]);
            const pgl_client *cl = first ? pgl_container_of(first, pgl_client, pool_node) : NULL;
            if (cl != NULL && cl->wait_since && now - cl->wait_since > maxwait_ms)
                maxwait_ms = now - cl->wait_since;
        }
        uint64_t sv_active = 0, sv_idle = 0, sv_login = 0;
        pgl_list *gp, *gt;
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            const pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
            sv_active += pgl_clist_count(&g->busy);
            sv_idle += pgl_clist_count(&g->idle);
            sv_login += pgl_clist_count(&g->login);
        }
        char b[9][32];
        const char *user = "";
        if (!pgl_list_empty(&pool->generations))
            user = pgl_container_of(pool->generations.next, pgl_generation, node)->user;
        const char *v[] = {pool->name,
                           user,
                           U64(b[0], cl_active),
                           U64(b[1], cl_waiting),
                           U64(b[2], sv_active),
                           U64(b[3], sv_idle),
                           "0",
                           "0",
                           U64(b[4], sv_login),
                           U64(b[5], maxwait_ms / 1000),
                           U64(b[6], (maxwait_ms % 1000) * 1000),
                           pgl_conf_pool_mode_name(pgl_pool_mode(pool)),
                           U64(b[7], pool->pinned),
                           U64(b[8], pool->stmts.count)};
        row(r, v);
    }
    end(r, "SHOW");
}

static const char *const client_states[] = {"login", "login", "login", "login",
                                            "idle", "waiting", "active", "closing"};

static void show_clients(pgl_client *c, result *r)
{
    static const char *const cols[] = {"id", "user", "database", "state", "addr", "tls",
                                       "server_pid", "connect_time_s", "queries", "pinned"};
    begin(r, c, cols, 10);
    uint64_t now = pgl_now_ms(c->lp->px);
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &c->lp->clients)
    {
        pgl_client *cl = pgl_container_of(it, pgl_client, node);
        char b[4][32], addr[64];
        const char *v[] = {U64(b[0], cl->id),
                           cl->user,
                           cl->database,
                           client_states[cl->state],
                           pgl_peer_addr_format(&cl->peer, addr, sizeof addr),
                           cl->tls ? "yes" : "no",
                           cl->link ? U64(b[1], (uint64_t)cl->link->backend_pid) : NULL,
                           U64(b[2], (now - cl->connect_time) / 1000),
                           U64(b[3], cl->queries),
                           cl->pinned ? "yes" : "no"};
        row(r, v);
    }
    end(r, "SHOW");
}

static void server_row(result *r, const pgl_server *s, const char *state, uint64_t now)
{
    char b[5][32];
    const char *v[] = {U64(b[0], s->id),
                       s->pool->name,
                       s->gen->user,
                       U64(b[1], s->gen->id),
                       state,
                       s->backend_pid ? U64(b[2], (uint64_t)s->backend_pid) : NULL,
                       s->link ? U64(b[3], s->link->id) : NULL,
                       U64(b[4], s->created ? (now - s->created) / 1000 : 0)};
    row(r, v);
}

static void show_servers(pgl_client *c, result *r)
{
    static const char *const cols[] = {"id", "database", "user", "generation", "state",
                                       "backend_pid", "client_id", "age_s"};
    begin(r, c, cols, 8);
    uint64_t now = pgl_now_ms(c->lp->px);
    pgl_list *it, *tmp, *gp, *gt, *si, *st;
    pgl_list_foreach(it, tmp, &c->lp->px->pools)
    {
        pgl_pool *pool = pgl_container_of(it, pgl_pool, node);
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
            struct {
                pgl_clist *list;
                const char *state;
            } lists[] = {{&g->busy, "active"}, {&g->idle, "idle"}, {&g->login, "login"}};
            for (size_t i = 0; i < 3; i++) {
                pgl_clist_foreach(si, st, lists[i].list)
                {
                    server_row(r, pgl_container_of(si, pgl_server, node), lists[i].state, now);
                }
            }
        }
    }
    end(r, "SHOW");
}

static void show_databases(pgl_client *c, result *r)
{
    static const char *const cols[] = {"name", "host", "port", "database", "pool_size",
                                       "min_pool_size", "pool_mode", "credentials"};
    begin(r, c, cols, 8);
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &c->lp->px->pools)
    {
        pgl_pool *pool = pgl_container_of(it, pgl_pool, node);
        const pgl_conf_database *db = pgl_pool_db(pool);
        char b[2][32];
        const char *v[] = {pool->name,
                           pgl_conf_database_param(db, "host"),
                           pgl_conf_database_param(db, "port"),
                           pgl_conf_database_param(db, "dbname"),
                           U64(b[0], (uint64_t)pgl_pool_size(pool)),
                           U64(b[1], (uint64_t)pgl_pool_min_size(pool)),
                           pgl_conf_pool_mode_name(pgl_pool_mode(pool)),
                           db->creds_path ? db->creds_path : "conninfo"};
        row(r, v);
    }
    end(r, "SHOW");
}

static int config_row(void *arg, const char *section, const char *key, const char *value)
{
    result *r = arg;
    char name[128];
    snprintf(name, sizeof name, "%s%s%s", strcmp(section, "pglease") ? section : "",
             strcmp(section, "pglease") ? "." : "", key);
    const char *v[] = {name, value};
    row(r, v);
    return r->rc;
}

static void show_config(pgl_client *c, result *r)
{
    static const char *const cols[] = {"key", "value"};
    begin(r, c, cols, 2);
    pgl_conf_foreach(c->lp->px->conf, config_row, r);
    end(r, "SHOW");
}

static void show_version(pgl_client *c, result *r)
{
    static const char *const cols[] = {"version"};
    begin(r, c, cols, 1);
    const char *v[] = {"pglease " PGL_VERSION};
    row(r, v);
    end(r, "SHOW");
}

/* Lower-cased, trimmed, trailing ';' removed, into out. */
static void normalize(const char *sql, char *out, size_t cap)
{
    while (isspace((unsigned char)*sql))
        sql++;
    size_t n = 0;
    for (; *sql && n + 1 < cap; sql++) {
        char ch = (char)tolower((unsigned char)*sql);
        if (isspace((unsigned char)ch)) {
            if (n > 0 && out[n - 1] != ' ')
                out[n++] = ' ';
            continue;
        }
        out[n++] = ch;
    }
    while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == ';'))
        n--;
    out[n] = '\0';
}

static void query(pgl_client *c, uint8_t type, const uint8_t *body, uint32_t len)
{
    const char *sql;
    if (type != 'Q') {
        pgl_client_fail(c, "FATAL", "08P01",
                        "the admin console only speaks the simple query protocol");
        return;
    }
    if (pgl_pgwire_parse_query(body, len, &sql) != 0) {
        pgl_client_fail(c, "FATAL", "08P01", "malformed Query message");
        return;
    }
    char cmd[128];
    normalize(sql, cmd, sizeof cmd);
    static const struct {
        const char *cmd;
        void (*fn)(pgl_client *c, result *r);
    } table[] = {
        {"show pools", show_pools},     {"show clients", show_clients},
        {"show servers", show_servers}, {"show databases", show_databases},
        {"show config", show_config},   {"show version", show_version},
    };
    result r = {.c = c};
    bool found = false;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(cmd, table[i].cmd) == 0) {
            table[i].fn(c, &r);
            found = true;
            break;
        }
    }
    if (!found && cmd[0] == '\0') {
        r.rc = pgl_msg_command_complete(&c->conn, "");
    } else if (!found) {
        pgl_log_info(PGL_CLIENT_CTX(c), "admin: unknown command");
        r.rc = pgl_msg_error(&c->conn, "ERROR", "42601", "unknown admin console command",
                             NULL,
                             "try SHOW POOLS, SHOW CLIENTS, SHOW SERVERS, SHOW DATABASES, "
                             "SHOW CONFIG or SHOW VERSION");
    }
    if (r.rc == 0)
        r.rc = pgl_msg_ready(&c->conn, 'I');
    if (r.rc != 0)
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
}

const pgl_client_console pgl_admin_console = {welcome_params, query};
