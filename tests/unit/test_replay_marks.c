/* The replay marks: what they cover, when they are forgotten, their bound, and many keys
 * against a plain array model. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "detect/replay_marks.h"

#define KEY(s) (s), sizeof(s) - 1

static void test_covers_up_to_the_mark_then_forgets(void **state)
{
    (void)state;
    struct ad_replay_marks *m = ad_replay_marks_new(10);
    assert_non_null(m);
    assert_false(ad_replay_marks_covers(m, KEY("api\0a-1"), 1000));
    assert_int_equal(ad_replay_marks_raise(m, KEY("api\0a-1"), 3000), 0);
    /* A lower mark does not lower it; the key is compared whole, NULs included. */
    assert_int_equal(ad_replay_marks_raise(m, KEY("api\0a-1"), 2000), 0);
    assert_int_equal(ad_replay_marks_size(m), 1);
    assert_false(ad_replay_marks_covers(m, KEY("api\0a-2"), 1000));
    assert_false(ad_replay_marks_covers(m, KEY("api"), 1000));
    assert_true(ad_replay_marks_covers(m, KEY("api\0a-1"), 1000));
    assert_true(ad_replay_marks_covers(m, KEY("api\0a-1"), 3000));
    /* The first window past the mark forgets it: later ones are new. */
    assert_false(ad_replay_marks_covers(m, KEY("api\0a-1"), 4000));
    assert_int_equal(ad_replay_marks_size(m), 0);
    assert_false(ad_replay_marks_covers(m, KEY("api\0a-1"), 2000));
    ad_replay_marks_destroy(m);
}

static void test_expire_and_bound(void **state)
{
    (void)state;
    struct ad_replay_marks *m = ad_replay_marks_new(3);
    assert_int_equal(ad_replay_marks_raise(m, KEY("a"), 1000), 0);
    assert_int_equal(ad_replay_marks_raise(m, KEY("b"), 2000), 0);
    assert_int_equal(ad_replay_marks_raise(m, KEY("c"), 3000), 0);
    assert_int_equal(ad_replay_marks_raise(m, KEY("d"), 4000), -1); /* full */
    assert_int_equal(ad_replay_marks_raise(m, KEY("c"), 5000), 0);  /* raising needs no room */
    ad_replay_marks_expire(m, 2000);
    assert_int_equal(ad_replay_marks_size(m), 1);
    assert_false(ad_replay_marks_covers(m, KEY("a"), 500));
    assert_false(ad_replay_marks_covers(m, KEY("b"), 500));
    assert_true(ad_replay_marks_covers(m, KEY("c"), 5000));
    assert_int_equal(ad_replay_marks_raise(m, KEY("d"), 4000), 0); /* room again */
    ad_replay_marks_expire(m, INT64_MAX);
    assert_int_equal(ad_replay_marks_size(m), 0);
    ad_replay_marks_destroy(m);
    ad_replay_marks_destroy(NULL);
    assert_false(ad_replay_marks_covers(NULL, KEY("a"), 0));
    assert_int_equal(ad_replay_marks_size(NULL), 0);
}

#define KEYS 5000

static void test_many_keys_match_a_model(void **state)
{
    (void)state;
    static int64_t model[KEYS]; /* 0: no mark */
    struct ad_replay_marks *m = ad_replay_marks_new(KEYS);
    unsigned seed = 7;
    char key[32];
    for (int op = 0; op < 200000; op++) {
        int k = (int)(rand_r(&seed) % KEYS);
        size_t len = (size_t)snprintf(key, sizeof key, "svc\x1fi-%d", k);
        int64_t t = (int64_t)(rand_r(&seed) % 1000) + 1;
        switch (rand_r(&seed) % 8) {
        case 0:
        case 1:
        case 2:
            assert_int_equal(ad_replay_marks_raise(m, key, len, t), 0);
            model[k] = t > model[k] ? t : model[k];
            break;
        case 7:
            if (rand_r(&seed) % 50 == 0) {
                ad_replay_marks_expire(m, t);
                for (int i = 0; i < KEYS; i++)
                    if (model[i] && model[i] <= t)
                        model[i] = 0;
            }
            break;
        default: {
            bool want = model[k] && t <= model[k];
            assert_int_equal(ad_replay_marks_covers(m, key, len, t), want);
            if (model[k] && t > model[k])
                model[k] = 0;
        }
        }
    }
    size_t live = 0;
    for (int i = 0; i < KEYS; i++)
        live += model[i] != 0;
    assert_int_equal(ad_replay_marks_size(m), live);
    ad_replay_marks_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_covers_up_to_the_mark_then_forgets),
        cmocka_unit_test(test_expire_and_bound),
        cmocka_unit_test(test_many_keys_match_a_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
