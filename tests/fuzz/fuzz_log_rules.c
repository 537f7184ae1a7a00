/*
 * libFuzzer target: arbitrary bytes as a Kafka message through a source's whole set of
 * extraction rules (time, labels, filters, every feature kind), with both JSON engines. Both
 * must reach the same verdict, the same reason, the same time, labels and values.
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "stream/log_rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char config_yaml[] =
    "kafka: {brokers: \"localhost:9092\"}\n"
    "sources:\n"
    "  - name: app\n"
    "    kafka:\n"
    "      topics: [logs]\n"
    "      max_message_bytes: 64KiB\n"
    "      time: {path: ts, format: rfc3339, max_past: 365d, max_future: 7d}\n"
    "      labels: {service: svc, instance: host.name, first: \"tags[0]\"}\n"
    "      static_labels: {cluster: eu-1}\n"
    "      filters: ['kind != \"healthcheck\"']\n"
    "      features:\n"
    "        requests: count\n"
    "        errors: count_if status >= 500\n"
    "        named: count_if user == \"bob\"\n"
    "        traced: count_if trace exists\n"
    "        latency: mean latency_ms\n"
    "        low: min latency_ms\n"
    "        bytes: sum bytes\n"
    "        last: last status\n";

static struct ad_config *cfg;
static struct ad_log_rules *fast, *reference;

static void init(void)
{
    char err[256];
    struct ad_diag *diag = ad_diag_new();
    cfg = ad_config_load_buffer("fuzz.yaml", config_yaml, sizeof config_yaml - 1, diag);
    if (!cfg) {
        ad_diag_print(diag, stderr);
        abort();
    }
    const struct ad_settings_source *src = &ad_config_settings(cfg)->sources[0];
    fast = ad_log_rules_new(src, AD_EXTRACT_SIMDJSON, err, sizeof err);
    reference = ad_log_rules_new(src, AD_EXTRACT_JANSSON, err, sizeof err);
    if (!fast || !reference)
        abort();
    ad_diag_destroy(diag);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ad_log_event a, b;
    const int64_t now = 1795323600000LL;

    if (!cfg)
        init();
    enum ad_log_result ra = ad_log_rules_apply(fast, (const char *)data, size, -1, now, &a);
    enum ad_log_result rb = ad_log_rules_apply(reference, (const char *)data, size, -1, now, &b);
    if (ra != rb)
        abort();
    if (ra == AD_LOG_REJECTED && a.reason != b.reason)
        abort();
    if (ra != AD_LOG_ACCEPTED)
        return 0;
    if (a.time != b.time || a.present != b.present)
        abort();
    for (size_t i = 0; i < ad_log_rules_labels(fast); i++)
        if (a.label_lens[i] != b.label_lens[i] ||
            memcmp(a.labels[i], b.labels[i], a.label_lens[i]) != 0)
            abort();
    for (int f = 0; f < 8; f++) {
        if (!((a.present >> f) & 1))
            continue;
        if (!(a.values[f] == b.values[f] || (isnan(a.values[f]) && isnan(b.values[f]))))
            abort();
    }
    return 0;
}
