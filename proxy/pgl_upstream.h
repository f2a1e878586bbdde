/*
 * pgl_upstream — logging in to Postgres with libpq without blocking the
 * loop, and cancelling a server's query.
 *
 * Host names are resolved with uv_getaddrinfo first (libpq would call
 * getaddrinfo synchronously) and passed as `hostaddr`; then
 * PQconnectStartParams runs on the loop and each PQconnectPoll in libuv's
 * thread pool (the SCRAM key derivation and a TLS handshake cost a few ms
 * of CPU each, which no client of the loop should wait for), with the
 * socket watched by a pgl_poller in between. On success the caller gets
 * the PGconn (kept for PQfinish, the backend pid and the cancel key), the
 * poller already watching its socket, and the SSL object when TLS is in
 * use; from then on it reads and writes the socket itself.
 */
#ifndef PGL_UPSTREAM_H
#define PGL_UPSTREAM_H

#include "pgl_poller.h"

#include <stddef.h>

#include <libpq-fe.h>
#include <openssl/ssl.h>
#include <uv.h>

typedef struct pgl_upstream pgl_upstream;

typedef struct {
    /* libpq keywords from the database's conninfo, without user/password. */
    const char *const *keys;
    const char *const *values;
    size_t n;
    const char *user;
    const char *password; /* not copied beyond libpq's own copy */
    const char *application_name;
    unsigned connect_timeout_ms; /* whole login, resolution included */
    const char *log_ctx;
} pgl_upstream_params;

typedef struct {
    int status;          /* 0, or negative on failure */
    PGconn *pg;          /* on success: the caller owns it */
    pgl_poller *poller;  /* on success: watching PQsocket(pg) */
    SSL *ssl;            /* on success with TLS; owned by pg */
    int backend_pid;
    char sqlstate[6];    /* on failure: best classification of libpq's error */
    char message[256];   /* on failure: libpq's message, first line, no secrets */
} pgl_upstream_result;

typedef void (*pgl_upstream_cb)(void *arg, pgl_upstream_result *res);

/* Starts a login; `cb` runs exactly once unless pgl_upstream_abort is
 * called first. 0 or a negative error (then cb never runs). */
int pgl_upstream_start(uv_loop_t *loop, const pgl_upstream_params *p, pgl_upstream_cb cb,
                       void *arg, pgl_upstream **out);

/* Stops a login in progress; its callback will not run. */
void pgl_upstream_abort(pgl_upstream *u);

/* Sends a CancelRequest for pg's running query from the thread pool.
 * `done` (may be NULL) runs on the loop with 0 or -1. */
int pgl_upstream_cancel(uv_loop_t *loop, PGconn *pg, void (*done)(void *arg, int status),
                        void *arg);

/* Derives a SQLSTATE from a libpq connection error message: libpq keeps
 * the server's code of a failed login to itself. */
void pgl_upstream_classify(const char *message, char sqlstate[6]);

/*
 * Removes libpq's PG* environment variables (PGHOST, PGSSLMODE, PGSERVICE,
 * PGPASSFILE...) from the process so upstream logins use exactly the
 * configured parameters. Returns how many were removed; `first` gets the
 * name of one of them for the log line.
 */
int pgl_upstream_isolate_env(char *first, size_t len);

/* The ParameterStatus names Postgres reports at login, NULL-terminated. */
extern const char *const pgl_upstream_report_params[];

#endif
