/*
 * The console's SHOW commands. Where PgBouncer 1.18 has the command, the
 * columns are its names, in its order, with its types, so that dashboards
 * and prometheus-pgbouncer-exporter read pglease as they read PgBouncer;
 * pglease's own columns come after PgBouncer's. Columns for things pglease
 * does not have (cancel queues, reserve pools, DNS) are there with 0.
 * Counts come from the counted lists, never from walks, except the
 * per-connection listings themselves.
 */
#include "pgl_admin_result.h"

#include "pgl_loop.h"
#include "pgl_msg.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_replica.h"
#include "pgl_server.h"
#include "pgl_userlist.h"
#include "pgl_version.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/ssl.h>

#define TEXT PGL_OID_TEXT
#define INT4 PGL_OID_INT4
#define INT8 PGL_OID_INT8
#define NUMERIC PGL_OID_NUMERIC
#define NCOLS(a) (sizeof(a) / sizeof((a)[0]))
#define U64 pgl_admin_u64

/* ---- result writing ------------------------------------------------------------ */

void pgl_admin_begin(pgl_admin_result *r, pgl_client *c, const pgl_admin_col *cols, size_t n)
{
    const char *names[PGL_ADMIN_MAX_COLS];
    uint32_t oids[PGL_ADMIN_MAX_COLS];
    r->c = c;
    r->ncols = n;
    for (size_t i = 0; i < n && i < PGL_ADMIN_MAX_COLS; i++) {
        names[i] = cols[i].name;
        oids[i] = cols[i].oid;
    }
    if (r->rc == 0)
        r->rc = pgl_msg_row_description(&c->conn, names, oids, n);
}

void pgl_admin_row(pgl_admin_result *r, const char *const *values)
{
    if (r->rc == 0)
        r->rc = pgl_msg_data_row(&r->c->conn, values, r->ncols);
}

void pgl_admin_end(pgl_admin_result *r, const char *tag)
{
    if (r->rc == 0)
        r->rc = pgl_msg_command_complete(&r->c->conn, tag);
}

const char *pgl_admin_u64(char *buf, uint64_t v)
{
    snprintf(buf, 24, "%llu", (unsigned long long)v);
    return buf;
}

const char *pgl_admin_time(char *buf, const pgl_client *c, uint64_t ms)
{
    if (ms == 0)
        return NULL;
    /* The loop clock is monotonic: place it on the wall clock now. */
    uint64_t now = pgl_loop_now(c->lp);
    time_t t = time(NULL) - (time_t)((now > ms ? now - ms : 0) / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 32, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

/* Address and port of a socket's local end ("" and 0 when unknown). */
static void local_end(int fd, char *addr, size_t cap, char *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    addr[0] = '\0';
    snprintf(port, 8, "0");
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)cap);
        snprintf(port, 8, "%u", (unsigned)ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)cap);
        snprintf(port, 8, "%u", (unsigned)ntohs(in6->sin6_port));
    } else {
        snprintf(addr, cap, "unix");
    }
}

