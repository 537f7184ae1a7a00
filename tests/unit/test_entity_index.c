/* The entity index against a plain array model, under random inserts and removals. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "windows/entity_index.h"

#define MAX_IDS 20000

static char keys[MAX_IDS + 1][24];
static size_t key_lens[MAX_IDS + 1];
static int present[MAX_IDS + 1];

static const char *key_of(void *arg, uint32_t id, size_t *len)
{
    (void)arg;
    *len = key_lens[id];
    return keys[id];
}

static void test_random_operations_match_a_model(void **state)
{
    (void)state;
    struct ad_entity_index *ix = ad_entity_index_new(key_of, NULL);
    unsigned seed = 12345;
    size_t live = 0;

    for (uint32_t id = 1; id <= MAX_IDS; id++)
        key_lens[id] = (size_t)snprintf(keys[id], sizeof keys[id], "svc-%u\x1finst", id * 7919u);
    for (int op = 0; op < 400000; op++) {
        uint32_t id = (uint32_t)(rand_r(&seed) % MAX_IDS) + 1;
        uint64_t h = ad_entity_hash(keys[id], key_lens[id]);
        if (present[id] && rand_r(&seed) % 3 == 0) {
            ad_entity_index_remove(ix, id, h);
            present[id] = 0;
            live--;
        } else if (!present[id]) {
            assert_int_equal(ad_entity_index_insert(ix, id, h), 0);
            present[id] = 1;
            live++;
        }
        /* Check a few random ids every step, and everything now and then. */
        uint32_t probe = (uint32_t)(rand_r(&seed) % MAX_IDS) + 1;
        uint64_t ph = ad_entity_hash(keys[probe], key_lens[probe]);
        assert_int_equal(ad_entity_index_find(ix, keys[probe], key_lens[probe], ph),
                         present[probe] ? probe : 0);
        if (op % 50000 == 0) {
            for (uint32_t k = 1; k <= MAX_IDS; k++) {
                uint64_t kh = ad_entity_hash(keys[k], key_lens[k]);
                assert_int_equal(ad_entity_index_find(ix, keys[k], key_lens[k], kh),
                                 present[k] ? k : 0);
            }
        }
        assert_int_equal(ad_entity_index_size(ix), live);
    }
    ad_entity_index_destroy(ix);
}

static void test_hash_spreads_similar_keys(void **state)
{
    (void)state;
    /* Keys that differ in one character must not collide in the low bits the table uses. */
    int buckets[1024] = {0};
    for (int i = 0; i < 100000; i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "checkout\x1f%d", i);
        buckets[ad_entity_hash(key, (size_t)n) & 1023]++;
    }
    for (int b = 0; b < 1024; b++)
        assert_true(buckets[b] > 40 && buckets[b] < 160); /* mean 97.7 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_operations_match_a_model),
        cmocka_unit_test(test_hash_spreads_similar_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
