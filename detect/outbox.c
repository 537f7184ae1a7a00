#include "detect/outbox.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/errstr.h"
#include "stream/alertmanager_sink.h"
#include "stream/kafka_sink.h"
#include "stream/redis_sink.h"
#include "stream/sink.h"

#define AD_LOG_MODULE "outbox"
#include "base/log.h"

struct ad_outbox {
    struct ad_kafka_sink *kafka;               /* NULL: not configured */
    struct ad_redis_sink *redis;               /* NULL: not configured */
    struct ad_alertmanager_sink *alertmanager; /* NULL: not configured */
    ad_outbox_ack_fn ack;
    void *ack_arg;
    /* stopping */
    void (*done)(void *arg, bool flushed);
    void *done_arg;
    size_t stops_pending;
    bool flushed;
};

static void on_ack(void *arg, uint64_t token)
{
    struct ad_outbox *o = arg;
    o->ack(o->ack_arg, token);
}

struct ad_outbox *ad_outbox_new(struct event_base *base, const struct ad_settings *s,
                                struct ad_metrics *metrics, ad_outbox_ack_fn ack, void *ack_arg,
                                char *errstr, size_t errstr_size)
{
    struct ad_outbox *o = calloc(1, sizeof *o);
    if (!o) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    o->ack = ack;
    o->ack_arg = ack_arg;
    if (s->sinks.kafka.topic) {
        o->kafka = ad_kafka_sink_new(base, &s->kafka, &s->sinks.kafka, metrics, on_ack, o, errstr,
                                     errstr_size);
        if (!o->kafka)
            goto fail;
    }
    if (s->sinks.redis.url) {
        o->redis =
            ad_redis_sink_new(base, &s->sinks.redis, metrics, on_ack, o, errstr, errstr_size);
        if (!o->redis)
            goto fail;
    }
    if (s->sinks.alertmanager.urls.len) {
        o->alertmanager = ad_alertmanager_sink_new(base, &s->sinks.alertmanager, metrics, on_ack, o,
                                                   errstr, errstr_size);
        if (!o->alertmanager)
            goto fail;
    }
    return o;
fail:
    ad_outbox_destroy(o);
    return NULL;
}

static struct ad_alert_msg message(const char *detector, const struct ad_alert *alert)
{
    return (struct ad_alert_msg){.id = alert->id,
                                 .detector = detector,
                                 .entity = alert->entity,
                                 .json = alert->json,
                                 .json_len = alert->json_len};
}

size_t ad_outbox_publish(struct ad_outbox *o, const char *detector, const struct ad_alert *alert,
                         uint64_t token)
{
    struct ad_alert_msg msg = message(detector, alert);
    size_t sent = 0;
    if (o->kafka && ad_kafka_sink_send(o->kafka, &msg, token) == 0)
        sent++;
    if (o->redis && ad_redis_sink_send(o->redis, &msg, token) == 0)
        sent++;
    if (o->alertmanager && ad_alertmanager_sink_send(o->alertmanager, &msg, token) == 0)
        sent++;
    if (sent < (size_t)(o->kafka != NULL) + (o->redis != NULL) + (o->alertmanager != NULL))
        AD_ERROR_KV("out of memory handing an alert to a sink", AD_KV_STR("detector", detector),
                    AD_KV_STR("id", alert->id));
    return sent;
}

void ad_outbox_restore(struct ad_outbox *o, const char *detector, const struct ad_alert *alert)
{
    struct ad_alert_msg msg = message(detector, alert);
    if (o->alertmanager)
        ad_alertmanager_sink_restore(o->alertmanager, &msg);
}

bool ad_outbox_full(const struct ad_outbox *o)
{
    return (o->kafka && ad_kafka_sink_full(o->kafka)) ||
           (o->redis && ad_redis_sink_full(o->redis)) ||
           (o->alertmanager && ad_alertmanager_sink_full(o->alertmanager));
}

static void sink_stopped(void *arg, bool flushed)
{
    struct ad_outbox *o = arg;
    o->flushed = o->flushed && flushed;
    if (--o->stops_pending == 0)
        o->done(o->done_arg, o->flushed);
}

void ad_outbox_stop(struct ad_outbox *o, int64_t deadline_ms, void (*done)(void *arg, bool flushed),
                    void *arg)
{
    o->done = done;
    o->done_arg = arg;
    o->flushed = true;
    o->stops_pending = 1; /* this function's own, so that a sink finishing at once is counted */
    if (o->kafka) {
        o->stops_pending++;
        ad_kafka_sink_stop(o->kafka, deadline_ms, sink_stopped, o);
    }
    if (o->redis) {
        o->stops_pending++;
        ad_redis_sink_stop(o->redis, deadline_ms, sink_stopped, o);
    }
    if (o->alertmanager) {
        o->stops_pending++;
        ad_alertmanager_sink_stop(o->alertmanager, deadline_ms, sink_stopped, o);
    }
    sink_stopped(o, true);
}

void ad_outbox_destroy(struct ad_outbox *o)
{
    if (!o)
        return;
    ad_kafka_sink_destroy(o->kafka);
    ad_redis_sink_destroy(o->redis);
    ad_alertmanager_sink_destroy(o->alertmanager);
    free(o);
}

void ad_outbox_status(const struct ad_outbox *o, json_t *out)
{
    if (o->kafka) {
        json_t *part = json_object();
        ad_kafka_sink_status(o->kafka, part);
        json_object_set_new(out, "kafka", part);
    }
    if (o->redis) {
        json_t *part = json_object();
        ad_redis_sink_status(o->redis, part);
        json_object_set_new(out, "redis", part);
    }
    if (o->alertmanager) {
        json_t *part = json_object();
        ad_alertmanager_sink_status(o->alertmanager, part);
        json_object_set_new(out, "alertmanager", part);
    }
}
