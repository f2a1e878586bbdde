/*
 * pgl_execcreds — upstream credentials a helper prints
 * (`creds=exec:/path/to/helper args`): AWS RDS/Aurora IAM tokens, Cloud SQL
 * IAM tokens, anything a command can mint.
 *
 * The helper runs without a shell (libuv's process API), its stdout is the
 * JSON of pgl_credjson.h, its stderr is logged (with the password it
 * printed masked). It runs at start, again `rotate_before` ahead of the
 * credential's `expires_at` (or lease_duration), and again whenever the
 * database has no working credential (a login refused it); a run that
 * fails (exit status, exec_timeout, bad JSON) keeps the last valid
 * credential and is retried with capped backoff. Each new credential is a
 * generation that warms, takes over and drains the old one.
 */
#ifndef PGL_EXECCREDS_H
#define PGL_EXECCREDS_H

typedef struct pgl_pool pgl_pool;
typedef struct pgl_execcreds pgl_execcreds;

/* Starts the helper's schedule (a first run now). 0 or -ENOMEM. */
int pgl_execcreds_start(pgl_pool *pool) __attribute__((warn_unused_result));

/* Stops it; a run in progress is killed. */
void pgl_execcreds_stop(pgl_pool *pool);

#endif
