/* Durations and sizes as the config file writes them. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/units.h"

static int64_t duration(const char *s)
{
    int64_t ms = -12345;
    assert_int_equal(ad_duration_parse(s, &ms), 0);
    return ms;
}

static void test_durations(void **state)
{
    (void)state;
    assert_int_equal(duration("0s"), 0);
    assert_int_equal(duration("250ms"), 250);
    assert_int_equal(duration("30s"), 30000);
    assert_int_equal(duration("5m"), 300000);
    assert_int_equal(duration("1h30m"), 5400000);
    assert_int_equal(duration("1d"), 86400000);
    assert_int_equal(duration("2w"), 14LL * 86400000);
    assert_int_equal(duration("1h0m5s10ms"), 3605010);
}

static void test_bad_durations(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "s",
                         "10",
                         "10 s",
                         "1.5s",
                         "-1s",
                         "1m1h",
                         "1s1s",
                         "1x",
                         "1sm",
                         "1M",
                         "1ms1s",
                         " 1s",
                         "1s ",
                         "99999999999999999999s",
                         "9999999999999999w"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 7;
        if (ad_duration_parse(bad[i], &ms) != -1)
            fail_msg("\"%s\" parsed as %lld", bad[i], (long long)ms);
        assert_int_equal(ms, 7);
    }
}

static void test_duration_format_round_trips(void **state)
{
    (void)state;
    const int64_t values[] = {0,     1,       999,     1000,         60000,
                              90000, 3600000, 5400000, 86400000 + 1, 7LL * 86400000 * 3 + 61001};
    const char *texts[] = {"0s",    "1ms", "999ms", "1s",    "1m",
                           "1m30s", "1h",  "1h30m", "1d1ms", "3w1m1s1ms"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[64];
        ad_duration_format(values[i], buf, sizeof buf);
        assert_string_equal(buf, texts[i]);
        assert_int_equal(duration(buf), values[i]);
    }
}

static void test_sizes(void **state)
{
    (void)state;
    int64_t b;
    assert_int_equal(ad_size_parse("0", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(ad_size_parse("1048576", &b), 0);
    assert_int_equal(b, 1048576);
    assert_int_equal(ad_size_parse("512KiB", &b), 0);
    assert_int_equal(b, 524288);
    assert_int_equal(ad_size_parse("1MiB", &b), 0);
    assert_int_equal(b, 1048576);
    assert_int_equal(ad_size_parse("2GiB", &b), 0);
    assert_int_equal(b, 2147483648LL);
    assert_int_equal(ad_size_parse("1MB", &b), 0);
    assert_int_equal(b, 1000000);
    assert_int_equal(ad_size_parse("10B", &b), 0);
    assert_int_equal(b, 10);
    const char *bad[] = {"",
                         "MiB",
                         "1 MiB",
                         "1mib",
                         "1.5MiB",
                         "-1",
                         "1TiB",
                         "99999999999999999999",
                         "9999999999999GiB"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(ad_size_parse(bad[i], &b), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_bad_durations),
        cmocka_unit_test(test_duration_format_round_trips),
        cmocka_unit_test(test_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
