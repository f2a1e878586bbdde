/*
 * A client's way in: the startup packet (or SSLRequest, GSSENCRequest,
 * CancelRequest), TLS, local authentication against auth_file (SCRAM,
 * md5, trust, cert), and the welcome: AuthenticationOk, the pool's
 * ParameterStatus set, BackendKeyData, ReadyForQuery. The first client of
 * a pool waits (LOGIN_WAIT) until a server login tells what that set is.
 */
#include "pgl_client.h"

#include "pgl_log.h"
#include "pgl_loop.h"
#include "pgl_msg.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"
#include "pgl_server.h"
#include "pgl_worker.h"

#include "pgl_pgwire_decode.h"
#include "pgl_pgwire_md5.h"
#include "pgl_pgwire_scram.h"
#include "pgl_pgwire_startup.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

/* Keeps user and database in one allocation (c->user owns it), each cut
 * like Postgres cuts identifiers (NAMEDATALEN - 1 bytes). */
static int set_names(pgl_client *c, const char *user, const char *database)
{
    size_t ul = strnlen(user, 63), dl = strnlen(database, 63);
    char *names = malloc(ul + dl + 2);
    if (names == NULL)
        return -ENOMEM;
    memcpy(names, user, ul);
    names[ul] = '\0';
    memcpy(names + ul + 1, database, dl);
    names[ul + 1 + dl] = '\0';
    free(c->user);
    c->user = names;
    c->database = names + ul + 1;
    return 0;
}

/* ---- the welcome ------------------------------------------------------------------- */

/* AuthenticationOk, ParameterStatus set, BackendKeyData, ReadyForQuery. */
static int send_welcome(pgl_client *c)
{
    int rc = pgl_msg_auth_ok(&c->conn);
    if (c->admin) {
        rc = rc ? rc : c->lp->px->console->welcome_params(c);
    } else {
        pgl_pool *pool = c->pool;
        for (size_t i = 0; i < pool->nparams && rc == 0; i++) {
            const pgl_param *p = &pool->params[i];
            int v = pgl_varcache_lookup(p->name);
            /* The client's own startup values win; the rest it inherits
             * from pool->defaults without a copy of its own. */
            const char *value =
                v >= 0 && c->vars && c->vars->values[v] ? c->vars->values[v] : p->value;
            rc = pgl_msg_param_status(&c->conn, p->name, value);
        }
    }
    if (rc == 0)
        rc = pgl_msg_backend_key(&c->conn, c->cancel.pid, c->cancel.key);
    if (rc == 0)
        rc = pgl_msg_ready(&c->conn, 'I');
    return rc;
}

void pgl_client_login_ready(pgl_client *c)
{
    pgl_pool *pool = c->pool;
    if (pool->params == NULL) {
        pgl_client_fail(c, "FATAL", pool->fail_sqlstate[0] ? pool->fail_sqlstate : "08006",
                        "pglease cannot serve database \"%s\": %s", pool->dbname,
                        pool->fail_message[0] ? pool->fail_message : "unknown error");
        return;
    }
    pgl_client_set_state(c, PGL_CLIENT_IDLE);
    if (send_welcome(c) != 0) {
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
        return;
    }
    pgl_log_info(PGL_CLIENT_CTX(c), "login%s", c->tls ? " (TLS)" : "");
    pgl_conn_resume(&c->conn);
}

static void login_done(pgl_client *c)
{
    pgl_loop *lp = c->lp;
    if (c->scram != NULL) {
        pgl_pgwire_scram_server_free(c->scram);
        c->scram = NULL;
    }
    c->auth_user = NULL;
    if (pgl_cancel_register(&lp->cancels, &c->cancel) != 0) {
        pgl_client_fail(c, "FATAL", "58000", "cannot draw a cancel key");
        return;
    }
    if (c->admin) {
        pgl_client_set_state(c, PGL_CLIENT_IDLE);
        if (send_welcome(c) != 0) {
            pgl_client_fail(c, "FATAL", "53200", "out of memory");
            return;
        }
        pgl_log_info(PGL_CLIENT_CTX(c), "admin console login");
        return;
    }
    int err;
    c->pool = pgl_pool_for_login(lp, c->database, c->user, &err);
    if (c->pool == NULL) {
        /* A reload removed the database while the client authenticated. */
        if (err != 0)
            pgl_client_fail(c, "FATAL", "53200", "out of memory opening the pool");
        else
            pgl_client_fail(c, "FATAL", "3D000", "database \"%s\" does not exist",
                            c->database);
        return;
    }
    if (c->pool->params != NULL) {
        pgl_client_login_ready(c);
        return;
    }
    /* The first client of a pool waits for a server login to learn the
     * parameters (server_version, encodings...) it must report. */
    c->wait_since = pgl_loop_now(lp);
    pgl_client_set_state(c, PGL_CLIENT_LOGIN_WAIT);
    pgl_conn_pause(&c->conn);
    pgl_pool_kick(c->pool);
}

