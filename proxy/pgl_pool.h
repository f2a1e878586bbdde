/*
 * pgl_pool — one per [databases] entry: its credential generations (and
 * through them its servers), its clients by state, and the ParameterStatus
 * set new clients get.
 *
 * The pool hands idle servers to waiting clients in arrival order, opens
 * servers with its newest generation up to its size when clients wait,
 * keeps min_pool_size open, retires servers that idled or lived too long,
 * and carries out what its generations' clocks decide (pgl_generation):
 * takeover, drain, replacement, deadlines.
 *
 * Settings are read through the proxy's current config snapshot by the
 * database's name (pgl_pool_db), never kept from an older one, so a reload
 * only has to swap the snapshot.
 */
#ifndef PGL_POOL_H
#define PGL_POOL_H

#include "pgl_conf.h"
#include "pgl_generation.h"
#include "pgl_list.h"
#include "pgl_stats.h"
#include "pgl_stmt.h"
#include "pgl_varcache.h"

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

typedef struct pgl_proxy pgl_proxy;
typedef struct pgl_pool pgl_pool;
typedef struct pgl_server pgl_server;
typedef struct pgl_client pgl_client;

/* A ParameterStatus pair a new client receives. */
typedef struct {
    char *name;
    char *value;
} pgl_param;

/* What the pool tells the credentials module (set by it; may be NULL). */
typedef struct {
    /* The server rejected `g`'s credential (28xxx) and it died: a new one
     * is wanted; `was_warming` when it was a fresh one proving itself. */
    void (*rejected)(pgl_pool *pool, pgl_generation *g, bool was_warming);
    /* Postgres refused the password of `g`, a static role's current
     * generation, whose servers still work: Vault rotated it early; the
     * credential is to be read again now. */
    void (*stale)(pgl_pool *pool, pgl_generation *g);
    /* `g` retired: its lease may be revoked. */
    pgl_generation_retired_cb retired;
} pgl_pool_creds_hooks;

/* What every loop's copy of one pool shares (pgl_replica.h): the servers
 * of them all, bounded by the pool's size. */
typedef struct pgl_pool_shared {
    _Atomic int servers;
    _Atomic int refs;
} pgl_pool_shared;

struct pgl_pool {
    pgl_proxy *px;
    struct pgl_loop *lp; /* its loop: the main one for a primary, a worker's for a replica */
    pgl_pool_shared *shared;
    char *name;     /* the database's, or "<database>/<user>" for a [users] entry's pool */
    char *label;    /* for the log: `name`, and "<name>@w<loop>" on a worker loop */
    char *dbname;   /* the [databases] entry */
    char *for_user; /* the [users] entry whose clients it serves, else NULL */
    pgl_list node;        /* px->main.pools */
    /* The database entry as resolved in `db_conf`; pgl_pool_db resolves it
     * again whenever the proxy's snapshot is another one. */
    const pgl_conf_database *db;
    const pgl_conf *db_conf;
    pgl_list generations; /* newest first */
    /* Clients by state (pgl_client's set_state moves them). */
    pgl_clist login_wait; /* waiting for `params` */
    pgl_clist idle;       /* logged in, no server */
    pgl_clist waiting;    /* want a server, FIFO */
    pgl_clist active;     /* linked to a server */
    int nservers;         /* of every generation, every state but closed */
    pgl_param *params;    /* NULL until the first server logged in */
    size_t nparams;
    pgl_varcache defaults; /* the tracked ones among `params` */
    pgl_stmt_registry stmts; /* named statements its clients share (pgl_stmt.h) */
    int pinned; /* clients that keep their server (transaction mode, session state) */
    uint64_t next_gen_id;
    /* Last upstream login failure, given to clients that waited for it. */
    char fail_sqlstate[6];
    char fail_message[256];
    uint64_t fail_time;
    int consecutive_failures;
    uint64_t retry_after; /* ms: no new login attempt before this */
    bool room_wanted;     /* the next server released closes: a new credential needs its slot */
    const pgl_pool_creds_hooks *creds;
    /* Vault: at most one credential request in flight per pool. */
    struct pgl_vault_op *fetch_op;
    int fetch_failures;
    char vault_error[256];
    uint64_t refetch_at;
    /* A test login of a generation whose live server hit a permission
     * error (pgl_pool_credential_suspect). */
    struct pgl_upstream *verify_up;
    pgl_generation *verify_gen; /* held while the test runs */
    uint64_t verify_after;
    /* Counters for SHOW STATS and /metrics (pgl_stats.h). */
    pgl_stats stats;
    /* A reload removed its database: it drains, then goes (pgl_pool_remove).
     * `db` stays valid: `kept_conf` holds the snapshot it points into. */
    bool removed;
    uint64_t removed_at; /* ms */
    /* creds=file: the file being followed (pgl_filecreds.h), else NULL. */
    struct pgl_filecreds *filecreds;
    /* creds=exec: the helper's schedule (pgl_execcreds.h), else NULL. */
    struct pgl_execcreds *execcreds;
    struct pgl_conf_ref *kept_conf;
    /* Console PAUSE/KILL: no server is handed out or opened until RESUME. */
    bool paused;
    /* A reload is about to change its upstream (pgl_reload.c's commit). */
    bool upstream_changed;
    uint64_t slot_asked; /* ms: when it last asked another loop for a server slot */
    /* Console RECONNECT: servers with an id up to this close when released. */
    uint64_t reconnect_upto;
    uint64_t replace_after; /* ms: no login replacing a retiring server before this */
};

