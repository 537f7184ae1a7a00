#ifndef AD_REDIS_CONN_H
#define AD_REDIS_CONN_H

/*
 * One asynchronous connection to Redis on the loop (hiredis's libevent adapter), kept up for
 * as long as it exists.
 *
 * An attempt resolves the host (libevent's asynchronous resolver; IP literals and unix
 * sockets need none), connects, then sends AUTH (with a password: `AUTH user pass`, or
 * `AUTH pass` without a user name), SELECT (for a database other than 0) and PING. The
 * connection is ready once all of them have answered without an error, and all of that must
 * happen within connect_timeout. Any loss (the peer closes, an I/O error, an error in the
 * handshake, no reply within the reply timeout while replies are awaited) drops the
 * connection and schedules another attempt: 100 ms doubling per failure up to 30 s, ±20%
 * jitter. The backoff starts over only once a connection has stayed ready for 10 s, so one
 * that is dropped right after each handshake is retried ever more slowly too. Nothing blocks
 * the loop: no synchronous hiredis call, no getaddrinfo.
 *
 * Failures are counted in anomalyd_redis_connection_errors_total{connection,reason} and
 * logged when something changes (the first failure of a streak, an error other than the last
 * one logged, the recovery after a logged failure), not at every retry. Passwords and user names
 * never reach a log line or /status.
 *
 * Every function runs on the loop thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "base/metrics.h"
#include "config/settings.h"

struct ad_redis_conn;

struct ad_redis_conn_handler {
    /* The connection is ready: commands may be sent. Called again after every reconnect. */
    void (*on_ready)(void *arg);
    /* The ready connection was lost (reason: a sentence, no secrets). Replies to commands sent
     * before will not come. Another attempt is already scheduled. Must not destroy the
     * connection. */
    void (*on_lost)(void *arg, const char *reason);
    void *arg;
};

struct ad_redis_conn_options {
    struct event_base *base;
    /* The url's parts, username, password, and connect_timeout are copied. */
    const struct ad_settings_redis_sink *settings;
    const char *name; /* "sink", "subscriber": a log field and the label `connection` */
    struct ad_metrics *metrics;
    struct ad_redis_conn_handler handler;
    /* 0 means the defaults: 100 ms and 30 s between attempts; 30 s without any reply while
     * replies are awaited drops the connection. */
    int64_t min_backoff_ms;
    int64_t max_backoff_ms;
    int64_t reply_timeout_ms;
};

/* A reply, borrowed for the call (copy what must outlive it). Never NULL. */
typedef void (*ad_redis_reply_fn)(void *arg, const redisReply *reply);

/* Returns NULL with errstr filled. The first attempt starts on the next loop iteration. */
struct ad_redis_conn *ad_redis_conn_new(const struct ad_redis_conn_options *opts, char *errstr,
                                        size_t errstr_size);
/* Drops the connection; callbacks of commands in flight are not called. Accepts NULL. May be
 * called from inside any callback of this connection except on_lost. */
void ad_redis_conn_destroy(struct ad_redis_conn *c);

bool ad_redis_conn_ready(const struct ad_redis_conn *c);

/*
 * Sends one command (argv copied) when the connection is ready; fn(arg, reply) is called with
 * its reply, error replies included. If the connection is lost first, fn is not called
 * (on_lost says so). Returns 0, or -1 when not ready or out of memory.
 */
int ad_redis_conn_command(struct ad_redis_conn *c, ad_redis_reply_fn fn, void *arg, int argc,
                          const char **argv, const size_t *argvlen);

/*
 * Subscribes to channel (copied) now if ready and again after every reconnect, before
 * on_ready. fn(arg, reply) gets every push for the channel: the ["subscribe", channel, n]
 * confirmation and each ["message", channel, payload]. A subscribed connection takes no other
 * commands (RESP2). Returns 0 or -1 (out of memory).
 */
int ad_redis_conn_subscribe(struct ad_redis_conn *c, const char *channel, ad_redis_reply_fn fn,
                            void *arg);

/* Drops the connection as lost (reason: a sentence, logged and counted as a protocol error)
 * and reconnects after the backoff. For errors that another server may not have, e.g.
 * READONLY after a failover. */
void ad_redis_conn_reset(struct ad_redis_conn *c, const char *reason);

/* redis://host:port/db or unix:///path?db=N, without credentials. Borrowed. */
const char *ad_redis_conn_address(const struct ad_redis_conn *c);
/* The last error (a sentence) or NULL. Borrowed; valid until the next callback. */
const char *ad_redis_conn_last_error(const struct ad_redis_conn *c);
/* Connection errors (each reason) since creation. */
uint64_t ad_redis_conn_errors(const struct ad_redis_conn *c);

/* Adds the connection's part of /status: state, address, failures, last error. */
void ad_redis_conn_status(const struct ad_redis_conn *c, json_t *out);

#endif
