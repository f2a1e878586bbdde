/*
 * pgl_credjson — the JSON a credential file holds or a credential helper
 * prints (creds=file:, creds=exec:): {"username", "password", "expires_at"
 * optional RFC 3339}, or a Vault secret rendered whole ({"data":
 * {"username", "password"}, "lease_duration": seconds}).
 */
#ifndef PGL_CREDJSON_H
#define PGL_CREDJSON_H

#include <stddef.h>
#include <time.h>

typedef struct {
    char *username, *password; /* owned; pgl_credjson_clear wipes them */
    long duration_s;           /* seconds left; 0: no end given */
} pgl_credjson;

/*
 * Parses `len` bytes of `buf` (left as they are: the caller wipes them).
 * A lease_duration counts from `written` (a file's mtime; now for a
 * helper's output). 0, or -1 with `why` saying what is wrong without
 * quoting the content. `what` names the source in `why`.
 */
int pgl_credjson_parse(const char *buf, size_t len, time_t written, const char *what,
                       pgl_credjson *out, char *why, size_t whylen);

void pgl_credjson_clear(pgl_credjson *c);

#endif
