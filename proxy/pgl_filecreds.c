/*
 * Credentials from a file (pgl_filecreds.h).
 */
#include "pgl_filecreds.h"

#include "pgl_log.h"
#include "pgl_pool.h"
#include "pgl_proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <uv.h>

/* A credential file is small; anything larger is not one. */
#define FILE_MAX (64 * 1024)
/* Both the safety net for a missed inotify event and the generations'
 * clock (deadlines of an expires_at). */
#define CHECK_MS 1000
/* Writers replace a file in steps: read once they settled. */
#define SETTLE_MS 50

struct pgl_filecreds {
    pgl_pool *pool;
    char *path;
    const char *base; /* the file's name within its directory (in path) */
    uv_fs_event_t watch;
    uv_timer_t tick, settle;
    struct timespec mtime; /* of the content last read */
    off_t size;
    char last_error[256]; /* logged once until it changes */
    int handles;          /* still open: freed when the last closes */
};

/* ---- reading ----------------------------------------------------------------------- */

static void wipe_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* "2026-12-03T10:00:00Z", with optional fraction and a Z or ±hh:mm zone:
 * seconds since the epoch, or -1. */
static long long parse_rfc3339(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (p == NULL)
        return -1;
    if (*p == '.')
        while (*++p >= '0' && *p <= '9')
            ;
    long long t = (long long)timegm(&tm);
    if (*p == 'Z' && p[1] == '\0')
        return t;
    int hh, mm;
    if ((*p == '+' || *p == '-') && sscanf(p + 1, "%2d:%2d", &hh, &mm) == 2 && strlen(p) == 6)
        return *p == '+' ? t - (hh * 3600 + mm * 60) : t + (hh * 3600 + mm * 60);
    return -1;
}

typedef struct {
    char *username, *password;
    long duration_s; /* 0: no end known */
} file_secret;

static void secret_clear(file_secret *fs)
{
    wipe_free(fs->username);
    wipe_free(fs->password);
    fs->username = fs->password = NULL;
}

