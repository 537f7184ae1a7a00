/* The extraction rules of a Kafka source, with both JSON engines. */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "stream/log_rules.h"

#define NOW 1795323600000LL /* 2026-11-22T05:00:00Z */

static const char config_yaml[] =
    "kafka: {brokers: \"localhost:9092\"}\n"
    "sources:\n"
    "  - name: app\n"
    "    kafka:\n"
    "      topics: [logs]\n"
    "      time: {path: ts, format: rfc3339, max_past: 1h, max_future: 1m}\n"
    "      labels: {service: svc, instance: host.name}\n"
    "      static_labels: {cluster: eu-1}\n"
    "      filters: ['kind != \"healthcheck\"', 'internal != true']\n"
    "      features:\n"
    "        requests: count\n"
    "        errors: count_if status >= 500\n"
    "        timeouts: count_if error == \"timeout\"\n"
    "        anonymous: count_if user == null\n"
    "        traced: count_if trace exists\n"
    "        latency: mean latency_ms\n"
    "        bytes: sum bytes\n"
    "        last_status: last status\n";

static struct ad_config *cfg;

static int setup(void **state)
{
    (void)state;
    struct ad_diag *diag = ad_diag_new();
    cfg = ad_config_load_buffer("t.yaml", config_yaml, sizeof config_yaml - 1, diag);
    if (!cfg)
        ad_diag_print(diag, stderr);
    ad_diag_destroy(diag);
    return cfg ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    ad_config_unref(cfg);
    return 0;
}

static struct ad_log_rules *rules_for(enum ad_extract_engine engine)
{
    char err[256];
    struct ad_log_rules *r =
        ad_log_rules_new(&ad_config_settings(cfg)->sources[0], engine, err, sizeof err);
    if (!r)
        fail_msg("%s", err);
    return r;
}

static enum ad_log_result apply(struct ad_log_rules *r, const char *json, struct ad_log_event *ev)
{
    return ad_log_rules_apply(r, json, strlen(json), -1, NOW, ev);
}

static void check_accepted_event(enum ad_extract_engine engine)
{
    struct ad_log_rules *r = rules_for(engine);
    struct ad_log_event ev;

    assert_int_equal(ad_log_rules_labels(r), 3);
    assert_string_equal(ad_log_rules_label_name(r, 0), "service");
    assert_string_equal(ad_log_rules_label_name(r, 1), "instance");
    assert_string_equal(ad_log_rules_label_name(r, 2), "cluster");
    assert_int_equal(ad_log_rules_label_index(r, "cluster"), 2);
    assert_int_equal(ad_log_rules_label_index(r, "zone"), -1);

    assert_int_equal(apply(r,
                           "{\"ts\":\"2026-11-22T04:59:30.250Z\",\"svc\":\"checkout\","
                           "\"host\":{\"name\":\"c-1\"},\"status\":503,\"error\":\"timeout\","
                           "\"trace\":\"ab\",\"latency_ms\":\"12.5\",\"bytes\":100}",
                           &ev),
                     AD_LOG_ACCEPTED);
    assert_int_equal(ev.time, NOW - 29750);
    assert_int_equal(ev.label_lens[0], 8);
    assert_memory_equal(ev.labels[0], "checkout", 8);
    assert_memory_equal(ev.labels[1], "c-1", 3);
    assert_memory_equal(ev.labels[2], "eu-1", 4);
    /* Every feature has a value: count 1, the conditions 1 (a missing user is == null). */
    assert_int_equal(ev.present, 0xff);
    double want[] = {1, 1, 1, 1, 1, 12.5, 100, 503};
    for (int f = 0; f < 8; f++)
        assert_true(ev.values[f] == want[f]);

    /* Conditions that do not hold give 0, not a missing value; absent numbers are missing. */
    assert_int_equal(apply(r,
                           "{\"ts\":\"2026-11-22T04:59:30Z\",\"svc\":7,\"host\":{\"name\":true},"
                           "\"status\":\"200\",\"user\":\"bob\",\"trace\":null}",
                           &ev),
                     AD_LOG_ACCEPTED);
    assert_memory_equal(ev.labels[0], "7", 1);
    assert_memory_equal(ev.labels[1], "true", 4);
    assert_true(ev.values[1] == 0); /* "200" compares as a number */
    assert_true(ev.values[2] == 0);
    assert_true(ev.values[3] == 0);
    assert_true(ev.values[4] == 0); /* null does not exist */
    assert_int_equal(ev.present, 0x1f | 0x80);
    assert_true(ev.values[7] == 200);
    ad_log_rules_destroy(r);
}

static void test_accepted_events(void **state)
{
    (void)state;
    check_accepted_event(AD_EXTRACT_SIMDJSON);
    check_accepted_event(AD_EXTRACT_JANSSON);
}

static void check_filters(enum ad_extract_engine engine)
{
    struct ad_log_rules *r = rules_for(engine);
    struct ad_log_event ev;
    /* Filtered events need neither a time nor labels. */
    assert_int_equal(apply(r, "{\"kind\":\"healthcheck\"}", &ev), AD_LOG_FILTERED);
    assert_int_equal(apply(r, "{\"internal\":true,\"ts\":1}", &ev), AD_LOG_FILTERED);
    /* != holds for a missing field and for another type. */
    assert_int_equal(apply(r,
                           "{\"kind\":5,\"internal\":\"true\",\"ts\":\"2026-11-22T04:59:00Z\","
                           "\"svc\":\"a\",\"host\":{\"name\":\"b\"}}",
                           &ev),
                     AD_LOG_ACCEPTED);
    ad_log_rules_destroy(r);
}

