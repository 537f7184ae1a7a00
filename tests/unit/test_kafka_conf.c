/* librdkafka configuration built from the kafka section. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "stream/kafka_conf.h"

static struct ad_config *load(const char *yaml)
{
    struct ad_diag *diag = ad_diag_new();
    struct ad_config *cfg = ad_config_load_buffer("t.yaml", yaml, strlen(yaml), diag);
    if (!cfg)
        ad_diag_print(diag, stderr);
    ad_diag_destroy(diag);
    assert_non_null(cfg);
    return cfg;
}

static void expect(rd_kafka_conf_t *conf, const char *name, const char *want)
{
    char value[512];
    size_t size = sizeof value;
    assert_int_equal(rd_kafka_conf_get(conf, name, value, &size), RD_KAFKA_CONF_OK);
    assert_string_equal(value, want);
}

static void test_consumer_conf(void **state)
{
    (void)state;
    setenv("AD_TEST_KAFKA_PASSWORD", "pa55", 1);
    struct ad_config *cfg = load("kafka:\n"
                                 "  brokers: [\"k1:9092\", \"k2:9092\"]\n"
                                 "  group_id: detectors\n"
                                 "  properties:\n"
                                 "    security.protocol: sasl_plaintext\n"
                                 "    sasl.mechanisms: PLAIN\n"
                                 "    sasl.username: svc\n"
                                 "    sasl.password: {env: AD_TEST_KAFKA_PASSWORD}\n"
                                 "    fetch.wait.max.ms: 50\n");
    const struct ad_settings *s = ad_config_settings(cfg);
    char err[256];
    rd_kafka_conf_t *conf = ad_kafka_conf_new(&s->kafka, s->kafka.group_id, NULL, err, sizeof err);
    assert_non_null(conf);
    expect(conf, "bootstrap.servers", "k1:9092,k2:9092");
    expect(conf, "group.id", "detectors");
    expect(conf, "client.id", "anomalyd");
    expect(conf, "sasl.username", "svc");
    expect(conf, "fetch.wait.max.ms", "50");
    expect(conf, "sasl.mechanisms", "PLAIN");
    rd_kafka_conf_destroy(conf);
    ad_config_unref(cfg);
}

static void test_producer_overrides(void **state)
{
    (void)state;
    struct ad_config *cfg = load("kafka:\n"
                                 "  brokers: \"k1:9092\"\n"
                                 "  properties: {linger.ms: 5}\n"
                                 "sinks:\n"
                                 "  kafka:\n"
                                 "    topic: alerts\n"
                                 "    properties: {linger.ms: 100, compression.codec: lz4}\n");
    const struct ad_settings *s = ad_config_settings(cfg);
    char err[256];
    rd_kafka_conf_t *conf =
        ad_kafka_conf_new(&s->kafka, NULL, &s->sinks.kafka.properties, err, sizeof err);
    assert_non_null(conf);
    expect(conf, "linger.ms", "100");
    expect(conf, "compression.codec", "lz4");
    char value[64];
    size_t size = sizeof value;
    /* A producer has no group: librdkafka reports an unset string property as unknown. */
    assert_int_equal(rd_kafka_conf_get(conf, "group.id", value, &size), RD_KAFKA_CONF_UNKNOWN);
    rd_kafka_conf_destroy(conf);
    ad_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_consumer_conf),
        cmocka_unit_test(test_producer_overrides),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
