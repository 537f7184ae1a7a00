/*
 * The JSON extractor: both engines on the same documents. Every document runs through both,
 * which must agree exactly (result, types, numbers bit for bit, strings byte for byte); the
 * expectations are then checked once.
 */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stream/json_extract.h"

#define MAX_PATHS 64

struct pair {
    struct ad_extractor *x[2]; /* simdjson, jansson */
    size_t n;
    struct ad_json_value values[2][MAX_PATHS];
};

static const enum ad_extract_engine engines[2] = {AD_EXTRACT_SIMDJSON, AD_EXTRACT_JANSSON};

static void pair_open(struct pair *p, const char *const *texts, size_t n, size_t max_bytes)
{
    struct ad_jpath paths[MAX_PATHS];
    assert_true(n <= MAX_PATHS);
    for (size_t i = 0; i < n; i++) {
        const char *err;
        size_t off;
        if (ad_jpath_parse(texts[i], &paths[i], &err, &off) < 0)
            fail_msg("path %s: %s", texts[i], err);
    }
    p->n = n;
    for (int e = 0; e < 2; e++) {
        char errstr[256];
        p->x[e] = ad_extractor_new(engines[e], paths, n, max_bytes, errstr, sizeof errstr);
        if (!p->x[e])
            fail_msg("extractor: %s", errstr);
    }
    for (size_t i = 0; i < n; i++)
        ad_jpath_free(&paths[i]);
}

static void pair_close(struct pair *p)
{
    ad_extractor_destroy(p->x[0]);
    ad_extractor_destroy(p->x[1]);
}

static bool value_equal(const struct ad_json_value *a, const struct ad_json_value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case AD_JSON_BOOL:
        return a->boolean == b->boolean;
    case AD_JSON_NUMBER:
        return memcmp(&a->number, &b->number, sizeof a->number) == 0 ||
               (isnan(a->number) && isnan(b->number));
    case AD_JSON_STRING:
        return a->string_len == b->string_len &&
               (a->string_len == 0 || memcmp(a->string, b->string, a->string_len) == 0);
    default:
        return true;
    }
}

static void describe(const struct ad_json_value *v, char *out, size_t size)
{
    switch (v->type) {
    case AD_JSON_NUMBER:
        snprintf(out, size, "number %.17g", v->number);
        break;
    case AD_JSON_STRING:
        snprintf(out, size, "string \"%.*s\" (%zu bytes)", (int)v->string_len, v->string,
                 v->string_len);
        break;
    case AD_JSON_BOOL:
        snprintf(out, size, "bool %d", v->boolean);
        break;
    default:
        snprintf(out, size, "type %d", (int)v->type);
    }
}

/* Runs json (len bytes, copied into a buffer of exactly that size) through both engines. */
static enum ad_extract_result run_len(struct pair *p, const char *json, size_t len)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, json, len);
    enum ad_extract_result r[2];
    for (int e = 0; e < 2; e++)
        r[e] = ad_extractor_run(p->x[e], copy, len, p->values[e]);
    free(copy);
    if (r[0] != r[1])
        fail_msg("%.200s: simdjson %s, jansson %s", json, ad_extract_result_name(r[0]),
                 ad_extract_result_name(r[1]));
    for (size_t i = 0; i < p->n; i++) {
        if (!value_equal(&p->values[0][i], &p->values[1][i])) {
            char a[256], b[256];
            describe(&p->values[0][i], a, sizeof a);
            describe(&p->values[1][i], b, sizeof b);
            fail_msg("%.200s: path %zu: simdjson %s, jansson %s", json, i, a, b);
        }
        if (r[0] != AD_EXTRACT_OK && p->values[0][i].type != AD_JSON_ABSENT)
            fail_msg("%.200s: %s but path %zu is set", json, ad_extract_result_name(r[0]), i);
    }
    return r[0];
}

static enum ad_extract_result run(struct pair *p, const char *json)
{
    return run_len(p, json, strlen(json));
}

static const struct ad_json_value *val(struct pair *p, size_t i)
{
    return &p->values[0][i];
}

static void assert_string_value(const struct ad_json_value *v, const char *s, size_t len)
{
    assert_int_equal(v->type, AD_JSON_STRING);
    assert_int_equal(v->string_len, len);
    assert_memory_equal(v->string, s, len);
}

