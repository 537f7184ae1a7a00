/*
 * The per-entity table of detect/ (alert states, likelihoods, rebuild marks): keys to zeroed
 * records, the bound, removal and reuse of ids, iteration while removing.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "detect/entity_table.h"

struct rec {
    int64_t value;
    char pad[40];
};

static void test_add_find_remove(void **state)
{
    (void)state;
    struct ad_entity_table *t = ad_entity_table_new(sizeof(struct rec), 3);
    assert_non_null(t);
    assert_int_equal(ad_entity_table_find(t, "a", 1), 0);
    uint32_t a = ad_entity_table_add(t, "a", 1);
    uint32_t b = ad_entity_table_add(t, "b\0x", 3); /* keys are bytes, NULs included */
    assert_true(a && b && a != b);
    struct rec *r = ad_entity_table_record(t, a);
    assert_int_equal(r->value, 0); /* zeroed */
    r->value = 7;
    assert_int_equal(ad_entity_table_find(t, "a", 1), a);
    assert_int_equal(ad_entity_table_find(t, "b\0x", 3), b);
    assert_int_equal(ad_entity_table_find(t, "b", 1), 0);
    size_t len;
    const char *key = ad_entity_table_key(t, b, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(key, "b\0x", 3);
    /* The bound. */
    assert_true(ad_entity_table_add(t, "c", 1) != 0);
    assert_int_equal(ad_entity_table_add(t, "d", 1), 0);
    assert_int_equal(ad_entity_table_count(t), 3);
    /* A removed id is reused, its record zeroed again; the others keep theirs. */
    ad_entity_table_remove(t, a);
    assert_int_equal(ad_entity_table_find(t, "a", 1), 0);
    uint32_t d = ad_entity_table_add(t, "d", 1);
    assert_int_equal(d, a);
    assert_int_equal(((struct rec *)ad_entity_table_record(t, d))->value, 0);
    assert_int_equal(ad_entity_table_count(t), 3);
    ad_entity_table_destroy(t);
}

static void test_iteration_while_removing(void **state)
{
    (void)state;
    struct ad_entity_table *t = ad_entity_table_new(sizeof(struct rec), 10000);
    char key[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "e%d", i);
        uint32_t id = ad_entity_table_add(t, key, strlen(key));
        assert_true(id != 0);
        ((struct rec *)ad_entity_table_record(t, id))->value = i;
    }
    /* Records move as the table grows; their contents do not. */
    for (int i = 0; i < 5000; i += 499) {
        snprintf(key, sizeof key, "e%d", i);
        uint32_t id = ad_entity_table_find(t, key, strlen(key));
        assert_int_equal(((struct rec *)ad_entity_table_record(t, id))->value, i);
    }
    size_t seen = 0;
    for (uint32_t id = 0; (id = ad_entity_table_next(t, id));) {
        seen++;
        if (((struct rec *)ad_entity_table_record(t, id))->value % 2)
            ad_entity_table_remove(t, id);
    }
    assert_int_equal(seen, 5000);
    assert_int_equal(ad_entity_table_count(t), 2500);
    assert_int_equal(ad_entity_table_find(t, "e3", 2), 0);
    assert_true(ad_entity_table_find(t, "e4", 2) != 0);
    ad_entity_table_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_find_remove),
        cmocka_unit_test(test_iteration_while_removing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
