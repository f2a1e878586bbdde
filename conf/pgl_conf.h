/*
 * pgl_conf — the pglease configuration: ini file (libinih), environment
 * overrides, validation.
 *
 * A loaded configuration is an immutable snapshot: pgl_conf_load() builds a
 * complete, validated pgl_conf or nothing at all, and nobody writes to it
 * afterwards. A reload builds a second snapshot and swaps it in, so a broken
 * file never leaves a half-applied configuration behind.
 *
 * Every error message names the file (or environment variable), the line and
 * the key. Values of secret-bearing keys (conninfo passwords) never appear in
 * messages, and the snapshot wipes them when it is freed.
 *
 * This module knows nothing of the proxy, Vault or the wire protocol.
 */
#ifndef PGL_CONF_H
#define PGL_CONF_H

#include "pgl_err.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * Errors (base/pgl_err.h): 0 on success, or
 *   -errno       the file cannot be opened (-ENOENT, -EACCES...); -EIO on a
 *                read error
 *   PGL_ESYNTAX  not an ini line, line too long, bad section header
 *   -EINVAL      unknown key/section, bad value, missing key, conflict
 *   -ENOMEM
 */

/* Room for one message: "file:line: [section] key: what is wrong". */
#define PGL_CONF_ERRLEN 512

typedef enum {
    PGL_CONF_AUTH_SCRAM = 0,
    PGL_CONF_AUTH_MD5,
    PGL_CONF_AUTH_TRUST,
    PGL_CONF_AUTH_CERT,
} pgl_conf_auth_type;

typedef enum {
    PGL_CONF_POOL_TRANSACTION = 0,
    PGL_CONF_POOL_SESSION,
} pgl_conf_pool_mode;

/* Transaction mode: what a transaction that left session state gets. */
typedef enum {
    PGL_CONF_TRACK_PIN = 0, /* the client keeps its server until it leaves */
    PGL_CONF_TRACK_RESET,   /* the server is reset (DISCARD ALL); the client loses it */
    PGL_CONF_TRACK_OFF,     /* nothing is checked (PgBouncer's behaviour) */
} pgl_conf_track;

typedef enum {
    PGL_CONF_TLS_DISABLE = 0,
    PGL_CONF_TLS_ALLOW,
    PGL_CONF_TLS_REQUIRE,
} pgl_conf_tls_mode;

typedef enum {
    PGL_CONF_LOG_TEXT = 0,
    PGL_CONF_LOG_JSON,
} pgl_conf_log_format;

/* Lines less severe than this are not logged; in the file's spelling. */
typedef enum {
    PGL_CONF_LOG_ERROR = 0,
    PGL_CONF_LOG_WARNING,
    PGL_CONF_LOG_INFO,
    PGL_CONF_LOG_DEBUG, /* per-transaction lines too; also the command line's -v */
} pgl_conf_log_level;

typedef enum {
    PGL_CONF_VAULT_APPROLE = 0,
    PGL_CONF_VAULT_TOKEN,
    PGL_CONF_VAULT_KUBERNETES,
    PGL_CONF_VAULT_JWT,  /* a JWT from jwt_file, checked by Vault's jwt auth method */
    PGL_CONF_VAULT_CERT, /* the TLS client certificate (cert auth method) */
} pgl_conf_vault_auth;

/* Where a database's upstream user and password come from. */
typedef enum {
    PGL_CONF_CREDS_CONNINFO = 0, /* user=/password= written in the conninfo */
    PGL_CONF_CREDS_DYNAMIC,      /* creds=<mount>/creds/<role>: a Vault lease */
    PGL_CONF_CREDS_STATIC,       /* creds=<mount>/static-creds/<role> */
    PGL_CONF_CREDS_FILE,         /* creds=file:<absolute path>: a JSON file something else
                                    writes (Vault Agent, a CSI driver); not Vault */
    PGL_CONF_CREDS_EXEC,         /* creds=exec:<absolute path> [args]: a helper that prints
                                    the JSON (cloud IAM tokens); not Vault */
    PGL_CONF_CREDS_KV,           /* creds=kv:<mount>/data/<path>: a KV v2 secret */
} pgl_conf_creds_kind;

