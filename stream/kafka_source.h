#ifndef AD_KAFKA_SOURCE_H
#define AD_KAFKA_SOURCE_H

/*
 * A Kafka log source: one consumer in the group kafka.group_id on the source's topics, driven
 * by the loop.
 *
 * Waking up: librdkafka writes to a non-blocking pipe when the consumer queue goes from empty
 * to non-empty (rd_kafka_queue_io_event_enable); the loop then polls with a budget (messages
 * and time per wake-up) and comes back for the rest after other events have run. A slow
 * safety timer polls too. Rebalances (cooperative-sticky by default), librdkafka's logs (routed
 * into the daemon's logger) and errors are served by the same polls, on the loop thread.
 *
 * Every message goes through the source's extraction rules (log_rules.h). Accepted events go to
 * the handler; filtered ones are counted; rejected ones are counted in
 * anomalyd_events_rejected_total{source,reason}, logged at most once per 10 s per reason, and,
 * with dead_letter_topic set, produced there with the reason in the header anomalyd-reason.
 *
 * Offsets: the store is manual (enable.auto.offset.store=false) and librdkafka commits what is
 * stored. A message's offset is stored only once everything derived from it is safe. The
 * handler holds the message for every (detector, bucket) it fed (ad_kafka_source_hold); the
 * one function that makes offsets committable is ad_kafka_source_release, which the pipeline
 * calls when a bucket's results are safe. Filtered, rejected and late messages hold nothing
 * (a dead-lettered one holds until the dead-letter topic acknowledges it).
 *
 * Every function runs on the loop thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "json_extract.h"
#include "log_rules.h"
#include "metrics.h"
#include "settings.h"

struct ad_kafka_source;

/* A (topic, partition) of this source, as one number: topic index << 20 | partition. */
typedef int32_t ad_kafka_input;
#define AD_KAFKA_INPUT(topic, partition) ((int32_t)(((topic) << 20) | (partition)))

struct ad_kafka_source_handler {
    /* An accepted event of input at offset. ev is borrowed for the call. */
    void (*on_event)(void *arg, ad_kafka_input input, int64_t offset,
                     const struct ad_log_event *ev);
    /* Inputs assigned to or taken from this consumer by a rebalance. */
    void (*on_assign)(void *arg, ad_kafka_input input);
    void (*on_revoke)(void *arg, ad_kafka_input input);
    void *arg;
};

struct ad_kafka_source_options {
    struct event_base *base;
    const struct ad_settings_kafka *kafka;     /* borrowed; must outlive the source */
    const struct ad_settings_source *settings; /* borrowed; must outlive the source */
    size_t n_detectors;                        /* holds are kept per detector */
    enum ad_extract_engine engine;
    struct ad_metrics *metrics;
    struct ad_kafka_source_handler handler;
    /* Per wake-up; 0 means the defaults (1000 messages, 10 ms). */
    size_t poll_budget_messages;
    int64_t poll_budget_ms;
};

/* Creates the consumer and subscribes. Returns NULL with errstr filled. */
struct ad_kafka_source *ad_kafka_source_new(const struct ad_kafka_source_options *opts,
                                            char *errstr, size_t errstr_size);

/*
 * Leaves the group: stops fetching, commits what is stored, and calls done(done_arg) on the
 * loop when finished. The blocking parts run on a thread of their own, so the loop keeps
 * serving while they do.
 */
void ad_kafka_source_stop(struct ad_kafka_source *s, void (*done)(void *), void *done_arg);

/* Frees the source; after a stop that has not finished, leaves the rest to process exit.
 * Accepts NULL. */
void ad_kafka_source_destroy(struct ad_kafka_source *s);

/* The message at (input, offset) fed bucket of detector: its offset may not be stored before
 * ad_kafka_source_release(detector, >= bucket). Call from on_event. */
void ad_kafka_source_hold(struct ad_kafka_source *s, ad_kafka_input input, int64_t offset,
                          size_t detector, int64_t bucket);

/* Everything detector derived from buckets up to and including bucket is safe. */
void ad_kafka_source_release(struct ad_kafka_source *s, size_t detector, int64_t bucket);

/*
 * Back-pressure: stops (paused) or restarts fetching every partition assigned now or later.
 * librdkafka drops what it had fetched ahead and, on resume, fetches again from the message
 * after the last one this source processed, so nothing is skipped.
 */
void ad_kafka_source_pause(struct ad_kafka_source *s, bool paused);

/* Topic name and partition of an input. */
const char *ad_kafka_source_topic(const struct ad_kafka_source *s, ad_kafka_input input);

/* Assignment, per partition its next offset to commit and held buckets, and the counts of
 * events by result. */
void ad_kafka_source_status(const struct ad_kafka_source *s, json_t *out);

#endif
