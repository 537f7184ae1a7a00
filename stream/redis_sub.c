#include "stream/redis_sub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/errstr.h"
#include "stream/redis_conn.h"

#define AD_LOG_MODULE "redis"
#include "base/log.h"

struct ad_redis_sub {
    struct ad_redis_conn *conn;
    char *channel;
    struct ad_redis_sub_handler handler;
    bool subscribed;
    uint64_t messages;
    struct ad_counter *messages_c;
};

static bool is_string(const redisReply *r)
{
    return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS;
}

static bool kind_is(const redisReply *r, const char *kind)
{
    return r->len == strlen(kind) && strncasecmp(r->str, kind, r->len) == 0;
}

static void on_push(void *arg, const redisReply *r)
{
    struct ad_redis_sub *s = arg;

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || !is_string(r->element[0]))
        return;
    const redisReply *kind = r->element[0], *data = r->element[2];
    if (kind_is(kind, "subscribe")) {
        s->subscribed = true;
        AD_INFO_KV("redis channel subscribed", AD_KV_STR("address", ad_redis_conn_address(s->conn)),
                   AD_KV_STR("channel", s->channel));
        if (s->handler.on_subscribed)
            s->handler.on_subscribed(s->handler.arg);
    } else if (kind_is(kind, "message") && is_string(data)) {
        s->messages++;
        ad_counter_inc(s->messages_c);
        if (s->handler.on_message)
            s->handler.on_message(s->handler.arg, data->str, data->len);
    }
}

static void on_lost(void *arg, const char *reason)
{
    struct ad_redis_sub *s = arg;
    (void)reason;
    s->subscribed = false;
}

struct ad_redis_sub *ad_redis_sub_new(struct event_base *base,
                                      const struct ad_settings_redis_sink *settings,
                                      const char *channel, struct ad_metrics *metrics,
                                      const struct ad_redis_sub_handler *handler, char *errstr,
                                      size_t errstr_size)
{
    struct ad_redis_sub *s = NULL;

    if (!channel || !*channel || !handler) {
        ad_errstr_set(errstr, errstr_size, "a Redis subscription needs a channel and a handler");
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (!s || !(s->channel = strdup(channel)))
        goto oom;
    s->handler = *handler;
    if (metrics)
        s->messages_c = ad_metrics_counter(metrics, "anomalyd_redis_subscriber_messages_total",
                                           "Messages received on a subscribed Redis channel.",
                                           "channel", channel, NULL);
    struct ad_redis_conn_options opts = {
        .base = base,
        .settings = settings,
        .name = "subscriber",
        .metrics = metrics,
        .handler = {.on_lost = on_lost, .arg = s},
    };
    s->conn = ad_redis_conn_new(&opts, errstr, errstr_size);
    if (!s->conn)
        goto err;
    if (ad_redis_conn_subscribe(s->conn, channel, on_push, s) != 0)
        goto oom;
    return s;

oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
err:
    ad_redis_sub_destroy(s);
    return NULL;
}

void ad_redis_sub_destroy(struct ad_redis_sub *s)
{
    if (!s)
        return;
    ad_redis_conn_destroy(s->conn);
    free(s->channel);
    free(s);
}

bool ad_redis_sub_subscribed(const struct ad_redis_sub *s)
{
    return s->subscribed;
}

void ad_redis_sub_status(const struct ad_redis_sub *s, json_t *out)
{
    json_t *conn = json_object();
    json_object_set_new(out, "channel", json_string(s->channel));
    json_object_set_new(out, "subscribed", json_boolean(s->subscribed));
    json_object_set_new(out, "messages", json_integer((json_int_t)s->messages));
    if (conn) {
        ad_redis_conn_status(s->conn, conn);
        json_object_set_new(out, "connection", conn);
    }
}