/* ---- authentication ------------------------------------------------------------------ */

/* The same message whatever was wrong, so nobody learns which users exist. */
static void auth_failed(pgl_client *c)
{
    pgl_client_fail(c, "FATAL", "28P01", "password authentication failed for user \"%s\"",
                    c->user);
}

static void start_scram(pgl_client *c)
{
    const char *secret = c->auth_user ? c->auth_user->scram_secret : NULL;
    /* An unknown user (or one without a SCRAM secret) still goes through a
     * mock exchange that fails at the end, as Postgres does. */
    int rc = pgl_pgwire_scram_server_new(secret, c->user, c->lp->px->scram_mock_key,
                                         c->tls ? c->lp->px->tls_cert_hash : NULL,
                                         c->tls ? c->lp->px->tls_cert_hash_len : 0, &c->scram);
    if (rc != 0) {
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
        return;
    }
    c->auth_step = PGL_AUTH_STEP_SASL_INIT;
    if (pgl_msg_auth_sasl(&c->conn, c->tls && c->lp->px->tls_cert_hash_len > 0) != 0)
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
}

static void start_auth(pgl_client *c)
{
    pgl_proxy *px = c->lp->px;
    const pgl_conf *conf = px->conf;
    if (c->admin) {
        bool listed = false;
        for (size_t i = 0; i < conf->nadmin_users; i++)
            listed |= strcmp(conf->admin_users[i], c->user) == 0;
        /* stats_users may only SHOW (the console checks each command). */
        for (size_t i = 0; i < conf->nstats_users; i++)
            listed |= strcmp(conf->stats_users[i], c->user) == 0;
        if (!listed) {
            pgl_client_fail(c, "FATAL", "28000", "user \"%s\" is not allowed on the admin console",
                            c->user);
            return;
        }
    }
    switch (conf->auth_type) {
    case PGL_CONF_AUTH_TRUST:
        login_done(c);
        return;
    case PGL_CONF_AUTH_CERT: {
        char cn[256] = "";
        X509 *cert = c->conn.io.ssl ? SSL_get1_peer_certificate(c->conn.io.ssl) : NULL;
        if (cert != NULL) {
            X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
            X509_free(cert);
        }
        if (cert == NULL || SSL_get_verify_result(c->conn.io.ssl) != X509_V_OK ||
            strcmp(cn, c->user) != 0) {
            pgl_client_fail(c, "FATAL", "28000", "certificate authentication failed for user \"%s\"",
                            c->user);
            return;
        }
        login_done(c);
        return;
    }
    case PGL_CONF_AUTH_MD5:
        c->auth_user = pgl_userlist_find(px->users, c->user);
        pgl_client_set_state(c, PGL_CLIENT_AUTH);
        /* A SCRAM secret cannot answer an md5 challenge: Postgres then uses
         * SCRAM for that user, and so do we. */
        if (c->auth_user != NULL && c->auth_user->kind == PGL_SECRET_SCRAM) {
            start_scram(c);
            return;
        }
        c->auth_step = PGL_AUTH_STEP_MD5;
        RAND_bytes(c->md5_salt, sizeof c->md5_salt);
        if (pgl_msg_auth_md5(&c->conn, c->md5_salt) != 0)
            pgl_client_fail(c, "FATAL", "53200", "out of memory");
        return;
    case PGL_CONF_AUTH_SCRAM:
        c->auth_user = pgl_userlist_find(px->users, c->user);
        pgl_client_set_state(c, PGL_CLIENT_AUTH);
        start_scram(c);
        return;
    }
}

