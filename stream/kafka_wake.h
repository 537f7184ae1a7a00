#ifndef AD_KAFKA_WAKE_H
#define AD_KAFKA_WAKE_H

/*
 * Wakes the loop for librdkafka queues: a non-blocking pipe that each watched queue writes to
 * (rd_kafka_queue_io_event_enable) when it turns non-empty, a read event that empties the pipe
 * and calls the owner's poll function, and a deferred "again" event for a poll that stopped
 * with its budget spent, so that the loop's other events get a turn before it goes on.
 *
 * Several queues may share one wake (a consumer's queue and a queue of its own requests);
 * another client whose polls differ (a dead-letter producer) takes its own.
 *
 * Every function runs on the loop thread.
 */

#include <stddef.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

struct ad_kafka_wake;

/* Polls the queues watched: called on the loop, never from inside an ad_kafka_wake_ call. */
typedef void (*ad_kafka_wake_fn)(void *arg);

/* Returns NULL with err filled (no pipe, no events). */
struct ad_kafka_wake *ad_kafka_wake_new(struct event_base *base, ad_kafka_wake_fn poll, void *arg,
                                        char *errstr, size_t errstr_size);
/*
 * Frees the events and closes the pipe. Accepts NULL. librdkafka writes to the pipe from its
 * own threads, so only once no queue can write any more: each one's io event disabled, or its
 * client destroyed.
 */
void ad_kafka_wake_destroy(struct ad_kafka_wake *w);

/* queue (borrowed) writes to the pipe whenever it turns non-empty. What it held before this
 * wrote nothing: call ad_kafka_wake_again to look. */
void ad_kafka_wake_watch(struct ad_kafka_wake *w, rd_kafka_queue_t *queue);
/* Polls on the loop's next turn, after the events already due. */
void ad_kafka_wake_again(struct ad_kafka_wake *w);
/* Empties the pipe without polling: what a client since destroyed wrote is stale. */
void ad_kafka_wake_drain(struct ad_kafka_wake *w);

#endif
