#ifndef AD_SINK_H
#define AD_SINK_H

/*
 * What the alert sinks (kafka_sink.h, redis_sink.h) share: the alert as handed to them and
 * the acknowledgement they give back.
 */

#include <stddef.h>
#include <stdint.h>

/* One alert. Every string is borrowed for the call; a sink copies what it keeps. */
struct ad_alert_msg {
    const char *id;       /* deterministic: (detector, entity, bucket end, model version) */
    const char *detector; /* the detector's name */
    const char *entity;   /* the entity key: ordering and partitioning go by it */
    const char *json;     /* the alert document, json_len bytes (no NUL needed) */
    size_t json_len;
};

/* One unacknowledged alert as a sink hands it over when it is replaced (borrowed for the
 * call): a reload that changed the sink's settings sends it again through the new one. */
typedef void (*ad_sink_unacked_fn)(void *arg, const struct ad_alert_msg *msg, uint64_t token);

/* Called on the loop thread, exactly once per token, after the destination acknowledged the
 * alert durably (Kafka: acks=all). */
typedef void (*ad_sink_ack_fn)(void *arg, uint64_t token);

#endif