void pgl_client_on_password(pgl_client *c, const uint8_t *body, uint32_t len)
{
    switch (c->auth_step) {
    case PGL_AUTH_STEP_MD5: {
        const char *pw;
        size_t pwlen;
        if (pgl_pgwire_parse_password(body, len, &pw, &pwlen) != 0) {
            pgl_client_fail(c, "FATAL", "08P01", "invalid password packet");
            return;
        }
        const pgl_user *u = c->auth_user;
        bool ok = u != NULL && pgl_pgwire_md5_verify(u->secret, u->kind == PGL_SECRET_MD5, c->user,
                                                     c->md5_salt, pw, pwlen) == 0;
        if (!ok) {
            auth_failed(c);
            return;
        }
        login_done(c);
        return;
    }
    case PGL_AUTH_STEP_SASL_INIT:
    case PGL_AUTH_STEP_SASL_FINAL: {
        uint8_t reply[PGL_PGWIRE_SCRAM_MSG_MAX];
        size_t rlen = 0;
        int rc;
        if (c->auth_step == PGL_AUTH_STEP_SASL_INIT) {
            const char *mech;
            const uint8_t *data;
            size_t dlen;
            if (pgl_pgwire_parse_sasl_initial(body, len, &mech, &data, &dlen) != 0) {
                pgl_client_fail(c, "FATAL", "08P01", "malformed SASLInitialResponse");
                return;
            }
            rc = pgl_pgwire_scram_server_first(c->scram, mech, data, dlen, reply, sizeof reply,
                                               &rlen);
            if (rc == 0) {
                c->auth_step = PGL_AUTH_STEP_SASL_FINAL;
                rc = pgl_msg_auth_sasl_continue(&c->conn, reply, rlen);
            }
        } else {
            rc = pgl_pgwire_scram_server_final(c->scram, body, len, reply, sizeof reply, &rlen);
            if (rc == 0)
                rc = pgl_msg_auth_sasl_final(&c->conn, reply, rlen);
            if (rc == 0) {
                OPENSSL_cleanse(reply, sizeof reply);
                login_done(c);
                return;
            }
        }
        OPENSSL_cleanse(reply, sizeof reply);
        if (rc == PGL_EAUTH) {
            auth_failed(c);
        } else if (rc != 0) {
            pgl_client_fail(c, "FATAL", "08P01", "SCRAM exchange failed: %s",
                            pgl_strerror(rc));
        }
        return;
    }
    case PGL_AUTH_STEP_NONE:
        break;
    }
    pgl_client_fail(c, "FATAL", "08P01", "unexpected password message");
}

/* ---- startup ------------------------------------------------------------------------- */

static void on_tls_done(pgl_conn *conn, int rc)
{
    pgl_client *c = pgl_container_of(conn, pgl_client, conn);
    if (rc != 0) {
        pgl_log_info(PGL_CLIENT_CTX(c), "TLS handshake failed");
        pgl_client_close(c);
        return;
    }
    c->tls = true;
    pgl_client_set_state(c, PGL_CLIENT_STARTUP);
    pgl_conn_resume(&c->conn);
}

void pgl_client_start_tls(pgl_client *c)
{
    SSL *ssl = c->pending_ssl;
    c->pending_ssl = NULL;
    pgl_conn_start_tls(&c->conn, ssl, on_tls_done);
}

/* A CancelRequest: cancels the query of the server the key's client is
 * linked to. Unknown keys are dropped silently, as Postgres does. */
static void cancel_found(pgl_client *c);

/* A key of another loop's client: the main thread looks in every loop's
 * table with the others parked. */
typedef struct {
    uint32_t pid, key;
} cancel_keys;

static void cancel_elsewhere(pgl_loop *main, void *arg)
{
    cancel_keys *ck = arg;
    pgl_proxy *px = main->px;
    pgl_workers_park(px);
    pgl_cancel_key *k = NULL;
    for (int i = 0; i < px->nloops && k == NULL; i++)
        k = pgl_cancel_find(&px->loops[i]->cancels, ck->pid, ck->key);
    if (k != NULL)
        cancel_found(pgl_container_of(k, pgl_client, cancel));
    else
        pgl_log_debug(NULL, "cancel request for an unknown key dropped");
    pgl_workers_unpark(px);
    free(ck);
}

static void cancel_request(pgl_loop *lp, uint32_t pid, uint32_t key)
{
    pgl_cancel_key *k = pgl_cancel_find(&lp->cancels, pid, key);
    if (k == NULL && lp->px->nloops_running > 1) {
        cancel_keys *ck = malloc(sizeof *ck);
        if (ck != NULL) {
            ck->pid = pid;
            ck->key = key;
            if (pgl_loop_post(&lp->px->main, cancel_elsewhere, ck) == 0)
                return;
            free(ck);
        }
    }
    if (k == NULL) {
        pgl_log_debug(NULL, "cancel request for an unknown key dropped");
        return;
    }
    cancel_found(pgl_container_of(k, pgl_client, cancel));
}