/* Reads and parses the file. 0, or -1 with `why` (never a secret). */
static int read_secret(pgl_filecreds *fc, file_secret *out, struct stat *st, char *why,
                       size_t whylen)
{
    memset(out, 0, sizeof *out);
    int fd = open(fc->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whylen, "cannot open %s: %s", fc->path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode) || st->st_size > FILE_MAX) {
        snprintf(why, whylen, "%s is not a regular file of at most %d bytes", fc->path, FILE_MAX);
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st->st_size + 1, len = 0;
    if ((buf = malloc(cap)) == NULL) {
        close(fd);
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    ssize_t n;
    while (len < cap - 1 && (n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, 0, &jerr);
    OPENSSL_cleanse(buf, cap);
    free(buf);
    if (root == NULL) {
        /* jerr.text may quote the content: give only where it broke. */
        snprintf(why, whylen, "%s is not valid JSON (line %d, column %d)", fc->path, jerr.line,
                 jerr.column);
        return -1;
    }
    const json_t *from = root;
    if (json_is_object(json_object_get(root, "data")))
        from = json_object_get(root, "data"); /* a Vault secret rendered whole */
    const char *user = json_string_value(json_object_get(from, "username"));
    const char *pass = json_string_value(json_object_get(from, "password"));
    int rc = 0;
    if (user == NULL || pass == NULL || *user == '\0') {
        snprintf(why, whylen, "%s has no \"username\" and \"password\" strings", fc->path);
        rc = -1;
    }
    const char *exp = json_string_value(json_object_get(root, "expires_at"));
    json_int_t lease = json_integer_value(json_object_get(root, "lease_duration"));
    if (rc == 0 && exp != NULL) {
        long long end = parse_rfc3339(exp);
        if (end < 0) {
            snprintf(why, whylen, "%s: expires_at \"%.40s\" is not an RFC 3339 time", fc->path,
                     exp);
            rc = -1;
        } else {
            long long left = end - (long long)time(NULL);
            out->duration_s = left > 0 ? (long)left : -1;
        }
    } else if (rc == 0 && lease > 0) {
        /* Counted from when the file was written. */
        long long left = (long long)st->st_mtim.tv_sec + lease - (long long)time(NULL);
        out->duration_s = left > 0 ? (long)left : -1;
    }
    if (rc == 0 && out->duration_s < 0) {
        snprintf(why, whylen, "the credential in %s has expired", fc->path);
        rc = -1;
    }
    if (rc == 0 && ((out->username = strdup(user)) == NULL ||
                    (out->password = strdup(pass)) == NULL)) {
        snprintf(why, whylen, "out of memory");
        rc = -1;
    }
    if (rc != 0)
        secret_clear(out);
    json_decref(root); /* jansson wipes nothing: the password was in its strings */
    return rc;
}

/* ---- following -------------------------------------------------------------------- */

static bool same_credential(const pgl_generation *g, const file_secret *fs)
{
    return g != NULL && g->user != NULL && strcmp(g->user, fs->username) == 0 &&
           g->password != NULL && strcmp(g->password, fs->password) == 0;
}

static void load(pgl_filecreds *fc)
{
    pgl_pool *pool = fc->pool;
    file_secret fs;
    struct stat st;
    char why[sizeof fc->last_error];
    if (read_secret(fc, &fs, &st, why, sizeof why) != 0) {
        if (strcmp(why, fc->last_error) != 0) {
            pgl_log_warning(pool->name, "credential file: %s; %s", why,
                            pgl_pool_generation(pool) != NULL ? "the current credential stays"
                                                              : "no credential yet");
            snprintf(fc->last_error, sizeof fc->last_error, "%s", why);
        }
        return;
    }
    fc->last_error[0] = '\0';
    fc->mtime = st.st_mtim;
    fc->size = st.st_size;
    pgl_generation *current = pgl_pool_generation(pool);
    pgl_generation *newest = pool->generations.next != &pool->generations
                                 ? pgl_container_of(pool->generations.next, pgl_generation, node)
                                 : NULL;
    /* Unchanged, or already warming. */
    if (same_credential(current, &fs) ||
        (newest != NULL && newest->state == PGL_GEN_WARMING && same_credential(newest, &fs))) {
        secret_clear(&fs);
        return;
    }
    pgl_generation *g = pgl_pool_add_generation(pool, fs.username, fs.password,
                                                current != NULL ? PGL_GEN_WARMING
                                                                : PGL_GEN_ACTIVE);
    secret_clear(&fs);
    if (g == NULL) {
        pgl_log_error(pool->name, "credential file: out of memory for a new generation");
        return;
    }
    uint64_t now = pgl_now_ms(pool->px);
    if (fs.duration_s > 0)
        pgl_generation_issued(g, now, fs.duration_s, false, false, 0,
                              pool->px->conf->rotate_before);
    pgl_log_info(pool->name, "credential file: generation %llu: user %s%s",
                 (unsigned long long)g->id, g->user, fs.duration_s > 0 ? ", expires" : "");
    if (g->state == PGL_GEN_WARMING)
        pgl_pool_warm(pool, g);
    else
        pgl_pool_kick(pool);
}

static void on_settled(uv_timer_t *t)
{
    load(t->data);
}

static void on_change(uv_fs_event_t *h, const char *name, int events, int status)
{
    pgl_filecreds *fc = h->data;
    (void)events;
    /* A rename into place names the file; an overflow names nothing. */
    if (status == 0 && (name == NULL || strcmp(name, fc->base) == 0))
        uv_timer_start(&fc->settle, on_settled, SETTLE_MS, 0);
}

static void on_tick(uv_timer_t *t)
{
    pgl_filecreds *fc = t->data;
    pgl_pool *pool = fc->pool;
    struct stat st;
    if (stat(fc->path, &st) == 0 &&
        (st.st_mtim.tv_sec != fc->mtime.tv_sec || st.st_mtim.tv_nsec != fc->mtime.tv_nsec ||
         st.st_size != fc->size))
        load(fc);
    /* The generations' clock: an expires_at is a deadline like a lease's. */
    uint64_t now = pgl_now_ms(pool->px);
    pgl_list *pos, *tmp;
    pgl_list_foreach(pos, tmp, &pool->generations)
    {
        pgl_pool_enforce(pool, pgl_container_of(pos, pgl_generation, node), now);
    }
}

/* ---- life -------------------------------------------------------------------------- */

static void on_closed(uv_handle_t *h)
{
    pgl_filecreds *fc = h->data;
    if (--fc->handles == 0) {
        free(fc->path);
        free(fc);
    }
}

int pgl_filecreds_start(pgl_pool *pool)
{
    const char *path = pgl_pool_db(pool)->creds_path;
    pgl_filecreds *fc = calloc(1, sizeof *fc);
    if (fc == NULL || (fc->path = strdup(path)) == NULL) {
        free(fc);
        return -ENOMEM;
    }
    fc->pool = pool;
    fc->base = strrchr(fc->path, '/') + 1; /* conf requires an absolute path */
    uv_loop_t *loop = &pool->px->main.uv;
    uv_timer_init(loop, &fc->tick);
    uv_timer_init(loop, &fc->settle);
    uv_fs_event_init(loop, &fc->watch);
    fc->tick.data = fc->settle.data = fc->watch.data = fc;
    fc->handles = 3;
    /* The directory: a writer that renames a new file into place replaces
     * the inode a watch on the file itself would follow. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", (int)(fc->base - fc->path - 1), fc->path);
    int rc = uv_fs_event_start(&fc->watch, on_change, dir[0] ? dir : "/", 0);
    if (rc != 0)
        pgl_log_warning(pool->name, "credential file: cannot watch %s (%s): checking it every "
                                    "second instead",
                        dir[0] ? dir : "/", uv_strerror(rc));
    uv_timer_start(&fc->tick, on_tick, CHECK_MS, CHECK_MS);
    pool->filecreds = fc;
    load(fc);
    return 0;
}

void pgl_filecreds_stop(pgl_pool *pool)
{
    pgl_filecreds *fc = pool->filecreds;
    if (fc == NULL)
        return;
    pool->filecreds = NULL;
    uv_close((uv_handle_t *)&fc->tick, on_closed);
    uv_close((uv_handle_t *)&fc->settle, on_closed);
    uv_close((uv_handle_t *)&fc->watch, on_closed);
}
