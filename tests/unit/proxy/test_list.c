/*
 * Counted lists: the count follows every move, first/last/empty agree with
 * the links, and a node moved between lists is counted in one only.
 */
#include "pgl_list.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

typedef struct {
    int v;
    pgl_list node;
} item;

static void test_counts_follow_moves(void **state)
{
    (void)state;
    pgl_clist a, b;
    pgl_clist_init(&a);
    pgl_clist_init(&b);
    assert_true(pgl_clist_empty(&a));
    assert_null(pgl_clist_first(&a));
    assert_null(pgl_clist_last(&a));
    item it[5];
    for (int i = 0; i < 5; i++) {
        it[i].v = i;
        pgl_clist_append(&a, &it[i].node);
    }
    assert_int_equal(pgl_clist_count(&a), 5);
    assert_int_equal(pgl_container_of(pgl_clist_first(&a), item, node)->v, 0);
    assert_int_equal(pgl_container_of(pgl_clist_last(&a), item, node)->v, 4);
    /* Move two to the front of b. */
    pgl_clist_remove(&a, &it[3].node);
    pgl_clist_prepend(&b, &it[3].node);
    pgl_clist_remove(&a, &it[0].node);
    pgl_clist_prepend(&b, &it[0].node);
    assert_int_equal(pgl_clist_count(&a), 3);
    assert_int_equal(pgl_clist_count(&b), 2);
    assert_int_equal(pgl_container_of(pgl_clist_first(&b), item, node)->v, 0);
    assert_int_equal(pgl_container_of(pgl_clist_last(&b), item, node)->v, 3);
    /* Walking agrees with the count. */
    size_t n = 0;
    pgl_list *pos, *tmp;
    pgl_clist_foreach(pos, tmp, &a)
    {
        n++;
        pgl_clist_remove(&a, pos); /* safe against removal of the current node */
    }
    assert_int_equal(n, 3);
    assert_true(pgl_clist_empty(&a));
    assert_int_equal(pgl_clist_count(&b), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_follow_moves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
