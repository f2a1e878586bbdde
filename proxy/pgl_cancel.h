/*
 * pgl_cancel — the table of cancel keys. Every client gets a random (pid,
 * key) pair in its BackendKeyData; a CancelRequest is looked up here, and
 * whoever owns the key decides what to cancel. Keys are drawn so that no
 * two live clients share one.
 */
#ifndef PGL_CANCEL_H
#define PGL_CANCEL_H

#include "pgl_list.h"

#include <stddef.h>
#include <stdint.h>

/* Embedded in its owner (a client); container_of gets the owner back. */
typedef struct {
    pgl_list node; /* bucket; points to itself when not registered */
    uint32_t pid, key;
} pgl_cancel_key;

typedef struct {
    pgl_list *buckets;
    size_t nbuckets;
} pgl_cancel_table;

int pgl_cancel_table_init(pgl_cancel_table *t) __attribute__((warn_unused_result));
void pgl_cancel_table_free(pgl_cancel_table *t);

static inline void pgl_cancel_key_init(pgl_cancel_key *k)
{
    pgl_list_init(&k->node);
    k->pid = k->key = 0;
}

/* Draws a fresh pair for `k` and registers it. 0 or a negative error (no
 * randomness). */
int pgl_cancel_register(pgl_cancel_table *t, pgl_cancel_key *k) __attribute__((warn_unused_result));
/* Safe on a key never registered or already unregistered. */
void pgl_cancel_unregister(pgl_cancel_key *k);
/* The registered key (pid, key), or NULL. */
pgl_cancel_key *pgl_cancel_find(pgl_cancel_table *t, uint32_t pid, uint32_t key);

#endif