/* PgBouncer's tls column: "" or "TLSv1.3/TLS_AES_256_GCM_SHA384". */
static const char *tls_desc(SSL *ssl, char *buf, size_t cap)
{
    if (ssl == NULL)
        return "";
    snprintf(buf, cap, "%s/%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
    return buf;
}

/* ---- pools ------------------------------------------------------------------------ */

/* The user a pool logs in as now (its newest generation's). */
static const char *pool_user(const pgl_pool *pool)
{
    if (pgl_list_empty(&pool->generations))
        return "";
    return pgl_container_of(pool->generations.next, pgl_generation, node)->user;
}

/* A pool's rows add up its copies on every loop (PGL_FOREACH_COPY); the
 * console runs with the other loops parked. */

/* Every client of every loop. */
#define FOREACH_CLIENT(px, cl, it, tmp)                                                          \
    for (int li_ = 0; li_ < (px)->nloops; li_++)                                                 \
        pgl_list_foreach(it, tmp, &(px)->loops[li_]->clients)                                    \
            if (((cl) = pgl_container_of(it, pgl_client, node)), 1)

static void show_pools(pgl_client *c, pgl_admin_result *r)
{
    static const pgl_admin_col cols[] = {
        {"database", TEXT},   {"user", TEXT},          {"cl_active", INT4},
        {"cl_waiting", INT4}, {"cl_active_cancel_req", INT4},
        {"cl_waiting_cancel_req", INT4},               {"sv_active", INT4},
        {"sv_active_cancel", INT4},                    {"sv_being_canceled", INT4},
        {"sv_idle", INT4},    {"sv_used", INT4},       {"sv_tested", INT4},
        {"sv_login", INT4},   {"maxwait", INT4},       {"maxwait_us", INT4},
        {"pool_mode", TEXT},
        /* pglease's own */
        {"cl_pinned", INT4},  {"statements", INT4},
    };
    pgl_admin_begin(r, c, cols, NCOLS(cols));
    pgl_proxy *px = c->lp->px;
    uint64_t now = pgl_now_ms(px);
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(it, pgl_pool, node), *cp;
        uint64_t cl_active = 0, cl_waiting = 0, maxwait_ms = 0, pinned = 0, stmts = 0;
        uint64_t sv_active = 0, sv_idle = 0, sv_login = 0;
        PGL_FOREACH_COPY(px, pool, cp)
        {
            /* PgBouncer's cl_active is every logged-in client not waiting. */
            cl_active += pgl_clist_count(&cp->idle) + pgl_clist_count(&cp->active);
            cl_waiting += pgl_clist_count(&cp->waiting) + pgl_clist_count(&cp->login_wait);
            /* The longest wait is the head of a FIFO. */
            const pgl_clist *queues[] = {&cp->waiting, &cp->login_wait};
            for (size_t i = 0; i < 2; i++) {
                pgl_list *first = pgl_clist_first(queues[i]);
                const pgl_client *cl =
                    first ? pgl_container_of(first, pgl_client, pool_node) : NULL;
                if (cl != NULL && cl->wait_since && now - cl->wait_since > maxwait_ms)
                    maxwait_ms = now - cl->wait_since;
            }
            pgl_list *gp, *gt;
            pgl_list_foreach(gp, gt, &cp->generations)
            {
                const pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
                sv_active += pgl_clist_count(&g->busy);
                sv_idle += pgl_clist_count(&g->idle);
                sv_login += pgl_clist_count(&g->login);
            }
            pinned += (uint64_t)cp->pinned;
            stmts += cp->stmts.count;
        }
        char b[9][24];
        const char *v[] = {pool->name,
                           pool_user(pool),
                           U64(b[0], cl_active),
                           U64(b[1], cl_waiting),
                           "0",
                           "0",
                           U64(b[2], sv_active),
                           "0",
                           "0",
                           U64(b[3], sv_idle),
                           "0",
                           "0",
                           U64(b[4], sv_login),
                           U64(b[5], maxwait_ms / 1000),
                           U64(b[6], (maxwait_ms % 1000) * 1000),
                           pgl_conf_pool_mode_name(pgl_pool_mode(pool)),
                           U64(b[7], pinned),
                           U64(b[8], stmts)};
        pgl_admin_row(r, v);
    }
    pgl_admin_end(r, "SHOW");
}

/* ---- stats ------------------------------------------------------------------------- */

typedef enum { STATS_BOTH, STATS_TOTALS, STATS_AVERAGES } stats_kind;

static void stats_values(const pgl_stats_counters *s, char b[][24], const char **v)
{
    v[0] = U64(b[0], s->xact_count);
    v[1] = U64(b[1], s->query_count);
    v[2] = U64(b[2], s->bytes_received);
    v[3] = U64(b[3], s->bytes_sent);
    v[4] = U64(b[4], s->xact_time_us);
    v[5] = U64(b[5], s->query_time_us);
    v[6] = U64(b[6], s->wait_time_us);
}

