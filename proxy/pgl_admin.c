/*
 * The admin console: clients that connect to the database "pglease" (or
 * "pgbouncer", so PgBouncer's tooling finds it) get simple-query commands
 * answered by pglease itself. This file reads the query string and runs its
 * commands; the SHOW commands and their columns are pgl_admin_show.c.
 *
 * A query string may hold several commands separated by ';': each answers
 * in turn, as Postgres answers a multi-statement query, an error ends the
 * string, and one ReadyForQuery follows. admin_users may run everything,
 * stats_users only SHOW (PgBouncer's keys).
 *
 * Commands (PgBouncer's where it has them):
 *   PAUSE [db]      no server is handed out or opened; completes once no
 *                   server of the database(s) is busy, so that it returns
 *                   when nothing runs upstream any more
 *   RESUME [db]     undoes PAUSE and KILL
 *   KILL db         closes the database's clients and servers now; new
 *                   clients wait until RESUME
 *   RECONNECT [db]  every server closes when next released (idle ones now)
 *   ROTATE [db]     a new Vault credential now, then the usual drain
 *   SHUTDOWN        as SIGINT
 * RELOAD runs the reload (pgl_reload.c) and answers its outcome.
 */
#include "pgl_admin.h"
#include "pgl_admin_result.h"

#include "pgl_creds.h"
#include "pgl_log.h"
#include "pgl_msg.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_server.h"
#include "pgl_version.h"
#include "pgl_worker.h"

#include "pgl_pgwire_decode.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How often a waiting PAUSE looks whether its servers are released. */
#define WAIT_POLL_MS 50

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

/* ---- one command ---------------------------------------------------------------- */

/* What a command did: answered (maybe with an error, which ends the query
 * string), or left waiting (the rest runs when it completes). */
typedef enum { CMD_DONE, CMD_ERROR, CMD_WAITS } cmd_outcome;

/* A command split into words: verb, and up to two arguments (double quotes
 * around an argument are removed; the verb and SHOW's subject are lower
 * case, database names are kept as written). */
typedef struct {
    char verb[32];
    char arg[128];
    char extra[128];
    int nargs;
} command;

static void parse_command(const char *s, size_t n, command *cmd)
{
    memset(cmd, 0, sizeof *cmd);
    char *slots[] = {cmd->verb, cmd->arg, cmd->extra};
    size_t caps[] = {sizeof cmd->verb, sizeof cmd->arg, sizeof cmd->extra};
    size_t i = 0;
    int w = 0;
    for (; w < 4; w++) {
        while (i < n && isspace((unsigned char)s[i]))
            i++;
        if (i == n)
            break;
        bool quoted = s[i] == '"';
        i += quoted;
        size_t len = 0;
        while (i < n && (quoted ? s[i] != '"' : !isspace((unsigned char)s[i]))) {
            if (w < 3 && len + 1 < caps[w])
                slots[w][len++] = s[i];
            i++;
        }
        i += quoted && i < n;
        if (w < 3)
            slots[w][len] = '\0';
    }
    cmd->nargs = w - 1;
    for (char *p = cmd->verb; *p; p++)
        *p = (char)tolower((unsigned char)*p);
}

static bool is_admin(const pgl_client *c)
{
    const pgl_conf *conf = c->lp->px->conf;
    for (size_t i = 0; i < conf->nadmin_users; i++)
        if (strcmp(conf->admin_users[i], c->user) == 0)
            return true;
    return false;
}

static cmd_outcome fail(pgl_admin_result *r, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static cmd_outcome fail(pgl_admin_result *r, const char *sqlstate, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->rc == 0)
        r->rc = pgl_msg_error(&r->c->conn, "ERROR", sqlstate, msg, NULL, NULL);
    return CMD_ERROR;
}

/* The pools a command applies to: `db` or (empty) all. NULL pool with
 * *ok false: no such database. */
static pgl_pool *scope(pgl_proxy *px, const char *db, bool *ok)
{
    *ok = true;
    if (db[0] == '\0')
        return NULL;
    pgl_pool *pool = pgl_pool_find(px, db);
    *ok = pool != NULL;
    return pool;
}

