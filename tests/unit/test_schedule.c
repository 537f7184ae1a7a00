/*
 * What maintenance schedules stand on (base/tz, base/cron, base/template): time zones read from
 * the zone files against the C library's own reading of them (TZ + localtime_r, fine in a
 * single-threaded test), cron fields, their firing times around daylight-saving changes, and
 * the URL template's placeholders.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "base/cron.h"
#include "base/template.h"
#include "base/tz.h"

/* 2026-03-29 is the last Sunday of March: Europe/Berlin goes from 02:00 CET to 03:00 CEST. */
#define MS(y, mo, d, h, mi) \
    (((int64_t)ad_tz_days_from_civil(y, mo, d) * 86400 + (h)*3600 + (mi)*60) * 1000)

static void test_tz_matches_libc(void **state)
{
    (void)state;
    static const char *const zones[] = {"Europe/Berlin",    "America/New_York", "Australia/Sydney",
                                        "Asia/Kolkata",     "America/Santiago", "Pacific/Chatham",
                                        "Europe/London",    "Asia/Tokyo",       "UTC",
                                        "America/St_Johns", "Africa/Casablanca"};
    char err[256];
    unsigned seed = 42;
    for (size_t z = 0; z < sizeof zones / sizeof zones[0]; z++) {
        struct ad_tz *tz = ad_tz_load(zones[z], err, sizeof err);
        assert_non_null(tz);
        assert_string_equal(ad_tz_name(tz), zones[z]);
        setenv("TZ", zones[z], 1);
        tzset();
        /* From 1900 to 2100: the transitions of the file and, after them, its footer's rule. */
        for (int i = 0; i < 20000; i++) {
            seed = seed * 1103515245u + 12345u;
            int64_t t = -2208988800LL + (int64_t)((double)rand_r(&seed) / RAND_MAX * 6.3e9);
            time_t tt = (time_t)t;
            struct tm tm;
            localtime_r(&tt, &tm);
            if (ad_tz_offset(tz, t) != (int32_t)tm.tm_gmtoff)
                fail_msg("%s at %lld: %d, libc says %ld", zones[z], (long long)t,
                         ad_tz_offset(tz, t), tm.tm_gmtoff);
            /* And back: the instant of the local time (unambiguous ones). */
            int64_t local = t + tm.tm_gmtoff;
            int64_t back = ad_tz_instant(tz, local);
            if (back != t && ad_tz_offset(tz, t - 7200) == ad_tz_offset(tz, t + 7200))
                fail_msg("%s: local %lld gave %lld, not %lld", zones[z], (long long)local,
                         (long long)back, (long long)t);
        }
        ad_tz_free(tz);
    }
    unsetenv("TZ");
    assert_null(ad_tz_load("Nowhere/Atlantis", err, sizeof err));
    assert_non_null(strstr(err, "unknown time zone"));
    assert_null(ad_tz_load("../etc/passwd", err, sizeof err));
}

static void test_tz_gap_and_overlap(void **state)
{
    (void)state;
    char err[256];
    struct ad_tz *berlin = ad_tz_load("Europe/Berlin", err, sizeof err);
    assert_non_null(berlin);
    /* 02:30 on 2026-03-29 does not exist: read with CET (+1), it is 01:30Z, i.e. 03:30 CEST. */
    int64_t local = MS(2026, 3, 29, 2, 30) / 1000;
    assert_int_equal(ad_tz_instant(berlin, local), MS(2026, 3, 29, 1, 30) / 1000);
    /* 02:30 on 2026-10-25 happens twice (CEST, then CET): the first is 00:30Z. */
    local = MS(2026, 10, 25, 2, 30) / 1000;
    assert_int_equal(ad_tz_instant(berlin, local), MS(2026, 10, 25, 0, 30) / 1000);
    ad_tz_free(berlin);
}

