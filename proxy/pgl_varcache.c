#include "pgl_varcache.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Names as Postgres reports them in ParameterStatus. */
static const char *const var_names[PGL_VAR_COUNT] = {
    "client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings",
    "application_name", "IntervalStyle", "search_path",
};

int pgl_varcache_lookup(const char *name)
{
    for (int i = 0; i < PGL_VAR_COUNT; i++)
        if (strcasecmp(name, var_names[i]) == 0)
            return i;
    return -1;
}

const char *pgl_varcache_name(pgl_var v)
{
    return var_names[v];
}

int pgl_varcache_set(pgl_varcache *vc, pgl_var v, const char *value, size_t len)
{
    char *old = vc->values[v];
    if (old != NULL && strlen(old) == len && memcmp(old, value, len) == 0)
        return 0;
    char *copy = strndup(value, len);
    if (copy == NULL)
        return -ENOMEM;
    free(old);
    vc->values[v] = copy;
    return 0;
}

void pgl_varcache_clear_extra(pgl_varcache *vc)
{
    for (size_t i = 0; i < vc->nextra; i++) {
        free(vc->extra[i].name);
        free(vc->extra[i].value);
    }
    free(vc->extra);
    vc->extra = NULL;
    vc->nextra = 0;
}

void pgl_varcache_clear(pgl_varcache *vc)
{
    for (int i = 0; i < PGL_VAR_COUNT; i++) {
        free(vc->values[i]);
        vc->values[i] = NULL;
    }
    pgl_varcache_clear_extra(vc);
}

void pgl_varcache_reset(pgl_varcache *server)
{
    pgl_varcache_clear_extra(server);
    free(server->values[PGL_VAR_SEARCH_PATH]);
    server->values[PGL_VAR_SEARCH_PATH] = NULL;
}

/* The extra setting called `name` (lower-cased) in `vc` (may be NULL). */
static pgl_guc *find_extra(const pgl_varcache *vc, const char *name)
{
    for (size_t i = 0; vc != NULL && i < vc->nextra; i++)
        if (strcmp(vc->extra[i].name, name) == 0)
            return &vc->extra[i];
    return NULL;
}

int pgl_varcache_set_extra(pgl_varcache *vc, const char *name, const char *value)
{
    char *lname = strdup(name), *copy = strdup(value);
    if (lname == NULL || copy == NULL)
        goto nomem;
    for (char *p = lname; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    pgl_guc *have = find_extra(vc, lname);
    if (have != NULL) {
        free(lname);
        free(have->value);
        have->value = copy;
        return 0;
    }
    pgl_guc *grown = realloc(vc->extra, (vc->nextra + 1) * sizeof *grown);
    if (grown == NULL)
        goto nomem;
    vc->extra = grown;
    vc->extra[vc->nextra].name = lname;
    vc->extra[vc->nextra++].value = copy;
    return 0;
nomem:
    free(lname);
    free(copy);
    return -ENOMEM;
}

int pgl_varcache_copy(pgl_varcache *dst, const pgl_varcache *src)
{
    for (int i = 0; i < PGL_VAR_COUNT; i++) {
        if (src->values[i] != NULL &&
            pgl_varcache_set(dst, (pgl_var)i, src->values[i], strlen(src->values[i])) != 0)
            return -ENOMEM;
    }
    return 0;
}

/*
 * Appends an E'' string literal. E'' reads backslash escapes whatever the
 * server's standard_conforming_strings is at that moment (a previous client
 * may have turned it off), so escaping both \ and ' is always right.
 */
static int append_literal(char *sql, size_t cap, size_t *off, const char *s)
{
    if (*off + 3 >= cap)
        return -1;
    sql[(*off)++] = 'E';
    sql[(*off)++] = '\'';
    for (; *s; s++) {
        if (*off + 3 >= cap)
            return -1;
        if (*s == '\'' || *s == '\\')
            sql[(*off)++] = '\\';
        sql[(*off)++] = *s;
    }
    sql[(*off)++] = '\'';
    sql[*off] = '\0';
    return 0;
}

static int append(char *sql, size_t cap, size_t *off, const char *s)
{
    size_t n = strlen(s);
    if (*off + n + 1 >= cap)
        return -1;
    memcpy(sql + *off, s, n + 1);
    *off += n;
    return 0;
}

/* The value a client wants: its own, else the pool's default, else none. */
static const char *wanted(const pgl_varcache *client, const pgl_varcache *defaults, pgl_var v)
{
    if (client != NULL && client->values[v] != NULL)
        return client->values[v];
    return defaults != NULL ? defaults->values[v] : NULL;
}

/* Appends one set_config() call: `want` NULL puts the server's own default
 * back (pg_settings.reset_val), as RESET would. */
static int append_set(char *sql, size_t cap, size_t *off, int *n, const char *name,
                      const char *want)
{
    if (append(sql, cap, off, (*n)++ == 0 ? "SELECT pg_catalog.set_config(" : ", pg_catalog.set_config(") ||
        append_literal(sql, cap, off, name) || append(sql, cap, off, ", "))
        return -1;
    if (want == NULL ? append(sql, cap, off, "(SELECT reset_val FROM pg_catalog.pg_settings WHERE name = ") ||
                           append_literal(sql, cap, off, name) || append(sql, cap, off, ")")
                     : append_literal(sql, cap, off, want))
        return -1;
    return append(sql, cap, off, ", false)");
}

int pgl_varcache_apply_sql(const pgl_varcache *client, const pgl_varcache *defaults,
                           const pgl_varcache *server, char *sql, size_t cap)
{
    size_t off = 0;
    int n = 0;
    if (cap == 0)
        return -1;
    sql[0] = '\0';
    for (int i = 0; i < PGL_VAR_COUNT; i++) {
        const char *want = wanted(client, defaults, (pgl_var)i), *have = server->values[i];
        if (want == NULL ? have == NULL : have != NULL && strcmp(want, have) == 0)
            continue;
        /* No value wanted and none known to put back (search_path: Postgres
         * 15 does not report it): the server's own default. */
        if (append_set(sql, cap, &off, &n, var_names[i], want))
            return -1;
    }
    for (size_t i = 0; client != NULL && i < client->nextra; i++) {
        const pgl_guc *want = &client->extra[i], *have = find_extra(server, want->name);
        if ((have == NULL || strcmp(have->value, want->value) != 0) &&
            append_set(sql, cap, &off, &n, want->name, want->value))
            return -1;
    }
    for (size_t i = 0; i < server->nextra; i++) {
        if (find_extra(client, server->extra[i].name) == NULL &&
            append_set(sql, cap, &off, &n, server->extra[i].name, NULL))
            return -1;
    }
    return (int)off;
}

int pgl_varcache_applied(const pgl_varcache *client, const pgl_varcache *defaults,
                         pgl_varcache *server)
{
    pgl_varcache_clear_extra(server);
    for (size_t i = 0; client != NULL && i < client->nextra; i++)
        if (pgl_varcache_set_extra(server, client->extra[i].name, client->extra[i].value) != 0)
            return -ENOMEM;
    for (int i = 0; i < PGL_VAR_COUNT; i++) {
        const char *want = wanted(client, defaults, (pgl_var)i);
        if (want == NULL) {
            free(server->values[i]);
            server->values[i] = NULL; /* back to the server's own default */
        } else if (pgl_varcache_set(server, (pgl_var)i, want, strlen(want)) != 0) {
            return -ENOMEM;
        }
    }
    return 0;
}