/* One libpq connection keyword and its value, as written in the conninfo. */
typedef struct {
    char *key;
    char *value;
} pgl_conf_kv;

typedef struct {
    char *name;  /* the database name clients ask for */
    int line;    /* where it was defined, for messages */
    /* libpq keywords (pglease's own keys removed), in file order; values are
     * unquoted. May contain "password": treat as secret. */
    pgl_conf_kv *params;
    size_t nparams;
    pgl_conf_creds_kind creds_kind;
    char *creds_path;  /* what is read: "<mount>/creds/<role>" ("<mount>/data/<path>" for
                          KV, without "kv:"), the file for FILE, the command line for EXEC,
                          NULL for CONNINFO */
    char *creds_mount; /* "<mount>" (may contain '/') */
    char *creds_role;  /* "<role>"; KV: the secret's "<path>" */
    /* KV only (else NULL): "<mount>/metadata/<path>", polled for the
     * secret's current version, and the fields holding the user and the
     * password (kv_username_field / kv_password_field, defaults
     * "username" / "password"). */
    char *kv_metadata_path;
    char *kv_username_field;
    char *kv_password_field;
    int pool_size;     /* per-database override, -1 = default_pool_size */
    int min_pool_size; /* -1 = pglease.min_pool_size */
    int pool_mode;     /* -1 = pglease.pool_mode, else a pgl_conf_pool_mode */
    /* NULL for a [databases] entry; in a derived entry (user_databases),
     * the [users] entry whose pools read it. */
    char *for_user;
} pgl_conf_database;

typedef struct {
    char *addr;      /* never NULL after load: file, VAULT_ADDR, or default */
    char *namespace; /* NULL when unset (file or VAULT_NAMESPACE) */
    char *ca_cert;   /* NULL when unset (file or VAULT_CACERT) */
    pgl_conf_vault_auth auth_method;
    char *auth_mount; /* never NULL: defaults to the method's name */
    char *token_file;
    char *role_id;
    char *role_id_file;
    char *secret_id_file;
    bool secret_id_wrapped;
    char *kubernetes_role;
    char *jwt_file;         /* kubernetes and jwt: re-read at each login */
    char *jwt_role;         /* jwt: the role to log in as */
    char *client_cert_file; /* TLS client certificate on every request to Vault */
    char *client_key_file;  /* its private key (a secret) */
    char *cert_role;        /* cert: the "name" of the login, NULL = any matching role */
    int request_timeout; /* seconds, bound on one HTTP request */
} pgl_conf_vault;