static void test_cron_parse(void **state)
{
    (void)state;
    struct ad_cron c;
    char err[128];
    size_t off = 99;
    assert_int_equal(ad_cron_parse("*/15 2-4 * * mon-fri", &c, &off, err, sizeof err), 0);
    assert_true(c.minutes == ((1ull << 0) | (1ull << 15) | (1ull << 30) | (1ull << 45)));
    assert_int_equal(c.hours, (1u << 2) | (1u << 3) | (1u << 4));
    assert_int_equal(c.weekdays, 0x3e);
    assert_true(c.days_star);
    assert_false(c.weekdays_star);
    assert_int_equal(ad_cron_parse("0 0 1,15 JAN,jul 7", &c, NULL, err, sizeof err), 0);
    assert_int_equal(c.months, (1u << 1) | (1u << 7));
    assert_int_equal(c.weekdays, 1); /* 7 is Sunday */
    assert_int_equal(ad_cron_parse("5/20 * * * *", &c, NULL, err, sizeof err), 0);
    assert_true(c.minutes == ((1ull << 5) | (1ull << 25) | (1ull << 45)));
    assert_int_equal(ad_cron_parse("@daily", &c, NULL, err, sizeof err), 0);
    assert_int_equal(c.hours, 1);
    assert_true(c.minutes == 1);

    assert_int_equal(ad_cron_parse("0 24 * * *", &c, &off, err, sizeof err), -1);
    assert_int_equal(off, 2);
    assert_non_null(strstr(err, "hour out of range 0-23"));
    assert_int_equal(ad_cron_parse("0 0 * *", &c, &off, err, sizeof err), -1);
    assert_non_null(strstr(err, "expected 5 fields"));
    assert_int_equal(ad_cron_parse("0 0 * * * *", &c, &off, err, sizeof err), -1);
    assert_int_equal(off, 10);
    assert_int_equal(ad_cron_parse("x 0 * * *", &c, &off, err, sizeof err), -1);
    assert_int_equal(off, 0);
    assert_int_equal(ad_cron_parse("0 0 * foo *", &c, &off, err, sizeof err), -1);
    assert_int_equal(off, 6);
    assert_int_equal(ad_cron_parse("*/0 * * * *", &c, &off, err, sizeof err), -1);
    assert_int_equal(ad_cron_parse("@sometimes", &c, &off, err, sizeof err), -1);
}

