/*
 * The Kafka alert sink against librdkafka's mock cluster, driven from a real event_base: every
 * alert is acknowledged exactly once and is in the topic with its key, headers and JSON, in
 * order per entity; a cluster that goes down and comes back, injected produce errors
 * (retriable, permanent, and one that kills the idempotent producer) lose nothing; full()
 * follows the bound; stop() flushes, or gives up at its deadline when the cluster is down;
 * properties that would break delivery are refused.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "stream/kafka_sink.h"

#define TOPIC      "alerts"
#define PARTITIONS 4
#define MAX_ALERTS 4096
/* How long any wait may take before the test fails: a bound against hangs, not a timing. */
#define GUARD_MS    60000
#define PRODUCE_API 0 /* the Produce request's ApiKey */

struct fixture {
    rd_kafka_t *host;
    rd_kafka_mock_cluster_t *mock;
    struct event_base *base;
    struct ad_metrics *metrics;
    char *broker;
    struct ad_settings_kafka kafka;
    struct ad_settings_kafka_sink sink_settings;
    struct ad_kafka_sink *sink;

    unsigned acks[MAX_ALERTS];
    size_t acked;
    bool unknown_ack;
    size_t chain; /* test_ack_may_send: send the next alert from the ack, up to this many */

    bool done;
    bool flushed;
    size_t acked_at_done;
};

/* ---- settings ---- */

static void add_property(struct ad_secretmap *map, const char *key, const char *value)
{
    map->keys = realloc(map->keys, (map->len + 1) * sizeof *map->keys);
    map->values = realloc(map->values, (map->len + 1) * sizeof *map->values);
    assert_non_null(map->keys);
    assert_non_null(map->values);
    map->keys[map->len] = strdup(key);
    map->values[map->len] = (struct ad_secret){strdup(value), strdup("inline")};
    map->len++;
}

static void clear_properties(struct ad_secretmap *map)
{
    for (size_t i = 0; i < map->len; i++) {
        free(map->keys[i]);
        free(map->values[i].value);
        free(map->values[i].origin);
    }
    free(map->keys);
    free(map->values);
    *map = (struct ad_secretmap){0};
}

/* ---- the fixture ---- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char err[512];
    assert_non_null(f);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    f->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    assert_non_null(f->host);
    f->mock = rd_kafka_mock_cluster_new(f->host, 3);
    assert_non_null(f->mock);
    assert_int_equal(rd_kafka_mock_topic_create(f->mock, TOPIC, PARTITIONS, 3), 0);
    f->broker = strdup(rd_kafka_mock_cluster_bootstraps(f->mock));
    f->base = event_base_new();
    f->metrics = ad_metrics_new();
    assert_non_null(f->base);
    assert_non_null(f->metrics);
    f->kafka.brokers.items = &f->broker;
    f->kafka.brokers.len = 1;
    f->kafka.client_id = "anomalyd-test";
    f->sink_settings.topic = TOPIC;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ad_kafka_sink_destroy(f->sink);
    clear_properties(&f->kafka.properties);
    clear_properties(&f->sink_settings.properties);
    rd_kafka_mock_cluster_destroy(f->mock);
    rd_kafka_destroy(f->host);
    ad_metrics_destroy(f->metrics);
    event_base_free(f->base);
    free(f->broker);
    free(f);
    return 0;
}

static struct ad_alert_msg alert_msg(size_t i, char *id, char *detector, char *entity, char *json,
                                     size_t json_size)
{
    snprintf(id, 32, "alert-%zu", i);
    snprintf(detector, 32, "det-%zu", i % 3);
    snprintf(entity, 32, "service=svc-%zu", i % 7);
    int n = snprintf(json, json_size, "{\"id\":\"%s\",\"entity\":\"%s\",\"score\":%zu.5}", id,
                     entity, i);
    return (struct ad_alert_msg){id, detector, entity, json, (size_t)n};
}

static void send_one(struct fixture *f, size_t i)
{
    char id[32], detector[32], entity[32], json[128];
    struct ad_alert_msg msg = alert_msg(i, id, detector, entity, json, sizeof json);
    assert_int_equal(ad_kafka_sink_send(f->sink, &msg, i), 0);
}

static void send_range(struct fixture *f, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        send_one(f, i);
}

static void on_ack(void *arg, uint64_t token)
{
    struct fixture *f = arg;
    if (token >= MAX_ALERTS) {
        f->unknown_ack = true;
        return;
    }
    f->acks[token]++;
    f->acked++;
    if (token + 1 < f->chain)
        send_one(f, (size_t)token + 1);
}

static void on_stopped(void *arg, bool flushed)
{
    struct fixture *f = arg;
    f->done = true;
    f->flushed = flushed;
    f->acked_at_done = f->acked;
}

/* done may destroy the sink. */
static void on_stopped_destroy(void *arg, bool flushed)
{
    struct fixture *f = arg;
    on_stopped(arg, flushed);
    ad_kafka_sink_destroy(f->sink);
    f->sink = NULL;
}