static void stats(pgl_client *c, pgl_admin_result *r, stats_kind kind)
{
    static const pgl_admin_col both[] = {
        {"database", TEXT},           {"total_xact_count", NUMERIC},
        {"total_query_count", NUMERIC}, {"total_received", NUMERIC},
        {"total_sent", NUMERIC},      {"total_xact_time", NUMERIC},
        {"total_query_time", NUMERIC}, {"total_wait_time", NUMERIC},
        {"avg_xact_count", NUMERIC},  {"avg_query_count", NUMERIC},
        {"avg_recv", NUMERIC},        {"avg_sent", NUMERIC},
        {"avg_xact_time", NUMERIC},   {"avg_query_time", NUMERIC},
        {"avg_wait_time", NUMERIC},
        /* pglease's own: PgBouncer < 1.8's name for total_query_count, which
         * Debian's prometheus-pgbouncer-exporter (1.7) still reads. */
        {"total_requests", NUMERIC},
    };
    static const pgl_admin_col split[] = {
        {"database", TEXT},      {"xact_count", NUMERIC}, {"query_count", NUMERIC},
        {"bytes_received", NUMERIC}, {"bytes_sent", NUMERIC}, {"xact_time", NUMERIC},
        {"query_time", NUMERIC}, {"wait_time", NUMERIC},
    };
    if (kind == STATS_BOTH)
        pgl_admin_begin(r, c, both, NCOLS(both));
    else
        pgl_admin_begin(r, c, split, NCOLS(split));
    pgl_proxy *px = c->lp->px;
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(it, pgl_pool, node), *cp;
        pgl_stats_counters total = {0}, avg = {0};
        PGL_FOREACH_COPY(px, pool, cp)
        {
            pgl_stats_add(&total, &cp->stats.total);
            pgl_stats_add(&avg, &cp->stats.avg);
        }
        char b[16][24];
        const char *v[16];
        v[0] = pool->name;
        switch (kind) {
        case STATS_BOTH:
            stats_values(&total, b, v + 1);
            stats_values(&avg, b + 7, v + 8);
            v[15] = U64(b[14], total.query_count);
            break;
        case STATS_TOTALS:
            stats_values(&total, b, v + 1);
            break;
        case STATS_AVERAGES:
            stats_values(&avg, b, v + 1);
            break;
        }
        pgl_admin_row(r, v);
    }
    pgl_admin_end(r, "SHOW");
}

static void show_stats(pgl_client *c, pgl_admin_result *r)
{
    stats(c, r, STATS_BOTH);
}

static void show_stats_totals(pgl_client *c, pgl_admin_result *r)
{
    stats(c, r, STATS_TOTALS);
}

static void show_stats_averages(pgl_client *c, pgl_admin_result *r)
{
    stats(c, r, STATS_AVERAGES);
}

/* ---- clients and servers --------------------------------------------------------- */

/* PgBouncer's socket listing, then pglease's own columns. */
#define SOCKET_COLS                                                                          \
    {"type", TEXT}, {"user", TEXT}, {"database", TEXT}, {"state", TEXT}, {"addr", TEXT},      \
        {"port", INT4}, {"local_addr", TEXT}, {"local_port", INT4}, {"connect_time", TEXT},   \
        {"request_time", TEXT}, {"wait", INT4}, {"wait_us", INT4}, {"close_needed", INT4},    \
        {"ptr", TEXT}, {"link", TEXT}, {"remote_pid", INT4}, {"tls", TEXT},                   \
        {"application_name", TEXT}

/* PgBouncer's client states: logged in is "active" whether linked or not. */
static const char *client_state(pgl_client_state st)
{
    switch (st) {
    case PGL_CLIENT_TLS_HANDSHAKE:
    case PGL_CLIENT_STARTUP:
    case PGL_CLIENT_AUTH:
        return "login";
    case PGL_CLIENT_LOGIN_WAIT:
    case PGL_CLIENT_WAITING:
        return "waiting";
    case PGL_CLIENT_IDLE:
    case PGL_CLIENT_ACTIVE:
        return "active";
    case PGL_CLIENT_CLOSING:
        break;
    }
    return "justfree";
}

