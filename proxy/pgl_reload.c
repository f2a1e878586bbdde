/*
 * Reload (pgl_proxy.h): SIGHUP and the console's RELOAD.
 *
 * Two phases, so that a broken file changes nothing:
 *   1. prepare: load and validate the file with the start-time environment,
 *      check its files, read the new auth_file, build the TLS context and a
 *      Vault client when [vault] changed, re-bind listeners whose address
 *      changed (the old ones come back if the new ones cannot be opened).
 *      Any failure undoes what was prepared and the old snapshot stays.
 *   2. commit: swap users, TLS and Vault, retire pools of removed
 *      databases, swap the snapshot, then start pools of added databases
 *      and new generations for changed upstreams. Nothing here can fail
 *      but an allocation, which is logged.
 * Settings read through the snapshot (sizes, timeouts, modes of new
 * servers) apply from the swap on. Keys whose value lives elsewhere since
 * start-up (pool_mode, workers, pidfile, http_listen) keep their running
 * value and the log says so.
 */
#include "pgl_proxy.h"
#include "pgl_replica.h"
#include "pgl_worker.h"

#include "pgl_client.h"
#include "pgl_conf_files.h"
#include "pgl_creds.h"
#include "pgl_listener.h"
#include "pgl_log.h"
#include "pgl_notify.h"
#include "pgl_pool.h"
#include "pgl_tls.h"
#include "pgl_vault.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

/* How a [pglease] or [vault] key takes a new value; keys not listed are
 * read through the snapshot and apply at once. */
typedef enum {
    KEY_LIVE = 0,
    KEY_LISTEN,  /* listeners re-bound */
    KEY_TLS,     /* client TLS context rebuilt */
    KEY_USERS,   /* auth_file read again */
    KEY_VAULT,   /* a new Vault login; every Vault pool rotates */
    KEY_RESTART, /* the running value stays until pglease restarts */
} key_reload;

static key_reload how_key(const char *section, const char *key)
{
    static const struct {
        const char *key;
        key_reload how;
    } keys[] = {
        {"listen_addr", KEY_LISTEN},         {"listen_port", KEY_LISTEN},
        {"unix_socket_dir", KEY_LISTEN},     {"client_tls_sslmode", KEY_TLS},
        {"client_tls_cert_file", KEY_TLS},   {"client_tls_key_file", KEY_TLS},
        {"auth_file", KEY_USERS},            {"auth_type", KEY_USERS},
        {"pool_mode", KEY_RESTART},          {"workers", KEY_RESTART},
        {"pidfile", KEY_RESTART},            {"http_listen", KEY_RESTART},
    };
    if (strcmp(section, "vault") == 0)
        return KEY_VAULT;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strcmp(keys[i].key, key) == 0)
            return keys[i].how;
    return KEY_LIVE;
}

/* ---- what changed ------------------------------------------------------------------ */

typedef struct {
    const pgl_conf *other; /* the snapshot compared with */
    bool any[KEY_RESTART + 1];
    char live[400];   /* names of live keys that changed, for the log */
    char restart[200];
    int rc;
} key_diff;

typedef struct {
    const char *section, *key;
    const char *found;
    char value[1024];
} key_lookup;

static int find_value(void *arg, const char *section, const char *key, const char *value)
{
    key_lookup *l = arg;
    if (strcmp(section, l->section) != 0 || strcmp(key, l->key) != 0)
        return 0;
    snprintf(l->value, sizeof l->value, "%s", value);
    l->found = l->value;
    return 1;
}

static void append(char *list, size_t cap, const char *key)
{
    size_t n = strlen(list);
    snprintf(list + n, cap - n, "%s%s", n > 0 ? ", " : "", key);
}

/* For each key of the new snapshot: differs in the old one? */
static int compare_key(void *arg, const char *section, const char *key, const char *value)
{
    key_diff *d = arg;
    key_lookup l = {section, key, NULL, ""};
    (void)pgl_conf_foreach(d->other, find_value, &l);
    if (l.found != NULL && strcmp(l.found, value) == 0)
        return 0;
    key_reload how = how_key(section, key);
    d->any[how] = true;
    char name[96];
    snprintf(name, sizeof name, "%s%s", strcmp(section, "vault") == 0 ? "vault." : "", key);
    if (how == KEY_RESTART)
        append(d->restart, sizeof d->restart, name);
    else
        append(d->live, sizeof d->live, name);
    return 0;
}

