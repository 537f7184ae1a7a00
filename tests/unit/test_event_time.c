/*
 * Event times: the RFC 3339 parser and the unix_* formats. Expected values were checked with
 * `date -u -d TIME +%s%3N`.
 */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stream/event_time.h"

static int64_t parse_ok(const char *s)
{
    int64_t ms = 0;
    if (ad_time_parse_rfc3339(s, strlen(s), &ms) != 0)
        fail_msg("\"%s\" did not parse", s);
    return ms;
}

static void test_rfc3339_known_values(void **state)
{
    (void)state;
    struct {
        const char *text;
        int64_t ms;
    } cases[] = {
        {"2026-11-22T05:01:02.345Z", 1795323662345LL},
        {"1970-01-01T00:00:00Z", 0},
        {"2024-02-29T12:00:00Z", 1709208000000LL},
        {"0001-01-01T00:00:00Z", -62135596800000LL},
        {"9999-12-31T23:59:59.999Z", 253402300799999LL},
        {"2000-03-01T00:00:00Z", 951868800000LL},
        {"1969-12-31T23:59:59.999Z", -1},
        {"1900-02-28T00:00:00Z", -2203977600000LL},
        {"1600-03-01T00:00:00Z", -11670912000000LL},
        {"2026-11-22T05:01:02.5+01:00", 1795320062500LL},
        {"2026-11-22T05:01:02-05:30", 1795343462000LL},
        {"2026-11-22T05:01:02-0530", 1795343462000LL},
        {"2026-11-22T05:01:02+00:00", 1795323662000LL},
        {"2026-11-22T05:01:02-00:00", 1795323662000LL},
        {"2026-11-22t05:01:02z", 1795323662000LL},
        {"2026-11-22 05:01:02Z", 1795323662000LL},
        {"2026-11-22T05:01:02+23:59", 1795323662000LL - (23 * 3600 + 59 * 60) * 1000LL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t ms = parse_ok(cases[i].text);
        if (ms != cases[i].ms)
            fail_msg("%s: %lld, want %lld", cases[i].text, (long long)ms, (long long)cases[i].ms);
    }
}

static void test_rfc3339_fractions(void **state)
{
    (void)state;
    const int64_t base = 1795323662000LL;
    const char *fractions[] = {"",       ".1",      ".12",      ".123",      ".1234",
                               ".12345", ".123456", ".1234567", ".12345678", ".123456789"};
    const int64_t want[] = {0, 100, 120, 123, 123, 123, 123, 123, 123, 123};
    for (size_t i = 0; i < 10; i++) {
        char s[64];
        snprintf(s, sizeof s, "2026-11-22T05:01:02%sZ", fractions[i]);
        assert_int_equal(parse_ok(s), base + want[i]);
    }
    /* Truncated, never rounded, also before 1970. */
    assert_int_equal(parse_ok("2026-11-22T05:01:02.999999999Z"), base + 999);
    assert_int_equal(parse_ok("1969-12-31T23:59:59.9999Z"), -1);
    assert_int_equal(parse_ok("1969-12-31T23:59:59.0001Z"), -1000);
    int64_t ms;
    assert_int_equal(ad_time_parse_rfc3339("2026-11-22T05:01:02.1234567890Z", 31, &ms), -1);
    assert_int_equal(ad_time_parse_rfc3339("2026-11-22T05:01:02.Z", 21, &ms), -1);
}

static void test_rfc3339_calendar(void **state)
{
    (void)state;
    int64_t ms;
    /* Leap years: every 4th, not every 100th, every 400th. */
    assert_int_equal(parse_ok("2024-02-29T00:00:00Z") + 86400000LL,
                     parse_ok("2024-03-01T00:00:00Z"));
    assert_int_equal(parse_ok("2000-02-29T00:00:00Z") + 86400000LL,
                     parse_ok("2000-03-01T00:00:00Z"));
    const char *invalid[] = {
        "2023-02-29T00:00:00Z",      "1900-02-29T00:00:00Z",      "2024-02-30T00:00:00Z",
        "2026-04-31T00:00:00Z",      "2026-13-01T00:00:00Z",      "2026-00-01T00:00:00Z",
        "2026-01-00T00:00:00Z",      "2026-01-32T00:00:00Z",      "2026-01-01T24:00:00Z",
        "2026-01-01T00:60:00Z",      "2026-01-01T00:00:61Z",      "0000-01-01T00:00:00Z",
        "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+01:60",
    };
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++)
        if (ad_time_parse_rfc3339(invalid[i], strlen(invalid[i]), &ms) == 0)
            fail_msg("\"%s\" parsed", invalid[i]);
    /* Month lengths. */
    const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    for (int m = 1; m <= 12; m++) {
        char s[32];
        snprintf(s, sizeof s, "2026-%02d-%02dT00:00:00Z", m, days[m - 1]);
        parse_ok(s);
        snprintf(s, sizeof s, "2026-%02d-%02dT00:00:00Z", m, days[m - 1] + 1);
        assert_int_equal(ad_time_parse_rfc3339(s, strlen(s), &ms), -1);
    }
    /* Consecutive days across the whole range step by exactly one day. */
    int64_t prev = parse_ok("0001-01-01T00:00:00Z");
    for (int y = 1; y <= 9999; y += 7) {
        char s[32];
        snprintf(s, sizeof s, "%04d-03-01T00:00:00Z", y);
        int64_t mar = parse_ok(s);
        snprintf(s, sizeof s, "%04d-02-28T00:00:00Z", y);
        int64_t feb = parse_ok(s);
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        assert_int_equal(mar - feb, (leap ? 2 : 1) * 86400000LL);
        assert_true(feb > prev);
        prev = mar;
    }
}

