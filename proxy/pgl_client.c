/*
 * Client connections: startup, TLS, local authentication, then forwarding
 * to whatever server the pool links.
 *
 * States (pgl_client_state) change only through set_state(), which checks
 * the transition is one the protocol allows.
 */
#include "pgl_log.h"
#include "pgl_msg.h"
#include "pgl_proxy.h"

#include "pgl_pgwire_md5.h"
#include "pgl_pgwire_decode.h"
#include "pgl_pgwire_frame.h"
#include "pgl_pgwire_startup.h"
#include "pgl_pgwire_scram.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

static const char *const state_names[] = {
    "tls-handshake", "startup", "auth", "login-wait", "idle", "waiting", "active", "closing",
};

static void set_state(pgl_client *c, pgl_client_state to)
{
    /* Legal moves; anything else is a bug worth stopping on in debug builds. */
    static const unsigned allowed[] = {
        [PGL_CLIENT_TLS_HANDSHAKE] = 1u << PGL_CLIENT_STARTUP,
        [PGL_CLIENT_STARTUP] = 1u << PGL_CLIENT_TLS_HANDSHAKE | 1u << PGL_CLIENT_AUTH |
                               1u << PGL_CLIENT_LOGIN_WAIT | 1u << PGL_CLIENT_IDLE,
        [PGL_CLIENT_AUTH] = 1u << PGL_CLIENT_LOGIN_WAIT | 1u << PGL_CLIENT_IDLE,
        [PGL_CLIENT_LOGIN_WAIT] = 1u << PGL_CLIENT_IDLE,
        [PGL_CLIENT_IDLE] = 1u << PGL_CLIENT_WAITING,
        [PGL_CLIENT_WAITING] = 1u << PGL_CLIENT_ACTIVE | 1u << PGL_CLIENT_IDLE,
        [PGL_CLIENT_ACTIVE] = 1u << PGL_CLIENT_IDLE,
        [PGL_CLIENT_CLOSING] = 0,
    };
    if (to != PGL_CLIENT_CLOSING && !(allowed[c->state] & (1u << to))) {
        pgl_log_error(pgl_client_ctx(c), "bug: client state %s -> %s", state_names[c->state],
                      state_names[to]);
        assert(0);
    }
    pgl_log_debug(pgl_client_ctx(c), "state %s -> %s", state_names[c->state], state_names[to]);
    c->state = to;
}

static pgl_client *client_of(pgl_conn *conn)
{
    return pgl_container_of(conn, pgl_client, conn);
}

const char *pgl_peer_addr_format(const pgl_peer_addr *a, char *buf, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    switch (a->family) {
    case AF_INET:
        inet_ntop(AF_INET, a->ip, host, sizeof host);
        snprintf(buf, cap, "%s:%u", host, (unsigned)a->port);
        break;
    case AF_INET6:
        inet_ntop(AF_INET6, a->ip, host, sizeof host);
        snprintf(buf, cap, "[%s]:%u", host, (unsigned)a->port);
        break;
    default:
        snprintf(buf, cap, "unix");
        break;
    }
    return buf;
}

const char *pgl_client_ctx(const pgl_client *c)
{
    static char ctx[256];
    char addr[64];
    pgl_peer_addr_format(&c->peer, addr, sizeof addr);
    if (c->user != NULL)
        snprintf(ctx, sizeof ctx, "C-%llu %s/%s@%s", (unsigned long long)c->id,
                 c->database, c->user, addr);
    else
        snprintf(ctx, sizeof ctx, "C-%llu %s", (unsigned long long)c->id, addr);
    return ctx;
}

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

/* ---- ending -------------------------------------------------------------------- */