static bool same_upstream(const pgl_conf_database *a, const pgl_conf_database *b)
{
    if (a->creds_kind != b->creds_kind || a->nparams != b->nparams ||
        (a->creds_path == NULL) != (b->creds_path == NULL) ||
        (a->creds_path != NULL && strcmp(a->creds_path, b->creds_path) != 0))
        return false;
    /* KV: other fields name another user and password. */
    if (a->creds_kind == PGL_CONF_CREDS_KV &&
        (strcmp(a->kv_username_field, b->kv_username_field) != 0 ||
         strcmp(a->kv_password_field, b->kv_password_field) != 0))
        return false;
    for (size_t i = 0; i < a->nparams; i++)
        if (strcmp(a->params[i].key, b->params[i].key) != 0 ||
            strcmp(a->params[i].value, b->params[i].value) != 0)
            return false;
    return true;
}

/* The pool's entry in a snapshot not published yet (so still writable). */
static pgl_conf_database *entry_in(pgl_conf *conf, const pgl_pool *pool)
{
    pgl_conf_database *list = pool->for_user ? conf->user_databases : conf->databases;
    size_t n = pool->for_user ? conf->nuser_databases : conf->ndatabases;
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].name, pool->dbname) == 0 &&
            (pool->for_user == NULL || strcmp(list[i].for_user, pool->for_user) == 0))
            return &list[i];
    return NULL;
}

static pgl_conf_pool_mode effective_mode(const pgl_conf *conf, const pgl_conf_database *db)
{
    return db->pool_mode >= 0 ? (pgl_conf_pool_mode)db->pool_mode : conf->pool_mode;
}

/* ---- the old snapshot, kept for removed databases -------------------------------- */

void pgl_conf_ref_drop(pgl_conf_ref *ref)
{
    if (atomic_fetch_sub(&ref->refs, 1) > 1)
        return;
    pgl_conf_free(ref->conf);
    free(ref);
}

/* ---- prepare ----------------------------------------------------------------------- */

typedef struct {
    pgl_conf *next;
    key_diff diff;
    pgl_userlist *users;
    SSL_CTX *tls_ctx;
    uint8_t tls_cert_hash[PGL_TLS_CERT_HASH_MAX];
    size_t tls_cert_hash_len;
    struct pgl_vault *vault;
    bool new_vault;
    pgl_listener *listeners;
    bool new_listeners;
} reload_plan;

static void warn_log(void *arg, const char *msg)
{
    (void)arg;
    pgl_log_warning(NULL, "reload: %s", msg);
}

static void plan_free(reload_plan *p)
{
    pgl_conf_free(p->next);
    if (p->users != NULL)
        pgl_userlist_free(p->users);
    if (p->tls_ctx != NULL)
        SSL_CTX_free(p->tls_ctx);
    if (p->vault != NULL)
        pgl_vault_free(p->vault);
}

/* Closes the running listeners and opens the new snapshot's; when that
 * fails, opens the old ones again. */
static int rebind(pgl_proxy *px, reload_plan *p, char *err, size_t errlen)
{
    pgl_listeners_close(px->main.listeners);
    px->main.listeners = NULL;
    int rc = pgl_listeners_open(&px->main.uv, p->next, pgl_workers_accept, px,
                                &px->main.listeners, err, errlen);
    if (rc == 0)
        return 0;
    char again[256];
    if (pgl_listeners_open(&px->main.uv, px->conf, pgl_workers_accept, px,
                           &px->main.listeners, again, sizeof again) != 0)
        pgl_log_error(NULL, "reload: cannot listen on the previous addresses again either: %s; "
                            "no new client can connect until a reload that binds succeeds",
                      again);
    return rc;
}

