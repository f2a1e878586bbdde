/*
 * pgl_stmt — protocol-level named prepared statements, shared between the
 * servers of a pool in transaction mode.
 *
 * A client's Parse of a named statement lands on whichever server it has
 * at that moment; its next Bind may reach another one, where the statement
 * does not exist, or exists under the same name with another client's
 * query. pglease therefore keeps (PgBouncer 1.21's design):
 *
 *  - per pool, one pgl_stmt per distinct definition (query text and
 *    parameter types), known on every server as "PGL_<id>";
 *  - per client, its own names for them (pgl_stmt_names);
 *  - per server, what it has prepared, least recently used last, bounded by
 *    max_prepared_statements, and the ParseComplete/CloseComplete answers
 *    it still owes for the messages pglease let through, added or replaced
 *    (pgl_stmt_cache). Postgres answers in order, so a FIFO tells which
 *    answer belongs to which message; after an error it skips everything
 *    up to the next Sync, and so does the FIFO.
 *
 * This module keeps the books and decides; pgl_client_stmt.c rewrites the
 * client's messages and pgl_server.c the server's answers. Names start
 * with "PGL_", which an unquoted SQL PREPARE cannot create (it folds to
 * lower case); "PGL_0" never exists and stands in for a statement that must
 * not really be closed.
 */
#ifndef PGL_STMT_H
#define PGL_STMT_H

#include "pgl_list.h"

#include <stdbool.h>
#include <stdint.h>

#define PGL_STMT_NONE "PGL_0"

typedef struct pgl_stmt_registry pgl_stmt_registry;

typedef struct pgl_stmt {
    /* The lookup key: the Parse body after the name. First, see pgl_stmt.c. */
    uint64_t hash;
    uint32_t def_len;
    const uint8_t *def; /* points into this struct */
    pgl_stmt_registry *reg;
    uint64_t id;
    uint32_t refs;
    char name[24]; /* on servers */
} pgl_stmt;

struct pgl_stmt_registry {
    void *root; /* tsearch tree of pgl_stmt */
    uint64_t next_id;
    uint64_t count;
};

/* The one statement defined by `def` (a Parse body after its name), with a
 * reference for the caller; NULL when out of memory. */
pgl_stmt *pgl_stmt_intern(pgl_stmt_registry *reg, const uint8_t *def, uint32_t len);
void pgl_stmt_ref(pgl_stmt *st);
void pgl_stmt_unref(pgl_stmt *st);

/* ---- a client's names ---------------------------------------------------------------- */

typedef struct pgl_stmt_names {
    void *root;
    uint32_t n;
} pgl_stmt_names;

/* Binds `name` to `st` (replacing what it named). 0 or -ENOMEM. */
int pgl_stmt_names_put(pgl_stmt_names *nm, const char *name, pgl_stmt *st)
    __attribute__((warn_unused_result));
pgl_stmt *pgl_stmt_names_get(const pgl_stmt_names *nm, const char *name);
/* Forgets `name`; false when it was not known. */
bool pgl_stmt_names_del(pgl_stmt_names *nm, const char *name);
void pgl_stmt_names_clear(pgl_stmt_names *nm);

/* ---- a server's statements and owed answers -------------------------------------------- */

/* What a ParseComplete or CloseComplete from the server answers. */
typedef enum {
    PGL_STMT_OWED_PARSE = 0,     /* the client's Parse (named or not): pass on */
    PGL_STMT_OWED_PARSE_HIDDEN,  /* pglease's Parse before a Bind/Describe: drop */
    PGL_STMT_OWED_CLOSE,         /* the client's Close: pass on */
    PGL_STMT_OWED_CLOSE_AS_PARSE, /* stands for a Parse the server did not need: a ParseComplete */
    PGL_STMT_OWED_CLOSE_HIDDEN,  /* pglease's Close evicting a statement: drop */
} pgl_stmt_owed_kind;

typedef struct {
    pgl_stmt *st; /* referenced; NULL for unnamed statements and portals */
    uint32_t epoch; /* Syncs sent before it */
    uint8_t kind;
} pgl_stmt_owed;

typedef struct pgl_stmt_cache {
    void *root;    /* tsearch tree of entries by statement id */
    pgl_list lru;  /* most recently used first */
    uint32_t n, max;
    pgl_stmt_owed *owed; /* ring */
    uint32_t owed_head, owed_n, owed_cap;
    uint32_t syncs_sent, syncs_recv;
} pgl_stmt_cache;

void pgl_stmt_cache_init(pgl_stmt_cache *sc, uint32_t max);
/* Frees everything (the server is gone). */
void pgl_stmt_cache_close(pgl_stmt_cache *sc);

/*
 * Before a message that needs `st` on this server: true when it has it
 * (or will have it, a Parse being on its way), counting it as used. When
 * false, the caller sends a Parse and calls pgl_stmt_cache_adding() (0 or
 * -ENOMEM).
 */
bool pgl_stmt_cache_use(pgl_stmt_cache *sc, pgl_stmt *st);
int pgl_stmt_cache_adding(pgl_stmt_cache *sc, pgl_stmt *st) __attribute__((warn_unused_result));
/* While the server holds more than max_prepared_statements: the least
 * recently used one to close (not `keep`, not one whose Parse is still on
 * its way), referenced for the caller, who sends its Close and owes the
 * answer. NULL when none. */
pgl_stmt *pgl_stmt_cache_excess(pgl_stmt_cache *sc, const pgl_stmt *keep);

/* A message was sent that the server will answer with ParseComplete or
 * CloseComplete (takes a reference to st). 0 or -ENOMEM. */
int pgl_stmt_cache_owe(pgl_stmt_cache *sc, pgl_stmt_owed_kind kind, pgl_stmt *st)
    __attribute__((warn_unused_result));

/* What to do with an answer of `type` ('1' or '3') from the server, without
 * taking it: */
typedef enum {
    PGL_STMT_PASS = 0, /* forward */
    PGL_STMT_DROP,     /* the client did not ask for it */
    PGL_STMT_RETYPE,   /* a CloseComplete that answers a Parse: ParseComplete */
    PGL_STMT_DESYNC,   /* nothing owed matches: the books are wrong */
} pgl_stmt_action;
pgl_stmt_action pgl_stmt_cache_next(const pgl_stmt_cache *sc, uint8_t type);
/* ... and taking it. */
void pgl_stmt_cache_answered(pgl_stmt_cache *sc);

/* The server reported an error: what it owed up to the next Sync will not
 * come. */
void pgl_stmt_cache_error(pgl_stmt_cache *sc);
/* ReadyForQuery arrived. */
void pgl_stmt_cache_synced(pgl_stmt_cache *sc);
/* A Sync, Query or FunctionCall was sent. */
static inline void pgl_stmt_cache_sync_sent(pgl_stmt_cache *sc)
{
    sc->syncs_sent++;
}
/* The session lost its prepared statements (DISCARD ALL, DEALLOCATE ALL). */
void pgl_stmt_cache_forget_all(pgl_stmt_cache *sc);

static inline bool pgl_stmt_cache_settled(const pgl_stmt_cache *sc)
{
    return sc->owed_n == 0;
}

#endif