static void show_clients(pgl_client *c, pgl_admin_result *r)
{
    static const pgl_admin_col cols[] = {
        SOCKET_COLS,
        /* pglease's own */
        {"id", INT8}, {"pinned", TEXT}, {"queries", INT8},
    };
    pgl_admin_begin(r, c, cols, NCOLS(cols));
    uint64_t now = pgl_loop_now(c->lp);
    pgl_list *it, *tmp;
    pgl_client *cl;
    FOREACH_CLIENT(c->lp->px, cl, it, tmp)
    {
        char addr[64] = "unix", port[8] = "0", laddr[64], lport[8], ptr[32], link[32] = "";
        char b[6][24], t1[32], t2[32], tls[160];
        if (cl->peer.family == AF_INET || cl->peer.family == AF_INET6) {
            inet_ntop(cl->peer.family, cl->peer.ip, addr, sizeof addr);
            snprintf(port, sizeof port, "%u", (unsigned)cl->peer.port);
        }
        local_end(cl->conn.io.fd, laddr, sizeof laddr, lport);
        snprintf(ptr, sizeof ptr, "C-%llu", (unsigned long long)cl->id);
        if (cl->link != NULL)
            snprintf(link, sizeof link, "S-%llu", (unsigned long long)cl->link->id);
        uint64_t wait_ms =
            cl->state == PGL_CLIENT_WAITING && cl->wait_since ? now - cl->wait_since : 0;
        const char *app = cl->vars ? cl->vars->values[PGL_VAR_APPLICATION_NAME] : NULL;
        const char *v[] = {"C",
                           cl->user ? cl->user : "",
                           cl->database ? cl->database : "",
                           client_state(cl->state),
                           addr,
                           port,
                           laddr,
                           lport,
                           pgl_admin_time(t1, c, cl->connect_time),
                           pgl_admin_time(t2, c, cl->last_activity),
                           U64(b[0], wait_ms / 1000),
                           U64(b[1], (wait_ms % 1000) * 1000),
                           "0",
                           ptr,
                           link,
                           "0",
                           tls_desc(cl->conn.io.ssl, tls, sizeof tls),
                           app ? app : "",
                           U64(b[2], cl->id),
                           cl->pinned ? "yes" : "no",
                           U64(b[3], cl->queries)};
        pgl_admin_row(r, v);
    }
    pgl_admin_end(r, "SHOW");
}

/* PgBouncer's server states; an internal query (reset, check) is "used"
 * unless it runs for a linked client (its startup settings). */
static const char *server_state(const pgl_server *s)
{
    switch (s->state) {
    case PGL_SERVER_CONNECTING:
        return "login";
    case PGL_SERVER_IDLE:
        return "idle";
    case PGL_SERVER_ACTIVE:
        return "active";
    case PGL_SERVER_INTERNAL:
        return s->link != NULL ? "active" : "used";
    case PGL_SERVER_CLOSED:
        break;
    }
    return "justfree";
}

static void server_row(pgl_admin_result *r, pgl_client *c, pgl_server *s, uint64_t gen_id,
                       bool close_needed)
{
    const pgl_conf_database *db = pgl_pool_db(s->pool);
    const char *host = s->pg ? PQhost(s->pg) : pgl_conf_database_param(db, "host");
    const char *port = s->pg ? PQport(s->pg) : pgl_conf_database_param(db, "port");
    char laddr[64] = "", lport[8] = "0", ptr[32], link[32] = "", b[4][24], t1[32], t2[32];
    char tls[160];
    if (s->state != PGL_SERVER_CONNECTING)
        local_end(s->conn.io.fd, laddr, sizeof laddr, lport);
    snprintf(ptr, sizeof ptr, "S-%llu", (unsigned long long)s->id);
    if (s->link != NULL)
        snprintf(link, sizeof link, "C-%llu", (unsigned long long)s->link->id);
    const char *v[] = {"S",
                       s->gen ? s->gen->user : "",
                       s->pool->name,
                       server_state(s),
                       host ? host : "",
                       port && *port ? port : "5432",
                       laddr,
                       lport,
                       pgl_admin_time(t1, c, s->created),
                       pgl_admin_time(t2, c, s->last_used ? s->last_used : s->created),
                       "0",
                       "0",
                       close_needed ? "1" : "0",
                       ptr,
                       link,
                       U64(b[0], (uint64_t)(s->backend_pid > 0 ? s->backend_pid : 0)),
                       s->state != PGL_SERVER_CONNECTING ? tls_desc(s->conn.io.ssl, tls, sizeof tls)
                                                         : "",
                       "pglease",
                       U64(b[1], s->id),
                       U64(b[2], gen_id)};
    pgl_admin_row(r, v);
}