static void assert_number_value(const struct ad_json_value *v, double d)
{
    assert_int_equal(v->type, AD_JSON_NUMBER);
    if (memcmp(&v->number, &d, sizeof d) != 0)
        fail_msg("number %.17g, want %.17g", v->number, d);
}

static void test_types(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {"s", "n", "t", "f", "z", "o", "a", "missing", "e", "ea", "eo"};
    pair_open(&p, paths, 11, 1 << 20);
    assert_int_equal(run(&p, "{\"s\":\"x\",\"n\":-12.5,\"t\":true,\"f\":false,\"z\":null,"
                             "\"o\":{\"k\":1},\"a\":[1,\"2\"],\"e\":\"\",\"ea\":[],\"eo\":{}}"),
                     AD_EXTRACT_OK);
    assert_string_value(val(&p, 0), "x", 1);
    assert_number_value(val(&p, 1), -12.5);
    assert_int_equal(val(&p, 2)->type, AD_JSON_BOOL);
    assert_true(val(&p, 2)->boolean);
    assert_int_equal(val(&p, 3)->type, AD_JSON_BOOL);
    assert_false(val(&p, 3)->boolean);
    assert_int_equal(val(&p, 4)->type, AD_JSON_NULL);
    assert_int_equal(val(&p, 5)->type, AD_JSON_OBJECT);
    assert_int_equal(val(&p, 6)->type, AD_JSON_ARRAY);
    assert_int_equal(val(&p, 7)->type, AD_JSON_ABSENT);
    assert_string_value(val(&p, 8), "", 0);
    assert_int_equal(val(&p, 9)->type, AD_JSON_ARRAY);
    assert_int_equal(val(&p, 10)->type, AD_JSON_OBJECT);

    /* Whitespace everywhere JSON allows it. */
    assert_int_equal(run(&p, " \t\r\n{ \"s\" : \"y\" ,\n\"n\"\t:\r1 } \n"), AD_EXTRACT_OK);
    assert_string_value(val(&p, 0), "y", 1);
    assert_number_value(val(&p, 1), 1);
    assert_int_equal(val(&p, 2)->type, AD_JSON_ABSENT);

    assert_int_equal(run(&p, "{}"), AD_EXTRACT_OK);
    for (size_t i = 0; i < p.n; i++)
        assert_int_equal(val(&p, i)->type, AD_JSON_ABSENT);
    pair_close(&p);
}

static void test_nested_paths_and_indexes(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {
        "http.status", "http.req.path", "$.items[1].ms", "items[0]",      "m[1][0]",
        "items[5].ms", "items.ms",      "http[0]",       "http.status.x", "$[0]",
        "m[0][2]",     "http",          "$.http.status", "m[0][1]",       "deep.a.b.c.d.e",
    };
    pair_open(&p, paths, 15, 1 << 20);
    assert_int_equal(run(&p, "{\"http\":{\"status\":200,\"req\":{\"path\":\"/x\"}},"
                             "\"items\":[{\"ms\":1},{\"ms\":2.5}],\"m\":[[1,2],[3]],"
                             "\"deep\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":\"bottom\"}}}}}}"),
                     AD_EXTRACT_OK);
    assert_number_value(val(&p, 0), 200);
    assert_string_value(val(&p, 1), "/x", 2);
    assert_number_value(val(&p, 2), 2.5);
    assert_int_equal(val(&p, 3)->type, AD_JSON_OBJECT);
    assert_number_value(val(&p, 4), 3);
    assert_int_equal(val(&p, 5)->type, AD_JSON_ABSENT);  /* index past the end */
    assert_int_equal(val(&p, 6)->type, AD_JSON_ABSENT);  /* a key into an array */
    assert_int_equal(val(&p, 7)->type, AD_JSON_ABSENT);  /* an index into an object */
    assert_int_equal(val(&p, 8)->type, AD_JSON_ABSENT);  /* through a number */
    assert_int_equal(val(&p, 9)->type, AD_JSON_ABSENT);  /* the root is an object */
    assert_int_equal(val(&p, 10)->type, AD_JSON_ABSENT); /* index past the end */
    assert_int_equal(val(&p, 11)->type, AD_JSON_OBJECT);
    assert_number_value(val(&p, 12), 200); /* the same path twice */
    assert_number_value(val(&p, 13), 2);
    assert_string_value(val(&p, 14), "bottom", 6);

    /* The same paths through values of other types. */
    assert_int_equal(run(&p, "{\"http\":\"up\",\"items\":{\"1\":{\"ms\":1}},\"m\":[1,[2]],"
                             "\"deep\":{\"a\":[{\"b\":1}]}}"),
                     AD_EXTRACT_OK);
    for (size_t i = 0; i < p.n; i++)
        if (i != 11 && i != 4)
            assert_int_equal(val(&p, i)->type, AD_JSON_ABSENT);
    assert_string_value(val(&p, 11), "up", 2);
    assert_number_value(val(&p, 4), 2);
    pair_close(&p);
}