static void test_rfc3339_leap_second_and_form(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(parse_ok("2016-12-31T23:59:60Z"), 1483228799999LL);
    assert_int_equal(parse_ok("2016-12-31T23:59:60.5Z"), 1483228799999LL);
    assert_int_equal(parse_ok("2016-12-31T15:59:60-08:00"), 1483228799999LL);
    const char *invalid[] = {
        "",
        "2026-11-22",
        "2026-11-22T05:01:02", /* no offset */
        "2026-11-22T05:01Z",   /* no seconds */
        "2026-11-22T05:01:02 Z",
        "2026-11-22X05:01:02Z",
        "2026/11/22T05:01:02Z",
        "26-11-22T05:01:02Z",
        "+2026-11-22T05:01:02Z",
        "2026-11-22T05:01:02.123",
        "2026-11-22T05:01:02,123Z", /* ISO's comma is not RFC 3339 */
        "2026-11-22T05:01:02+01",
        "2026-11-22T05:01:02+1:00",
        "2026-11-22T05:01:02+01:0",
        "2026-11-22T05:01:02+01:000",
        "2026-11-22T05:01:02+0100Z",
        "2026-11-22T05:01:02ZZ",
        " 2026-11-22T05:01:02Z",
        "2026-11-22T05:01:02Z ",
        "2026-1a-22T05:01:02Z",
        "2026-11-22T05:01:02.12a3Z",
        "2026-11-22T5:01:02Z",
        "2026-11-22T05:01:02-05:3a",
    };
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++)
        if (ad_time_parse_rfc3339(invalid[i], strlen(invalid[i]), &ms) == 0)
            fail_msg("\"%s\" parsed", invalid[i]);
    /* Not NUL-terminated: only len bytes count. */
    const char text[] = "2026-11-22T05:01:02Zjunk";
    assert_int_equal(ad_time_parse_rfc3339(text, 20, &ms), 0);
    assert_int_equal(ms, 1795323662000LL);
    assert_int_equal(ad_time_parse_rfc3339(text, 19, &ms), -1);
}

static struct ad_json_value number(double d)
{
    return (struct ad_json_value){.type = AD_JSON_NUMBER, .number = d};
}

static struct ad_json_value string(const char *s)
{
    return (struct ad_json_value){.type = AD_JSON_STRING, .string = s, .string_len = strlen(s)};
}