static void show_servers(pgl_client *c, pgl_admin_result *r)
{
    static const pgl_admin_col cols[] = {
        SOCKET_COLS,
        /* pglease's own */
        {"id", INT8}, {"generation", INT8},
    };
    pgl_admin_begin(r, c, cols, NCOLS(cols));
    pgl_proxy *px = c->lp->px;
    pgl_list *it, *tmp, *gp, *gt, *si, *st;
    for (int li = 0; li < px->nloops; li++)
    pgl_list_foreach(it, tmp, &px->loops[li]->pools)
    {
        pgl_pool *pool = pgl_container_of(it, pgl_pool, node);
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
            pgl_clist *lists[] = {&g->busy, &g->idle, &g->login};
            for (size_t i = 0; i < 3; i++) {
                pgl_clist_foreach(si, st, lists[i])
                {
                    pgl_server *s = pgl_container_of(si, pgl_server, node);
                    bool close_needed = pgl_generation_retiring(g) || s->id <= pool->reconnect_upto;
                    server_row(r, c, s, g->id, close_needed);
                }
            }
        }
    }
    pgl_admin_end(r, "SHOW");
}

/* ---- databases, lists, users --------------------------------------------------- */

static void show_databases(pgl_client *c, pgl_admin_result *r)
{
    static const pgl_admin_col cols[] = {
        {"name", TEXT},         {"host", TEXT},           {"port", INT4},
        {"database", TEXT},     {"force_user", TEXT},     {"pool_size", INT4},
        {"min_pool_size", INT4}, {"reserve_pool", INT4},  {"pool_mode", TEXT},
        {"max_connections", INT4}, {"current_connections", INT4},
        {"paused", INT4},       {"disabled", INT4},
        /* pglease's own */
        {"credentials", TEXT},
    };
    pgl_admin_begin(r, c, cols, NCOLS(cols));
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &c->lp->px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(it, pgl_pool, node);
        const pgl_conf_database *db = pgl_pool_db(pool);
        const char *port = pgl_conf_database_param(db, "port");
        char b[3][24];
        /* creds= as written: a KV secret keeps its "kv:". */
        char creds[512];
        static const char *const prefix[] = {[PGL_CONF_CREDS_KV] = "kv:",
                                             [PGL_CONF_CREDS_FILE] = "file:",
                                             [PGL_CONF_CREDS_EXEC] = "exec:"};
        const char *pre = (size_t)db->creds_kind < sizeof prefix / sizeof prefix[0] &&
                                  prefix[db->creds_kind] != NULL
                              ? prefix[db->creds_kind]
                              : "";
        snprintf(creds, sizeof creds, "%s%s", pre, db->creds_path ? db->creds_path : "conninfo");
        const char *v[] = {pool->name,
                           pgl_conf_database_param(db, "host"),
                           port && *port ? port : "5432",
                           pgl_conf_database_param(db, "dbname"),
                           pgl_conf_database_param(db, "user"),
                           U64(b[0], (uint64_t)pgl_pool_size(pool)),
                           U64(b[1], (uint64_t)pgl_pool_min_size(pool)),
                           "0",
                           pgl_conf_pool_mode_name(pgl_pool_mode(pool)),
                           "0",
                           U64(b[2], (uint64_t)atomic_load(&pool->shared->servers)),
                           pool->paused || c->lp->px->paused ? "1" : "0",
                           "0",
                           creds};
        pgl_admin_row(r, v);
    }
    pgl_admin_end(r, "SHOW");
}