static void test_quoted_and_escaped_keys(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {
        "[\"app.kubernetes.io/name\"]",
        "[\"a\\\"b\"]",
        "[\"caf\xc3\xa9\"]",
        "['back\\\\slash']",
        "k8s.labels[\"app.kubernetes.io/name\"]",
        "a",
        "[\"with space\"]",
        "[\"\"]",
        "[\"\xf0\x9f\x98\x80\"]",
        "[\"tab\tkey\"]",
    };
    pair_open(&p, paths, 10, 1 << 20);
    assert_int_equal(run(&p, "{\"app.kubernetes.io/name\":\"x\",\"a\\\"b\":1,\"caf\\u00e9\":2,"
                             "\"back\\\\slash\":3,\"k8s\":{\"labels\":{\"app.kubernetes.io/"
                             "name\":\"checkout\"}},\"\\u0061\":4,\"with space\":5,\"\":6,"
                             "\"\\ud83d\\ude00\":7,\"tab\\tkey\":8}"),
                     AD_EXTRACT_OK);
    assert_string_value(val(&p, 0), "x", 1);
    assert_number_value(val(&p, 1), 1);
    assert_number_value(val(&p, 2), 2);
    assert_number_value(val(&p, 3), 3);
    assert_string_value(val(&p, 4), "checkout", 8);
    assert_number_value(val(&p, 5), 4);
    assert_number_value(val(&p, 6), 5);
    assert_number_value(val(&p, 7), 6);
    assert_number_value(val(&p, 8), 7);
    assert_number_value(val(&p, 9), 8);

    /* Raw UTF-8 in a key matches the same path as its escape; "\/" is "/". */
    assert_int_equal(run(&p, "{\"caf\xc3\xa9\":9,\"app.kubernetes.io\\/name\":10}"), AD_EXTRACT_OK);
    assert_number_value(val(&p, 2), 9);
    assert_number_value(val(&p, 0), 10);
    /* A key that only starts like a path key. */
    assert_int_equal(run(&p, "{\"ab\":1,\"a\\\"bc\":2,\"a\\\"\":3}"), AD_EXTRACT_OK);
    assert_int_equal(val(&p, 1)->type, AD_JSON_ABSENT);
    assert_int_equal(val(&p, 5)->type, AD_JSON_ABSENT);
    pair_close(&p);
}