static struct ad_kafka_sink *new_sink(struct fixture *f, char *errstr, size_t errstr_size)
{
    return ad_kafka_sink_new(f->base, &f->kafka, &f->sink_settings, f->metrics, on_ack, f, errstr,
                             errstr_size);
}

static void start_sink(struct fixture *f)
{
    char err[512] = "";
    f->sink = new_sink(f, err, sizeof err);
    if (!f->sink)
        fail_msg("ad_kafka_sink_new: %s", err);
}

/* Runs the loop until cond(f) holds; fails after GUARD_MS. */
static void run_until(struct fixture *f, bool (*cond)(struct fixture *), const char *what)
{
    int64_t deadline = ad_clock_mono_ms() + GUARD_MS;
    while (!cond(f)) {
        if (ad_clock_mono_ms() > deadline)
            fail_msg("gave up waiting for %s (acked %zu, queued %zu)", what, f->acked,
                     f->sink ? ad_kafka_sink_queued(f->sink) : 0);
        event_base_loop(f->base, EVLOOP_ONCE);
    }
}

static size_t want_acked;

static bool all_acked(struct fixture *f)
{
    return f->acked >= want_acked;
}

static bool stopped(struct fixture *f)
{
    return f->done;
}

/* The value of a series (name and labels, as written) as /metrics shows it. */
static double metric(struct fixture *f, const char *series)
{
    char prefix[160];
    double value = -1;
    snprintf(prefix, sizeof prefix, "\n%s ", series);
    char *text = ad_metrics_render(f->metrics, NULL);
    assert_non_null(text);
    const char *line = strstr(text, prefix);
    if (line)
        value = strtod(line + strlen(prefix), NULL);
    free(text);
    if (!line)
        fail_msg("no series %s", series);
    return value;
}

static double counter(struct fixture *f, const char *result)
{
    char series[128];
    snprintf(series, sizeof series, "anomalyd_kafka_sink_alerts_total{result=\"%s\"}", result);
    return metric(f, series);
}

static json_int_t status_int(struct fixture *f, const char *key)
{
    json_t *st = json_object();
    ad_kafka_sink_status(f->sink, st);
    json_t *v = json_object_get(st, key);
    assert_non_null(v);
    json_int_t n = json_integer_value(v);
    json_decref(st);
    return n;
}

static void assert_acked_once(struct fixture *f, size_t n)
{
    assert_false(f->unknown_ack);
    for (size_t i = 0; i < n; i++)
        if (f->acks[i] != 1)
            fail_msg("alert %zu acknowledged %u times", i, f->acks[i]);
    for (size_t i = n; i < MAX_ALERTS; i++)
        assert_int_equal(f->acks[i], 0);
    assert_int_equal(f->acked, n);
}

/* ---- reading the topic back ---- */

struct topic_content {
    unsigned copies[MAX_ALERTS];
    size_t messages;
    size_t out_of_order; /* alerts of one entity found after a later one of the same entity */
};

static const char *header(rd_kafka_headers_t *hdrs, const char *name, size_t *len)
{
    const void *v = NULL;
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &v, len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    return v;
}

/* Reads every partition from its start to its end with a plain consumer, checking each
 * message against the alert its id header names. */