/* min_ms doubled per failure after the first, capped at max_ms: the
 * backoff bound for logins (used as is) and Vault reads (full jitter). */
uint64_t pgl_backoff_ceiling(uint64_t min_ms, uint64_t max_ms, int failures);

int pgl_pools_init(pgl_proxy *px) __attribute__((warn_unused_result));
/* A pool for `db` (a database a reload added, or a [users] entry's pool
 * at its user's first login), its credential source attached, and its
 * replicas on the worker loops; NULL when out of memory. Main thread. */
pgl_pool *pgl_pool_add(pgl_proxy *px, const pgl_conf_database *db);
/* One pool on `lp` only (a replica unless lp is the main loop), counting
 * its servers in `shared` (NULL: a fresh count). */
pgl_pool *pgl_pool_add_on(struct pgl_loop *lp, const pgl_conf_database *db,
                          pgl_pool_shared *shared);
/* A copy of a pool takes the ParameterStatus set its primary learned, so
 * its first clients need not wait for a login of its own. */
void pgl_pool_copy_params(pgl_pool *to, const pgl_pool *from);
/* Closes the least recently used idle server (oldest generation first):
 * its slot is wanted elsewhere. false when none is idle. */
bool pgl_pool_close_idle(pgl_pool *pool, const char *why);
/* A replica counts its servers with its primary's from now on. */
void pgl_pool_share(pgl_pool *replica, pgl_pool_shared *shared);
/* A server of the pool opened (+1) or closed (-1). */
void pgl_pool_count_server(pgl_pool *pool, int delta);
/*
 * A reload removed the pool's database, from the snapshot `kept` holds (a
 * reference taken here): new clients no longer find it; clients between
 * transactions are told so (57P01) now, the others when their transaction
 * ends, every one after drain_timeout; its generations retire (leases
 * revoked as after a rotation), and the janitor frees the pool once
 * nothing is left.
 */
void pgl_pool_remove(pgl_pool *pool, struct pgl_conf_ref *kept);
/* A credential from a file or a helper (`source` names it in the log):
 * unless it is the one in use or warming, a new generation that warms,
 * takes over and drains the current one as a rotation; `duration_s` > 0 is
 * its lifetime (a deadline like a lease's end). */
void pgl_pool_offer_credential(pgl_pool *pool, const char *user, const char *password,
                               long duration_s, const char *source);
/* A reload changed the database's upstream (conninfo or creds=): servers
 * of a new generation replace the current ones, as in a rotation. */
void pgl_pool_new_upstream(pgl_pool *pool);
/* Frees the pools of `lp` (their servers closed first). */
void pgl_pools_free_loop(struct pgl_loop *lp);
/* Runs fn on every pool of every loop (removed ones too), the other loops
 * parked. */
void pgl_pools_each(pgl_proxy *px, void (*fn)(pgl_pool *pool));
/* Closes every server connection of every pool of every loop (shutdown). */
void pgl_pools_close_servers(pgl_proxy *px);
/* The primary pool named `name` ("<database>" or "<database>/<user>";
 * removed ones are not found). */
pgl_pool *pgl_pool_find(pgl_proxy *px, const char *name);
/* The running pool on `lp` that reads entry `db` (matched by database and
 * for_user), or NULL. */