static void test_duplicate_keys_first_wins(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {"a", "o.x", "o.y", "s", "z.q", "arr[0]"};
    pair_open(&p, paths, 6, 1 << 20);
    assert_int_equal(run(&p, "{\"a\":1,\"a\":2}"), AD_EXTRACT_OK);
    assert_number_value(val(&p, 0), 1);
    /* The first object counts as a whole: its absent key is not taken from the second. */
    assert_int_equal(run(&p, "{\"o\":{\"x\":1},\"o\":{\"x\":2,\"y\":3}}"), AD_EXTRACT_OK);
    assert_number_value(val(&p, 1), 1);
    assert_int_equal(val(&p, 2)->type, AD_JSON_ABSENT);
    assert_int_equal(run(&p, "{\"o\":{\"x\":1,\"x\":2,\"y\":\"a\",\"y\":\"b\"}}"), AD_EXTRACT_OK);
    assert_number_value(val(&p, 1), 1);
    assert_string_value(val(&p, 2), "a", 1);
    assert_int_equal(run(&p, "{\"s\":\"first\",\"s\":\"second\",\"a\":true}"), AD_EXTRACT_OK);
    assert_string_value(val(&p, 3), "first", 5);
    /* An escaped spelling of the same key is the same key. */
    assert_int_equal(run(&p, "{\"\\u0061\":\"esc\",\"a\":\"raw\"}"), AD_EXTRACT_OK);
    assert_string_value(val(&p, 0), "esc", 3);
    assert_int_equal(run(&p, "{\"a\":\"raw\",\"\\u0061\":\"esc\"}"), AD_EXTRACT_OK);
    assert_string_value(val(&p, 0), "raw", 3);
    /* Duplicates outside the paths, and a duplicate whose first value is of another type. */
    assert_int_equal(run(&p, "{\"k\":{\"q\":1,\"q\":2},\"a\":5,\"z\":3,\"z\":{\"q\":4},"
                             "\"arr\":[{\"b\":1,\"b\":2}],\"o\":null,\"o\":{\"x\":1}}"),
                     AD_EXTRACT_OK);
    assert_number_value(val(&p, 0), 5);
    assert_int_equal(val(&p, 4)->type, AD_JSON_ABSENT);
    assert_int_equal(val(&p, 5)->type, AD_JSON_OBJECT);
    assert_int_equal(val(&p, 1)->type, AD_JSON_ABSENT);
    pair_close(&p);
}

static void test_strings(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {"e", "u", "esc", "nul", "emoji", "raw", "long"};
    pair_open(&p, paths, 7, 1 << 20);
    assert_int_equal(run(&p, "{\"e\":\"\",\"u\":\"caf\\u00e9 \\u20ac\",\"esc\":"
                             "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\",\"nul\":\"a\\u0000b\","
                             "\"emoji\":\"\\ud83d\\ude00\",\"raw\":\"\xc3\xa9\xe2\x82\xac\","
                             "\"long\":\"0123456789012345678901234567890123456789012345678901234"
                             "5678901234567890123456789\"}"),
                     AD_EXTRACT_OK);
    assert_string_value(val(&p, 0), "", 0);
    assert_string_value(val(&p, 1), "caf\xc3\xa9 \xe2\x82\xac", 9);
    assert_string_value(val(&p, 2), "\"\\/\b\f\n\r\t", 8);
    assert_string_value(val(&p, 3), "a\0b", 3);
    assert_string_value(val(&p, 4), "\xf0\x9f\x98\x80", 4);
    assert_string_value(val(&p, 5), "\xc3\xa9\xe2\x82\xac", 5);
    assert_int_equal(val(&p, 6)->string_len, 80);
    pair_close(&p);
}

static void test_numbers(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n"};
    pair_open(&p, paths, 14, 1 << 20);
    assert_int_equal(run(&p, "{\"a\":0,\"b\":-0,\"c\":1.5,\"d\":-2.25e-3,\"e\":1e308,\"f\":1E+2,"
                             "\"g\":12345678901234567890,\"h\":9007199254740993,\"i\":1e-400,"
                             "\"j\":1e-99999999999999999999,\"k\":0.1,"
                             "\"l\":1e-0000000000000000000000001,\"m\":-9223372036854775809,"
                             "\"n\":2.2250738585072011e-308}"),
                     AD_EXTRACT_OK);
    assert_number_value(val(&p, 0), 0.0);
    assert_number_value(val(&p, 1), -0.0);
    assert_true(signbit(val(&p, 1)->number));
    assert_number_value(val(&p, 2), 1.5);
    assert_number_value(val(&p, 3), -2.25e-3);
    assert_number_value(val(&p, 4), 1e308);
    assert_number_value(val(&p, 5), 100);
    assert_number_value(val(&p, 6), 12345678901234567890.0);
    assert_number_value(val(&p, 7), 9007199254740992.0); /* beyond 2^53: rounded */
    assert_number_value(val(&p, 8), 0.0);                /* underflow is zero, as strtod says */
    assert_number_value(val(&p, 9), 0.0);
    assert_number_value(val(&p, 10), 0.1);
    assert_number_value(val(&p, 11), 0.1);
    assert_number_value(val(&p, 12), -9223372036854775809.0);
    assert_number_value(val(&p, 13), 2.2250738585072011e-308);

    /* "0." and more than 19 digits: simdjson 3.0.1 wraps the mantissa (its issue #2093). */
    assert_int_equal(run(&p,
                         "{\"a\":0.95000000000000000000,\"b\":-0.70003000000001732648,"
                         "\"c\":0.733613399648494655216429,\"d\":0.98769480391895615527830566e7,"
                         "\"e\":0.00000000000000000000000000001,\"f\":0.1234567890123456789}"),
                     AD_EXTRACT_OK);
    assert_number_value(val(&p, 0), 0.95);
    assert_number_value(val(&p, 1), -0.70003000000001732648);
    assert_number_value(val(&p, 2), 0.733613399648494655216429);
    assert_number_value(val(&p, 3), 0.98769480391895615527830566e7);
    assert_number_value(val(&p, 4), 1e-29);
    assert_number_value(val(&p, 5), 0.1234567890123456789);

    /* Overflow to infinity is refused by both, wherever it is. */
    assert_int_equal(run(&p, "{\"a\":1e309}"), AD_EXTRACT_MALFORMED);
    assert_int_equal(run(&p, "{\"zz\":[-1e99999999999999999999]}"), AD_EXTRACT_MALFORMED);
    assert_int_equal(run(&p, "{\"zz\":1.8e308}"), AD_EXTRACT_MALFORMED);
    pair_close(&p);
}