static void read_topic(struct fixture *f, struct topic_content *out)
{
    char err[512];
    long last_of_entity[7];
    memset(out, 0, sizeof *out);
    for (size_t e = 0; e < 7; e++)
        last_of_entity[e] = -1;

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", f->broker, err, sizeof err),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err),
                     RD_KAFKA_CONF_OK);
    /* consumer_poll needs a group; assign() never joins it, and nothing is committed. */
    assert_int_equal(rd_kafka_conf_set(conf, "group.id", "reader", err, sizeof err),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(parts, TOPIC, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(c, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);

    bool at_end[PARTITIONS] = {false};
    size_t ends = 0;
    int64_t deadline = ad_clock_mono_ms() + GUARD_MS;
    while (ends < PARTITIONS) {
        if (ad_clock_mono_ms() > deadline)
            fail_msg("reading the topic back took too long");
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (!at_end[m->partition]) {
                at_end[m->partition] = true;
                ends++;
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err)
            fail_msg("consumer: %s", rd_kafka_message_errstr(m));
        rd_kafka_headers_t *hdrs = NULL;
        rd_kafka_message_headers(m, &hdrs);
        size_t id_len = 0, det_len = 0;
        const char *id = header(hdrs, "anomalyd-alert-id", &id_len);
        const char *det = header(hdrs, "anomalyd-detector", &det_len);
        assert_non_null(id);
        assert_non_null(det);
        char idbuf[32];
        assert_true(id_len < sizeof idbuf);
        memcpy(idbuf, id, id_len);
        idbuf[id_len] = '\0';
        size_t i;
        assert_int_equal(sscanf(idbuf, "alert-%zu", &i), 1);
        assert_true(i < MAX_ALERTS);

        char eid[32], edet[32], eent[32], ejson[128];
        struct ad_alert_msg want = alert_msg(i, eid, edet, eent, ejson, sizeof ejson);
        assert_int_equal(det_len, strlen(want.detector));
        assert_memory_equal(det, want.detector, det_len);
        assert_int_equal(m->key_len, strlen(want.entity));
        assert_memory_equal(m->key, want.entity, m->key_len);
        assert_int_equal(m->len, want.json_len);
        assert_memory_equal(m->payload, want.json, m->len);

        size_t entity = i % 7;
        if ((long)i < last_of_entity[entity])
            out->out_of_order++;
        else
            last_of_entity[entity] = (long)i;
        out->copies[i]++;
        out->messages++;
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
}

/* Every alert in [0, n) is in the topic at least once, nothing else is; returns duplicates. */
static size_t assert_complete(const struct topic_content *t, size_t n)
{
    size_t duplicates = 0;
    for (size_t i = 0; i < MAX_ALERTS; i++) {
        if (i < n && t->copies[i] == 0)
            fail_msg("alert %zu is missing from the topic", i);
        if (i >= n && t->copies[i] != 0)
            fail_msg("alert %zu was never sent but is in the topic", i);
        if (t->copies[i] > 1)
            duplicates += t->copies[i] - 1;
    }
    return duplicates;
}

/* ---- tests ---- */

static void test_delivers_every_alert_once(void **state)
{
    struct fixture *f = *state;
    const size_t n = 1000;
    start_sink(f);
    send_range(f, 0, n);
    assert_int_equal(ad_kafka_sink_queued(f->sink), n);
    want_acked = n;
    run_until(f, all_acked, "every ack");
    assert_acked_once(f, n);
    assert_int_equal(ad_kafka_sink_queued(f->sink), 0);
    assert_false(ad_kafka_sink_full(f->sink));
    assert_true(counter(f, "delivered") == (double)n);
    assert_true(counter(f, "retried") == 0);
    assert_true(counter(f, "failed") == 0);
    assert_true(metric(f, "anomalyd_kafka_sink_delivery_duration_seconds_count") == (double)n);
    assert_true(metric(f, "anomalyd_kafka_sink_queue_alerts") == 0);
    assert_int_equal(status_int(f, "delivered"), n);
    assert_int_equal(status_int(f, "unacknowledged"), 0);

    struct topic_content *t = malloc(sizeof *t);
    read_topic(f, t);
    assert_int_equal(assert_complete(t, n), 0);
    assert_int_equal(t->messages, n);
    assert_int_equal(t->out_of_order, 0);
    free(t);
}

static void test_ack_may_send(void **state)
{
    struct fixture *f = *state;
    f->chain = 20;
    start_sink(f);
    send_one(f, 0);
    want_acked = 20;
    run_until(f, all_acked, "the chain of acks");
    assert_acked_once(f, 20);
}

static bool retried_some(struct fixture *f)
{
    return counter(f, "retried") > 0;
}

static void test_cluster_down_and_back(void **state)
{
    struct fixture *f = *state;
    /* Short timeouts, so that messages expire in librdkafka while the cluster is down and the
     * sink has to produce them again. */
    add_property(&f->sink_settings.properties, "message.timeout.ms", "1000");
    add_property(&f->sink_settings.properties, "socket.connection.setup.timeout.ms", "1000");
    start_sink(f);
    send_range(f, 0, 100);
    want_acked = 100;
    run_until(f, all_acked, "acks before the outage");

    assert_int_equal(rd_kafka_mock_broker_set_down(f->mock, -1), 0);
    send_range(f, 100, 300);
    run_until(f, retried_some, "a message to expire while the cluster is down");
    assert_true(f->acked < 300);
    assert_true(status_int(f, "unacknowledged") > 0);
    assert_int_equal(rd_kafka_mock_broker_set_up(f->mock, -1), 0);
    send_range(f, 300, 400);
    want_acked = 400;
    run_until(f, all_acked, "every ack after the outage");
    assert_acked_once(f, 400);

    struct topic_content *t = malloc(sizeof *t);
    read_topic(f, t);
    size_t duplicates = assert_complete(t, 400);
    /* A copy beyond the first can only come from an alert produced again. */
    assert_true((double)duplicates <= counter(f, "retried"));
    free(t);
}

static void test_injected_errors(void **state)
{
    struct fixture *f = *state;
    start_sink(f);
    send_range(f, 0, 50);
    want_acked = 50;
    run_until(f, all_acked, "acks before the errors");

    /* librdkafka retries these itself: the sink sees successful reports. */
    rd_kafka_mock_push_request_errors(
        f->mock, PRODUCE_API, 4, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE);
    send_range(f, 50, 150);
    want_acked = 150;
    run_until(f, all_acked, "acks after retriable errors");

    /* These fail the reports: the sink produces the alerts again after a backoff. */
    rd_kafka_mock_push_request_errors(f->mock, PRODUCE_API, 2,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                                      RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    send_range(f, 150, 250);
    want_acked = 250;
    run_until(f, all_acked, "acks after permanent errors");
    assert_acked_once(f, 250);
    assert_true(counter(f, "failed") >= 1);
    assert_true(counter(f, "delivered") == 250);

    json_t *st = json_object();
    ad_kafka_sink_status(f->sink, st);
    const char *last = json_string_value(json_object_get(st, "last_error"));
    assert_non_null(last);
    assert_true(strstr(last, "TOPIC_AUTHORIZATION_FAILED") || strstr(last, "MSG_SIZE_TOO_LARGE"));
    json_decref(st);

    struct topic_content *t = malloc(sizeof *t);
    read_topic(f, t);
    size_t duplicates = assert_complete(t, 250);
    assert_true((double)duplicates <= counter(f, "retried") + counter(f, "failed"));
    free(t);
}

static void test_fatal_error_replaces_producer(void **state)
{
    struct fixture *f = *state;
    start_sink(f);
    send_range(f, 0, 20);
    want_acked = 20;
    run_until(f, all_acked, "acks before the fatal error");

    /* A sequence number the broker did not expect: the idempotent producer cannot go on. */
    rd_kafka_mock_push_request_errors(f->mock, PRODUCE_API, 1,
                                      RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    send_range(f, 20, 120);
    want_acked = 120;
    run_until(f, all_acked, "acks through the new producer");
    assert_acked_once(f, 120);
    assert_int_equal(status_int(f, "producer_restarts"), 1);

    struct topic_content *t = malloc(sizeof *t);
    read_topic(f, t);
    assert_complete(t, 120);
    free(t);
}

static void test_oversized_alert_is_kept(void **state)
{
    struct fixture *f = *state;
    add_property(&f->sink_settings.properties, "message.max.bytes", "1000");
    start_sink(f);
    send_range(f, 0, 10);
    char big[2000];
    memset(big, ' ', sizeof big);
    big[0] = '{';
    big[sizeof big - 1] = '}';
    struct ad_alert_msg msg = {"alert-big", "det-0", "service=svc-0", big, sizeof big};
    assert_int_equal(ad_kafka_sink_send(f->sink, &msg, 10), 0);
    send_range(f, 11, 20);
    /* The others are not held up behind it. */
    want_acked = 19;
    run_until(f, all_acked, "the other alerts");
    assert_int_equal(f->acks[10], 0);
    assert_int_equal(ad_kafka_sink_queued(f->sink), 1);
    assert_true(counter(f, "failed") >= 1);
    json_t *st = json_object();
    ad_kafka_sink_status(f->sink, st);
    assert_non_null(
        strstr(json_string_value(json_object_get(st, "last_error")), "MSG_SIZE_TOO_LARGE"));
    json_decref(st);
    /* It is never given up on: a stop reports it as not flushed. */
    ad_kafka_sink_stop(f->sink, ad_clock_mono_ms() + 300, on_stopped, f);
    run_until(f, stopped, "the stop");
    assert_false(f->flushed);
    assert_int_equal(ad_kafka_sink_queued(f->sink), 1);
}

static void test_full_follows_the_bound(void **state)
{
    struct fixture *f = *state;
    add_property(&f->sink_settings.properties, "queue.buffering.max.messages", "10");
    start_sink(f);
    assert_int_equal(status_int(f, "bound"), 10);
    send_range(f, 0, 9);
    assert_false(ad_kafka_sink_full(f->sink));
    send_one(f, 9);
    assert_true(ad_kafka_sink_full(f->sink));
    /* librdkafka's queue holds 10: the rest waits in the sink's own queue. */
    send_range(f, 10, 25);
    assert_true(ad_kafka_sink_full(f->sink));
    assert_int_equal(status_int(f, "in_flight"), 10);
    assert_int_equal(status_int(f, "waiting"), 15);
    assert_int_equal(ad_kafka_sink_queued(f->sink), 25);
    assert_true(metric(f, "anomalyd_kafka_sink_queue_alerts") == 25);

    want_acked = 25;
    run_until(f, all_acked, "the queue to drain");
    assert_acked_once(f, 25);
    assert_false(ad_kafka_sink_full(f->sink));
    assert_int_equal(ad_kafka_sink_queued(f->sink), 0);

    struct topic_content *t = malloc(sizeof *t);
    read_topic(f, t);
    assert_int_equal(assert_complete(t, 25), 0);
    assert_int_equal(t->out_of_order, 0);
    free(t);
}

static void test_stop_flushes(void **state)
{
    struct fixture *f = *state;
    start_sink(f);
    send_range(f, 0, 300);
    ad_kafka_sink_stop(f->sink, ad_clock_mono_ms() + 30000, on_stopped, f);
    assert_false(f->done); /* never from inside stop() */
    run_until(f, stopped, "the stop");
    assert_true(f->flushed);
    assert_int_equal(f->acked_at_done, 300);
    assert_acked_once(f, 300);
}

static void test_stop_without_alerts(void **state)
{
    struct fixture *f = *state;
    start_sink(f);
    ad_kafka_sink_stop(f->sink, ad_clock_mono_ms() + 30000, on_stopped_destroy, f);
    assert_false(f->done);
    run_until(f, stopped, "the stop");
    assert_true(f->flushed);
    assert_null(f->sink);
}

static void test_stop_gives_up_at_the_deadline(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(rd_kafka_mock_broker_set_down(f->mock, -1), 0);
    start_sink(f);
    send_range(f, 0, 50);
    ad_kafka_sink_stop(f->sink, ad_clock_mono_ms() + 1000, on_stopped, f);
    run_until(f, stopped, "the stop");
    assert_false(f->flushed);
    assert_int_equal(f->acked, 0);
    assert_int_equal(ad_kafka_sink_queued(f->sink), 50);
    /* Destroying with everything unacknowledged and no broker must not wait for one. */
    ad_kafka_sink_destroy(f->sink);
    f->sink = NULL;
    assert_int_equal(f->acked, 0);
}

static void expect_refused(struct fixture *f, struct ad_secretmap *map, const char *key,
                           const char *value, const char *want)
{
    char err[512] = "";
    add_property(map, key, value);
    struct ad_kafka_sink *s = new_sink(f, err, sizeof err);
    if (s)
        fail_msg("%s=%s was accepted", key, value);
    if (!strstr(err, want))
        fail_msg("%s=%s: error \"%s\" does not name \"%s\"", key, value, err, want);
    clear_properties(map);
}

static void test_refuses_unsafe_properties(void **state)
{
    struct fixture *f = *state;
    struct ad_secretmap *sink = &f->sink_settings.properties, *shared = &f->kafka.properties;
    expect_refused(f, sink, "enable.idempotence", "false",
                   "sinks.kafka.properties.enable.idempotence");
    expect_refused(f, shared, "enable.idempotence", "false", "kafka.properties.enable.idempotence");
    expect_refused(f, sink, "acks", "1", "sinks.kafka.properties.acks");
    expect_refused(f, shared, "request.required.acks", "0",
                   "kafka.properties.request.required.acks");
    expect_refused(f, sink, "delivery.report.only.error", "true", "delivery.report.only.error");
    expect_refused(f, sink, "transactional.id", "x", "transactional.id");
    expect_refused(f, sink, "enable.gapless.guarantee", "true", "enable.gapless.guarantee");
    expect_refused(f, sink, "partitioner", "random", "partitioner");
    /* librdkafka's own refusals come through with its reason. */
    expect_refused(f, sink, "max.in.flight", "10", "max.in.flight");

    /* What is compatible is accepted. */
    add_property(sink, "acks", "all");
    add_property(sink, "enable.idempotence", "true");
    add_property(shared, "linger.ms", "20");
    start_sink(f);
}

int main(void)
{
    ad_log_set_level(AD_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_delivers_every_alert_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_may_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cluster_down_and_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_injected_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fatal_error_replaces_producer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_alert_is_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_follows_the_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_flushes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_without_alerts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_gives_up_at_the_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_unsafe_properties, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* Every librdkafka thread is gone before the leak checker looks. */
    if (rd_kafka_wait_destroyed(10000) != 0)
        failed++;
    return failed;
}
