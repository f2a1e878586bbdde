/*
 * A client's named prepared statements in transaction mode (pgl_stmt.h):
 * its Parse, Bind, Describe and Close messages are rewritten on their way
 * to whichever server it has, so that each statement has that server's
 * name for it and exists there before it is used.
 *
 *   Parse "S_1"     -> Parse "PGL_7" (the server lacks it), or, when the
 *                      server has it, a Close of "PGL_0" whose CloseComplete
 *                      pgl_server.c turns into the ParseComplete the client
 *                      waits for
 *   Bind/Describe   -> the server's name, after a Parse pglease adds when
 *                      the server lacks it (its answer is dropped), and
 *                      after a Close evicting the least recently used one
 *                      when the server has max_prepared_statements
 *   Close "S_1"     -> Close "PGL_0": other clients may share the statement;
 *                      it leaves the server by eviction
 *
 * Names the client never prepared pass unchanged, so Postgres answers them
 * (a statement it PREPAREd in SQL, or one that does not exist).
 */
#include "pgl_client.h"

#include "pgl_log.h"
#include "pgl_loop.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_server.h"
#include "pgl_stmt.h"

#include "pgl_pgwire_build.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A C string at the start of [p, p+len): its length, or -1 when not ended there. */
static long cstr(const uint8_t *p, uint32_t len)
{
    const uint8_t *end = memchr(p, 0, len);
    return end != NULL ? end - p : -1;
}

static int insert_close(pgl_client *c, const char *name)
{
    uint8_t msg[64];
    size_t n = pgl_pgwire_build_close(msg, sizeof msg, 'S', name);
    return n <= sizeof msg ? pgl_conn_insert(&c->conn, msg, (uint32_t)n) : -EINVAL;
}

static int insert_parse(pgl_client *c, const pgl_stmt *st)
{
    uint8_t local[512], *msg = local;
    size_t n = pgl_pgwire_build_parse(NULL, 0, st->name, st->def, st->def_len);
    if (n > sizeof local && (msg = malloc(n)) == NULL)
        return -ENOMEM;
    pgl_pgwire_build_parse(msg, n, st->name, st->def, st->def_len);
    int rc = pgl_conn_insert(&c->conn, msg, (uint32_t)n);
    if (msg != local)
        free(msg);
    return rc;
}

/* Closes what the server holds beyond max_prepared_statements, before
 * the message that uses `st`. */
static int evict_excess(pgl_client *c, const pgl_stmt *st)
{
    pgl_stmt_cache *sc = &c->link->stmts;
    pgl_stmt *evict;
    int rc = 0;
    while (rc == 0 && (evict = pgl_stmt_cache_excess(sc, st)) != NULL) {
        rc = insert_close(c, evict->name);
        if (rc == 0)
            rc = pgl_stmt_cache_owe(sc, PGL_STMT_OWED_CLOSE_HIDDEN, evict);
        pgl_stmt_unref(evict);
    }
    return rc;
}

/* Before a Bind or Describe of `st`: prepared on this server. */
static int ensure_prepared(pgl_client *c, pgl_stmt *st)
{
    pgl_stmt_cache *sc = &c->link->stmts;
    if (pgl_stmt_cache_use(sc, st))
        return evict_excess(c, st);
    int rc = pgl_stmt_cache_adding(sc, st);
    if (rc == 0)
        rc = evict_excess(c, st);
    if (rc == 0)
        rc = insert_parse(c, st);
    if (rc == 0)
        rc = pgl_stmt_cache_owe(sc, PGL_STMT_OWED_PARSE_HIDDEN, st);
    return rc;
}