pgl_pool *pgl_pool_find_entry(struct pgl_loop *lp, const pgl_conf_database *db);
/* The pool a client logging in to `database` as `user` gets: its [users]
 * entry's pool on that database (opened now if it is the first login),
 * else the database's. NULL when the database does not exist, or with
 * *err = -ENOMEM when the pool could not be opened. */
pgl_pool *pgl_pool_for_login(struct pgl_loop *lp, const char *database, const char *user,
                             int *err);

/* The pool's database in the current config snapshot. */
const pgl_conf_database *pgl_pool_db(pgl_pool *pool);
int pgl_pool_size(pgl_pool *pool);
int pgl_pool_min_size(pgl_pool *pool);
pgl_conf_pool_mode pgl_pool_mode(pgl_pool *pool);

/* Transaction/statement mode: an old generation's servers serve on until a
 * new server replaces them (make-before-break). */
bool pgl_pool_replaces_in_place(pgl_pool *pool);

/* ---- generations ------------------------------------------------------------ */

/* The newest generation new servers should use, or NULL. */
pgl_generation *pgl_pool_generation(pgl_pool *pool);
/* Adds a generation (newest first); NULL when out of memory. */
pgl_generation *pgl_pool_add_generation(pgl_pool *pool, const char *user, const char *password,
                                        pgl_generation_state state);
/* Starts a warming generation's first logins (min_pool_size, at least 1). */
void pgl_pool_warm(pgl_pool *pool, pgl_generation *gen);
/* Carries out what `g`'s clock says is due at `now`. */
void pgl_pool_enforce(pgl_pool *pool, pgl_generation *g, uint64_t now);
/* The same for every generation of the pool (sources without Vault's
 * renewals: files, helpers). true when one of them is warming. */
bool pgl_pool_enforce_all(pgl_pool *pool, uint64_t now);

/* ---- servers and clients -------------------------------------------------------- */

/* Makes sure enough servers are coming for the waiting clients and hands
 * idle ones out. */
void pgl_pool_kick(pgl_pool *pool);
/* Hands idle servers to waiting clients, oldest waiter first: a server
 * became idle, or a new one logged in. */
void pgl_pool_serve(pgl_pool *pool);
/* Closes idle servers that have something to say or have closed (a
 * terminated Postgres's FATAL not read yet), before one is handed out. */
void pgl_pool_drop_dead_idle(pgl_pool *pool);
/* A server's client let go of it: why it must close, or NULL to keep it. */
const char *pgl_pool_server_released(pgl_pool *pool, pgl_server *server);
/* A login succeeded: a warming generation takes over; learn the
 * ParameterStatus set; reset the backoff. */
void pgl_pool_login_succeeded(pgl_pool *pool, pgl_generation *gen, PGconn *pg);
/* A login failed: back off (capped, jittered); a credential Postgres
 * refuses kills its generation (Vault pools fetch the next one); clients
 * waiting with no server left wait out a transient cause and are told a
 * permanent one at once. */
void pgl_pool_login_failed(pgl_pool *pool, pgl_generation *gen, const char *sqlstate,
                           const char *message);
/* Why clients of the pool wait, for the one whose query_wait_timeout ran
 * out: the message (in buf) and its SQLSTATE, or NULL when nothing failed. */
const char *pgl_pool_wait_cause(pgl_pool *pool, char sqlstate[6], char *buf, size_t cap);
/* A live server of `gen` answered a permission error (42501, 28xxx): the
 * credential may be gone (lease revoked, role dropped). A test login with
 * it tells; when refused, the generation dies as if a login had been. */
void pgl_pool_credential_suspect(pgl_pool *pool, pgl_generation *gen);
/* A server of the active generation logged in (or needs a connection
 * slot): one unreplaced server of the oldest draining generation goes, now
 * when idle, else at its next release. false when none is left to retire. */
bool pgl_pool_retire_one(pgl_pool *pool);
/* `gen`'s credential was refused (28xxx): it dies, the credentials module
 * is told (a new one is fetched), its servers retire, and clients that
 * keep one are asked to reconnect. */
void pgl_pool_generation_refused(pgl_pool *pool, pgl_generation *gen);
/* Retires `g` as a rotation does (a newer generation took over elsewhere):
 * draining, its servers replaced as they finish. */
void pgl_pool_generation_drain(pgl_pool *pool, pgl_generation *g);
/* Fails the clients waiting on a pool with `sqlstate`/`message`. */
void pgl_pool_fail_waiters(pgl_pool *pool, const char *sqlstate, const char *message);
void pgl_pool_janitor(pgl_pool *pool, uint64_t now);

#endif
