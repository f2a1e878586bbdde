/*
 * Shared named prepared statements (pgl_stmt.h). The maps are POSIX
 * binary trees (tsearch): lookups compare a key placed first in each item.
 */
#include "pgl_stmt.h"

#include <errno.h>
#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- statements ------------------------------------------------------------------ */

static uint64_t hash_bytes(const uint8_t *p, uint32_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint32_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Both arguments start with pgl_stmt's key fields (a lookup key is a
 * pgl_stmt with only those set). */
static int cmp_stmt(const void *a, const void *b)
{
    const pgl_stmt *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    if (x->def_len != y->def_len)
        return x->def_len < y->def_len ? -1 : 1;
    return memcmp(x->def, y->def, x->def_len);
}

pgl_stmt *pgl_stmt_intern(pgl_stmt_registry *reg, const uint8_t *def, uint32_t len)
{
    pgl_stmt key = {.hash = hash_bytes(def, len), .def_len = len, .def = def};
    void **found = tfind(&key, &reg->root, cmp_stmt);
    if (found != NULL) {
        pgl_stmt *st = *found;
        st->refs++;
        return st;
    }
    pgl_stmt *st = malloc(sizeof *st + len);
    if (st == NULL)
        return NULL;
    *st = key;
    uint8_t *copy = (uint8_t *)(st + 1);
    memcpy(copy, def, len);
    st->def = copy;
    st->reg = reg;
    st->id = ++reg->next_id;
    st->refs = 1;
    snprintf(st->name, sizeof st->name, "PGL_%" PRIu64, st->id);
    if (tsearch(st, &reg->root, cmp_stmt) == NULL) {
        free(st);
        return NULL;
    }
    reg->count++;
    return st;
}

void pgl_stmt_ref(pgl_stmt *st)
{
    st->refs++;
}

void pgl_stmt_unref(pgl_stmt *st)
{
    if (st == NULL || --st->refs > 0)
        return;
    tdelete(st, &st->reg->root, cmp_stmt);
    st->reg->count--;
    free(st);
}

/* ---- a client's names ---------------------------------------------------------------- */

typedef struct {
    const char *name; /* key: first; points into buf */
    pgl_stmt *st;
    char buf[];
} name_entry;

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

pgl_stmt *pgl_stmt_names_get(const pgl_stmt_names *nm, const char *name)
{
    void *const *found = tfind(&name, &nm->root, cmp_name);
    return found != NULL ? ((const name_entry *)*found)->st : NULL;
}

int pgl_stmt_names_put(pgl_stmt_names *nm, const char *name, pgl_stmt *st)
{
    void **found = tfind(&name, &nm->root, cmp_name);
    if (found != NULL) {
        name_entry *e = *found;
        pgl_stmt_ref(st);
        pgl_stmt_unref(e->st);
        e->st = st;
        return 0;
    }
    size_t nl = strlen(name) + 1;
    name_entry *e = malloc(sizeof *e + nl);
    if (e == NULL)
        return -ENOMEM;
    memcpy(e->buf, name, nl);
    e->name = e->buf;
    e->st = st;
    if (tsearch(e, &nm->root, cmp_name) == NULL) {
        free(e);
        return -ENOMEM;
    }
    pgl_stmt_ref(st);
    nm->n++;
    return 0;
}

bool pgl_stmt_names_del(pgl_stmt_names *nm, const char *name)
{
    void **found = tfind(&name, &nm->root, cmp_name);
    if (found == NULL)
        return false;
    name_entry *e = *found;
    tdelete(e, &nm->root, cmp_name);
    pgl_stmt_unref(e->st);
    free(e);
    nm->n--;
    return true;
}

static void free_name(void *p)
{
    name_entry *e = p;
    pgl_stmt_unref(e->st);
    free(e);
}

void pgl_stmt_names_clear(pgl_stmt_names *nm)
{
    tdestroy(nm->root, free_name);
    nm->root = NULL;
    nm->n = 0;
}