static void show_lists(pgl_client *c, pgl_admin_result *r)
{
    static const pgl_admin_col cols[] = {{"list", TEXT}, {"items", INT4}};
    pgl_admin_begin(r, c, cols, NCOLS(cols));
    pgl_proxy *px = c->lp->px;
    uint64_t pools = 0, servers = 0, login = 0;
    pgl_list *it, *tmp;
    pgl_list_foreach(it, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(it, pgl_pool, node);
        pools++;
        servers += (uint64_t)atomic_load(&pool->shared->servers);
    }
    /* Clients still logging in are in no pool's lists: the one walk. */
    uint64_t used = 0;
    pgl_client *cl;
    FOREACH_CLIENT(px, cl, it, tmp)
    {
        login += cl->state <= PGL_CLIENT_AUTH;
        used++;
    }
    uint64_t users = px->users ? pgl_userlist_count(px->users) : 0;
    struct {
        const char *name;
        uint64_t n;
    } items[] = {
        {"databases", px->conf->ndatabases},
        {"users", users},
        {"pools", pools},
        {"free_clients", 0},
        {"used_clients", used},
        {"login_clients", login},
        {"free_servers", 0},
        {"used_servers", servers},
        {"dns_names", 0},
        {"dns_zones", 0},
        {"dns_queries", 0},
        {"dns_pending", 0},
    };
    for (size_t i = 0; i < NCOLS(items); i++) {
        char b[24];
        const char *v[] = {items[i].name, U64(b, items[i].n)};
        pgl_admin_row(r, v);
    }
    pgl_admin_end(r, "SHOW");
}

static void show_users(pgl_client *c, pgl_admin_result *r)
{
    static const pgl_admin_col cols[] = {{"name", TEXT}, {"pool_mode", TEXT}};
    pgl_admin_begin(r, c, cols, NCOLS(cols));
    const pgl_userlist *ul = c->lp->px->users;
    const pgl_user *u;
    const pgl_conf *conf = c->lp->px->conf;
    for (size_t i = 0; (u = pgl_userlist_at(ul, i)) != NULL; i++) {
        /* PgBouncer's column: the user's own pool_mode, else NULL. */
        const char *mode = NULL;
        for (size_t j = 0; j < conf->nusers; j++)
            if (strcmp(conf->users[j].name, u->name) == 0 && conf->users[j].pool_mode >= 0)
                mode = pgl_conf_pool_mode_name((pgl_conf_pool_mode)conf->users[j].pool_mode);
        const char *v[] = {u->name, mode};
        pgl_admin_row(r, v);
    }
    pgl_admin_end(r, "SHOW");
}

/* ---- config, version ------------------------------------------------------------- */

static int config_row(void *arg, const char *section, const char *key, const char *value)
{
    pgl_admin_result *r = arg;
    char name[128];
    bool own = strcmp(section, "pglease") == 0;
    snprintf(name, sizeof name, "%s%s%s", own ? "" : section, own ? "" : ".", key);
    /* default and changeable: the key table does not say (yet). */
    const char *v[] = {name, value, NULL, NULL};
    pgl_admin_row(r, v);
    return r->rc;
}

static void show_config(pgl_client *c, pgl_admin_result *r)
{
    static const pgl_admin_col cols[] = {
        {"key", TEXT}, {"value", TEXT}, {"default", TEXT}, {"changeable", TEXT}};
    pgl_admin_begin(r, c, cols, NCOLS(cols));
    pgl_conf_foreach(c->lp->px->conf, config_row, r);
    pgl_admin_end(r, "SHOW");
}

static void show_version(pgl_client *c, pgl_admin_result *r)
{
    static const pgl_admin_col cols[] = {{"version", TEXT}};
    pgl_admin_begin(r, c, cols, NCOLS(cols));
    const char *v[] = {"pglease " PGL_VERSION};
    pgl_admin_row(r, v);
    pgl_admin_end(r, "SHOW");
}

/* ---- leases ------------------------------------------------------------------------- */

/* "<path>/<first 4 characters>…": enough to find it in Vault's audit log,
 * not enough to use it. */
static const char *lease_prefix(const char *lease_id, char *buf, size_t cap)
{
    if (lease_id == NULL)
        return NULL;
    const char *slash = strrchr(lease_id, '/');
    if (slash == NULL)
        return "(static)";
    snprintf(buf, cap, "%.*s/%.4s…", (int)(slash - lease_id), lease_id, slash + 1);
    return buf;
}