/* Every loop's copy of `one` (of every pool when NULL). Console commands
 * run on the main thread with the other loops parked (see query). */
#define FOREACH_POOL_IN(px, one, pool, it, tmp)                                                  \
    for (int li_ = 0; li_ < (px)->nloops; li_++)                                                 \
        pgl_list_foreach(it, tmp, &(px)->loops[li_]->pools)                                      \
            if (((pool) = pgl_container_of(it, pgl_pool, node)), !(pool)->removed &&             \
                ((one) == NULL || strcmp((one)->name, (pool)->name) == 0))

/* No server of the scope is busy: the pause is complete. */
static bool quiet(pgl_proxy *px, pgl_pool *one)
{
    pgl_pool *pool;
    pgl_list *it, *tmp, *gp, *gt;
    FOREACH_POOL_IN(px, one, pool, it, tmp)
    {
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            if (!pgl_clist_empty(&pgl_container_of(gp, pgl_generation, node)->busy))
                return false;
        }
    }
    return true;
}

static void on_wait_timer(uv_timer_t *t);

/* Parks the command: the client reads nothing more until it completes. */
static cmd_outcome wait_for(pgl_client *c, pgl_admin_result *r, const char *db, const char *rest)
{
    pgl_proxy *px = c->lp->px;
    if (strlen(rest) >= sizeof px->admin_waits[0].rest)
        return fail(r, "54000", "the query string after PAUSE is too long");
    pgl_admin_wait *w = NULL;
    for (size_t i = 0; i < PGL_ADMIN_WAITS && w == NULL; i++)
        if (px->admin_waits[i].client == NULL)
            w = &px->admin_waits[i];
    if (w == NULL)
        return fail(r, "53300", "too many console commands waiting");
    if (!px->admin_timer_ready) {
        uv_timer_init(&px->main.uv, &px->admin_timer);
        px->admin_timer.data = px;
        px->admin_timer_ready = true;
    }
    w->client = c;
    w->client_id = c->id;
    w->loop = c->lp->index;
    snprintf(w->db, sizeof w->db, "%s", db);
    snprintf(w->rest, sizeof w->rest, "%s", rest);
    pgl_conn_pause(&c->conn);
    if (!uv_is_active((uv_handle_t *)&px->admin_timer))
        uv_timer_start(&px->admin_timer, on_wait_timer, WAIT_POLL_MS, WAIT_POLL_MS);
    return CMD_WAITS;
}

static cmd_outcome cmd_pause(pgl_client *c, pgl_admin_result *r, const command *cmd,
                             const char *rest)
{
    pgl_proxy *px = c->lp->px;
    bool ok;
    pgl_pool *one = scope(px, cmd->arg, &ok), *pool;
    if (!ok)
        return fail(r, "3D000", "no such database: %s", cmd->arg);
    pgl_list *it, *tmp;
    FOREACH_POOL_IN(px, one, pool, it, tmp)
    {
        pool->paused = true;
    }
    pgl_log_info(NULL, "admin: PAUSE %s", one ? one->name : "(all databases)");
    if (quiet(px, one)) {
        pgl_admin_end(r, "PAUSE");
        return CMD_DONE;
    }
    return wait_for(c, r, cmd->arg, rest);
}

static cmd_outcome cmd_resume(pgl_client *c, pgl_admin_result *r, const command *cmd)
{
    pgl_proxy *px = c->lp->px;
    bool ok, was = px->paused;
    pgl_pool *one = scope(px, cmd->arg, &ok), *pool;
    if (!ok)
        return fail(r, "3D000", "no such database: %s", cmd->arg);
    pgl_list *it, *tmp;
    FOREACH_POOL_IN(px, one, pool, it, tmp)
    {
        was |= pool->paused;
    }
    if (!was)
        return fail(r, "55000", "pooler is not paused");
    if (one == NULL)
        px->paused = false; /* SIGUSR1's pause too */
    FOREACH_POOL_IN(px, one, pool, it, tmp)
    {
        pool->paused = false;
        pgl_pool_kick(pool);
    }
    pgl_log_info(NULL, "admin: RESUME %s", one ? one->name : "(all databases)");
    pgl_admin_end(r, "RESUME");
    return CMD_DONE;
}