void pgl_client_close(pgl_client *c)
{
    if (c->conn.closed || c->closing)
        return;
    /* Closing a server below calls back into the client (server lost):
     * that must find it already on its way out. */
    c->closing = true;
    pgl_proxy *px = c->px;
    pgl_log_debug(pgl_client_ctx(c), "closing");
    pgl_pool_forget_client(c);
    if (c->link != NULL) {
        pgl_server *s = c->link;
        c->link = NULL;
        s->link = NULL;
        pgl_conn_set_peer(&s->conn, NULL);
        /* A server that is between transactions can serve someone else;
         * one in the middle of something is closed: its state is unknown. */
        bool clean = s->state == PGL_SERVER_ACTIVE && s->rfq_status == 'I' &&
                     s->expected_rfq == 0 && !pgl_conn_mid_message(&s->conn) &&
                     !pgl_conn_mid_message(&c->conn);
        if (clean)
            pgl_server_release(s);
        else
            pgl_server_close(s, "client went away in the middle of a transaction");
    }
    pgl_cancel_unregister(c);
    if (c->scram != NULL) {
        pgl_pgwire_scram_server_free(c->scram);
        c->scram = NULL;
    }
    if (c->pending_ssl != NULL) {
        SSL_free(c->pending_ssl);
        c->pending_ssl = NULL;
    }
    SSL *ssl = c->conn.io.ssl != NULL ? c->conn.io.ssl : c->conn.handshake;
    pgl_conn_close(&c->conn);
    if (ssl != NULL) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
        c->conn.io.ssl = NULL;
        c->conn.handshake = NULL;
    }
    close(c->conn.io.fd);
    if (c->vars != NULL) {
        pgl_varcache_clear(c->vars);
        free(c->vars);
        c->vars = NULL;
    }
    pgl_list_remove(&c->node);
    px->nclients--;
    pgl_list_append(&px->zombie_clients, &c->node);
    pgl_proxy_reap_later(px);
    pgl_proxy_maybe_exit(px);
}

/*
 * Sends one ErrorResponse (FATAL ones end the session) and closes. The
 * message is written at once; if the socket cannot take it now, it is lost
 * with the connection, which is what Postgres does too.
 */
void pgl_client_fail(pgl_client *c, const char *severity, const char *sqlstate, const char *fmt,
                     ...)
{
    if (c->conn.closed || c->closing)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (sqlstate != NULL) {
        pgl_log_info(pgl_client_ctx(c), "%s %s: %s", severity, sqlstate, msg);
        if (pgl_msg_error(&c->conn, severity, sqlstate, msg, NULL, NULL) != 0)
            pgl_log_warning(pgl_client_ctx(c), "out of memory sending an error");
    }
    pgl_client_close(c);
}

void pgl_client_server_lost(pgl_client *c, const char *why)
{
    c->link = NULL;
    /* Cut in the middle of a message, an ErrorResponse would corrupt the
     * stream: only closing is safe then. */
    if (pgl_conn_mid_message(&c->conn) || c->conn.after_flush)
        pgl_client_close(c);
    else
        pgl_client_fail(c, "FATAL", "08006", "server connection lost: %s", why);
}

/* ---- the welcome ------------------------------------------------------------------- */