static int prepare(pgl_proxy *px, reload_plan *p, char *err, size_t errlen)
{
    int rc = pgl_conf_load(px->conf->path, px->env, &p->next, err, errlen);
    if (rc != 0)
        return rc;
    if ((rc = pgl_conf_check_files(p->next, warn_log, NULL, err, errlen)) != 0)
        return rc;
    p->diff.other = px->conf;
    (void)pgl_conf_foreach(p->next, compare_key, &p->diff);
    const pgl_conf *next = p->next;
    if (next->auth_file != NULL &&
        (rc = pgl_userlist_load(next->auth_file, next->auth_type == PGL_CONF_AUTH_SCRAM,
                                &p->users, err, errlen)) != 0) {
        char why[PGL_CONF_ERRLEN];
        snprintf(why, sizeof why, "auth_file: %s", err);
        snprintf(err, errlen, "%s", why);
        return rc;
    }
    /* Always rebuilt: a reload is how renewed certificate files are read. */
    if ((rc = pgl_tls_server_ctx(next, &p->tls_ctx, p->tls_cert_hash, &p->tls_cert_hash_len, err,
                                 errlen)) != 0)
        return rc;
    p->new_vault = next->vault_needed && (px->vault == NULL || p->diff.any[KEY_VAULT]);
    if (p->new_vault && (rc = pgl_creds_prepare(px, next, &p->vault, err, errlen)) != 0) {
        char why[PGL_CONF_ERRLEN];
        snprintf(why, sizeof why, "vault: %s", err);
        snprintf(err, errlen, "%s", why);
        return rc;
    }
    /* Last: the only step with a visible effect while it runs. */
    if (p->diff.any[KEY_LISTEN] && (rc = rebind(px, p, err, errlen)) != 0)
        return rc;
    return 0;
}

/* ---- commit ------------------------------------------------------------------------ */

/* Clients half-way through a password exchange point into the old list:
 * they check against the new one (a removed user fails as unknown). */
static void swap_users(pgl_proxy *px, pgl_userlist *users)
{
    pgl_list *it, *tmp;
    for (int i = 0; i < px->nloops; i++) {
        pgl_list_foreach(it, tmp, &px->loops[i]->clients)
        {
            pgl_client *c = pgl_container_of(it, pgl_client, node);
            if (c->auth_user != NULL)
                c->auth_user = users != NULL ? pgl_userlist_find(users, c->user) : NULL;
        }
    }
    if (px->users != NULL)
        pgl_userlist_free(px->users);
    px->users = users;
}

typedef struct {
    int added, removed, changed;
} db_counts;

/* A reload changed where the pool's servers log in (conninfo or creds=):
 * a new generation replaces the current one as in a rotation. */
static void new_upstream(pgl_pool *pool)
{
    const pgl_conf_database *db = pgl_pool_db(pool);
    pgl_creds_attach(pool);
    bool local = db->creds_kind == PGL_CONF_CREDS_CONNINFO ||
                 db->creds_kind == PGL_CONF_CREDS_FILE || db->creds_kind == PGL_CONF_CREDS_EXEC;
    if (local || pool->filecreds != NULL || pool->execcreds != NULL) {
        pgl_pool_new_upstream(pool);
        if (local)
            return;
    }
    /* A read of the old path in flight would bring the old role. */
    if (pool->fetch_op != NULL) {
        pgl_vault_cancel(pool->fetch_op);
        pool->fetch_op = NULL;
    }
    if (pgl_creds_rotate(pool) == 0)
        pgl_log_info(pool->name, "upstream changed by a reload: a credential from %s "
                                 "replaces the current servers as they finish",
                     db->creds_path);
}