/* Closes `pool`'s servers: every one (`all`), or the idle ones. A
 * generation is held while its servers close so it is freed after. */
static void close_servers(pgl_pool *pool, bool all, const char *why)
{
    pgl_list *gp, *gt;
    pgl_list_foreach(gp, gt, &pool->generations)
    {
        pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
        pgl_generation_hold(g);
        pgl_clist *lists[] = {&g->idle, &g->busy, &g->login};
        for (size_t i = 0; i < (all ? 3u : 1u); i++) {
            pgl_list *p;
            while ((p = pgl_clist_first(lists[i])) != NULL)
                pgl_server_close(pgl_container_of(p, pgl_server, node), why);
        }
        pgl_generation_unhold(g);
    }
}

static cmd_outcome cmd_kill(pgl_client *c, pgl_admin_result *r, const command *cmd)
{
    pgl_proxy *px = c->lp->px;
    if (cmd->arg[0] == '\0')
        return fail(r, "42601", "KILL needs a database name");
    pgl_pool *pool = pgl_pool_find(px, cmd->arg);
    if (pool == NULL)
        return fail(r, "3D000", "no such database: %s", cmd->arg);
    pgl_log_info(NULL, "admin: KILL %s", pool->name);
    pgl_pool *one = pool;
    pgl_list *it, *tmp, *ct, *cn;
    FOREACH_POOL_IN(px, one, pool, it, tmp)
    {
        /* Paused first, so nothing reopens while its servers close. */
        pool->paused = true;
        pgl_list_foreach(ct, cn, &pool->lp->clients)
        {
            pgl_client *cl = pgl_container_of(ct, pgl_client, node);
            if (cl->pool == pool)
                pgl_client_fail(cl, "FATAL", "57P01",
                                "terminating connection: database \"%s\" was killed on the "
                                "admin console", pool->name);
        }
        close_servers(pool, true, "KILL on the admin console");
    }
    pgl_admin_end(r, "KILL");
    return CMD_DONE;
}

static cmd_outcome cmd_reconnect(pgl_client *c, pgl_admin_result *r, const command *cmd)
{
    pgl_proxy *px = c->lp->px;
    bool ok;
    pgl_pool *one = scope(px, cmd->arg, &ok), *pool;
    if (!ok)
        return fail(r, "3D000", "no such database: %s", cmd->arg);
    pgl_log_info(NULL, "admin: RECONNECT %s", one ? one->name : "(all databases)");
    pgl_list *it, *tmp;
    FOREACH_POOL_IN(px, one, pool, it, tmp)
    {
        /* Busy servers close at their release (pgl_pool_server_released). */
        /* At least every id its loop has issued (pgl_loop_next_id). */
        pool->reconnect_upto =
            pool->lp->next_server_id * (uint64_t)px->nloops + (uint64_t)pool->lp->index;
        close_servers(pool, false, "RECONNECT on the admin console");
        pgl_pool_kick(pool);
    }
    pgl_admin_end(r, "RECONNECT");
    return CMD_DONE;
}

static cmd_outcome cmd_rotate(pgl_client *c, pgl_admin_result *r, const command *cmd)
{
    pgl_proxy *px = c->lp->px;
    bool ok;
    pgl_pool *one = scope(px, cmd->arg, &ok), *pool;
    if (!ok)
        return fail(r, "3D000", "no such database: %s", cmd->arg);
    int rotated = 0;
    pgl_list *it, *tmp;
    /* The primaries: the replicas follow them. */
    pgl_list_foreach(it, tmp, &px->main.pools)
    {
        pool = pgl_container_of(it, pgl_pool, node);
        if (pool->removed || (one != NULL && one != pool))
            continue;
        int rc = pgl_creds_rotate(pool);
        if (rc == -EINVAL && one != NULL)
            return fail(r, "55000", "database %s does not take its credentials from Vault",
                        pool->name);
        rotated += rc == 0 || rc == -EALREADY;
    }
    if (rotated == 0)
        return fail(r, "55000", "no database takes its credentials from Vault");
    pgl_admin_end(r, "ROTATE");
    return CMD_DONE;
}