static void test_not_object(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {"a", "$[0]"};
    pair_open(&p, paths, 2, 1 << 20);
    const char *docs[] = {"[1,2]",
                          "\"str\"",
                          "42",
                          "true",
                          "false",
                          "null",
                          " [ ] ",
                          "[{\"a\":1}]",
                          "-0.5e3",
                          "\"\\u00e9\"",
                          "1e-99999999999999999999"};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        if (run(&p, docs[i]) != AD_EXTRACT_NOT_OBJECT)
            fail_msg("%s is not NOT_OBJECT", docs[i]);
    pair_close(&p);
}

static void test_malformed(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {"a", "z", "z.q"};
    pair_open(&p, paths, 3, 1 << 20);
    const char *docs[] = {
        "",
        " ",
        "{",
        "}",
        "{\"a\":1",
        "{\"a\":1}x",
        "{\"a\":1}{}",
        "{\"a\":1}}",
        "{\"a\":1,}",
        "{,\"a\":1}",
        "{\"a\" 1}",
        "{\"a\":}",
        "{\"a\"}",
        "{a:1}",
        "{'a':1}",
        "{\"a\":1 \"z\":2}",
        "{\"a\":tru}",
        "{\"a\":nul}",
        "{\"a\":True}",
        "{\"a\":[1 2]}",
        "{\"a\":[1,2}}",
        "{\"a\":{\"b\":1]}",
        "{\"a\":\"\xff\"}",
        "{\"a\":\"\xc3\"}",
        "{\"a\":\"\xed\xa0\x80\"}", /* a UTF-16 surrogate written as UTF-8 */
        "{\"a\":\"\xc0\xaf\"}",     /* overlong */
        "{\"a\":\"x}",
        "{\"a\":\"\x01\"}",
        "{\"a\":\"tab\tin string\"}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\udc00\"}",
        "{\"a\":\"\\ud800\\u0041\"}",
        "{\"a\\u0000\":1}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":-}",
        "{\"a\":+1}",
        "{\"a\":1e}",
        "{\"a\":0x10}",
        "{\"a\":NaN}",
        "{\"a\":Infinity}",
        "{\"a\":1e400}",
        "[1,]",
        "1 2",
        "\"abc",
        "\xef\xbb\xbf{}",
        "{\"a\":1}\x0c",
        /* Faults inside values no path asks for. */
        "{\"z\":[1 2],\"a\":1}",
        "{\"z\":[1,2}},\"a\":1}",
        "{\"z\":nul,\"a\":1}",
        "{\"z\":[true false],\"a\":1}",
        "{\"z\":\"\\q\",\"a\":1}",
        "{\"y\":{\"k\\q\":1},\"a\":1}",
        "{\"y\":{\"k\\u0000\":1},\"a\":1}",
        "{\"y\":[{\"k\":1,}],\"a\":1}",
        "{\"y\":-01,\"a\":1}",
        "{\"y\":[\"\\ud800\"],\"a\":1}",
        "{\"y\":{\"\\ud800\":1},\"a\":1}",
        /* A key where a value belongs: simdjson would skip `"k":` as a key (found by fuzzing). */
        "{\"z\":[\"k\":1],\"a\":1}",
        "{\"z\":[{\"m\":2},\"k\":1}],\"a\":1}",
        "[\"k\":1]",
        "{\"a\":[\"k\":\"v\"]}",
        "{\"z\":[1e-99999999999999999999:1],\"a\":1}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        if (run(&p, docs[i]) != AD_EXTRACT_MALFORMED)
            fail_msg("%s is not MALFORMED", docs[i]);
    /* NUL bytes: after the document, and raw inside a string. */
    assert_int_equal(run_len(&p, "{\"a\":1}\0", 8), AD_EXTRACT_MALFORMED);
    assert_int_equal(run_len(&p, "{\"a\":\"\0\"}", 9), AD_EXTRACT_MALFORMED);
    assert_int_equal(run_len(&p, "\0", 1), AD_EXTRACT_MALFORMED);
    assert_int_equal(run_len(&p, "true\0 ", 6), AD_EXTRACT_MALFORMED);
    assert_int_equal(run_len(&p, "{\"a\":1\0}", 8), AD_EXTRACT_MALFORMED);
    assert_int_equal(run_len(&p, "{\"a\":null\0}", 11), AD_EXTRACT_MALFORMED);
    /* Every truncation of a valid document. */
    const char *doc = "{\"a\":[1,{\"b\":\"c\\u00e9\"}],\"z\":{\"q\":-1.5e3,\"r\":null}}";
    for (size_t len = 0; len < strlen(doc); len++)
        assert_int_equal(run_len(&p, doc, len), AD_EXTRACT_MALFORMED);
    assert_int_equal(run(&p, doc), AD_EXTRACT_OK);
    assert_number_value(val(&p, 2), -1500);
    pair_close(&p);
}

