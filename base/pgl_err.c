#include "pgl_err.h"

#include <stddef.h>
#include <stdbool.h>
#include <string.h>

/* Linux keeps errno values below 4096 (MAX_ERRNO); libuv relies on it too. */
#define ERRNO_LIMIT 4096

typedef struct {
    int code;
    const char *name;
    const char *msg;
} err_desc;

static const err_desc pgl_codes[] = {
#define PGL_ERR_DESC_(name, value, msg) {(value), "PGL_" #name, (msg)},
    PGL_ERR_MAP(PGL_ERR_DESC_)
#undef PGL_ERR_DESC_
};

#if !defined(PGL_HAVE_STRERRORDESC_NP) || !defined(PGL_HAVE_STRERRORNAME_NP)
/* Without glibc >= 2.32's strerrordesc_np/strerrorname_np (strerror is not
 * thread-safe, strerror_r may write into a buffer we cannot return): the
 * errno values pglease itself returns; others are "unknown error". */
static const err_desc errno_codes[] = {
    {EPERM, "EPERM", "operation not permitted"},
    {ENOENT, "ENOENT", "no such file or directory"},
    {EIO, "EIO", "input/output error"},
    {EBADF, "EBADF", "bad file descriptor"},
    {EAGAIN, "EAGAIN", "resource temporarily unavailable"},
    {ENOMEM, "ENOMEM", "out of memory"},
    {EACCES, "EACCES", "permission denied"},
    {EEXIST, "EEXIST", "file exists"},
    {EINVAL, "EINVAL", "invalid argument"},
    {EMFILE, "EMFILE", "too many open files"},
    {ENOSPC, "ENOSPC", "no space left on device"},
    {EPIPE, "EPIPE", "broken pipe"},
    {ERANGE, "ERANGE", "numerical result out of range"},
    {ENAMETOOLONG, "ENAMETOOLONG", "file name too long"},
    {EPROTO, "EPROTO", "protocol error"},
    {EADDRINUSE, "EADDRINUSE", "address already in use"},
    {ECONNABORTED, "ECONNABORTED", "connection aborted"},
    {ECONNRESET, "ECONNRESET", "connection reset by peer"},
    {ETIMEDOUT, "ETIMEDOUT", "connection timed out"},
    {ECONNREFUSED, "ECONNREFUSED", "connection refused"},
    {ECANCELED, "ECANCELED", "operation canceled"},
};

static const err_desc *errno_find(int e)
{
    for (size_t i = 0; i < sizeof errno_codes / sizeof errno_codes[0]; i++)
        if (errno_codes[i].code == e)
            return &errno_codes[i];
    return NULL;
}
#endif

static const err_desc *pgl_find(int code)
{
    if (code < PGL_ERR_MIN || code > PGL_ERR_MAX)
        return NULL;
    for (size_t i = 0; i < sizeof pgl_codes / sizeof pgl_codes[0]; i++)
        if (pgl_codes[i].code == code)
            return &pgl_codes[i];
    return NULL;
}

static int errno_of(int code)
{
    return code < 0 && code > -ERRNO_LIMIT ? -code : 0;
}

/* What is known of `code`: its name or its message; NULL when nothing. */
static const char *describe(int code, bool name)
{
    const err_desc *d = pgl_find(code);
    if (d != NULL)
        return name ? d->name : d->msg;
    int e = errno_of(code);
    if (e == 0)
        return NULL;
#if defined(PGL_HAVE_STRERRORDESC_NP) && defined(PGL_HAVE_STRERRORNAME_NP)
    return name ? strerrorname_np(e) : strerrordesc_np(e);
#else
    const err_desc *ed = errno_find(e);
    return ed == NULL ? NULL : name ? ed->name : ed->msg;
#endif
}

const char *pgl_strerror(int code)
{
    if (code == 0)
        return "success";
    const char *s = describe(code, false);
    return s != NULL ? s : "unknown error";
}

const char *pgl_errname(int code)
{
    if (code == 0)
        return "OK";
    const char *s = describe(code, true);
    return s != NULL ? s : "UNKNOWN";
}
