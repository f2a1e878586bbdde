/*
 * pgl_log — the one place where log lines are formatted.
 *
 * One line per event, text or JSON (log_format). Callers pass a context
 * prefix such as "C-42 appdb/app@127.0.0.1:51234" so every line about a
 * connection can be found by its id. Never pass a password, token,
 * secret_id, SCRAM key or full lease_id: nothing here could tell them apart.
 */
#ifndef PGL_LOG_H
#define PGL_LOG_H

#include <stdatomic.h>
#include <stdbool.h>

typedef enum {
    PGL_LOG_DEBUG = 0,
    PGL_LOG_INFO,
    PGL_LOG_WARNING,
    PGL_LOG_ERROR,
    PGL_LOG_FATAL,
} pgl_log_level;

/*
 * The logger is the one process-wide object besides stderr itself, which it
 * writes: every loop (and, with workers, every thread) logs through it. Its
 * two settings are atomics, set at start-up and on reload, read by any
 * thread; they are the only mutable state outside the proxy and loop
 * structs.
 */
void pgl_log_setup(bool json, pgl_log_level min_level);

struct pgl_conf;

/*
 * Applies a configuration's log_format and log_level (at start-up and on
 * each reload). `verbose` is the command line's -v: it forces debug, and is
 * remembered, so a later call with false (a reload) keeps debug on.
 */
void pgl_log_configure(const struct pgl_conf *conf, bool verbose);

/* Lines below this level are dropped; read by the macros so that their
 * arguments (a formatted context, say) cost nothing when not logged. */
extern _Atomic int pgl_log_threshold;

static inline bool pgl_log_enabled(pgl_log_level level)
{
    return (int)level >= atomic_load_explicit(&pgl_log_threshold, memory_order_relaxed);
}

/* Writes one line to stderr. `ctx` may be NULL. */
void pgl_log(pgl_log_level level, const char *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define PGL_LOG_AT(level, ctx, ...)                                                             \
    do {                                                                                        \
        if (pgl_log_enabled(level))                                                             \
            pgl_log(level, ctx, __VA_ARGS__);                                                   \
    } while (0)
#define pgl_log_debug(ctx, ...) PGL_LOG_AT(PGL_LOG_DEBUG, ctx, __VA_ARGS__)
#define pgl_log_info(ctx, ...) PGL_LOG_AT(PGL_LOG_INFO, ctx, __VA_ARGS__)
#define pgl_log_warning(ctx, ...) PGL_LOG_AT(PGL_LOG_WARNING, ctx, __VA_ARGS__)
#define pgl_log_error(ctx, ...) PGL_LOG_AT(PGL_LOG_ERROR, ctx, __VA_ARGS__)

#endif