static void cancel_found(pgl_client *c)
{
    if (c->link == NULL || c->link->state != PGL_SERVER_ACTIVE) {
        pgl_log_debug(PGL_CLIENT_CTX(c), "cancel request: no query running");
        return;
    }
    pgl_log_info(PGL_CLIENT_CTX(c), "cancel request");
    int rc = pgl_server_cancel(c->link);
    if (rc != 0)
        pgl_log_warning(PGL_CLIENT_CTX(c), "cancel request could not be sent: %s",
                        uv_strerror(rc));
}

/* Why a startup parameter was refused: the SQLSTATE and message the
 * client gets, as Postgres words them. */
typedef struct {
    const char *sqlstate;
    char message[256];
} refusal;

/* A setting from the startup packet: a reported parameter pglease carries
 * between servers, or any other GUC, set on every server the client uses
 * (Postgres's own error answers one it cannot take). */
static int take_setting(pgl_client *c, const char *name, const char *value)
{
    int v = pgl_varcache_lookup(name);
    if (v >= 0)
        return pgl_client_set_var(c, (pgl_var)v, value);
    const pgl_conf *conf = c->lp->px->conf;
    for (size_t i = 0; i < conf->nignore_startup_parameters; i++)
        if (strcasecmp(conf->ignore_startup_parameters[i], name) == 0)
            return 0;
    if (c->vars == NULL && (c->vars = calloc(1, sizeof *c->vars)) == NULL)
        return -ENOMEM;
    return pgl_varcache_set_extra(c->vars, name, value);
}

/*
 * The `options` parameter, split as Postgres splits it (pg_split_opts):
 * words separated by white space, a backslash taking the next character
 * as it is. Settings are `-c name=value`, `-cname=value` or
 * `--name=value` (dashes in a long name become underscores); other
 * server switches are refused as Postgres refuses unknown ones.
 */
static int take_options(pgl_client *c, const char *opts, refusal *why)
{
    size_t len = strlen(opts);
    char *words = malloc(len + 1);
    if (words == NULL)
        return -ENOMEM;
    int rc = 0;
    bool want_c = false; /* the previous word was a lone -c */
    const char *p = opts;
    while (rc == 0) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        if (*p == '\0')
            break;
        size_t n = 0;
        for (; *p && !strchr(" \t\n\r\f\v", *p); p++) {
            if (*p == '\\' && p[1] != '\0')
                p++;
            words[n++] = *p;
        }
        words[n] = '\0';
        const char *setting = NULL;
        if (want_c) {
            setting = words;
            want_c = false;
        } else if (strcmp(words, "-c") == 0) {
            want_c = true;
            continue;
        } else if (strncmp(words, "-c", 2) == 0) {
            setting = words + 2;
        } else if (strncmp(words, "--", 2) == 0 && words[2] != '\0') {
            setting = words + 2;
            for (char *d = words + 2; *d && *d != '='; d++)
                if (*d == '-')
                    *d = '_';
        } else {
            why->sqlstate = "42601";
            snprintf(why->message, sizeof why->message,
                     "invalid command-line argument for server process: %s", words);
            rc = -EINVAL;
            break;
        }
        char *eq = strchr(setting, '=');
        if (eq == NULL || eq == setting) {
            why->sqlstate = "42601";
            snprintf(why->message, sizeof why->message, "%s%s requires a value",
                     words[1] == '-' ? "--" : "-c ", setting);
            rc = -EINVAL;
            break;
        }
        *eq = '\0';
        rc = take_setting(c, setting, eq + 1);
    }
    if (rc == 0 && want_c) {
        why->sqlstate = "42601";
        snprintf(why->message, sizeof why->message, "-c requires a value");
        rc = -EINVAL;
    }
    OPENSSL_cleanse(words, len + 1);
    free(words);
    return rc;
}

/* One startup parameter: user and database, `options`, replication (not
 * served), or a setting. */
static int take_param(pgl_client *c, const char *name, const char *value, const char **user,
                      const char **database, refusal *why)
{
    if (strcmp(name, "user") == 0 || strcmp(name, "database") == 0) {
        if (*value)
            *(name[0] == 'u' ? user : database) = value;
        return 0;
    }
    if (strcmp(name, "options") == 0)
        return take_options(c, value, why);
    if (strcmp(name, "replication") == 0) {
        if (strcasecmp(value, "false") == 0 || strcasecmp(value, "off") == 0 ||
            strcasecmp(value, "no") == 0 || strcmp(value, "0") == 0)
            return 0;
        why->sqlstate = "08P01";
        snprintf(why->message, sizeof why->message,
                 "pglease does not serve replication connections");
        return -EINVAL;
    }
    return take_setting(c, name, value);
}

