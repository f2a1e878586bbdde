/*
 * pgl_stats — a pool's traffic counters, kept the way PgBouncer 1.18 keeps
 * them so SHOW STATS means the same thing on both:
 *
 *   xact_count      transactions: a ReadyForQuery 'I' ending client work
 *   query_count     queries: every ReadyForQuery answering client work
 *   bytes_received  bytes forwarded from clients to servers
 *   bytes_sent      bytes forwarded from servers to clients
 *   xact_time_us    time from a transaction's first message to its 'I'
 *   query_time_us   time from a request's first message to its ReadyForQuery
 *   wait_time_us    time clients waited for a server
 *
 * plus, for /metrics, the waits as a histogram and the server errors
 * forwarded to clients by SQLSTATE class.
 *
 * Every counter is a plain add on the transaction path: no allocation, no
 * system call, nothing per byte (bytes are added per forwarded range,
 * pgl_conn's fwd_count). Averages are computed once per stats_period, as
 * PgBouncer does: counts and bytes per second over the period, times per
 * transaction or query, wait time per second.
 */
#ifndef PGL_STATS_H
#define PGL_STATS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t xact_count;
    uint64_t query_count;
    uint64_t bytes_received;
    uint64_t bytes_sent;
    uint64_t xact_time_us;
    uint64_t query_time_us;
    uint64_t wait_time_us;
} pgl_stats_counters;

/* Upper bounds (µs) of the wait-time histogram's buckets; one more bucket
 * holds everything above the last (Prometheus's +Inf). */
#define PGL_STATS_WAIT_BUCKETS 11
extern const uint64_t pgl_stats_wait_bounds_us[PGL_STATS_WAIT_BUCKETS];

/* SQLSTATE classes counted by name (Postgres's appendix A); any other
 * class, or an error whose code could not be read, is counted as "other". */
#define PGL_STATS_ERROR_CLASSES 42
#define PGL_STATS_ERROR_OTHER PGL_STATS_ERROR_CLASSES

/* A Vault-backed pool's credential events (pgl_creds.c counts them). */
typedef struct {
    uint64_t fetched;          /* credentials read */
    uint64_t rotations;        /* successors fetched for a working credential */
    uint64_t renewals;         /* lease renewals answered */
    uint64_t renewal_failures; /* lease renewals refused or unanswered */
} pgl_stats_creds;

typedef struct pgl_stats {
    pgl_stats_creds creds;
    pgl_stats_counters total; /* since start */
    pgl_stats_counters prev;  /* `total` when the current period began */
    pgl_stats_counters avg;   /* of the last complete period */
    uint64_t period_start_ms; /* 0 until the first tick */
    uint64_t wait_buckets[PGL_STATS_WAIT_BUCKETS + 1]; /* per bucket, not cumulative */
    uint64_t errors[PGL_STATS_ERROR_CLASSES + 1];
} pgl_stats;

/* Vault requests that failed, by request kind and error code (the first
 * codes seen get a slot; later new ones count as "other"). */
typedef enum {
    PGL_STATS_VAULT_READ = 0,
    PGL_STATS_VAULT_RENEW,
    PGL_STATS_VAULT_REVOKE,
    PGL_STATS_VAULT_OPS,
} pgl_stats_vault_op;

#define PGL_STATS_VAULT_CODES 16

typedef struct {
    uint64_t revocations;        /* leases revoked */
    uint64_t revocation_failures;
    struct {
        int code; /* 0: free slot */
        uint64_t n[PGL_STATS_VAULT_OPS];
    } errors[PGL_STATS_VAULT_CODES];
    uint64_t errors_other[PGL_STATS_VAULT_OPS];
} pgl_stats_vault;

/* A Vault request of kind `op` failed with `code` (a negative error). */
void pgl_stats_vault_error(pgl_stats_vault *v, pgl_stats_vault_op op, int code);

/* "read", "renew", "revoke". */
const char *pgl_stats_vault_op_name(pgl_stats_vault_op op);

/* A client waited `us` for a server. */
void pgl_stats_wait(pgl_stats *st, uint64_t us);

/* A server error with `sqlstate` (NULL or malformed: "other") reached a
 * client. */
void pgl_stats_error(pgl_stats *st, const char *sqlstate);

/* The class of error slot `i` ("08", "23"...), "other" for the last. */
const char *pgl_stats_error_class(size_t i);

/* Called every second or so: once `period_s` has passed since the period
 * began, the averages of that period replace the previous ones. */
void pgl_stats_tick(pgl_stats *st, uint64_t now_ms, int period_s);

/* Adds `b` into `a` (totals over several pools). */
void pgl_stats_add(pgl_stats_counters *a, const pgl_stats_counters *b);

#endif
