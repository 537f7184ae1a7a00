#include "detect/outbox.h"

#include <stdbool.h>
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
    /* The configs whose settings a sink built by a reload borrows (NULL: the pipeline's). */
    struct ad_config *kafka_config, *redis_config;
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

struct handover {
    struct ad_outbox *o;
    struct ad_kafka_sink *kafka; /* the successor, or NULL: the sink is removed */
    struct ad_redis_sink *redis;
    size_t sent, acked, lost;
};

static void hand_over(void *arg, const struct ad_alert_msg *msg, uint64_t token)
{
    struct handover *h = arg;
    int rc = h->kafka   ? ad_kafka_sink_send(h->kafka, msg, token)
             : h->redis ? ad_redis_sink_send(h->redis, msg, token)
                        : 1;
    if (rc == 0) {
        h->sent++;
    } else if (rc > 0) {
        h->acked++;
        h->o->ack(h->o->ack_arg, token);
    } else {
        /* Its bucket waits for it: the offsets are not committed, and a restart sends it. */
        h->lost++;
        AD_ERROR_KV("out of memory handing an alert to a new sink", AD_KV_STR("id", msg->id));
    }
}

int ad_outbox_replace(struct ad_outbox *o, struct event_base *base, struct ad_config *config,
                      struct ad_metrics *metrics, bool kafka, bool redis, char *errstr,
                      size_t errstr_size)
{
    const struct ad_settings *s = ad_config_settings(config);
    struct ad_kafka_sink *new_kafka = NULL;
    struct ad_redis_sink *new_redis = NULL;
    if (kafka && s->sinks.kafka.topic) {
        new_kafka = ad_kafka_sink_new(base, &s->kafka, &s->sinks.kafka, metrics, on_ack, o, errstr,
                                      errstr_size);
        if (!new_kafka)
            return -1;
    }
    if (redis && s->sinks.redis.url) {
        new_redis =
            ad_redis_sink_new(base, &s->sinks.redis, metrics, on_ack, o, errstr, errstr_size);
        if (!new_redis) {
            ad_kafka_sink_destroy(new_kafka);
            return -1;
        }
    }
    if (kafka) {
        struct handover h = {.o = o, .kafka = new_kafka};
        struct ad_kafka_sink *old = o->kafka;
        /* Acknowledgements for the old sink's alerts come from here on, or not at all. */
        o->kafka = new_kafka;
        if (old) {
            ad_kafka_sink_unacked(old, hand_over, &h);
            ad_kafka_sink_destroy(old);
        }
        ad_config_unref(o->kafka_config);
        o->kafka_config = new_kafka ? ad_config_ref(config) : NULL;
        AD_WARN_KV(new_kafka ? (old ? "Kafka sink replaced" : "Kafka sink added")
                             : "Kafka sink removed",
                   AD_KV_STR("topic", new_kafka ? s->sinks.kafka.topic : ""),
                   AD_KV_INT("alerts_handed_over", h.sent), AD_KV_INT("alerts_given_up", h.acked));
    }
    if (redis) {
        struct handover h = {.o = o, .redis = new_redis};
        struct ad_redis_sink *old = o->redis;
        o->redis = new_redis;
        if (old) {
            ad_redis_sink_unacked(old, hand_over, &h);
            ad_redis_sink_destroy(old);
        }
        ad_config_unref(o->redis_config);
        o->redis_config = new_redis ? ad_config_ref(config) : NULL;
        AD_WARN_KV(new_redis ? (old ? "Redis sink replaced" : "Redis sink added")
                             : "Redis sink removed",
                   AD_KV_STR("stream", new_redis ? s->sinks.redis.stream : ""),
                   AD_KV_INT("alerts_handed_over", h.sent), AD_KV_INT("alerts_given_up", h.acked));
    }
    return 0;
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
    ad_config_unref(o->kafka_config);
    ad_config_unref(o->redis_config);
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
