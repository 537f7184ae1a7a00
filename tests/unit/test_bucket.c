/* The epoch-aligned bucket grid. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "windows/bucket.h"

static void test_alignment(void **state)
{
    (void)state;
    const int64_t step = 60000;
    assert_int_equal(ad_bucket_start(0, step), 0);
    assert_int_equal(ad_bucket_start(59999, step), 0);
    assert_int_equal(ad_bucket_start(60000, step), 60000);
    assert_int_equal(ad_bucket_end(60000, step), 120000);
    /* 2026-11-22T05:01:02.345Z lands in the bucket that starts at 05:01:00. */
    assert_int_equal(ad_bucket_start(1795323662345LL, step), 1795323660000LL);
    assert_int_equal(ad_bucket_index(1795323662345LL, step), 29922061);
}

static void test_before_the_epoch_floors(void **state)
{
    (void)state;
    assert_int_equal(ad_bucket_start(-1, 1000), -1000);
    assert_int_equal(ad_bucket_start(-1000, 1000), -1000);
    assert_int_equal(ad_bucket_start(-1001, 1000), -2000);
    assert_int_equal(ad_bucket_index(-1, 1000), -1);
    assert_int_equal(ad_bucket_end(-1, 1000), 0);
}

static void test_every_instant_is_in_exactly_one_bucket(void **state)
{
    (void)state;
    const int64_t step = 7;
    for (int64_t t = -100; t <= 100; t++) {
        int64_t s = ad_bucket_start(t, step);
        assert_true(s <= t && t < s + step);
        assert_int_equal(s % step, 0);
        assert_int_equal(ad_bucket_start(s, step), s);
    }
}

static void test_closable(void **state)
{
    (void)state;
    /* Bucket [60s, 120s) with 5 s lateness closes once the watermark reaches 125 s. */
    assert_false(ad_bucket_closable(60000, 60000, 5000, 124999));
    assert_true(ad_bucket_closable(60000, 60000, 5000, 125000));
    assert_true(ad_bucket_closable(60000, 60000, 0, 120000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_before_the_epoch_floors),
        cmocka_unit_test(test_every_instant_is_in_exactly_one_bucket),
        cmocka_unit_test(test_closable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