static void expect(struct ad_json_value v, enum ad_time_format f, enum ad_time_status status,
                   int64_t want)
{
    int64_t ms = 12345;
    enum ad_time_status got = ad_event_time(&v, f, &ms);
    if (got != status)
        fail_msg("format %d, type %d (%.17g, \"%.*s\"): status %d, want %d", (int)f, (int)v.type,
                 v.number, (int)v.string_len, v.string ? v.string : "", (int)got, (int)status);
    if (status == AD_TIME_OK && ms != want)
        fail_msg("format %d (%.17g, \"%.*s\"): %lld, want %lld", (int)f, v.number,
                 (int)v.string_len, v.string ? v.string : "", (long long)ms, (long long)want);
}

static void test_event_time_formats(void **state)
{
    (void)state;
    expect(string("2026-11-22T05:01:02.345Z"), AD_TIME_RFC3339, AD_TIME_OK, 1795323662345LL);
    expect(string("2026-11-22"), AD_TIME_RFC3339, AD_TIME_MALFORMED, 0);
    expect(number(1795323662), AD_TIME_RFC3339, AD_TIME_WRONG_TYPE, 0);

    expect(number(1795323662), AD_TIME_UNIX_S, AD_TIME_OK, 1795323662000LL);
    expect(number(1795323662.5), AD_TIME_UNIX_S, AD_TIME_OK, 1795323662500LL);
    expect(number(1795323662.123), AD_TIME_UNIX_S, AD_TIME_OK, 1795323662123LL);
    expect(number(1795323662.9999), AD_TIME_UNIX_S, AD_TIME_OK, 1795323662999LL);
    expect(number(-1.5), AD_TIME_UNIX_S, AD_TIME_OK, -1500);
    expect(number(-0.0001), AD_TIME_UNIX_S, AD_TIME_OK, -1);
    expect(number(0), AD_TIME_UNIX_S, AD_TIME_OK, 0);
    expect(string("1795323662.5"), AD_TIME_UNIX_S, AD_TIME_OK, 1795323662500LL);
    expect(string("1795323662.123"), AD_TIME_UNIX_S, AD_TIME_OK, 1795323662123LL);
    expect(string("1795323662.1239999"), AD_TIME_UNIX_S, AD_TIME_OK, 1795323662123LL);
    expect(string("1795323662"), AD_TIME_UNIX_S, AD_TIME_OK, 1795323662000LL);
    expect(string("-0.0001"), AD_TIME_UNIX_S, AD_TIME_OK, -1);
    expect(string("-1.5"), AD_TIME_UNIX_S, AD_TIME_OK, -1500);
    expect(string("0"), AD_TIME_UNIX_S, AD_TIME_OK, 0);

    expect(number(1795323662345.0), AD_TIME_UNIX_MS, AD_TIME_OK, 1795323662345LL);
    expect(number(1795323662345.75), AD_TIME_UNIX_MS, AD_TIME_OK, 1795323662345LL);
    expect(number(-0.5), AD_TIME_UNIX_MS, AD_TIME_OK, -1);
    expect(string("1795323662345"), AD_TIME_UNIX_MS, AD_TIME_OK, 1795323662345LL);
    expect(string("1795323662345.9"), AD_TIME_UNIX_MS, AD_TIME_OK, 1795323662345LL);
    expect(string("-1795323662345.9"), AD_TIME_UNIX_MS, AD_TIME_OK, -1795323662346LL);

    expect(number(1795323662345678.0), AD_TIME_UNIX_US, AD_TIME_OK, 1795323662345LL);
    expect(number(1795323662345999.0), AD_TIME_UNIX_US, AD_TIME_OK, 1795323662345LL);
    expect(number(-1), AD_TIME_UNIX_US, AD_TIME_OK, -1);
    expect(number(-1000), AD_TIME_UNIX_US, AD_TIME_OK, -1);
    expect(number(-1001), AD_TIME_UNIX_US, AD_TIME_OK, -2);
    expect(number(1500.5), AD_TIME_UNIX_US, AD_TIME_OK, 1);
    expect(string("1795323662345678"), AD_TIME_UNIX_US, AD_TIME_OK, 1795323662345LL);
    expect(string("999"), AD_TIME_UNIX_US, AD_TIME_OK, 0);
    expect(string("-1"), AD_TIME_UNIX_US, AD_TIME_OK, -1);
    expect(string("12.5"), AD_TIME_UNIX_US, AD_TIME_OK, 0);
}

