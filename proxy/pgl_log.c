#include "pgl_log.h"

#include "pgl_conf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic bool log_json;
_Atomic int pgl_log_threshold = PGL_LOG_INFO;

/* Set once -v has been seen (pgl_log_configure): reloads keep debug on. */
static _Atomic bool log_verbose;

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR", "FATAL"};

void pgl_log_setup(bool json, pgl_log_level min_level)
{
    atomic_store(&log_json, json);
    atomic_store(&pgl_log_threshold, (int)min_level);
}

/* The threshold log_level names; -v (now or before) means debug. */
static pgl_log_level level_of(const pgl_conf *conf, bool verbose)
{
    if (verbose || atomic_load(&log_verbose))
        return PGL_LOG_DEBUG;
    switch (conf->log_level) {
    case PGL_CONF_LOG_ERROR:
        return PGL_LOG_ERROR;
    case PGL_CONF_LOG_WARNING:
        return PGL_LOG_WARNING;
    case PGL_CONF_LOG_INFO:
        return PGL_LOG_INFO;
    case PGL_CONF_LOG_DEBUG:
        return PGL_LOG_DEBUG;
    }
    return PGL_LOG_INFO;
}

void pgl_log_configure(const pgl_conf *conf, bool verbose)
{
    if (verbose)
        atomic_store(&log_verbose, true);
    pgl_log_setup(conf->log_format == PGL_CONF_LOG_JSON, level_of(conf, verbose));
}

/* Appends `s` to out as a JSON string body (no quotes). */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
    return n;
}

void pgl_log(pgl_log_level level, const char *ctx, const char *fmt, ...)
{
    if (!pgl_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03ldZ", ts.tv_nsec / 1000000);

    /* One fputs per line so concurrent writers (workers) never interleave. */
    char line[4608];
    if (atomic_load_explicit(&log_json, memory_order_relaxed)) {
        char emsg[4096 / 2], ectx[256] = "";
        json_escape(emsg, sizeof emsg, msg);
        if (ctx != NULL)
            json_escape(ectx, sizeof ectx, ctx);
        snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",%s%s%s\"msg\":\"%s\"}\n",
                 when, level_names[level], ctx ? "\"ctx\":\"" : "", ectx, ctx ? "\"," : "", emsg);
    } else {
        snprintf(line, sizeof line, "%s %s %s%s%s\n", when, level_names[level], ctx ? ctx : "",
                 ctx ? ": " : "", msg);
    }
    fputs(line, stderr);
}