static char *nested(size_t depth)
{
    /* {"a": [[...]] } with depth levels in all, the root included */
    char *s = malloc(2 * depth + 8);
    assert_non_null(s);
    size_t n = 0;
    n += (size_t)sprintf(s, "{\"a\":");
    memset(s + n, '[', depth - 1);
    n += depth - 1;
    memset(s + n, ']', depth - 1);
    n += depth - 1;
    strcpy(s + n, "}");
    return s;
}

static void test_depth(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {"a"};
    pair_open(&p, paths, 1, 1 << 20);
    char *ok = nested(2048), *deep = nested(2049);
    assert_int_equal(run(&p, ok), AD_EXTRACT_OK);
    assert_int_equal(val(&p, 0)->type, AD_JSON_ARRAY);
    assert_int_equal(run(&p, deep), AD_EXTRACT_MALFORMED);
    free(ok);
    free(deep);
    pair_close(&p);
}

static void test_too_large(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {"a"};
    pair_open(&p, paths, 1, 16);
    assert_int_equal(run(&p, "{\"a\":1234567890}"), AD_EXTRACT_OK); /* 16 bytes */
    assert_number_value(val(&p, 0), 1234567890);
    assert_int_equal(run(&p, "{\"a\":12345678901}"), AD_EXTRACT_TOO_LARGE);
    assert_int_equal(val(&p, 0)->type, AD_JSON_ABSENT);
    assert_int_equal(run(&p, "12345678901234567"), AD_EXTRACT_TOO_LARGE);
    /* A scalar of exactly max_bytes still fits (the simdjson engine wraps it in brackets). */
    assert_int_equal(run(&p, "1234567890123456"), AD_EXTRACT_NOT_OBJECT);
    pair_close(&p);
}

static void test_buffers_grow_and_strings_stay(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {"s", "t"};
    pair_open(&p, paths, 2, 4 << 20);
    size_t big = 3 << 20;
    char *doc = malloc(big + 64);
    assert_non_null(doc);
    int n = sprintf(doc, "{\"t\":\"tail\",\"pad\":\"");
    memset(doc + n, 'x', big);
    strcpy(doc + n + big, "\",\"s\":\"big\"}");
    for (int round = 0; round < 3; round++) {
        assert_int_equal(run(&p, "{\"s\":\"small\"}"), AD_EXTRACT_OK);
        assert_string_value(val(&p, 0), "small", 5);
        assert_int_equal(run(&p, doc), AD_EXTRACT_OK);
        assert_string_value(val(&p, 0), "big", 3);
        assert_string_value(val(&p, 1), "tail", 4);
    }
    free(doc);
    /* Strings stay valid after the caller's buffer is gone (run_len frees its copy). */
    assert_int_equal(run(&p, "{\"s\":\"esc\\u00e9aped\",\"t\":\"plain\"}"), AD_EXTRACT_OK);
    assert_string_value(&p.values[0][0], "esc\303\251aped", 9);
    assert_string_value(&p.values[1][1], "plain", 5);
    pair_close(&p);
}