static void test_event_time_refusals(void **state)
{
    (void)state;
    const enum ad_time_format unix_formats[] = {AD_TIME_UNIX_S, AD_TIME_UNIX_MS, AD_TIME_UNIX_US};
    for (size_t i = 0; i < 3; i++) {
        enum ad_time_format f = unix_formats[i];
        expect(number(NAN), f, AD_TIME_MALFORMED, 0);
        expect(number(INFINITY), f, AD_TIME_MALFORMED, 0);
        expect(number(-INFINITY), f, AD_TIME_MALFORMED, 0);
        expect(number(1e300), f, AD_TIME_MALFORMED, 0);
        expect(number(-1e300), f, AD_TIME_MALFORMED, 0);
        const char *bad[] = {
            "",   "-",     "1.",  ".5",  "1e9", "0x10", "+1",  " 1",
            "1 ", "1.2.3", "NaN", "inf", "abc", "1,5",  "--1", "99999999999999999999999"};
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
            expect(string(bad[k]), f, AD_TIME_MALFORMED, 0);
        expect((struct ad_json_value){.type = AD_JSON_BOOL, .boolean = true}, f, AD_TIME_WRONG_TYPE,
               0);
        expect((struct ad_json_value){.type = AD_JSON_OBJECT}, f, AD_TIME_WRONG_TYPE, 0);
        expect((struct ad_json_value){.type = AD_JSON_ARRAY}, f, AD_TIME_WRONG_TYPE, 0);
        expect((struct ad_json_value){.type = AD_JSON_NULL}, f, AD_TIME_MISSING, 0);
        expect((struct ad_json_value){.type = AD_JSON_ABSENT}, f, AD_TIME_MISSING, 0);
    }
    /* The range is that of RFC 3339: years 0001 to 9999. */
    expect(number(253402300799.999), AD_TIME_UNIX_S, AD_TIME_OK, 253402300799999LL);
    expect(number(253402300800.0), AD_TIME_UNIX_S, AD_TIME_MALFORMED, 0);
    expect(number(-62135596800.0), AD_TIME_UNIX_S, AD_TIME_OK, -62135596800000LL);
    expect(number(-62135596800.001), AD_TIME_UNIX_S, AD_TIME_MALFORMED, 0);
    expect(string("253402300800"), AD_TIME_UNIX_S, AD_TIME_MALFORMED, 0);
    expect(string("-62135596800.0001"), AD_TIME_UNIX_S, AD_TIME_MALFORMED, 0);
    expect(number(253402300800000.0), AD_TIME_UNIX_MS, AD_TIME_MALFORMED, 0);
    expect(number(253402300800000000.0), AD_TIME_UNIX_US, AD_TIME_MALFORMED, 0);

    expect((struct ad_json_value){.type = AD_JSON_BOOL}, AD_TIME_RFC3339, AD_TIME_WRONG_TYPE, 0);
    expect((struct ad_json_value){.type = AD_JSON_OBJECT}, AD_TIME_RFC3339, AD_TIME_WRONG_TYPE, 0);
    expect((struct ad_json_value){.type = AD_JSON_NULL}, AD_TIME_RFC3339, AD_TIME_MISSING, 0);
    expect(string("2026-11-22T05:01:02Z"), AD_TIME_KAFKA, AD_TIME_WRONG_TYPE, 0);
    int64_t ms;
    assert_int_equal(ad_event_time(NULL, AD_TIME_RFC3339, &ms), AD_TIME_MISSING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3339_known_values),
        cmocka_unit_test(test_rfc3339_fractions),
        cmocka_unit_test(test_rfc3339_calendar),
        cmocka_unit_test(test_rfc3339_leap_second_and_form),
        cmocka_unit_test(test_event_time_formats),
        cmocka_unit_test(test_event_time_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
