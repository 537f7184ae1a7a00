/* JSON paths of extraction rules: parsing, errors with offsets, lookups. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "config/jpath.h"

static void test_forms(void **state)
{
    (void)state;
    struct ad_jpath p;
    const char *err;
    size_t off;

    assert_int_equal(ad_jpath_parse("level", &p, &err, &off), 0);
    assert_int_equal(p.len, 1);
    assert_string_equal(p.segments[0].key, "level");
    ad_jpath_free(&p);

    assert_int_equal(ad_jpath_parse("$.http.status", &p, &err, &off), 0);
    assert_int_equal(p.len, 2);
    assert_string_equal(p.segments[1].key, "status");
    ad_jpath_free(&p);

    assert_int_equal(ad_jpath_parse("k8s.labels[\"app.kubernetes.io/name\"]", &p, &err, &off), 0);
    assert_int_equal(p.len, 3);
    assert_string_equal(p.segments[2].key, "app.kubernetes.io/name");
    ad_jpath_free(&p);

    assert_int_equal(ad_jpath_parse("$[2]['it''s']", &p, &err, &off), -1);
    assert_int_equal(ad_jpath_parse("$[2]['it\\'s'].v", &p, &err, &off), 0);
    assert_int_equal(p.len, 3);
    assert_int_equal(p.segments[0].type, AD_JPATH_INDEX);
    assert_int_equal(p.segments[0].index, 2);
    assert_string_equal(p.segments[1].key, "it's");
    ad_jpath_free(&p);
}

static void test_errors_point_at_the_problem(void **state)
{
    (void)state;
    struct {
        const char *text;
        size_t offset;
    } cases[] = {{"", 0},     {"$", 1},      {"a..b", 2}, {"a.", 2}, {"a[", 2},         {"a[1", 3},
                 {"a[x]", 2}, {"a[\"b]", 1}, {"a b", 1},  {"$x", 1}, {"a[99999999]", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ad_jpath p;
        const char *err = NULL;
        size_t off = 999;
        if (ad_jpath_parse(cases[i].text, &p, &err, &off) != -1)
            fail_msg("\"%s\" parsed", cases[i].text);
        assert_non_null(err);
        if (off != cases[i].offset)
            fail_msg("\"%s\": offset %zu, want %zu (%s)", cases[i].text, off, cases[i].offset, err);
    }
    /* Deeper than the bound. */
    char deep[200] = "a";
    for (int i = 0; i < 40; i++)
        strcat(deep, ".b");
    struct ad_jpath p;
    const char *err;
    size_t off;
    assert_int_equal(ad_jpath_parse(deep, &p, &err, &off), -1);
}

static void test_lookup(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *doc = json_loads("{\"a\": {\"b\": [10, {\"c\": \"x\"}]}, \"d.e\": 1}", 0, &jerr);
    struct ad_jpath p;
    const char *err;
    size_t off;

    assert_int_equal(ad_jpath_parse("a.b[1].c", &p, &err, &off), 0);
    assert_string_equal(json_string_value(ad_jpath_get(&p, doc)), "x");
    ad_jpath_free(&p);
    assert_int_equal(ad_jpath_parse("a.b[0]", &p, &err, &off), 0);
    assert_int_equal(json_integer_value(ad_jpath_get(&p, doc)), 10);
    ad_jpath_free(&p);
    assert_int_equal(ad_jpath_parse("[\"d.e\"]", &p, &err, &off), 0);
    assert_int_equal(json_integer_value(ad_jpath_get(&p, doc)), 1);
    ad_jpath_free(&p);
    const char *absent[] = {"a.b[2]", "a.x", "a.b.c", "a[0]", "z"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        assert_int_equal(ad_jpath_parse(absent[i], &p, &err, &off), 0);
        assert_null(ad_jpath_get(&p, doc));
        ad_jpath_free(&p);
    }
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms),
        cmocka_unit_test(test_errors_point_at_the_problem),
        cmocka_unit_test(test_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
