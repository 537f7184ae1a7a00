#ifndef AD_REDIS_SINK_H
#define AD_REDIS_SINK_H

/*
 * The Redis alert sink: every alert goes into a stream (XADD with MAXLEN ~), the latest alert
 * per detector and entity into a hash (HSET <hash> <detector>|<entity>), and onto a channel
 * (PUBLISH). One Lua script does all three atomically, and only if the key
 * <stream>:id:<alert id> did not exist (SET NX EX 604800): a resend after a reconnect, or the
 * same alert again after a daemon restart within 7 days, writes nothing and counts as a
 * duplicate. So no alert id is ever in the stream twice.
 *
 * Delivery: at least once. send() copies the alert into a queue; the queue is sent pipelined
 * (EVALSHA; the script is loaded with SCRIPT LOAD on each connection, EVAL after a NOSCRIPT);
 * alerts are acknowledged in the order sent, each once its reply says it is in Redis (written
 * or already there). After a lost connection everything unacknowledged is sent again. An error
 * reply stops sending until the replies in flight are in, then the alerts not written are sent
 * again after a backoff (READONLY, MASTERDOWN and NOAUTH reconnect first). Nothing is dropped:
 * while Redis is away the queue grows, and ad_redis_sink_full() tells the pipeline to pause
 * its sources.
 *
 * Every function runs on the loop thread. See docs/sinks-redis.md.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "base/metrics.h"
#include "config/settings.h"
#include "stream/sink.h"

struct ad_redis_sink;

/*
 * Starts connecting (settings->url's parts, credentials, connect_timeout) on base. settings is
 * copied. ack(ack_arg, token) is called once per token sent, in the order sent; it may call
 * ad_redis_sink_send but must not destroy the sink. Returns NULL with err filled.
 */
struct ad_redis_sink *ad_redis_sink_new(struct event_base *base,
                                        const struct ad_settings_redis_sink *settings,
                                        struct ad_metrics *metrics, ad_sink_ack_fn ack,
                                        void *ack_arg, char *errstr, size_t errstr_size);

/* Queues a copy of msg. Always accepts (0), whether or not Redis is reachable; -1 only when out
 * of memory. */
int ad_redis_sink_send(struct ad_redis_sink *s, const struct ad_alert_msg *msg, uint64_t token);

/* Whether the alerts not yet acknowledged reach settings->queue_limit: the pipeline pauses its
 * Kafka sources until it is false again. */
bool ad_redis_sink_full(const struct ad_redis_sink *s);
/* Alerts sent and not yet acknowledged. */
size_t ad_redis_sink_queued(const struct ad_redis_sink *s);

/* Calls fn for every alert sent and not yet acknowledged, in the order sent (some may be in
 * Redis already, their earlier ones not), so that a sink replacing this one can take them
 * over before it is destroyed. */
void ad_redis_sink_unacked(const struct ad_redis_sink *s, ad_sink_unacked_fn fn, void *arg);

/*
 * Keeps writing what is queued until the queue is empty or deadline_ms (a time on
 * ad_clock_mono_ms()'s clock) passes, then calls done(arg, flushed) from the loop, never from
 * inside this call; flushed says whether everything was acknowledged. Call it once. The sink
 * keeps working (and accepting alerts) until destroyed.
 */
void ad_redis_sink_stop(struct ad_redis_sink *s, int64_t deadline_ms,
                        void (*done)(void *arg, bool flushed), void *arg);

/* Drops the connection and the alerts still queued (never acknowledged). Accepts NULL. */
void ad_redis_sink_destroy(struct ad_redis_sink *s);

/* Adds the sink's part of /status: connection, queue, counts, last error. */
void ad_redis_sink_status(const struct ad_redis_sink *s, json_t *out);

#endif
