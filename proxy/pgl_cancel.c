/*
 * Cancel keys: see pgl_cancel.h. Unknown keys are dropped silently by the
 * caller, as Postgres does, so nobody can probe for them.
 */
#include "pgl_cancel.h"

#include <errno.h>
#include <stdlib.h>

#include <openssl/rand.h>

#define NBUCKETS 4096

int pgl_cancel_table_init(pgl_cancel_table *t)
{
    t->buckets = calloc(NBUCKETS, sizeof *t->buckets);
    if (t->buckets == NULL)
        return -ENOMEM;
    t->nbuckets = NBUCKETS;
    for (size_t i = 0; i < NBUCKETS; i++)
        pgl_list_init(&t->buckets[i]);
    return 0;
}

void pgl_cancel_table_free(pgl_cancel_table *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
}

static pgl_list *bucket(pgl_cancel_table *t, uint32_t pid, uint32_t key)
{
    return &t->buckets[(pid ^ key * 2654435761u) % t->nbuckets];
}

pgl_cancel_key *pgl_cancel_find(pgl_cancel_table *t, uint32_t pid, uint32_t key)
{
    pgl_list *b = bucket(t, pid, key), *pos, *tmp;
    pgl_list_foreach(pos, tmp, b)
    {
        pgl_cancel_key *k = pgl_container_of(pos, pgl_cancel_key, node);
        if (k->pid == pid && k->key == key)
            return k;
    }
    return NULL;
}

int pgl_cancel_register(pgl_cancel_table *t, pgl_cancel_key *k)
{
    /* The pid looks like a backend pid to tools that print it; the key is
     * what makes it unguessable. Retry on the (unlikely) collision. */
    do {
        uint32_t r[2];
        if (RAND_bytes((unsigned char *)r, sizeof r) != 1)
            return -EIO;
        k->pid = (r[0] & 0x3fffffff) | 1;
        k->key = r[1];
    } while (pgl_cancel_find(t, k->pid, k->key) != NULL);
    pgl_list_append(bucket(t, k->pid, k->key), &k->node);
    return 0;
}

void pgl_cancel_unregister(pgl_cancel_key *k)
{
    pgl_list_remove(&k->node);
}
