/*
 * pgl_list — intrusive doubly linked lists, the way objects move between
 * states (idle servers, waiting clients...) without allocating.
 */
#ifndef PGL_LIST_H
#define PGL_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pgl_list {
    struct pgl_list *next, *prev;
} pgl_list;

static inline void pgl_list_init(pgl_list *head)
{
    head->next = head->prev = head;
}

static inline bool pgl_list_empty(const pgl_list *head)
{
    return head->next == head;
}

/* A node that is in no list points to itself, so removing it twice is safe. */
static inline void pgl_list_remove(pgl_list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->next = node->prev = node;
}

static inline void pgl_list_append(pgl_list *head, pgl_list *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

static inline void pgl_list_prepend(pgl_list *head, pgl_list *node)
{
    node->next = head->next;
    node->prev = head;
    head->next->prev = node;
    head->next = node;
}

#define pgl_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Iterates safely against removal of the current node. */
#define pgl_list_foreach(pos, tmp, head)                                                          \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

/*
 * A list that carries its own length, so that a count (waiting clients,
 * idle servers) is read, never walked for. Objects enter and leave one only
 * through their owner's set_state, which knows the list they are in.
 */
typedef struct pgl_clist {
    pgl_list head;
    size_t n;
} pgl_clist;

static inline void pgl_clist_init(pgl_clist *l)
{
    pgl_list_init(&l->head);
    l->n = 0;
}

static inline size_t pgl_clist_count(const pgl_clist *l)
{
    return l->n;
}

static inline bool pgl_clist_empty(const pgl_clist *l)
{
    return l->n == 0;
}

static inline void pgl_clist_append(pgl_clist *l, pgl_list *node)
{
    pgl_list_append(&l->head, node);
    l->n++;
}

static inline void pgl_clist_prepend(pgl_clist *l, pgl_list *node)
{
    pgl_list_prepend(&l->head, node);
    l->n++;
}

/* `node` must be in `l`. */
static inline void pgl_clist_remove(pgl_clist *l, pgl_list *node)
{
    pgl_list_remove(node);
    l->n--;
}

/* The first (last) node, or NULL when empty. */
static inline pgl_list *pgl_clist_first(const pgl_clist *l)
{
    return l->n ? l->head.next : NULL;
}

static inline pgl_list *pgl_clist_last(const pgl_clist *l)
{
    return l->n ? l->head.prev : NULL;
}

#define pgl_clist_foreach(pos, tmp, l) pgl_list_foreach(pos, tmp, &(l)->head)

#endif
