/*
 * Credentials from a file (pgl_filecreds.h).
 */
#include "pgl_filecreds.h"

#include "pgl_credjson.h"
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

/* Reads and parses the file. 0, or -1 with `why` (never a secret). */
static int read_secret(pgl_filecreds *fc, pgl_credjson *out, struct stat *st, char *why,
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
    int rc = pgl_credjson_parse(buf, len, st->st_mtim.tv_sec, fc->path, out, why, whylen);
    OPENSSL_cleanse(buf, cap);
    free(buf);
    return rc;
}

/* ---- following -------------------------------------------------------------------- */

static void load(pgl_filecreds *fc)
{
    pgl_pool *pool = fc->pool;
    pgl_credjson fs;
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
    pgl_pool_offer_credential(pool, fs.username, fs.password, fs.duration_s, "credential file");
    pgl_credjson_clear(&fs);
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
    (void)pgl_pool_enforce_all(pool, pgl_now_ms(pool->px));
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