static int on_parse(pgl_client *c, const uint8_t *body, uint32_t len, bool whole)
{
    pgl_stmt_cache *sc = &c->link->stmts;
    long nl = cstr(body, len);
    if (nl <= 0) /* unnamed (or malformed, for Postgres to refuse) */
        return pgl_stmt_cache_owe(sc, PGL_STMT_OWED_PARSE, NULL);
    if (!whole) {
        pgl_client_fail(c, "FATAL", "54000",
                        "a named prepared statement longer than max_packet_size (%d bytes) "
                        "cannot be shared between server connections",
                        c->lp->px->conf->max_packet_size);
        return 0;
    }
    if (c->stmts == NULL && (c->stmts = calloc(1, sizeof *c->stmts)) == NULL)
        return -ENOMEM;
    const char *name = (const char *)body;
    pgl_stmt *st = pgl_stmt_intern(&c->pool->stmts, body + nl + 1, len - (uint32_t)nl - 1);
    if (st == NULL)
        return -ENOMEM;
    int rc = pgl_stmt_names_put(c->stmts, name, st);
    if (rc == 0 && pgl_stmt_cache_use(sc, st)) {
        /* The server has it: the client still needs its ParseComplete. */
        rc = insert_close(c, PGL_STMT_NONE);
        if (rc == 0) {
            pgl_conn_drop(&c->conn);
            rc = pgl_stmt_cache_owe(sc, PGL_STMT_OWED_CLOSE_AS_PARSE, NULL);
        }
    } else if (rc == 0) {
        rc = pgl_stmt_cache_adding(sc, st);
        if (rc == 0)
            rc = evict_excess(c, st);
        if (rc == 0)
            rc = pgl_stmt_cache_owe(sc, PGL_STMT_OWED_PARSE, st);
        if (rc == 0)
            rc = pgl_conn_edit(&c->conn, 0, (uint32_t)nl, st->name, (uint32_t)strlen(st->name));
    }
    pgl_stmt_unref(st);
    return rc;
}

/* Bind and Describe: the statement named at `off`, `name` of `nl` bytes. */
static int on_use(pgl_client *c, uint32_t off, const char *name, long nl)
{
    pgl_stmt *st = nl > 0 && c->stmts != NULL ? pgl_stmt_names_get(c->stmts, name) : NULL;
    if (st == NULL)
        return 0;
    int rc = ensure_prepared(c, st);
    if (rc == 0)
        rc = pgl_conn_edit(&c->conn, off, (uint32_t)nl, st->name, (uint32_t)strlen(st->name));
    return rc;
}

static int on_close(pgl_client *c, const uint8_t *body, uint32_t len)
{
    int rc = pgl_stmt_cache_owe(&c->link->stmts, PGL_STMT_OWED_CLOSE, NULL);
    long nl = len > 1 ? cstr(body + 1, len - 1) : -1;
    if (rc != 0 || body[0] != 'S' || nl <= 0 || c->stmts == NULL ||
        !pgl_stmt_names_del(c->stmts, (const char *)body + 1))
        return rc;
    /* Others may use it: it stays prepared until evicted. */
    return pgl_conn_edit(&c->conn, 1, (uint32_t)nl, PGL_STMT_NONE, sizeof PGL_STMT_NONE - 1);
}

void pgl_client_stmt_message(pgl_client *c, uint8_t type, const uint8_t *body, uint32_t len,
                             bool whole)
{
    int rc = 0;
    switch (type) {
    case 'P':
        rc = on_parse(c, body, len, whole);
        break;
    case 'B': {
        long pl = cstr(body, len);
        if (pl >= 0)
            rc = on_use(c, (uint32_t)pl + 1, (const char *)body + pl + 1,
                        cstr(body + pl + 1, len - (uint32_t)pl - 1));
        break;
    }
    case 'D':
        if (len > 1 && body[0] == 'S')
            rc = on_use(c, 1, (const char *)body + 1, cstr(body + 1, len - 1));
        break;
    case 'C':
        if (len > 0)
            rc = on_close(c, body, len);
        break;
    default:
        break;
    }
    if (rc != 0)
        pgl_client_fail(c, "FATAL", "53200", "out of memory handling a prepared statement");
}

void pgl_client_stmt_forget_all(pgl_client *c)
{
    if (c->stmts != NULL)
        pgl_stmt_names_clear(c->stmts);
}

void pgl_client_stmt_free(pgl_client *c)
{
    if (c->stmts != NULL) {
        pgl_stmt_names_clear(c->stmts);
        free(c->stmts);
        c->stmts = NULL;
    }
}
