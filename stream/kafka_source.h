#ifndef AD_KAFKA_SOURCE_H
#define AD_KAFKA_SOURCE_H

/*
 * A Kafka log source: one consumer in the group kafka.group_id on the source's topics, driven
 * by the loop.
 *
 * Waking up: librdkafka writes to a non-blocking pipe when the consumer queue goes from empty
 * to non-empty (rd_kafka_queue_io_event_enable); the loop then polls with a budget (messages
 * and time per wake-up) and comes back for the rest after other events have run. A slow
 * safety timer polls too. Rebalances (eager: range,roundrobin; see kafka_source_rules.h),
 * librdkafka's logs (routed into the daemon's logger) and errors are served by the same polls, on
 * the loop thread.
 *
 * Every message goes through the source's extraction rules (log_rules.h). Accepted events go to
 * the handler; filtered ones are counted; rejected ones are counted in
 * anomalyd_events_rejected_total{source,reason}, logged at most once per 10 s per reason, and,
 * with dead_letter_topic set, produced there with the reason in the header anomalyd-reason.
 *
 * Offsets: the source commits them itself (enable.auto.commit=false), every
 * auto.commit.interval.ms, as partitions are revoked and as it stops. A message's offset is
 * committed only once everything derived from it is safe. The handler holds the message for
 * every (detector, bucket) it fed (ad_kafka_source_hold); the one function that makes offsets
 * committable is ad_kafka_source_release, which the pipeline calls when a bucket's results are
 * safe. Filtered, rejected and late messages hold nothing (a dead-lettered one holds until the
 * dead-letter topic acknowledges it).
 *
 * Rebuilding after a restart (docs/delivery.md): each commit carries, in the offset's metadata,
 * the offset from which the windows of the last rebuild_history of every detector can be read
 * again ("replay_from"), and per detector the end of the newest bucket whose alerts were all
 * acknowledged ("done"). When a partition is assigned, the source looks its commit up before it
 * starts fetching, and starts at replay_from: the messages below the committed offset are
 * replayed, handed on with those "done" times so that the windows, likelihoods and alert states
 * are rebuilt without notifying again what was already notified; they hold nothing back and are
 * not counted as new events (anomalyd_kafka_replayed_messages_total instead), and rejected ones
 * are not dead-lettered twice.
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
#include "stream/json_extract.h"
#include "stream/log_rules.h"

struct ad_kafka_source;

/* A (topic, partition) of this source, as one number: topic index << 20 | partition. */
typedef int32_t ad_kafka_input;
#define AD_KAFKA_INPUT(topic, partition) ((int32_t)(((topic) << 20) | (partition)))

struct ad_kafka_source_handler {
    /* An accepted event of input at offset. ev is borrowed for the call. replayed is NULL for an
     * event read for the first time; for one read again to rebuild windows, it holds per
     * detector the end (ms) of the newest bucket whose alerts were all acknowledged before,
     * INT64_MIN where that is unknown (borrowed for the call). */
    void (*on_event)(void *arg, ad_kafka_input input, int64_t offset, const struct ad_log_event *ev,
                     const int64_t *replayed);
    /* Inputs assigned to or taken from this consumer by a rebalance. */
    void (*on_assign)(void *arg, ad_kafka_input input);
    void (*on_revoke)(void *arg, ad_kafka_input input);
    void *arg;
};

/* What the source knows of each detector, to write and read its rebuild point. */
struct ad_kafka_source_detector {
    const char *name;        /* borrowed; must outlive the source */
    int64_t step;            /* ms */
    int64_t history_buckets; /* how many done buckets are kept readable again */
};

struct ad_kafka_source_options {
    struct event_base *base;
    const struct ad_settings_kafka *kafka;     /* borrowed; must outlive the source */
    const struct ad_settings_source *settings; /* borrowed; must outlive the source */
    size_t n_detectors;                        /* holds are kept per detector */
    /* n_detectors entries (the array is copied, the names borrowed); NULL: no rebuild points
     * are written or read. */
    const struct ad_kafka_source_detector *detectors;
    enum ad_extract_engine engine;
    struct ad_metrics *metrics;
    struct ad_kafka_source_handler handler;
    /* Create the consumer without subscribing: ad_kafka_source_start joins the group. A
     * rebuilt pipeline's consumer waits so for the previous one to leave the group, whose
     * last commit is where it rebuilds from. */
    bool deferred;
    /* Per wake-up; 0 means the defaults (1000 messages, 10 ms). */
    size_t poll_budget_messages;
    int64_t poll_budget_ms;
};

/* Creates the consumer and subscribes (unless opts->deferred). Returns NULL with errstr
 * filled. */
struct ad_kafka_source *ad_kafka_source_new(const struct ad_kafka_source_options *opts,
                                            char *errstr, size_t errstr_size);

/* Subscribes a deferred source: it joins the group. Does nothing when already subscribed or
 * stopping. Returns 0, or -1 with errstr filled. */
int ad_kafka_source_start(struct ad_kafka_source *s, char *errstr, size_t errstr_size);

/*
 * Until when (wall clock, ms) the source expects partitions: from its creation, or a
 * revocation, until an assignment has been handed to librdkafka with its rebuild points,
 * bounded by the group's rebalance timeout (max.poll.interval.ms, which is how long a join
 * may take: after a SIGKILL the group waits for the dead member's session to end).
 * INT64_MIN when it expects nothing (assigned, or stopping). Meanwhile the grid should not
 * close the buckets that the coming partitions will rebuild.
 */
int64_t ad_kafka_source_joining_until(const struct ad_kafka_source *s);

/*
 * Leaves the group: stops fetching, commits what is safe, and calls done(done_arg) on the
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

/*
 * Watermark alignment: stops or restarts fetching one partition, apart from the
 * back-pressure pause (a partition stays stopped while either wants it), for a partition
 * whose events run too far ahead of the others' (docs/windows.md, "Partitions far ahead").
 * What librdkafka had fetched ahead is dropped and fetched again on restart, from the message
 * after the last one processed. A revocation ends it. Unknown inputs are ignored.
 */
void ad_kafka_source_pause_partition(struct ad_kafka_source *s, ad_kafka_input input, bool paused);

/* Topic name and partition of an input. */
const char *ad_kafka_source_topic(const struct ad_kafka_source *s, ad_kafka_input input);

/* The group state (waiting, joining, member, leaving), assignment, per partition its next
 * offset to commit, held buckets and replay, its state
 * (reading, offset_reset, offset_out_of_range, looking_up_commit, revoked), offset resets and
 * last error, and the counts of events by result. Offsets out of range are also counted in
 * anomalyd_kafka_offset_resets_total{source} and logged once per partition per 10 s. */
void ad_kafka_source_status(const struct ad_kafka_source *s, json_t *out);

#endif