static void test_cron_times(void **state)
{
    (void)state;
    struct ad_cron c;
    char err[128];
    struct ad_tz *utc = ad_tz_load("UTC", err, sizeof err);
    struct ad_tz *berlin = ad_tz_load("Europe/Berlin", err, sizeof err);

    /* Saturdays at 22:00 local. 2026-06-13 is a Saturday. */
    assert_int_equal(ad_cron_parse("0 22 * * sat", &c, NULL, err, sizeof err), 0);
    int64_t sat = MS(2026, 6, 13, 20, 0); /* 22:00 CEST */
    assert_int_equal(ad_cron_prev(&c, berlin, sat + 3600000, sat - 86400000), sat);
    assert_int_equal(ad_cron_prev(&c, berlin, sat, sat - 86400000), sat); /* at: included */
    assert_int_equal(ad_cron_prev(&c, berlin, sat - 1, sat - 86400000), INT64_MIN);
    assert_int_equal(ad_cron_prev(&c, berlin, sat - 1, sat - 8 * 86400000LL), sat - 7 * 86400000LL);
    assert_int_equal(ad_cron_next(&c, berlin, sat - 1, sat + 86400000), sat);
    assert_int_equal(ad_cron_next(&c, berlin, sat, sat + 8 * 86400000LL), sat + 7 * 86400000LL);
    assert_int_equal(ad_cron_next(&c, berlin, sat, sat + 86400000), INT64_MAX);
    assert_int_equal(ad_cron_next(&c, utc, sat, sat + 8 * 86400000LL), MS(2026, 6, 13, 22, 0));

    /* Vixie's rule: both day fields restricted, either matches. 2026-06-01 is a Monday. */
    assert_int_equal(ad_cron_parse("0 0 13 * mon", &c, NULL, err, sizeof err), 0);
    assert_int_equal(ad_cron_next(&c, utc, MS(2026, 6, 10, 0, 0), MS(2026, 7, 1, 0, 0)),
                     MS(2026, 6, 13, 0, 0));
    assert_int_equal(ad_cron_next(&c, utc, MS(2026, 6, 13, 0, 0), MS(2026, 7, 1, 0, 0)),
                     MS(2026, 6, 15, 0, 0));

    /* 02:30 every day in Berlin: on the day the clocks go forward it fires at 03:30 CEST
     * (01:30Z); on the day they go back, once, at the first 02:30 (00:30Z). */
    assert_int_equal(ad_cron_parse("30 2 * * *", &c, NULL, err, sizeof err), 0);
    assert_int_equal(ad_cron_next(&c, berlin, MS(2026, 3, 28, 12, 0), MS(2026, 4, 1, 0, 0)),
                     MS(2026, 3, 29, 1, 30));
    assert_int_equal(ad_cron_next(&c, berlin, MS(2026, 3, 29, 1, 30), MS(2026, 4, 1, 0, 0)),
                     MS(2026, 3, 30, 0, 30));
    assert_int_equal(ad_cron_next(&c, berlin, MS(2026, 10, 24, 12, 0), MS(2026, 11, 1, 0, 0)),
                     MS(2026, 10, 25, 0, 30));
    assert_int_equal(ad_cron_next(&c, berlin, MS(2026, 10, 25, 0, 30), MS(2026, 11, 1, 0, 0)),
                     MS(2026, 10, 26, 1, 30));
    assert_int_equal(ad_cron_prev(&c, berlin, MS(2026, 10, 25, 1, 45), MS(2026, 10, 24, 0, 0)),
                     MS(2026, 10, 25, 0, 30));
    /* Never: February 30th. */
    assert_int_equal(ad_cron_parse("0 0 30 2 *", &c, NULL, err, sizeof err), 0);
    assert_int_equal(ad_cron_next(&c, utc, 0, 5 * 366 * 86400000LL), INT64_MAX);
    ad_tz_free(utc);
    ad_tz_free(berlin);
}

static const char *lookup(void *arg, const char *name)
{
    (void)arg;
    if (strcmp(name, "entity") == 0)
        return "service=a b,instance=c/d";
    if (strcmp(name, "labels.service") == 0)
        return "\"checkout\"";
    return NULL;
}

static void test_template(void **state)
{
    (void)state;
    char err[128];
    size_t off;
    struct ad_template *t =
        ad_template_parse("https://grafana/explore?q={{ labels.service }}&e={{entity}}&x={{none}}{",
                          &off, err, sizeof err);
    assert_non_null(t);
    const char *const *names;
    assert_int_equal(ad_template_names(t, &names), 3);
    assert_string_equal(names[0], "labels.service");
    char *out = ad_template_expand(t, lookup, NULL);
    assert_string_equal(out, "https://grafana/explore?q=%22checkout%22&e=service%3Da%20b%2C"
                             "instance%3Dc%2Fd&x={");
    free(out);
    ad_template_free(t);
    t = ad_template_parse("plain", &off, err, sizeof err);
    out = ad_template_expand(t, lookup, NULL);
    assert_string_equal(out, "plain");
    free(out);
    ad_template_free(t);
    assert_null(ad_template_parse("a{{b", &off, err, sizeof err));
    assert_int_equal(off, 1);
    assert_null(ad_template_parse("a{{b c}}", &off, err, sizeof err));
    assert_null(ad_template_parse("a{{ }}", &off, err, sizeof err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tz_matches_libc), cmocka_unit_test(test_tz_gap_and_overlap),
        cmocka_unit_test(test_cron_parse),      cmocka_unit_test(test_cron_times),
        cmocka_unit_test(test_template),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
