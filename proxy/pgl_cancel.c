/*
 * Cancel keys. Every client gets a random (pid, key) pair in its
 * BackendKeyData; a CancelRequest carrying it cancels the query of the
 * server the client is linked to. Unknown keys are dropped silently, as
 * Postgres does, so nobody can probe for them.
 */
#include "pgl_log.h"
#include "pgl_proxy.h"

#include <stdlib.h>

#include <openssl/rand.h>

#define NBUCKETS 4096

int pgl_cancel_init(pgl_proxy *px)
{
    px->cancel_buckets = calloc(NBUCKETS, sizeof *px->cancel_buckets);
    if (px->cancel_buckets == NULL)
        return -1;
    px->ncancel_buckets = NBUCKETS;
    for (size_t i = 0; i < NBUCKETS; i++)
        pgl_list_init(&px->cancel_buckets[i]);
    return 0;
}

void pgl_cancel_free(pgl_proxy *px)
{
    free(px->cancel_buckets);
    px->cancel_buckets = NULL;
}

static pgl_list *bucket(pgl_proxy *px, uint32_t pid, uint32_t key)
{
    return &px->cancel_buckets[(pid ^ key * 2654435761u) % px->ncancel_buckets];
}

static pgl_client *find(pgl_proxy *px, uint32_t pid, uint32_t key)
{
    pgl_list *b = bucket(px, pid, key), *pos, *tmp;
    pgl_list_foreach(pos, tmp, b)
    {
        pgl_client *c = pgl_container_of(pos, pgl_client, hash_node);
        if (c->cancel_pid == pid && c->cancel_key == key)
            return c;
    }
    return NULL;
}

void pgl_cancel_register(pgl_proxy *px, pgl_client *c)
{
    /* The pid looks like a backend pid to tools that print it; the key is
     * what makes it unguessable. Retry on the (unlikely) collision. */
    do {
        uint32_t r[2];
        RAND_bytes((unsigned char *)r, sizeof r);
        c->cancel_pid = (r[0] & 0x3fffffff) | 1;
        c->cancel_key = r[1];
    } while (find(px, c->cancel_pid, c->cancel_key) != NULL);
    pgl_list_append(bucket(px, c->cancel_pid, c->cancel_key), &c->hash_node);
}

void pgl_cancel_unregister(pgl_client *c)
{
    pgl_list_remove(&c->hash_node);
}

void pgl_cancel_request(pgl_proxy *px, uint32_t pid, uint32_t key)
{
    pgl_client *c = find(px, pid, key);
    if (c == NULL) {
        pgl_log_debug(NULL, "cancel request for an unknown key dropped");
        return;
    }
    if (c->link == NULL || c->link->state != PGL_SERVER_ACTIVE) {
        pgl_log_debug(pgl_client_ctx(c), "cancel request: no query running");
        return;
    }
    pgl_log_info(pgl_client_ctx(c), "cancel request");
    pgl_server_cancel(c->link);
}
