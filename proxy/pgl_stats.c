/*
 * Pool traffic counters (pgl_stats.h).
 */
#include "pgl_stats.h"

#include <string.h>

const uint64_t pgl_stats_wait_bounds_us[PGL_STATS_WAIT_BUCKETS] = {
    1000, 5000, 10000, 50000, 100000, 500000, 1000000, 5000000, 10000000, 30000000, 60000000,
};

/* Postgres's SQLSTATE classes (Appendix A, PostgreSQL 15). */
static const char classes[PGL_STATS_ERROR_CLASSES][3] = {
    "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21",
    "22", "23", "24", "25", "26", "27", "28", "2B", "2D", "2F", "34", "38", "39",
    "3B", "3D", "3F", "40", "42", "44", "53", "54", "55", "57", "58", "72", "F0",
    "HV", "P0", "XX",
};

void pgl_stats_wait(pgl_stats *st, uint64_t us)
{
    st->total.wait_time_us += us;
    size_t i = 0;
    while (i < PGL_STATS_WAIT_BUCKETS && us > pgl_stats_wait_bounds_us[i])
        i++;
    st->wait_buckets[i]++;
}

void pgl_stats_error(pgl_stats *st, const char *sqlstate)
{
    size_t i = PGL_STATS_ERROR_OTHER;
    if (sqlstate != NULL && sqlstate[0] != '\0' && sqlstate[1] != '\0') {
        /* Only on errors: a short scan is cheaper than a table to keep. */
        for (size_t k = 0; k < PGL_STATS_ERROR_CLASSES; k++) {
            if (classes[k][0] == sqlstate[0] && classes[k][1] == sqlstate[1]) {
                i = k;
                break;
            }
        }
    }
    st->errors[i]++;
}

const char *pgl_stats_error_class(size_t i)
{
    return i < PGL_STATS_ERROR_CLASSES ? classes[i] : "other";
}

/* PgBouncer's calc_average: rates per second over the period, times per
 * query or transaction of the period. */
static void average(pgl_stats_counters *avg, const pgl_stats_counters *cur,
                    const pgl_stats_counters *old, uint64_t dur_us)
{
    memset(avg, 0, sizeof *avg);
    if (dur_us == 0)
        return;
    uint64_t queries = cur->query_count - old->query_count;
    uint64_t xacts = cur->xact_count - old->xact_count;
    avg->query_count = 1000000 * queries / dur_us;
    avg->xact_count = 1000000 * xacts / dur_us;
    avg->bytes_received = 1000000 * (cur->bytes_received - old->bytes_received) / dur_us;
    avg->bytes_sent = 1000000 * (cur->bytes_sent - old->bytes_sent) / dur_us;
    if (queries > 0)
        avg->query_time_us = (cur->query_time_us - old->query_time_us) / queries;
    if (xacts > 0)
        avg->xact_time_us = (cur->xact_time_us - old->xact_time_us) / xacts;
    avg->wait_time_us = 1000000 * (cur->wait_time_us - old->wait_time_us) / dur_us;
}

void pgl_stats_tick(pgl_stats *st, uint64_t now_ms, int period_s)
{
    if (st->period_start_ms == 0) {
        st->period_start_ms = now_ms;
        st->prev = st->total;
        return;
    }
    uint64_t period_ms = (uint64_t)(period_s > 0 ? period_s : 1) * 1000;
    if (now_ms - st->period_start_ms < period_ms)
        return;
    average(&st->avg, &st->total, &st->prev, (now_ms - st->period_start_ms) * 1000);
    st->prev = st->total;
    st->period_start_ms = now_ms;
}

void pgl_stats_vault_error(pgl_stats_vault *v, pgl_stats_vault_op op, int code)
{
    for (size_t i = 0; i < PGL_STATS_VAULT_CODES; i++) {
        if (v->errors[i].code == 0)
            v->errors[i].code = code;
        if (v->errors[i].code == code) {
            v->errors[i].n[op]++;
            return;
        }
    }
    v->errors_other[op]++;
}

const char *pgl_stats_vault_op_name(pgl_stats_vault_op op)
{
    static const char *const names[] = {"read", "renew", "revoke"};
    return op < PGL_STATS_VAULT_OPS ? names[op] : "other";
}

void pgl_stats_add(pgl_stats_counters *a, const pgl_stats_counters *b)
{
    a->xact_count += b->xact_count;
    a->query_count += b->query_count;
    a->bytes_received += b->bytes_received;
    a->bytes_sent += b->bytes_sent;
    a->xact_time_us += b->xact_time_us;
    a->query_time_us += b->query_time_us;
    a->wait_time_us += b->wait_time_us;
}