static cmd_outcome cmd_shutdown(pgl_client *c, pgl_admin_result *r)
{
    pgl_log_info(NULL, "admin: SHUTDOWN");
    pgl_admin_end(r, "SHUTDOWN");
    pgl_proxy_shutdown(c->lp->px, true);
    return CMD_DONE;
}

/* The file is read again; a bad one changes nothing and the client gets
 * why (file, line, key), as the log does. */
static cmd_outcome cmd_reload(pgl_client *c, pgl_admin_result *r)
{
    char err[PGL_CONF_ERRLEN];
    pgl_log_info(PGL_CLIENT_CTX(c), "admin: RELOAD");
    if (pgl_proxy_reload(c->lp->px, "admin console", err, sizeof err) != 0)
        return fail(r, "F0000", "reload failed, the running configuration stays: %s", err);
    pgl_admin_end(r, "RELOAD");
    return CMD_DONE;
}

static cmd_outcome run_command(pgl_client *c, pgl_admin_result *r, const command *cmd,
                               const char *rest)
{
    if (strcmp(cmd->verb, "show") == 0) {
        char what[sizeof cmd->arg];
        memcpy(what, cmd->arg, sizeof what);
        for (char *p = what; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        pgl_admin_show_fn fn = pgl_admin_show_lookup(what);
        if (fn == NULL)
            return fail(r, "42601", "unknown admin console command: SHOW %s", cmd->arg);
        fn(c, r);
        return CMD_DONE;
    }
    static const char *const known[] = {"pause",  "resume",   "kill", "reconnect",
                                        "rotate", "shutdown", "reload"};
    bool found = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        found |= strcmp(cmd->verb, known[i]) == 0;
    if (!found)
        return fail(r, "42601", "unknown admin console command: %s", cmd->verb);
    if (!is_admin(c))
        return fail(r, "42501", "admin access needed: %s is in stats_users, which may only SHOW",
                    c->user);
    if (strcmp(cmd->verb, "pause") == 0)
        return cmd_pause(c, r, cmd, rest);
    if (strcmp(cmd->verb, "resume") == 0)
        return cmd_resume(c, r, cmd);
    if (strcmp(cmd->verb, "kill") == 0)
        return cmd_kill(c, r, cmd);
    if (strcmp(cmd->verb, "reconnect") == 0)
        return cmd_reconnect(c, r, cmd);
    if (strcmp(cmd->verb, "rotate") == 0)
        return cmd_rotate(c, r, cmd);
    if (strcmp(cmd->verb, "reload") == 0)
        return cmd_reload(c, r);
    return cmd_shutdown(c, r);
}

/* ---- the query string ------------------------------------------------------------- */

/* Runs the commands of `sql` in turn. Ends with ReadyForQuery unless a
 * command waits (it then runs the rest when it completes). `answered`: the
 * string's first commands already answered (the rest after a PAUSE), so an
 * empty rest is not an empty query. */
static void run_string(pgl_client *c, const char *sql, bool answered)
{
    pgl_admin_result r = {.c = c};
    bool any = answered;
    const char *p = sql;
    for (;;) {
        /* Commands hold no ';' (quoted database names aside). */
        const char *end = p;
        bool quoted = false;
        while (*end && (quoted || *end != ';')) {
            quoted ^= *end == '"';
            end++;
        }
        command cmd;
        parse_command(p, (size_t)(end - p), &cmd);
        const char *rest = *end ? end + 1 : end;
        if (cmd.verb[0] != '\0') {
            any = true;
            cmd_outcome out = run_command(c, &r, &cmd, rest);
            if (out == CMD_WAITS)
                return;
            if (out == CMD_ERROR) {
                pgl_log_info(PGL_CLIENT_CTX(c), "admin: %s failed", cmd.verb);
                break;
            }
        }
        if (*end == '\0' || r.rc != 0)
            break;
        p = end + 1;
    }
    if (!any && r.rc == 0)
        r.rc = pgl_msg_command_complete(&c->conn, "");
    if (r.rc == 0)
        r.rc = pgl_msg_ready(&c->conn, 'I');
    if (r.rc != 0)
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
}

/* Is `c` still a live client of its loop? A waiting command's client may
 * have gone (and been freed) since. */
static bool alive(pgl_loop *lp, const pgl_client *c, uint64_t id)
{
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &lp->clients)
    {
        if (pgl_container_of(it, pgl_client, node) == c)
            return c->id == id && c->state != PGL_CLIENT_CLOSING;
    }
    return false;
}