/* ---- a server's statements ---------------------------------------------------------- */

typedef struct {
    uint64_t id; /* key: first */
    pgl_stmt *st;
    pgl_list lru;
    bool present; /* answered; false while its Parse is on its way */
    bool keep;    /* an evicting Close was skipped: the server has it whatever its Parse does */
} cache_entry;

static int cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static cache_entry *entry_of(const pgl_stmt_cache *sc, const pgl_stmt *st)
{
    void *const *found = tfind(&st->id, &sc->root, cmp_id);
    return found != NULL ? *found : NULL;
}

static cache_entry *add_entry(pgl_stmt_cache *sc, pgl_stmt *st, bool present)
{
    cache_entry *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->id = st->id;
    e->st = st;
    e->present = present;
    if (tsearch(e, &sc->root, cmp_id) == NULL) {
        free(e);
        return NULL;
    }
    pgl_stmt_ref(st);
    pgl_list_prepend(&sc->lru, &e->lru);
    sc->n++;
    return e;
}

static void remove_entry(pgl_stmt_cache *sc, cache_entry *e)
{
    tdelete(e, &sc->root, cmp_id);
    pgl_list_remove(&e->lru);
    pgl_stmt_unref(e->st);
    free(e);
    sc->n--;
}

void pgl_stmt_cache_init(pgl_stmt_cache *sc, uint32_t max)
{
    memset(sc, 0, sizeof *sc);
    pgl_list_init(&sc->lru);
    sc->max = max;
}

void pgl_stmt_cache_forget_all(pgl_stmt_cache *sc)
{
    while (!pgl_list_empty(&sc->lru))
        remove_entry(sc, pgl_container_of(sc->lru.next, cache_entry, lru));
}

static void owed_pop(pgl_stmt_cache *sc)
{
    pgl_stmt_unref(sc->owed[sc->owed_head].st);
    sc->owed_head = (sc->owed_head + 1) % sc->owed_cap;
    sc->owed_n--;
}

void pgl_stmt_cache_close(pgl_stmt_cache *sc)
{
    pgl_stmt_cache_forget_all(sc);
    while (sc->owed_n > 0)
        owed_pop(sc);
    free(sc->owed);
    sc->owed = NULL;
    sc->owed_cap = 0;
}

bool pgl_stmt_cache_use(pgl_stmt_cache *sc, pgl_stmt *st)
{
    cache_entry *e = entry_of(sc, st);
    if (e == NULL)
        return false;
    pgl_list_remove(&e->lru);
    pgl_list_prepend(&sc->lru, &e->lru);
    return true;
}

int pgl_stmt_cache_adding(pgl_stmt_cache *sc, pgl_stmt *st)
{
    return add_entry(sc, st, false) != NULL ? 0 : -ENOMEM;
}

pgl_stmt *pgl_stmt_cache_excess(pgl_stmt_cache *sc, const pgl_stmt *keep)
{
    if (sc->max == 0 || sc->n <= sc->max)
        return NULL;
    /* One whose Parse is still on its way may be needed by the messages
     * right behind it. */
    for (pgl_list *it = sc->lru.prev; it != &sc->lru; it = it->prev) {
        cache_entry *e = pgl_container_of(it, cache_entry, lru);
        if (e->present && e->st != keep) {
            pgl_stmt *st = e->st;
            pgl_stmt_ref(st);
            remove_entry(sc, e);
            return st;
        }
    }
    return NULL;
}

int pgl_stmt_cache_owe(pgl_stmt_cache *sc, pgl_stmt_owed_kind kind, pgl_stmt *st)
{
    if (sc->owed_n == sc->owed_cap) {
        uint32_t ncap = sc->owed_cap ? sc->owed_cap * 2 : 16;
        pgl_stmt_owed *grown = malloc(ncap * sizeof *grown);
        if (grown == NULL)
            return -ENOMEM;
        for (uint32_t i = 0; i < sc->owed_n; i++)
            grown[i] = sc->owed[(sc->owed_head + i) % sc->owed_cap];
        free(sc->owed);
        sc->owed = grown;
        sc->owed_cap = ncap;
        sc->owed_head = 0;
    }
    pgl_stmt_owed *o = &sc->owed[(sc->owed_head + sc->owed_n) % sc->owed_cap];
    o->kind = (uint8_t)kind;
    o->st = st;
    o->epoch = sc->syncs_sent;
    if (st != NULL)
        pgl_stmt_ref(st);
    sc->owed_n++;
    return 0;
}