/* AuthenticationOk, ParameterStatus set, BackendKeyData, ReadyForQuery. */
static int send_welcome(pgl_client *c)
{
    int rc = pgl_msg_auth_ok(&c->conn);
    if (c->admin) {
        rc = rc ? rc : pgl_admin_welcome_params(c);
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
        rc = pgl_msg_backend_key(&c->conn, c->cancel_pid, c->cancel_key);
    if (rc == 0)
        rc = pgl_msg_ready(&c->conn, 'I');
    return rc;
}

void pgl_client_login_ready(pgl_client *c)
{
    pgl_pool *pool = c->pool;
    pgl_list_remove(&c->wait_node);
    if (pool->params == NULL) {
        pgl_client_fail(c, "FATAL", pool->fail_sqlstate[0] ? pool->fail_sqlstate : "08006",
                        "pglease cannot serve database \"%s\": %s", pool->name,
                        pool->fail_message[0] ? pool->fail_message : "unknown error");
        return;
    }
    set_state(c, PGL_CLIENT_IDLE);
    if (send_welcome(c) != 0) {
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
        return;
    }
    pgl_log_info(pgl_client_ctx(c), "login%s", c->tls ? " (TLS)" : "");
    pgl_conn_resume(&c->conn);
}

static void login_done(pgl_client *c)
{
    pgl_proxy *px = c->px;
    if (c->scram != NULL) {
        pgl_pgwire_scram_server_free(c->scram);
        c->scram = NULL;
    }
    c->auth_user = NULL;
    pgl_cancel_register(px, c);
    if (c->admin) {
        set_state(c, PGL_CLIENT_IDLE);
        if (send_welcome(c) != 0) {
            pgl_client_fail(c, "FATAL", "53200", "out of memory");
            return;
        }
        pgl_log_info(pgl_client_ctx(c), "admin console login");
        return;
    }
    if (c->pool->params != NULL) {
        c->state = PGL_CLIENT_LOGIN_WAIT; /* passes through: same path as the waiters */
        pgl_client_login_ready(c);
        return;
    }
    /* The first client of a pool waits for a server login to learn the
     * parameters (server_version, encodings...) it must report. */
    set_state(c, PGL_CLIENT_LOGIN_WAIT);
    pgl_conn_pause(&c->conn);
    pgl_list_append(&c->pool->login_wait, &c->wait_node);
    c->wait_since = pgl_now_ms(px);
    pgl_pool_want_server(c->pool, NULL);
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
    int rc = pgl_pgwire_scram_server_new(secret, c->user, c->px->scram_mock_key,
                                         c->tls ? c->px->tls_cert_hash : NULL,
                                         c->tls ? c->px->tls_cert_hash_len : 0, &c->scram);
    if (rc != 0) {
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
        return;
    }
    c->auth_step = PGL_AUTH_STEP_SASL_INIT;
    if (pgl_msg_auth_sasl(&c->conn, c->tls && c->px->tls_cert_hash_len > 0) != 0)
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
}

static void start_auth(pgl_client *c)
{
    pgl_proxy *px = c->px;
    const pgl_conf *conf = px->conf;
    if (c->admin) {
        bool listed = false;
        for (size_t i = 0; i < conf->nadmin_users; i++)
            listed |= strcmp(conf->admin_users[i], c->user) == 0;
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
        set_state(c, PGL_CLIENT_AUTH);
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
        set_state(c, PGL_CLIENT_AUTH);
        start_scram(c);
        return;
    }
}

/* A PasswordMessage / SASLInitialResponse / SASLResponse ('p'). */
static void on_password(pgl_client *c, const uint8_t *body, uint32_t len)
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
        if (rc == PGL_PGWIRE_EAUTH) {
            auth_failed(c);
        } else if (rc != 0) {
            pgl_client_fail(c, "FATAL", "08P01", "SCRAM exchange failed: %s",
                            pgl_pgwire_strerror(rc));
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
    pgl_client *c = client_of(conn);
    if (rc != 0) {
        pgl_log_info(pgl_client_ctx(c), "TLS handshake failed");
        pgl_client_close(c);
        return;
    }
    c->tls = true;
    set_state(c, PGL_CLIENT_STARTUP);
    pgl_conn_resume(&c->conn);
}

/* Startup parameters we understand; anything else is refused like PgBouncer does. */
static int take_param(pgl_client *c, const char *name, const char *value, const char **user,
                      const char **database)
{
    if (strcmp(name, "user") == 0 || strcmp(name, "database") == 0) {
        if (*value)
            *(name[0] == 'u' ? user : database) = value;
        return 0;
    }
    int v = pgl_varcache_lookup(name);
    if (v >= 0)
        return pgl_client_set_var(c, (pgl_var)v, value);
    /* Drivers send these; they do not change what a pooled server returns. */
    if (strcmp(name, "extra_float_digits") == 0 || strcmp(name, "replication") == 0 ||
        strcmp(name, "options") == 0)
        return strcmp(name, "replication") == 0 || (strcmp(name, "options") == 0 && *value)
                   ? -EINVAL
                   : 0;
    return -EINVAL;
}

static void on_startup(pgl_client *c, const uint8_t *body, uint32_t len)
{
    pgl_proxy *px = c->px;
    pgl_pgwire_startup st;
    int rc = pgl_pgwire_parse_startup(body, len, &st);
    if (rc == PGL_PGWIRE_EVERSION) {
        pgl_client_fail(c, "FATAL", "0A000",
                        "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
                        st.major, st.minor);
        return;
    }
    if (rc != 0) {
        pgl_client_fail(c, "FATAL", "08P01", "invalid startup packet: %s", pgl_pgwire_strerror(rc));
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
            set_state(c, PGL_CLIENT_TLS_HANDSHAKE);
            c->conn.after_flush = true;
        }
        return;
    case PGL_PGWIRE_STARTUP_GSSENC:
        if (pgl_msg_byte(&c->conn, 'N') != 0)
            pgl_client_close(c);
        return;
    case PGL_PGWIRE_STARTUP_CANCEL:
        pgl_cancel_request(px, st.cancel_pid, st.cancel_key);
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
        rc = take_param(c, name, value, &user, &database);
        if (rc == -ENOMEM) {
            pgl_client_fail(c, "FATAL", "53200", "out of memory");
            return;
        }
        if (rc != 0) {
            pgl_client_fail(c, "FATAL", "08P01", "unsupported startup parameter: %s", name);
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
    if (px->nclients > px->conf->max_client_conn) {
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
    } else {
        c->pool = pgl_pool_find(px, c->database);
        if (c->pool == NULL) {
            pgl_client_fail(c, "FATAL", "3D000", "database \"%s\" does not exist", c->database);
            return;
        }
    }
    c->conn.startup = false;
    start_auth(c);
}

/* ---- forwarding ------------------------------------------------------------------------ */

static pgl_conn_action client_decide(pgl_conn *conn, uint8_t type, uint32_t len)
{
    pgl_client *c = client_of(conn);
    switch (c->state) {
    case PGL_CLIENT_STARTUP:
        if (len > PGL_PGWIRE_STARTUP_MAX) {
            pgl_client_fail(c, "FATAL", "08P01", "invalid startup packet length %u", len);
            return PGL_CONN_WAIT;
        }
        return PGL_CONN_INSPECT;
    case PGL_CLIENT_AUTH:
        if (type != 'p') {
            pgl_client_fail(c, "FATAL", "08P01", "expected password response, got message type 0x%02x",
                            type);
            return PGL_CONN_WAIT;
        }
        return PGL_CONN_INSPECT;
    case PGL_CLIENT_IDLE:
        c->last_activity = pgl_now_ms(c->px);
        if (type == 'X' || c->admin)
            return PGL_CONN_INSPECT;
        /* Anything else needs a server: wait here until the pool links one. */
        set_state(c, PGL_CLIENT_WAITING);
        c->wait_since = c->last_activity;
        pgl_pool_want_server(c->pool, c);
        return c->state == PGL_CLIENT_ACTIVE ? client_decide(conn, type, len) : PGL_CONN_WAIT;
    case PGL_CLIENT_ACTIVE:
        if (type == 'X')
            return PGL_CONN_INSPECT;
        /* Linked, but the server still runs our own SETs: its answers are
         * not the client's, so the client's bytes wait (pgl_client_go). */
        if (c->link == NULL || c->link->state != PGL_SERVER_ACTIVE)
            return PGL_CONN_WAIT;
        /* Each of these is answered by exactly one ReadyForQuery: counting
         * them tells when a pipelined client's transaction really ended. */
        if (type == 'Q' || type == 'S' || type == 'F')
            c->link->expected_rfq++;
        if (type == 'Q')
            c->queries++;
        return PGL_CONN_FORWARD;
    case PGL_CLIENT_TLS_HANDSHAKE:
    case PGL_CLIENT_LOGIN_WAIT:
    case PGL_CLIENT_WAITING:
    case PGL_CLIENT_CLOSING:
        break;
    }
    return PGL_CONN_WAIT;
}

static pgl_conn_action client_inspect(pgl_conn *conn, uint8_t type, const uint8_t *body,
                                      uint32_t len)
{
    pgl_client *c = client_of(conn);
    switch (c->state) {
    case PGL_CLIENT_STARTUP:
        /* The framing gave us the body after the length word. */
        on_startup(c, body, len);
        /* STOP while TLS is being set up: nothing more is read in clear. */
        return c->conn.closed || c->state == PGL_CLIENT_TLS_HANDSHAKE ? PGL_CONN_STOP
                                                                      : PGL_CONN_SKIP;
    case PGL_CLIENT_AUTH:
        on_password(c, body, len);
        return PGL_CONN_SKIP;
    case PGL_CLIENT_IDLE:
    case PGL_CLIENT_ACTIVE:
        if (type == 'X') {
            pgl_log_debug(pgl_client_ctx(c), "client terminated");
            pgl_client_close(c);
            return PGL_CONN_STOP;
        }
        if (c->admin) {
            pgl_admin_query(c, type, body, len);
            return PGL_CONN_SKIP;
        }
        return PGL_CONN_FORWARD;
    case PGL_CLIENT_TLS_HANDSHAKE:
    case PGL_CLIENT_LOGIN_WAIT:
    case PGL_CLIENT_WAITING:
    case PGL_CLIENT_CLOSING:
        break;
    }
    return PGL_CONN_WAIT;
}

static void client_flushed(pgl_conn *conn)
{
    pgl_client *c = client_of(conn);
    if (c->state == PGL_CLIENT_TLS_HANDSHAKE && c->pending_ssl != NULL) {
        SSL *ssl = c->pending_ssl;
        c->pending_ssl = NULL;
        pgl_conn_start_tls(&c->conn, ssl, on_tls_done);
    }
}

static void client_failed(pgl_conn *conn, pgl_conn_failure why)
{
    pgl_client *c = client_of(conn);
    switch (why) {
    case PGL_CONN_EOF:
        pgl_log_debug(pgl_client_ctx(c), "client closed the connection");
        pgl_client_close(c);
        break;
    case PGL_CONN_IO_ERROR:
        pgl_log_info(pgl_client_ctx(c), "client connection broken");
        pgl_client_close(c);
        break;
    case PGL_CONN_TOO_BIG:
        pgl_client_fail(c, "FATAL", "08P01", "message larger than max_packet_size (%d bytes)",
                        c->px->conf->max_packet_size);
        break;
    case PGL_CONN_BAD_LENGTH:
        pgl_client_fail(c, "FATAL", "08P01", "invalid message length");
        break;
    case PGL_CONN_NO_MEMORY:
        pgl_client_fail(c, "FATAL", "53200", "out of memory");
        break;
    }
}

static const pgl_conn_ops client_ops = {client_decide, client_inspect, client_flushed,
                                        client_failed};

/* ---- linking ------------------------------------------------------------------------------ */

void pgl_client_link(pgl_client *c, pgl_server *s)
{
    c->link = s;
    pgl_conn_set_peer(&c->conn, &s->conn);
    uint64_t now = pgl_now_ms(c->px);
    if (c->pool != NULL && c->wait_since != 0)
        c->pool->total_wait_us += (now - c->wait_since) * 1000;
    c->wait_since = 0;
    set_state(c, PGL_CLIENT_ACTIVE);
}

/* Called by the server once it may carry the client's bytes. */
void pgl_client_go(pgl_client *c)
{
    pgl_conn_resume(&c->conn);
}

/* The server is back in the pool; the client may ask for another. */
void pgl_client_unlinked(pgl_client *c)
{
    c->link = NULL;
    pgl_conn_set_peer(&c->conn, NULL);
    set_state(c, PGL_CLIENT_IDLE);
    c->last_activity = pgl_now_ms(c->px);
    pgl_conn_resume(&c->conn);
}

void pgl_client_janitor(pgl_client *c, uint64_t now)
{
    const pgl_conf *conf = c->px->conf;
    switch (c->state) {
    case PGL_CLIENT_TLS_HANDSHAKE:
    case PGL_CLIENT_STARTUP:
    case PGL_CLIENT_AUTH:
        /* Postgres gives a login authentication_timeout of one minute. */
        if (now - c->connect_time > 60000)
            pgl_client_fail(c, "FATAL", "08P01", "login timed out");
        break;
    case PGL_CLIENT_LOGIN_WAIT:
    case PGL_CLIENT_WAITING:
        if (conf->query_wait_timeout > 0 &&
            now - c->wait_since > (uint64_t)conf->query_wait_timeout * 1000)
            pgl_client_fail(c, "FATAL", "08P01",
                            "no server connection became free within query_wait_timeout (%d s)",
                            conf->query_wait_timeout);
        break;
    case PGL_CLIENT_IDLE:
        if (conf->client_idle_timeout > 0 &&
            now - c->last_activity > (uint64_t)conf->client_idle_timeout * 1000)
            pgl_client_fail(c, "FATAL", "57P05", "client_idle_timeout (%d s) reached",
                            conf->client_idle_timeout);
        break;
    case PGL_CLIENT_ACTIVE:
    case PGL_CLIENT_CLOSING:
        break;
    }
}

/* ---- accept ------------------------------------------------------------------------------- */

void pgl_client_accept(pgl_proxy *px, int fd, const struct sockaddr *sa)
{
    pgl_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        pgl_log_error(NULL, "out of memory accepting a client");
        close(fd);
        return;
    }
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        c->peer.family = AF_INET;
        c->peer.port = ntohs(in->sin_port);
        memcpy(c->peer.ip, &in->sin_addr, 4);
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        c->peer.family = AF_INET6;
        c->peer.port = ntohs(in6->sin6_port);
        memcpy(c->peer.ip, &in6->sin6_addr, 16);
    }
    c->px = px;
    c->id = ++px->next_client_id;
    c->state = PGL_CLIENT_STARTUP;
    pgl_list_init(&c->node);
    pgl_list_init(&c->wait_node);
    pgl_list_init(&c->hash_node);
    c->connect_time = c->last_activity = pgl_now_ms(px);
    if (pgl_conn_init(&c->conn, &px->conns, fd, NULL, &client_ops,
                      (uint32_t)px->conf->max_packet_size) != 0) {
        pgl_log_error(pgl_client_ctx(c), "cannot watch the client socket");
        close(fd);
        free(c);
        return;
    }
    c->conn.startup = true;
    pgl_list_append(&px->clients, &c->node);
    px->nclients++;
    pgl_log_debug(pgl_client_ctx(c), "accepted");
}

int pgl_client_set_var(pgl_client *c, pgl_var v, const char *value)
{
    /* Most clients never set one: the cache is allocated on first use. */
    if (c->vars == NULL && (c->vars = calloc(1, sizeof *c->vars)) == NULL)
        return -ENOMEM;
    return pgl_varcache_set(c->vars, v, value, strlen(value)) == 0 ? 0 : -ENOMEM;
}

void pgl_client_free(pgl_client *c)
{
    free(c->user); /* and c->database, see set_names */
    free(c);
}