static void on_wait_timer(uv_timer_t *t)
{
    pgl_proxy *px = t->data;
    bool pending = false;
    pgl_workers_park(px);
    for (size_t i = 0; i < PGL_ADMIN_WAITS; i++) {
        pgl_admin_wait *w = &px->admin_waits[i];
        if (w->client == NULL)
            continue;
        pgl_client *c = w->client;
        if (!alive(px->loops[w->loop], c, w->client_id)) {
            w->client = NULL;
            continue;
        }
        bool ok;
        pgl_pool *one = scope(px, w->db, &ok);
        if (ok && !quiet(px, one)) {
            pending = true;
            continue;
        }
        /* Complete: answer, run what followed it, read on. */
        w->client = NULL;
        pgl_admin_result r = {.c = c};
        pgl_admin_end(&r, "PAUSE");
        char rest[sizeof w->rest];
        memcpy(rest, w->rest, sizeof rest);
        if (r.rc != 0) {
            pgl_client_fail(c, "FATAL", "53200", "out of memory");
            continue;
        }
        run_string(c, rest, true);
        if (c->state != PGL_CLIENT_CLOSING && !c->conn.closed) {
            bool parked = false;
            for (size_t k = 0; k < PGL_ADMIN_WAITS; k++)
                parked |= px->admin_waits[k].client == c;
            if (!parked)
                pgl_conn_resume(&c->conn);
            pending |= parked;
        }
    }
    pgl_workers_unpark(px);
    if (!pending)
        uv_timer_stop(t);
}

static bool waiting(pgl_proxy *px, const pgl_client *c)
{
    for (size_t k = 0; k < PGL_ADMIN_WAITS; k++)
        if (px->admin_waits[k].client == c)
            return true;
    return false;
}

/* A console query from a worker loop, run by the main thread. */
typedef struct {
    pgl_client *c;
    uint64_t id;
    int loop;
    char sql[];
} remote_query;

static void run_remote(pgl_loop *main, void *arg)
{
    remote_query *q = arg;
    pgl_proxy *px = main->px;
    pgl_workers_park(px);
    if (alive(px->loops[q->loop], q->c, q->id)) {
        run_string(q->c, q->sql, false);
        if (q->c->state != PGL_CLIENT_CLOSING && !q->c->conn.closed && !waiting(px, q->c))
            pgl_conn_resume(&q->c->conn);
    }
    pgl_workers_unpark(px);
    free(q);
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
    /* Commands read and change every loop's pools: they run on the main
     * thread with the other loops parked. */
    pgl_proxy *px = c->lp->px;
    if (c->lp->index == 0) {
        pgl_workers_park(px);
        run_string(c, sql, false);
        pgl_workers_unpark(px);
        return;
    }
    size_t n = strlen(sql);
    remote_query *q = malloc(sizeof *q + n + 1);
    if (q == NULL) {
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
        return;
    }
    q->c = c;
    q->id = c->id;
    q->loop = c->lp->index;
    memcpy(q->sql, sql, n + 1);
    pgl_conn_pause(&c->conn);
    if (pgl_loop_post(&px->main, run_remote, q) != 0) {
        free(q);
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
    }
}

const pgl_client_console pgl_admin_console = {welcome_params, query};