pgl_stmt_action pgl_stmt_cache_next(const pgl_stmt_cache *sc, uint8_t type)
{
    if (sc->owed_n == 0)
        return PGL_STMT_DESYNC;
    switch ((pgl_stmt_owed_kind)sc->owed[sc->owed_head].kind) {
    case PGL_STMT_OWED_PARSE:
        return type == '1' ? PGL_STMT_PASS : PGL_STMT_DESYNC;
    case PGL_STMT_OWED_PARSE_HIDDEN:
        return type == '1' ? PGL_STMT_DROP : PGL_STMT_DESYNC;
    case PGL_STMT_OWED_CLOSE:
        return type == '3' ? PGL_STMT_PASS : PGL_STMT_DESYNC;
    case PGL_STMT_OWED_CLOSE_AS_PARSE:
        return type == '3' ? PGL_STMT_RETYPE : PGL_STMT_DESYNC;
    case PGL_STMT_OWED_CLOSE_HIDDEN:
        return type == '3' ? PGL_STMT_DROP : PGL_STMT_DESYNC;
    }
    return PGL_STMT_DESYNC;
}

void pgl_stmt_cache_answered(pgl_stmt_cache *sc)
{
    const pgl_stmt_owed *o = &sc->owed[sc->owed_head];
    if ((o->kind == PGL_STMT_OWED_PARSE || o->kind == PGL_STMT_OWED_PARSE_HIDDEN) &&
        o->st != NULL) {
        /* Prepared there now, whatever the books said meanwhile (a DISCARD
         * ALL before it, an eviction). */
        cache_entry *e = entry_of(sc, o->st);
        if (e != NULL) {
            e->present = true;
            e->keep = false;
        } else {
            (void)add_entry(sc, o->st, true); /* out of memory: a later Parse fails loudly */
        }
    }
    owed_pop(sc);
}

/* An owed answer that will not come: the message was skipped. */
static void skipped(pgl_stmt_cache *sc)
{
    const pgl_stmt_owed *o = &sc->owed[sc->owed_head];
    cache_entry *e = o->st != NULL ? entry_of(sc, o->st) : NULL;
    switch ((pgl_stmt_owed_kind)o->kind) {
    case PGL_STMT_OWED_PARSE:
    case PGL_STMT_OWED_PARSE_HIDDEN:
        if (e != NULL && !e->present) {
            if (e->keep)
                e->present = true;
            else
                remove_entry(sc, e);
        }
        break;
    case PGL_STMT_OWED_CLOSE_HIDDEN:
        /* Evicted in the books, still prepared on the server. */
        if (e == NULL)
            (void)add_entry(sc, o->st, true);
        else
            e->keep = true;
        break;
    case PGL_STMT_OWED_CLOSE:
    case PGL_STMT_OWED_CLOSE_AS_PARSE:
        break;
    }
    owed_pop(sc);
}

void pgl_stmt_cache_error(pgl_stmt_cache *sc)
{
    /* Postgres ignores everything up to the Sync of the failed batch. */
    while (sc->owed_n > 0 && sc->owed[sc->owed_head].epoch == sc->syncs_recv)
        skipped(sc);
}

void pgl_stmt_cache_synced(pgl_stmt_cache *sc)
{
    /* Nothing of the batch this ReadyForQuery ends can still come. */
    while (sc->owed_n > 0 && sc->owed[sc->owed_head].epoch == sc->syncs_recv)
        skipped(sc);
    sc->syncs_recv++;
}