static void commit(pgl_proxy *px, reload_plan *p, db_counts *n)
{
    pgl_conf *next = p->next, *old = px->conf;
    p->next = NULL;
    swap_users(px, p->users);
    p->users = NULL;
    /* Connections in a handshake hold their own reference to the old one. */
    if (px->tls_ctx != NULL)
        SSL_CTX_free(px->tls_ctx);
    px->tls_ctx = p->tls_ctx;
    p->tls_ctx = NULL;
    memcpy(px->tls_cert_hash, p->tls_cert_hash, sizeof px->tls_cert_hash);
    px->tls_cert_hash_len = p->tls_cert_hash_len;

    /* Running values that only a restart changes. */
    next->pool_mode = old->pool_mode;
    next->workers = old->workers;
    pgl_conf_ref *kept = NULL;
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (pool->removed)
            continue;
        const pgl_conf_database *was = pgl_pool_db(pool);
        pgl_conf_database *now = entry_in(next, pool);
        if (now == NULL) {
            if (kept == NULL && (kept = calloc(1, sizeof *kept)) != NULL)
                kept->conf = old;
            if (kept == NULL) {
                pgl_log_error(pool->name, "reload: out of memory removing the database; it "
                                          "stays until the next reload");
                continue;
            }
            /* Its copies first: they are found by the primary's name. */
            for (int i = 1; i < px->nloops; i++) {
                pgl_pool *r = pgl_replica_of(px->loops[i], pool);
                if (r != NULL)
                    pgl_pool_remove(r, kept);
            }
            pgl_pool_remove(pool, kept);
            n->removed++;
            continue;
        }
        /* The snapshot is not published yet: the running mode stays. */
        if (effective_mode(next, now) != effective_mode(old, was)) {
            pgl_log_warning(pool->name, "reload: pool_mode changes only at restart; it stays %s",
                            pgl_conf_pool_mode_name(effective_mode(old, was)));
            now->pool_mode = (int)effective_mode(old, was);
        }
    }
    /* Decided before the swap, applied after it (new logins read the new
     * entry). */
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        const pgl_conf_database *now = pool->removed ? NULL : entry_in(next, pool);
        pool->upstream_changed = now != NULL && !same_upstream(pgl_pool_db(pool), now);
    }
    px->conf = next;
    if (kept == NULL)
        pgl_conf_free(old);

    if (p->new_vault) {
        pgl_creds_replace(px, p->vault);
        p->vault = NULL;
    }
    for (size_t i = 0; i < next->ndatabases; i++) {
        const pgl_conf_database *db = &next->databases[i];
        if (pgl_pool_find_entry(&px->main, db) != NULL)
            continue;
        if (pgl_pool_add(px, db) == NULL) {
            pgl_log_error(db->name, "reload: out of memory adding the database");
            continue;
        }
        pgl_log_info(db->name, "added by a reload");
        n->added++;
    }
    pgl_list_foreach(pos, tmp, &px->main.pools)
    {
        pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
        if (pool->upstream_changed) {
            pool->upstream_changed = false;
            n->changed++;
            new_upstream(pool);
        }
    }
    pgl_log_configure(next, px->verbose);
    /* Sizes may have grown, pools appeared: serve who waits. */
    for (int i = 0; i < px->nloops; i++) {
        pgl_list_foreach(pos, tmp, &px->loops[i]->pools)
        {
            pgl_pool *pool = pgl_container_of(pos, pgl_pool, node);
            if (!pool->removed)
                pgl_pool_kick(pool);
        }
    }
    /* New generations reach the replicas now rather than at the next round. */
    pgl_replicas_sync(px);
}

int pgl_proxy_reload(pgl_proxy *px, const char *why, char *err, size_t errlen)
{
    if (px->shutting_down) {
        snprintf(err, errlen, "pglease is shutting down");
        return -ECANCELED;
    }
    pgl_notify_reloading();
    reload_plan p;
    memset(&p, 0, sizeof p);
    int rc = prepare(px, &p, err, errlen);
    if (rc != 0) {
        plan_free(&p);
        px->reloads_failed++;
        pgl_log_error(NULL, "reload (%s) failed, the running configuration stays: %s", why, err);
        pgl_notify_ready();
        return rc;
    }
    if (p.diff.restart[0] != '\0')
        pgl_log_warning(NULL, "reload: %s changed in the file but change%s only at restart; the "
                              "running value%s stay%s",
                        p.diff.restart, strchr(p.diff.restart, ',') ? "" : "s",
                        strchr(p.diff.restart, ',') ? "s" : "",
                        strchr(p.diff.restart, ',') ? "" : "s");
    db_counts n = {0, 0, 0};
    /* Every loop reads the snapshot, the users and the TLS context: they
     * change with the other loops parked. */
    pgl_workers_park(px);
    commit(px, &p, &n);
    pgl_workers_unpark(px);
    plan_free(&p);
    px->reloads_ok++;
    pgl_log_info(NULL, "reload (%s): %s: %zu database(s): %d added, %d removed, %d with a new "
                       "upstream; settings changed: %s",
                 why, px->conf->path, px->conf->ndatabases, n.added, n.removed, n.changed,
                 p.diff.live[0] ? p.diff.live : "none");
    pgl_notify_ready();
    return 0;
}