static void test_filters(void **state)
{
    (void)state;
    check_filters(AD_EXTRACT_SIMDJSON);
    check_filters(AD_EXTRACT_JANSSON);
}

static void check_rejects(enum ad_extract_engine engine)
{
    struct ad_log_rules *r = rules_for(engine);
    struct ad_log_event ev;
    const char *ok = "\"svc\":\"a\",\"host\":{\"name\":\"b\"}";
    char buf[512];
    struct {
        const char *json;
        enum ad_reject_reason reason;
    } cases[] = {
        {"{\"ts\":", AD_REJECT_MALFORMED},
        {"not json", AD_REJECT_MALFORMED},
        {"[1,2]", AD_REJECT_NOT_OBJECT},
        {"\"string\"", AD_REJECT_NOT_OBJECT},
        {"{%s}", AD_REJECT_TIME_MISSING},
        {"{\"ts\":null,%s}", AD_REJECT_TIME_MISSING},
        {"{\"ts\":1795323600,%s}", AD_REJECT_TIME_INVALID},
        {"{\"ts\":\"2026-13-01T00:00:00Z\",%s}", AD_REJECT_TIME_INVALID},
        {"{\"ts\":\"2026-11-22T03:59:59Z\",%s}", AD_REJECT_TIME_TOO_OLD},
        {"{\"ts\":\"2026-11-22T05:01:01Z\",%s}", AD_REJECT_TIME_IN_FUTURE},
        {"{\"ts\":\"2026-11-22T05:00:00Z\",\"host\":{\"name\":\"b\"}}", AD_REJECT_LABEL_MISSING},
        {"{\"ts\":\"2026-11-22T05:00:00Z\",\"svc\":null,\"host\":{\"name\":\"b\"}}",
         AD_REJECT_LABEL_MISSING},
        {"{\"ts\":\"2026-11-22T05:00:00Z\",\"svc\":\"a\",\"host\":{\"name\":[1]}}",
         AD_REJECT_WRONG_TYPE},
        {"{\"ts\":\"2026-11-22T05:00:00Z\",\"svc\":\"a\\u0000b\",\"host\":{\"name\":\"b\"}}",
         AD_REJECT_LABEL_INVALID},
        {"{\"ts\":\"2026-11-22T05:00:00Z\",%s,\"latency_ms\":\"fast\"}", AD_REJECT_WRONG_TYPE},
        {"{\"ts\":\"2026-11-22T05:00:00Z\",%s,\"bytes\":{}}", AD_REJECT_WRONG_TYPE},
        {"{\"ts\":\"2026-11-22T05:00:00Z\",%s,\"latency_ms\":\"NaN\"}", AD_REJECT_NOT_FINITE},
        {"{\"ts\":\"2026-11-22T05:00:00Z\",%s,\"bytes\":\"-Infinity\"}", AD_REJECT_NOT_FINITE},
        {"{\"ts\":\"2026-11-22T05:00:00Z\",%s,\"bytes\":\"1e999\"}", AD_REJECT_NOT_FINITE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(buf, sizeof buf, cases[i].json, ok);
        if (apply(r, buf, &ev) != AD_LOG_REJECTED || ev.reason != cases[i].reason)
            fail_msg("engine %d, %s: got reason %s, want %s", engine, buf,
                     ad_reject_reason_name(ev.reason), ad_reject_reason_name(cases[i].reason));
    }
    ad_log_rules_destroy(r);
}

static void test_rejects(void **state)
{
    (void)state;
    check_rejects(AD_EXTRACT_SIMDJSON);
    check_rejects(AD_EXTRACT_JANSSON);
}

static void test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(ad_reject_reason_name(AD_REJECT_MALFORMED), "malformed_json");
    assert_string_equal(ad_reject_reason_name(AD_REJECT_TIME_TOO_OLD), "time_too_old");
    assert_string_equal(ad_reject_reason_name(AD_REJECT_NOT_FINITE), "not_finite");
    for (int r = 0; r < AD_REJECT_COUNT; r++)
        assert_string_not_equal(ad_reject_reason_name((enum ad_reject_reason)r), "unknown");
    assert_string_equal(ad_reject_reason_name(AD_REJECT_COUNT), "unknown");
}

static void test_kafka_timestamp(void **state)
{
    (void)state;
    static const char yaml[] = "kafka: {brokers: \"b:9092\"}\n"
                               "sources:\n"
                               "  - name: k\n"
                               "    kafka:\n"
                               "      topics: [t]\n"
                               "      time: {format: kafka}\n"
                               "      features: {n: count}\n";
    struct ad_diag *diag = ad_diag_new();
    struct ad_config *c = ad_config_load_buffer("k.yaml", yaml, sizeof yaml - 1, diag);
    assert_non_null(c);
    char err[256];
    struct ad_log_rules *r =
        ad_log_rules_new(&ad_config_settings(c)->sources[0], AD_EXTRACT_SIMDJSON, err, sizeof err);
    struct ad_log_event ev;
    assert_int_equal(ad_log_rules_apply(r, "{}", 2, NOW - 5, NOW, &ev), AD_LOG_ACCEPTED);
    assert_int_equal(ev.time, NOW - 5);
    assert_int_equal(ad_log_rules_apply(r, "{}", 2, -1, NOW, &ev), AD_LOG_REJECTED);
    assert_int_equal(ev.reason, AD_REJECT_TIME_MISSING);
    ad_log_rules_destroy(r);
    ad_config_unref(c);
    ad_diag_destroy(diag);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_events), cmocka_unit_test(test_filters),
        cmocka_unit_test(test_rejects),         cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_kafka_timestamp),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
