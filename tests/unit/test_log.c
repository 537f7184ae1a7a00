/* Structured log lines: logfmt and JSON, escaping, levels, bounds. */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#define AD_LOG_MODULE "test"
#include "base/log.h"

static FILE *sink;

static int setup(void **state)
{
    (void)state;
    sink = tmpfile();
    ad_log_set_fd(fileno(sink));
    ad_log_set_level(AD_LOG_DEBUG);
    ad_log_set_format(AD_LOG_LOGFMT);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ad_log_set_fd(-1);
    fclose(sink);
    return 0;
}

/* Everything logged since the last call. */
static char *take(void)
{
    static char buf[65536];
    ssize_t n = pread(fileno(sink), buf, sizeof buf - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_int_equal(ftruncate(fileno(sink), 0), 0);
    lseek(fileno(sink), 0, SEEK_SET);
    return buf;
}

/* The record without its timestamp, which changes. */
static const char *after_ts(const char *line)
{
    const char *p = strstr(line, " level=");
    assert_non_null(p);
    return p + 1;
}

static void test_logfmt_fields(void **state)
{
    (void)state;
    AD_INFO_KV("config reloaded", AD_KV_STR("path", "/etc/a.yaml"), AD_KV_INT("errors", 3),
               AD_KV_DOUBLE("ratio", 0.5), AD_KV_STR("empty", ""),
               AD_KV_STR("tricky", "a \"b\"=c\\d\ne"));
    char *line = take();
    assert_int_equal(strncmp(line, "ts=", 3), 0);
    assert_string_equal(after_ts(line), "level=info module=test msg=\"config reloaded\" "
                                        "path=/etc/a.yaml errors=3 ratio=0.5 empty=\"\" "
                                        "tricky=\"a \\\"b\\\"=c\\\\d\\ne\"\n");
    /* The timestamp is RFC 3339 UTC with milliseconds. */
    assert_int_equal(strlen("ts=2026-11-22T05:01:02.123Z"), strcspn(line, " "));
    assert_int_equal(line[26], 'Z');
}

static void test_printf_message(void **state)
{
    (void)state;
    AD_WARN("cannot bind %s: %s", "127.0.0.1:80", "Permission denied");
    assert_string_equal(after_ts(take()), "level=warn module=test msg=\"cannot bind 127.0.0.1:80: "
                                          "Permission denied\"\n");
    AD_ERROR("plain");
    assert_string_equal(after_ts(take()), "level=error module=test msg=plain\n");
}

static void test_json_lines_parse(void **state)
{
    (void)state;
    ad_log_set_format(AD_LOG_JSON);
    AD_INFO_KV("hello \"world\"", AD_KV_STR("k", "tab\there\x01"), AD_KV_INT("n", -42),
               AD_KV_DOUBLE("nan", NAN), AD_KV_DOUBLE("inf", -INFINITY));
    char *line = take();
    ad_log_set_format(AD_LOG_LOGFMT);
    assert_int_equal(line[strlen(line) - 1], '\n');
    json_error_t err;
    json_t *doc = json_loads(line, 0, &err);
    if (!doc)
        fail_msg("not JSON: %s: %s", err.text, line);
    assert_string_equal(json_string_value(json_object_get(doc, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(doc, "module")), "test");
    assert_string_equal(json_string_value(json_object_get(doc, "msg")), "hello \"world\"");
    assert_string_equal(json_string_value(json_object_get(doc, "k")), "tab\there\x01");
    assert_int_equal(json_integer_value(json_object_get(doc, "n")), -42);
    assert_string_equal(json_string_value(json_object_get(doc, "nan")), "NaN");
    assert_string_equal(json_string_value(json_object_get(doc, "inf")), "-Inf");
    json_decref(doc);
}

static void test_bytes_that_are_not_utf8(void **state)
{
    (void)state;
    ad_log_set_format(AD_LOG_JSON);
    /* Valid: é (2 bytes), € (3), 😀 (4). Invalid: a lone continuation byte, an overlong '/',
     * a surrogate, a lead byte cut short by the end. */
    AD_INFO_KV("quoted", AD_KV_STR("ok", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"),
               AD_KV_STR("bad", "a\xb3"
                                "b\xc0\xaf"
                                "c\xed\xa0\x80"
                                "d\xe2\x82"));
    char *line = take();
    ad_log_set_format(AD_LOG_LOGFMT);
    json_error_t err;
    json_t *doc = json_loads(line, 0, &err); /* jansson refuses invalid UTF-8 */
    if (!doc)
        fail_msg("not JSON: %s: %s", err.text, line);
    assert_string_equal(json_string_value(json_object_get(doc, "ok")),
                        "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    const char *bad = json_string_value(json_object_get(doc, "bad"));
    assert_string_equal(bad, "a\xef\xbf\xbd"
                             "b\xef\xbf\xbd\xef\xbf\xbd"
                             "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                             "d\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(doc);
}

static int evaluated;

static const char *side_effect(void)
{
    evaluated++;
    return "x";
}

static void test_levels_filter_without_evaluating(void **state)
{
    (void)state;
    ad_log_set_level(AD_LOG_WARN);
    evaluated = 0;
    AD_INFO("%s", side_effect());
    AD_DEBUG_KV("m", AD_KV_STR("k", side_effect()));
    assert_int_equal(evaluated, 0);
    assert_string_equal(take(), "");
    AD_WARN("%s", side_effect());
    assert_int_equal(evaluated, 1);
    assert_non_null(strstr(take(), "level=warn"));
    ad_log_set_level(AD_LOG_DEBUG);
}

static void test_long_records_stay_well_formed(void **state)
{
    (void)state;
    char big[20000];
    memset(big, '"', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ad_log_set_format(AD_LOG_JSON);
    AD_INFO_KV("long", AD_KV_STR("a", big), AD_KV_STR("b", big), AD_KV_STR("c", big),
               AD_KV_STR("d", big), AD_KV_STR("e", big));
    char *line = take();
    json_error_t err;
    json_t *doc = json_loads(line, 0, &err);
    if (!doc)
        fail_msg("not JSON: %s", err.text);
    /* Five capped values do not fit one line: the record keeps its message and says so. */
    assert_int_equal(json_integer_value(json_object_get(doc, "fields_dropped")), 5);
    json_decref(doc);

    AD_INFO("%s", big);
    line = take();
    doc = json_loads(line, 0, &err);
    assert_non_null(doc);
    const char *msg = json_string_value(json_object_get(doc, "msg"));
    assert_true(strlen(msg) < 2048);
    assert_int_equal(strcmp(msg + strlen(msg) - 3, "..."), 0);
    json_decref(doc);
    ad_log_set_format(AD_LOG_LOGFMT);
}

static void test_ratelimit(void **state)
{
    (void)state;
    struct ad_log_ratelimit rl = {.interval_ms = 10000};
    uint64_t held = 99;
    assert_true(ad_log_ratelimit_allow(&rl, 1000, &held));
    assert_int_equal(held, 0);
    assert_false(ad_log_ratelimit_allow(&rl, 2000, &held));
    assert_false(ad_log_ratelimit_allow(&rl, 10999, &held));
    assert_true(ad_log_ratelimit_allow(&rl, 11000, &held));
    assert_int_equal(held, 2);
    assert_true(ad_log_ratelimit_allow(&rl, 30000, &held));
    assert_int_equal(held, 0);
}

static void test_parse_names(void **state)
{
    (void)state;
    enum ad_log_level l;
    enum ad_log_format f;
    assert_int_equal(ad_log_level_parse("DEBUG", &l), 0);
    assert_int_equal(l, AD_LOG_DEBUG);
    assert_int_equal(ad_log_level_parse("warning", &l), 0);
    assert_int_equal(l, AD_LOG_WARN);
    assert_int_equal(ad_log_level_parse("verbose", &l), -1);
    assert_int_equal(ad_log_format_parse("json", &f), 0);
    assert_int_equal(f, AD_LOG_JSON);
    assert_int_equal(ad_log_format_parse("text", &f), -1);
    assert_string_equal(ad_log_level_name(AD_LOG_ERROR), "error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_logfmt_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_printf_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_lines_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_that_are_not_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_levels_filter_without_evaluating, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_records_stay_well_formed, setup, teardown),
        cmocka_unit_test(test_ratelimit),
        cmocka_unit_test(test_parse_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
