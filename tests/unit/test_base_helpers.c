/*
 * The ground floor's one-job helpers: UTF-8 validation, decimal syntax before strtod, arrays
 * that double, and the constructors' error text.
 */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/errstr.h"
#include "base/grow.h"
#include "base/number.h"
#include "base/utf8.h"

static void test_utf8(void **state)
{
    (void)state;
    assert_int_equal(ad_utf8_sequence("a", 1), 1);
    assert_int_equal(ad_utf8_sequence("\xc3\xa9", 2), 2);         /* é */
    assert_int_equal(ad_utf8_sequence("\xe2\x82\xac", 3), 3);     /* € */
    assert_int_equal(ad_utf8_sequence("\xf0\x9f\x98\x80", 4), 4); /* 😀 */
    assert_int_equal(ad_utf8_sequence("\xc3\xa9", 1), 0);         /* cut short */
    assert_int_equal(ad_utf8_sequence("\xc0\xaf", 2), 0);         /* overlong */
    assert_int_equal(ad_utf8_sequence("\xed\xa0\x80", 3), 0);     /* a surrogate */
    assert_int_equal(ad_utf8_sequence("\xf4\x90\x80\x80", 4), 0); /* past U+10FFFF */
    assert_int_equal(ad_utf8_sequence("\xc3", SIZE_MAX), 0);      /* the NUL ends it */
    assert_true(ad_utf8_valid("caf\xc3\xa9", 5));
    assert_false(ad_utf8_valid("caf\xc3", 4));
    assert_false(ad_utf8_valid("\xff", 1));
    assert_true(ad_utf8_valid("", 0));
}

static void test_number(void **state)
{
    (void)state;
    static const char *const good[] = {"0", "-3", "+4.5", ".5", "5.", "1e3", "2.5E-3", "-0.0"};
    static const double values[] = {0, -3, 4.5, 0.5, 5, 1000, 0.0025, -0.0};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        double v = NAN;
        assert_true(ad_number_parse(good[i], strlen(good[i]), &v));
        assert_float_equal(v, values[i], 1e-12);
    }
    static const char *const bad[] = {"",    "-",   ".",  "e3", "1e",    "1e+", "0x10",
                                      "inf", "nan", " 1", "1 ", "1.2.3", "1,5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        double v = 42;
        assert_false(ad_number_parse(bad[i], strlen(bad[i]), &v));
        assert_float_equal(v, 42, 0);
    }
    /* Only len bytes count: "12" of "123". */
    double v;
    assert_true(ad_number_parse("123", 2, &v));
    assert_float_equal(v, 12, 0);
    /* Beyond a double: infinite, for the caller to refuse. */
    assert_true(ad_number_parse("1e999", 5, &v));
    assert_true(isinf(v));
    /* Longer than the parser's own buffer. */
    char longer[200];
    memset(longer, '0', sizeof longer - 2);
    longer[sizeof longer - 2] = '7';
    longer[sizeof longer - 1] = '\0';
    assert_true(ad_number_parse(longer, strlen(longer), &v));
    assert_float_equal(v, 7, 0);
}

static void test_grow(void **state)
{
    (void)state;
    int *items = NULL;
    size_t cap = 0;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(ad_grow(&items, &cap, (size_t)i + 1, sizeof *items), 0);
        assert_true(cap >= (size_t)i + 1);
        items[i] = i;
    }
    for (int i = 0; i < 1000; i++)
        assert_int_equal(items[i], i);
    size_t before = cap;
    /* Doubling: a thousand appends take a handful of reallocations. */
    assert_true(before < 2048);
    /* Enough room already: nothing changes. */
    int *same = items;
    assert_int_equal(ad_grow(&items, &cap, 10, sizeof *items), 0);
    assert_ptr_equal(items, same);
    assert_int_equal(cap, before);
    /* A size past SIZE_MAX is refused and leaves the array alone. */
    assert_int_equal(ad_grow(&items, &cap, SIZE_MAX / 2, sizeof *items), -1);
    assert_ptr_equal(items, same);
    assert_int_equal(cap, before);
    free(items);
}

static void test_errstr(void **state)
{
    (void)state;
    char errstr[16];
    assert_int_equal(ad_errstr_set(errstr, sizeof errstr, "bad %s", "line\nbreak"), -1);
    assert_string_equal(errstr, "bad line break");
    assert_int_equal(ad_errstr_set(errstr, sizeof errstr, "%s", "a sentence longer than that"), -1);
    assert_string_equal(errstr, "a sentence long");
    assert_int_equal(ad_errstr_set(NULL, 0, "nothing is written"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_number),
        cmocka_unit_test(test_grow),
        cmocka_unit_test(test_errstr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