typedef struct pgl_conf {
    char *path; /* the file this snapshot was loaded from */

    /* [pglease] */
    char *listen_addr; /* "*" or comma-separated addresses; NULL = no TCP */
    int listen_port;
    char *unix_socket_dir; /* NULL = no unix socket */
    pgl_conf_auth_type auth_type;
    char *auth_file; /* NULL when unset (only allowed with trust/cert) */
    char **admin_users;
    size_t nadmin_users;
    char **stats_users; /* console users that may only SHOW (PgBouncer's key) */
    size_t nstats_users;
    int stats_period;   /* seconds: SHOW STATS averages cover this long (PgBouncer's key) */
    pgl_conf_pool_mode pool_mode;
    pgl_conf_track track_session_state;
    /* Transaction mode: named statements kept per server (0: not shared). */
    int max_prepared_statements;
    /* Transaction mode: an autocommit request whose server was terminated
     * (57P01) before answering runs again on another server. */
    bool replay_terminated_statements;
    int default_pool_size;
    int min_pool_size;
    int max_client_conn;
    int max_packet_size; /* bytes */
    int server_connect_timeout;
    int query_wait_timeout;    /* 0 = wait forever */
    int server_idle_timeout;   /* 0 = never */
    int server_lifetime;       /* 0 = unlimited */
    int client_idle_timeout;   /* 0 = never */
    pgl_conf_tls_mode client_tls_sslmode;
    char *client_tls_cert_file;
    char *client_tls_key_file;
    char *http_listen; /* NULL = off; otherwise validated host:port */
    int rotate_before; /* seconds; -1 = default (1/3 of each credential's life) */
    int exec_timeout;  /* seconds a creds=exec: helper may run */
    int drain_timeout;
    int kv_poll_interval; /* seconds between version checks of creds=kv: secrets */
    bool revoke_on_drain;
    bool revoke_on_shutdown;
    int shutdown_timeout;
    pgl_conf_log_format log_format;
    pgl_conf_log_level log_level;
    char *pidfile; /* NULL when unset */
    /* Startup parameters a client may send that pglease drops (PgBouncer's
     * key of the same name); every other one is applied on the server. */
    char **ignore_startup_parameters;
    size_t nignore_startup_parameters;
    int workers; /* event loops (threads): 1..64; "auto" = the CPUs pglease may run on */

    pgl_conf_vault vault;
    bool vault_needed; /* some database takes its credentials from Vault */

    pgl_conf_database *databases;
    size_t ndatabases;
    /* [users]: `name` is the local user; creds_kind CONNINFO means "the
     * database's source", -1 sizes and mode "the database's"; no params. */
    pgl_conf_database *users;
    size_t nusers;
    /* One derived entry per (users[u], databases[d]) pair: the database's
     * connection options with the user's overrides applied, `for_user` set.
     * A [users] entry gives its user pools of its own on every database. */
    pgl_conf_database *user_databases;
    size_t nuser_databases;
} pgl_conf;

/*
 * Load, apply PGLEASE_<SECTION>_<KEY> environment overrides, validate.
 * `env` is a NULL-terminated "KEY=VALUE" array (normally `environ`); pass
 * NULL to ignore the environment. On success *out is a new snapshot owned by
 * the caller (free with pgl_conf_free). On failure *out is NULL and `err`
 * holds one line naming file, line and key.
 */
PGL_MUST_CHECK int pgl_conf_load(const char *path, char *const *env, pgl_conf **out, char *err,
                                 size_t errlen);

/* Frees a snapshot, wiping secret-bearing values. NULL is fine. */
void pgl_conf_free(pgl_conf *conf);

/* The database entry named `name`, or NULL. */
const pgl_conf_database *pgl_conf_database_find(const pgl_conf *conf, const char *name);

/* The entry of `name` for pools of [users] entry `for_user` (NULL: the
 * [databases] entry itself), or NULL. */
const pgl_conf_database *pgl_conf_database_find_for(const pgl_conf *conf, const char *name,
                                                    const char *for_user);
/* The entry a client logging in as `user` is served by: its [users]
 * entry's pools when it has one, else the database's. NULL: no database. */
const pgl_conf_database *pgl_conf_database_for(const pgl_conf *conf, const char *name,
                                               const char *user);

/* Value of libpq keyword `key` in a database's conninfo, or NULL. */
const char *pgl_conf_database_param(const pgl_conf_database *db, const char *key);

/* The database's pool_size, else default_pool_size. */
int pgl_conf_database_pool_size(const pgl_conf *conf, const pgl_conf_database *db);

/* Enum names as written in the file, for SHOW CONFIG and logs. */
const char *pgl_conf_auth_type_name(pgl_conf_auth_type t);
const char *pgl_conf_pool_mode_name(pgl_conf_pool_mode m);

/*
 * Visit every [pglease] and [vault] key with its current value rendered as
 * the file would spell it ("" for unset). `section` is "pglease" or "vault".
 * Stops and returns the callback's value when it is non-zero.
 */
typedef int (*pgl_conf_visit_fn)(void *arg, const char *section, const char *key,
                                 const char *value);
int pgl_conf_foreach(const pgl_conf *conf, pgl_conf_visit_fn fn, void *arg);

#endif