static void test_no_paths_and_names(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p, NULL, 0, 1024);
    assert_int_equal(run(&p, "{\"a\":1}"), AD_EXTRACT_OK);
    assert_int_equal(run(&p, "{\"a\":1"), AD_EXTRACT_MALFORMED);
    pair_close(&p);
    assert_string_equal(ad_extract_result_name(AD_EXTRACT_OK), "ok");
    assert_string_equal(ad_extract_result_name(AD_EXTRACT_MALFORMED), "malformed");
    assert_string_equal(ad_extract_result_name(AD_EXTRACT_NOT_OBJECT), "not_object");
    assert_string_equal(ad_extract_result_name(AD_EXTRACT_TOO_LARGE), "too_large");

    char errstr[128] = "";
    assert_null(ad_extractor_new((enum ad_extract_engine)7, NULL, 0, 1024, errstr, sizeof errstr));
    assert_true(strlen(errstr) > 0);
    ad_extractor_destroy(NULL);
}

/*
 * The differential corpus: documents generated from a fixed seed, with few distinct keys (so
 * paths hit and keys repeat), keys sometimes written with escapes, and every kind of value.
 */
static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33) % n;
}

struct buf {
    char *s;
    size_t len, cap;
};

static void put(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

static const char *const keys[] = {"a", "b", "c", "d.e", "f g", "caf\xc3\xa9", "x\"y", "1", ""};
/* How each key may be written in JSON. */
static const char *const key_spellings[][2] = {
    {"\"a\"", "\"\\u0061\""},
    {"\"b\"", "\"b\""},
    {"\"c\"", "\"\\u0063\""},
    {"\"d.e\"", "\"d\\u002ee\""},
    {"\"f g\"", "\"f\\u0020g\""},
    {"\"caf\xc3\xa9\"", "\"caf\\u00e9\""},
    {"\"x\\\"y\"", "\"x\\u0022y\""},
    {"\"1\"", "\"1\""},
    {"\"\"", "\"\""},
};
#define N_KEYS (sizeof keys / sizeof keys[0])

static void gen_value(struct buf *b, int depth)
{
    static const char *const scalars[] = {"0",
                                          "-0",
                                          "1",
                                          "-17",
                                          "3.25",
                                          "1e3",
                                          "-2.5E-7",
                                          "1e308",
                                          "5e-324",
                                          "0.1",
                                          "123456789012345678901234567890",
                                          "true",
                                          "false",
                                          "null",
                                          "\"\"",
                                          "\"plain\"",
                                          "\"caf\\u00e9\"",
                                          "\"\\\"q\\\"\"",
                                          "\"\\ud83d\\ude00\"",
                                          "\"tab\\there\"",
                                          "\"a\\u0000b\"",
                                          "\"\xc3\xa9t\xc3\xa9\"",
                                          "\"\\/\\\\\"",
                                          "9007199254740993",
                                          "1e-400",
                                          "-1E+2"};
    uint32_t kind = depth >= 5 ? 2 : rnd(6);
    if (kind == 0) {
        size_t n = rnd(5);
        put(b, "{");
        for (size_t i = 0; i < n; i++) {
            if (i)
                put(b, rnd(4) ? "," : " , ");
            put(b, key_spellings[rnd(N_KEYS)][rnd(2)]);
            put(b, rnd(3) ? ":" : " :\n");
            gen_value(b, depth + 1);
        }
        put(b, "}");
    } else if (kind == 1) {
        size_t n = rnd(5);
        put(b, "[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                put(b, ",");
            gen_value(b, depth + 1);
        }
        put(b, "]");
    } else {
        put(b, scalars[rnd(sizeof scalars / sizeof scalars[0])]);
    }
}

static void gen_path(char *out, size_t size)
{
    size_t n = 1 + rnd(3), used = 0;
    for (size_t i = 0; i < n; i++) {
        int w;
        if (i > 0 && rnd(4) == 0) {
            w = snprintf(out + used, size - used, "[%u]", rnd(3));
        } else {
            const char *k = keys[rnd(N_KEYS)];
            char quoted[32];
            size_t q = 0;
            for (const char *c = k; *c; c++) {
                if (*c == '"' || *c == '\\')
                    quoted[q++] = '\\';
                quoted[q++] = *c;
            }
            quoted[q] = '\0';
            w = snprintf(out + used, size - used, "[\"%s\"]", quoted);
        }
        used += (size_t)w;
    }
}

static void test_differential_corpus(void **state)
{
    (void)state;
    char texts[48][128];
    const char *paths[48];
    rng_state = 20261122;
    for (size_t i = 0; i < 48; i++) {
        gen_path(texts[i], sizeof texts[i]);
        paths[i] = texts[i];
    }
    struct pair p;
    pair_open(&p, paths, 48, 1 << 20);
    size_t ok = 0, set = 0;
    for (int doc = 0; doc < 200; doc++) {
        struct buf b = {0};
        /* A top-level object with 1 to 8 fields. */
        put(&b, "{");
        size_t n = 1 + rnd(8);
        for (size_t i = 0; i < n; i++) {
            if (i)
                put(&b, ",");
            put(&b, key_spellings[rnd(N_KEYS)][rnd(2)]);
            put(&b, ":");
            gen_value(&b, 1);
        }
        put(&b, "}");
        if (run_len(&p, b.s, b.len) == AD_EXTRACT_OK)
            ok++;
        for (size_t i = 0; i < p.n; i++)
            set += val(&p, i)->type != AD_JSON_ABSENT;
        /* A cut or a flipped byte: both must still agree. */
        run_len(&p, b.s, rnd((uint32_t)b.len));
        b.s[rnd((uint32_t)b.len)] = "{}[]\",:\\x0"[rnd(10)];
        run_len(&p, b.s, b.len);
        free(b.s);
    }
    assert_int_equal(ok, 200);
    /* The corpus is only worth something if the paths find values. */
    if (set < 1000)
        fail_msg("only %zu values found", set);
    pair_close(&p);
}

/* Random numbers in every form JSON allows: both engines must read the same double. */
static void test_number_corpus(void **state)
{
    (void)state;
    struct pair p;
    const char *paths[] = {"n"};
    pair_open(&p, paths, 1, 1 << 20);
    rng_state = 3;
    for (int round = 0; round < 5000; round++) {
        char doc[160] = "{\"n\":";
        size_t n = strlen(doc);
        if (rnd(2))
            doc[n++] = '-';
        if (rnd(4) == 0) {
            doc[n++] = '0';
        } else {
            doc[n++] = (char)('1' + rnd(9));
            for (uint32_t k = rnd(25); k > 0; k--)
                doc[n++] = (char)('0' + (rnd(3) ? rnd(10) : 0));
        }
        if (rnd(2)) {
            doc[n++] = '.';
            for (uint32_t k = rnd(4) ? 0 : rnd(30); k > 0; k--)
                doc[n++] = '0';
            for (uint32_t k = 1 + rnd(28); k > 0; k--)
                doc[n++] = (char)('0' + rnd(10));
        }
        if (rnd(3) == 0) {
            doc[n++] = rnd(2) ? 'e' : 'E';
            uint32_t sign = rnd(3);
            if (sign)
                doc[n++] = sign == 1 ? '-' : '+';
            for (uint32_t k = 1 + rnd(4); k > 0; k--)
                doc[n++] = (char)('0' + rnd(10));
        }
        doc[n++] = '}';
        run_len(&p, doc, n);
    }
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_nested_paths_and_indexes),
        cmocka_unit_test(test_quoted_and_escaped_keys),
        cmocka_unit_test(test_duplicate_keys_first_wins),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_not_object),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_buffers_grow_and_strings_stay),
        cmocka_unit_test(test_no_paths_and_names),
        cmocka_unit_test(test_differential_corpus),
        cmocka_unit_test(test_number_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