/* Servers of generation `id` on every loop. */
static uint64_t servers_of(pgl_proxy *px, pgl_pool *pool, uint64_t id)
{
    uint64_t n = 0;
    pgl_pool *cp;
    PGL_FOREACH_COPY(px, pool, cp)
    {
        for (pgl_list *p = cp->generations.next; p != &cp->generations; p = p->next) {
            const pgl_generation *g = pgl_container_of(p, pgl_generation, node);
            if (g->id == id)
                n += (uint64_t)pgl_generation_nservers(g);
        }
    }
    return n;
}

static void show_leases(pgl_client *c, pgl_admin_result *r)
{
    static const pgl_admin_col cols[] = {
        {"database", TEXT}, {"generation", INT8}, {"username", TEXT}, {"lease_id", TEXT},
        {"issued", TEXT},   {"expires", TEXT},    {"ttl", INT8},      {"renewable", PGL_OID_BOOL},
        {"state", TEXT},    {"servers", INT4},
    };
    pgl_admin_begin(r, c, cols, NCOLS(cols));
    uint64_t now = pgl_loop_now(c->lp);
    pgl_proxy *px = c->lp->px;
    pgl_list *it, *tmp, *gp, *gt;
    pgl_list_foreach(it, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(it, pgl_pool, node);
        pgl_conf_creds_kind kind = pgl_pool_db(pool)->creds_kind;
        bool kv = kind == PGL_CONF_CREDS_KV;
        pgl_list_foreach(gp, gt, &pool->generations)
        {
            const pgl_generation *g = pgl_container_of(gp, pgl_generation, node);
            char b[4][24], hint[128], t1[32];
            /* Lease-less credentials say where they come from instead. */
            const char *lease = lease_prefix(g->lease_id, hint, sizeof hint);
            if (lease == NULL && g->is_static && kv) {
                snprintf(hint, sizeof hint, "(kv version %ld)", g->kv_version);
                lease = hint;
            } else if (lease == NULL && g->is_static) {
                lease = "(static role)";
            } else if (lease == NULL && kind == PGL_CONF_CREDS_FILE) {
                lease = "(credential file)";
            } else if (lease == NULL && kind == PGL_CONF_CREDS_EXEC) {
                lease = "(credential helper)";
            }
            bool ends = g->end != 0 && g->end != UINT64_MAX;
            /* The end may lie ahead: place it on the wall clock by hand. */
            char expires[32];
            const char *exp = NULL;
            if (ends) {
                time_t t = time(NULL) + (time_t)(((int64_t)g->end - (int64_t)now) / 1000);
                struct tm tm;
                gmtime_r(&t, &tm);
                strftime(expires, sizeof expires, "%Y-%m-%d %H:%M:%S UTC", &tm);
                exp = expires;
            }
            const char *v[] = {pool->name,
                               U64(b[0], g->id),
                               g->user,
                               lease,
                               pgl_admin_time(t1, c, g->issued),
                               exp,
                               ends ? U64(b[1], g->end > now ? (g->end - now) / 1000 : 0) : NULL,
                               g->renewable ? "t" : "f",
                               pgl_generation_state_name(g->state),
                               U64(b[2], servers_of(px, pool, g->id))};
            pgl_admin_row(r, v);
        }
    }
    pgl_admin_end(r, "SHOW");
}

/* ---- lookup --------------------------------------------------------------------------- */

pgl_admin_show_fn pgl_admin_show_lookup(const char *what)
{
    static const struct {
        const char *name;
        pgl_admin_show_fn fn;
    } table[] = {
        {"pools", show_pools},
        {"stats", show_stats},
        {"stats_totals", show_stats_totals},
        {"stats_averages", show_stats_averages},
        {"clients", show_clients},
        {"servers", show_servers},
        {"databases", show_databases},
        {"lists", show_lists},
        {"users", show_users},
        {"config", show_config},
        {"version", show_version},
        {"leases", show_leases},
    };
    for (size_t i = 0; i < NCOLS(table); i++)
        if (strcmp(what, table[i].name) == 0)
            return table[i].fn;
    return NULL;
}
