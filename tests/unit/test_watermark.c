/* Source watermarks: minimum over inputs, idleness, monotonicity. */

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "windows/watermark.h"

static void test_minimum_over_inputs(void **state)
{
    (void)state;
    struct ad_watermark *w = ad_watermark_new(0);
    bool idle = false;
    /* No inputs yet (a consumer before its first assignment): hold the grid until the
     * idle timeout has passed without any. */
    assert_int_equal(ad_watermark_get(w, 0, 1000, &idle), AD_WATERMARK_NONE);
    assert_false(idle);
    assert_int_equal(ad_watermark_get(w, 999, 1000, &idle), AD_WATERMARK_NONE);
    assert_false(idle);
    assert_int_equal(ad_watermark_get(w, 1000, 1000, &idle), AD_WATERMARK_NONE);
    assert_true(idle);
    ad_watermark_add_input(w, 0, true, 0);
    ad_watermark_add_input(w, 3, true, 0);
    assert_int_equal(ad_watermark_get(w, 0, 1000, &idle), AD_WATERMARK_NONE);
    assert_false(idle);
    ad_watermark_update(w, 0, 5000, 10);
    assert_int_equal(ad_watermark_get(w, 10, 1000, NULL), AD_WATERMARK_NONE);
    ad_watermark_update(w, 3, 7000, 20);
    assert_int_equal(ad_watermark_get(w, 20, 1000, NULL), 5000);
    /* An input's watermark never goes back. */
    ad_watermark_update(w, 0, 4000, 30);
    assert_int_equal(ad_watermark_get(w, 30, 1000, NULL), 5000);
    ad_watermark_update(w, 0, 9000, 40);
    assert_int_equal(ad_watermark_get(w, 40, 1000, NULL), 7000);
    /* Updates for unknown inputs are ignored. */
    ad_watermark_update(w, 42, 1, 50);
    assert_int_equal(ad_watermark_get(w, 50, 1000, NULL), 7000);
    ad_watermark_destroy(w);
}

static void test_idle_inputs_stop_holding_back(void **state)
{
    (void)state;
    struct ad_watermark *w = ad_watermark_new(0);
    bool idle;
    ad_watermark_add_input(w, 0, true, 0);
    ad_watermark_add_input(w, 1, true, 0);
    ad_watermark_update(w, 0, 100, 0);
    ad_watermark_update(w, 1, 900, 500);
    assert_int_equal(ad_watermark_get(w, 999, 1000, &idle), 100);
    assert_false(idle);
    /* Input 0 has been quiet for the timeout. */
    assert_int_equal(ad_watermark_get(w, 1000, 1000, &idle), 900);
    assert_false(idle);
    /* Both quiet: the source is idle, and its watermark is the newest it has seen. */
    assert_int_equal(ad_watermark_get(w, 1500, 1000, &idle), 900);
    assert_true(idle);
    /* A delivery makes an input count again. */
    ad_watermark_update(w, 0, 200, 1600);
    assert_int_equal(ad_watermark_get(w, 1600, 1000, &idle), 200);
    assert_false(idle);
    ad_watermark_destroy(w);
}

static void test_inputs_that_may_not_idle(void **state)
{
    (void)state;
    struct ad_watermark *w = ad_watermark_new(0);
    bool idle;
    ad_watermark_add_input(w, 0, false, 0);
    ad_watermark_update(w, 0, 100, 0);
    assert_int_equal(ad_watermark_get(w, 1000000, 1000, &idle), 100);
    assert_false(idle);
    ad_watermark_destroy(w);
}

static void test_remove_and_readd(void **state)
{
    (void)state;
    struct ad_watermark *w = ad_watermark_new(0);
    ad_watermark_add_input(w, 0, true, 0);
    ad_watermark_add_input(w, 1, true, 0);
    ad_watermark_update(w, 0, 100, 0);
    ad_watermark_update(w, 1, 300, 0);
    ad_watermark_remove_input(w, 0);
    assert_int_equal(ad_watermark_inputs(w), 1);
    assert_int_equal(ad_watermark_get(w, 0, 1000, NULL), 300);
    /* Every partition revoked: the source holds the grid for the idle timeout, from the last
     * input's last delivery. */
    bool idle;
    ad_watermark_update(w, 1, 300, 500);
    ad_watermark_remove_input(w, 1);
    assert_int_equal(ad_watermark_get(w, 1499, 1000, &idle), AD_WATERMARK_NONE);
    assert_false(idle);
    assert_int_equal(ad_watermark_get(w, 1500, 1000, &idle), AD_WATERMARK_NONE);
    assert_true(idle);
    /* A re-assigned partition starts over. */
    ad_watermark_add_input(w, 0, true, 10);
    assert_int_equal(ad_watermark_get(w, 10, 1000, NULL), AD_WATERMARK_NONE);
    ad_watermark_destroy(w);
}

/* A consumer joining its group (after a restart, the group waits for the killed member's
 * session to end) holds the grid past the idle timeout until its hold ends, so that the
 * partitions it is about to rebuild from do not find their buckets closed. */
static void test_hold_while_inputs_are_coming(void **state)
{
    (void)state;
    struct ad_watermark *w = ad_watermark_new(0);
    bool idle;
    ad_watermark_hold(w, 5000);
    assert_int_equal(ad_watermark_get(w, 4999, 1000, &idle), AD_WATERMARK_NONE);
    assert_false(idle);
    assert_true(ad_watermark_waiting(w, 4999, 1000));
    assert_int_equal(ad_watermark_get(w, 5000, 1000, &idle), AD_WATERMARK_NONE);
    assert_true(idle);
    assert_false(ad_watermark_waiting(w, 5000, 1000));
    /* The assignment came: the hold ends, and the inputs count as usual. */
    ad_watermark_hold(w, 6000);
    ad_watermark_add_input(w, 0, true, 5500);
    ad_watermark_hold(w, INT64_MIN);
    assert_true(ad_watermark_waiting(w, 5600, 1000));
    ad_watermark_update(w, 0, 300, 5600);
    assert_false(ad_watermark_waiting(w, 5600, 1000));
    assert_int_equal(ad_watermark_get(w, 5600, 1000, &idle), 300);
    /* Revoked again: the idle timeout counts from the last delivery, as before. */
    ad_watermark_remove_input(w, 0);
    assert_int_equal(ad_watermark_get(w, 6600, 1000, &idle), AD_WATERMARK_NONE);
    assert_true(idle);
    ad_watermark_destroy(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimum_over_inputs),
        cmocka_unit_test(test_idle_inputs_stop_holding_back),
        cmocka_unit_test(test_inputs_that_may_not_idle),
        cmocka_unit_test(test_remove_and_readd),
        cmocka_unit_test(test_hold_while_inputs_are_coming),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