void pgl_client_on_startup(pgl_client *c, const uint8_t *body, uint32_t len)
{
    pgl_proxy *px = c->lp->px;
    pgl_pgwire_startup st;
    int rc = pgl_pgwire_parse_startup(body, len, &st);
    if (rc == PGL_EVERSION) {
        pgl_client_fail(c, "FATAL", "0A000",
                        "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
                        st.major, st.minor);
        return;
    }
    if (rc != 0) {
        pgl_client_fail(c, "FATAL", "08P01", "invalid startup packet: %s", pgl_strerror(rc));
        return;
    }
    switch (st.kind) {
    case PGL_PGWIRE_STARTUP_SSL:
        if (c->tls || px->tls_ctx == NULL) {
            if (pgl_msg_byte(&c->conn, 'N') != 0)
                pgl_client_close(c);
            return;
        }
        if (pgl_msg_byte(&c->conn, 'S') != 0 || !pgl_conn_flush(&c->conn)) {
            /* One byte into an empty socket buffer cannot block; if it did,
             * the connection is unusable anyway. */
            pgl_client_close(c);
            return;
        }
        {
            SSL *ssl = SSL_new(px->tls_ctx);
            if (ssl == NULL || SSL_set_fd(ssl, c->conn.io.fd) != 1) {
                SSL_free(ssl);
                pgl_client_close(c);
                return;
            }
            /* The handshake starts once the SSLRequest is consumed
             * (client_flushed): bytes after it must not be in the buffer. */
            c->pending_ssl = ssl;
            pgl_client_set_state(c, PGL_CLIENT_TLS_HANDSHAKE);
            c->conn.after_flush = true;
        }
        return;
    case PGL_PGWIRE_STARTUP_GSSENC:
        if (pgl_msg_byte(&c->conn, 'N') != 0)
            pgl_client_close(c);
        return;
    case PGL_PGWIRE_STARTUP_CANCEL:
        cancel_request(c->lp, st.cancel_pid, st.cancel_key);
        pgl_client_close(c);
        return;
    case PGL_PGWIRE_STARTUP_MESSAGE:
        break;
    }

    const char *unsupported[16];
    size_t nunsupported = 0;
    pgl_pgwire_param_iter it;
    const char *name, *value, *user = NULL, *database = NULL;
    pgl_pgwire_startup_params(&st, &it);
    while (pgl_pgwire_param_next(&it, &name, &value)) {
        if (strncmp(name, "_pq_.", 5) == 0) {
            if (nunsupported < 16)
                unsupported[nunsupported++] = name;
            continue;
        }
        refusal why;
        rc = take_param(c, name, value, &user, &database, &why);
        if (rc == -ENOMEM) {
            pgl_client_fail(c, "FATAL", "53200", "out of memory");
            return;
        }
        if (rc != 0) {
            pgl_client_fail(c, "FATAL", why.sqlstate, "%s", why.message);
            return;
        }
    }
    if (user == NULL) {
        pgl_client_fail(c, "FATAL", "28000", "no PostgreSQL user name specified in startup packet");
        return;
    }
    if (set_names(c, user, database ? database : user) != 0) {
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
        return;
    }
    if (st.minor > 0 || nunsupported > 0) {
        if (pgl_msg_negotiate(&c->conn, 0, unsupported, nunsupported) != 0) {
            pgl_client_fail(c, "FATAL", "53200", "out of memory");
            return;
        }
    }

    if (px->shutting_down) {
        pgl_client_fail(c, "FATAL", "57P03", "pglease is shutting down");
        return;
    }
    if (atomic_load_explicit(&px->nclients, memory_order_relaxed) > px->conf->max_client_conn) {
        pgl_client_fail(c, "FATAL", "53300", "sorry, too many clients already (max_client_conn = %d)",
                        px->conf->max_client_conn);
        return;
    }
    if (px->conf->client_tls_sslmode == PGL_CONF_TLS_REQUIRE && !c->tls) {
        pgl_client_fail(c, "FATAL", "28000", "TLS is required (client_tls_sslmode = require)");
        return;
    }
    if (strcmp(c->database, "pglease") == 0 || strcmp(c->database, "pgbouncer") == 0) {
        c->admin = true;
    } else if (pgl_conf_database_for(px->conf, c->database, c->user) == NULL) {
        /* Its pool is chosen once the user is proven (login_done): a
         * [users] entry's pool opens for its first login, never for a
         * stranger trying the name. */
        pgl_client_fail(c, "FATAL", "3D000", "database \"%s\" does not exist", c->database);
        return;
    }
    c->conn.startup = false;
    start_auth(c);
}

