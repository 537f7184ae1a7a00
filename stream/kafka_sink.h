#ifndef AD_KAFKA_SINK_H
#define AD_KAFKA_SINK_H

/*
 * The Kafka alert sink: an idempotent producer (enable.idempotence=true, acks=all) on the
 * `kafka` cluster, driven by the loop, writing each alert to sinks.kafka.topic keyed by its
 * entity (one entity's alerts stay in one partition, in order), with the headers
 * anomalyd-alert-id and anomalyd-detector and the alert's JSON as the value.
 *
 * Delivery is at least once. The sink keeps its own copy of every alert until the broker has
 * acknowledged it, then calls ack(token) once. A delivery report with an error puts the alert
 * back in line and produces it again after a backoff (100 ms doubling per failed attempt of
 * that alert, up to 10 s): transient errors (a message.timeout.ms expiry, a broker down) are
 * counted as `retried`, errors only an operator can fix (topic authorization, a message too
 * large, an unknown topic) as `failed` and logged, but those alerts are kept and retried too,
 * never dropped. A fatal producer error (idempotence desynchronised) replaces the producer by a
 * new one and every unacknowledged alert goes through it. Retries can write an alert twice;
 * consumers deduplicate by the anomalyd-alert-id header (docs/sinks.md).
 *
 * Waking up: librdkafka writes to a non-blocking pipe when its main queue (delivery reports,
 * logs, errors) goes from empty to non-empty (rd_kafka_queue_io_event_enable); the loop polls
 * it, so every callback runs on the loop thread. A slow safety timer polls too.
 *
 * Back-pressure: send() always accepts. When librdkafka's own queue is full the alert waits in
 * the sink's queue and goes out as reports drain it. full() turns true while the unacknowledged
 * alerts reach queue.buffering.max.messages (librdkafka's default: 100,000); the pipeline
 * then pauses its sources.
 *
 * Every function runs on the loop thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "base/metrics.h"
#include "config/settings.h"
#include "stream/sink.h"

struct ad_kafka_sink;

/*
 * Creates the producer. kafka and settings are borrowed and must outlive the sink (a fatal
 * error rebuilds the producer from them); metrics is borrowed. ack(ack_arg, token) is called
 * on the loop for every delivered alert; it may call send(), but not destroy(). Returns NULL
 * with err filled, also when a property in kafka.properties or sinks.kafka.properties would
 * break at-least-once delivery (enable.idempotence=false, acks other than all,
 * delivery.report.only.error=true, transactional.id, enable.gapless.guarantee,
 * partitioner=random).
 */
struct ad_kafka_sink *ad_kafka_sink_new(struct event_base *base,
                                        const struct ad_settings_kafka *kafka,
                                        const struct ad_settings_kafka_sink *settings,
                                        struct ad_metrics *metrics, ad_sink_ack_fn ack,
                                        void *ack_arg, char *errstr, size_t errstr_size);

/* Queues msg (copied) and produces it as soon as librdkafka takes it; token comes back through
 * ack. NULL strings count as empty. Returns 0, or -1 only when out of memory. */
int ad_kafka_sink_send(struct ad_kafka_sink *s, const struct ad_alert_msg *msg, uint64_t token);

/* Whether the unacknowledged alerts have reached the bound: the pipeline pauses its sources. */
bool ad_kafka_sink_full(const struct ad_kafka_sink *s);

/* Alerts sent and not acknowledged yet. */
size_t ad_kafka_sink_queued(const struct ad_kafka_sink *s);

/* Calls fn for every alert sent and not acknowledged yet, in the order sent (the broker may
 * have some already, their reports not in), so that a sink replacing this one can take them
 * over before it is destroyed. */
void ad_kafka_sink_unacked(const struct ad_kafka_sink *s, ad_sink_unacked_fn fn, void *arg);

/*
 * Flushes: keeps delivering (and retrying) until every alert is acknowledged or the deadline
 * passes (deadline_ms on ad_clock_mono_ms()'s clock), then calls done(arg, flushed) once, on
 * the loop and never from inside this call; flushed says whether nothing was left. Nothing
 * here blocks. done may destroy the sink. Alerts sent after stop() are delivered too.
 */
void ad_kafka_sink_stop(struct ad_kafka_sink *s, int64_t deadline_ms,
                        void (*done)(void *arg, bool flushed), void *arg);

/* Frees the sink. Alerts not acknowledged by then are dropped without an ack (the pipeline
 * has not committed their offsets, so they are produced again after a restart). Joins
 * librdkafka's threads. Accepts NULL. */
void ad_kafka_sink_destroy(struct ad_kafka_sink *s);

/* Queue sizes, the bound, counts by result, producer restarts, the oldest unacknowledged
 * alert's age and the last error, added to out. */
void ad_kafka_sink_status(const struct ad_kafka_sink *s, json_t *out);

#endif
