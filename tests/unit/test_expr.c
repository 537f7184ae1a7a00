/* Feature and filter expressions. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "config/expr.h"

static void test_features(void **state)
{
    (void)state;
    struct ad_settings_feature f = {0};
    const char *err;
    size_t off;

    assert_int_equal(ad_expr_parse_feature("count", &f, &err, &off), 0);
    assert_int_equal(f.kind, AD_FEATURE_COUNT);
    ad_expr_free_feature(&f);

    assert_int_equal(ad_expr_parse_feature("  max   latency_ms ", &f, &err, &off), 0);
    assert_int_equal(f.kind, AD_FEATURE_MAX);
    assert_string_equal(f.path, "latency_ms");
    ad_expr_free_feature(&f);

    assert_int_equal(ad_expr_parse_feature("count_if http.status>=500", &f, &err, &off), 0);
    assert_int_equal(f.kind, AD_FEATURE_COUNT_IF);
    assert_string_equal(f.predicate.path, "http.status");
    assert_int_equal(f.predicate.op, AD_OP_GE);
    assert_int_equal(f.predicate.type, AD_LITERAL_NUMBER);
    assert_true(f.predicate.number == 500);
    ad_expr_free_feature(&f);

    assert_int_equal(ad_expr_parse_feature("count_if labels[\"a b\"] == 'x y'", &f, &err, &off), 0);
    assert_string_equal(f.predicate.path, "labels[\"a b\"]");
    assert_string_equal(f.predicate.string, "x y");
    ad_expr_free_feature(&f);

    const char *kinds[] = {"sum x", "mean x", "min x", "last x"};
    const enum ad_feature_kind want[] = {AD_FEATURE_SUM, AD_FEATURE_MEAN, AD_FEATURE_MIN,
                                         AD_FEATURE_LAST};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ad_expr_parse_feature(kinds[i], &f, &err, &off), 0);
        assert_int_equal(f.kind, want[i]);
        ad_expr_free_feature(&f);
    }
}

static void test_predicates(void **state)
{
    (void)state;
    struct ad_predicate p;
    const char *err;
    size_t off;

    assert_int_equal(ad_expr_parse_predicate("trace_id exists", &p, &err, &off), 0);
    assert_int_equal(p.op, AD_OP_EXISTS);
    ad_expr_free_predicate(&p);
    assert_int_equal(ad_expr_parse_predicate("level != debug", &p, &err, &off), 0);
    assert_int_equal(p.op, AD_OP_NE);
    assert_int_equal(p.type, AD_LITERAL_STRING);
    assert_string_equal(p.string, "debug");
    ad_expr_free_predicate(&p);
    assert_int_equal(ad_expr_parse_predicate("ok == false", &p, &err, &off), 0);
    assert_int_equal(p.type, AD_LITERAL_BOOL);
    assert_false(p.boolean);
    ad_expr_free_predicate(&p);
    assert_int_equal(ad_expr_parse_predicate("user == null", &p, &err, &off), 0);
    assert_int_equal(p.type, AD_LITERAL_NULL);
    ad_expr_free_predicate(&p);
    assert_int_equal(ad_expr_parse_predicate("msg == \"say \\\"hi\\\"\"", &p, &err, &off), 0);
    assert_string_equal(p.string, "say \"hi\"");
    ad_expr_free_predicate(&p);
    assert_int_equal(ad_expr_parse_predicate("v < -1.5e3", &p, &err, &off), 0);
    assert_true(p.number == -1500);
    ad_expr_free_predicate(&p);
}

static void test_errors(void **state)
{
    (void)state;
    struct {
        const char *text;
        size_t offset;
    } cases[] = {
        {"", 0},
        {"counts", 0},
        {"count x", 6},
        {"count_if", 8},
        {"count_if a", 10},
        {"count_if a ~ b", 11},
        {"count_if a == ", 14},
        {"count_if a >= b", 14},
        {"count_if a == 'x", 14},
        {"count_if a === 1", 11},
        {"count_if a == 1 2", 16},
        {"sum", 3},
        {"sum a b", 6},
        {"sum a..b", 6},
        {"mean $x", 6},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ad_settings_feature f = {0};
        const char *err = NULL;
        size_t off = 999;
        if (ad_expr_parse_feature(cases[i].text, &f, &err, &off) != -1)
            fail_msg("\"%s\" parsed", cases[i].text);
        if (off != cases[i].offset)
            fail_msg("\"%s\": offset %zu, want %zu (%s)", cases[i].text, off, cases[i].offset, err);
        assert_null(f.path);
        assert_null(f.predicate.path);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features),
        cmocka_unit_test(test_predicates),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
