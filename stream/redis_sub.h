#ifndef AD_REDIS_SUB_H
#define AD_REDIS_SUB_H

/*
 * A subscription to one Redis channel on a connection of its own (the model store listens for
 * trainer announcements this way, model_store.redis_channel). The connection follows
 * redis_conn.h: reconnects with backoff, and subscribes again after every reconnect.
 *
 * Pub/sub does not keep messages: whatever was published while the subscription was down is
 * gone, which is why on_subscribed exists (poll what the messages would have announced).
 *
 * Every function runs on the loop thread.
 */

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <jansson.h>

#include "base/metrics.h"
#include "config/settings.h"

struct ad_redis_sub;

struct ad_redis_sub_handler {
    /* A message on the channel; payload (len bytes, NUL-terminated) is borrowed for the call. */
    void (*on_message)(void *arg, const char *payload, size_t len);
    /* May be NULL. The subscription is in place: on the first connection and after each
     * reconnect. */
    void (*on_subscribed)(void *arg);
    void *arg;
};

/* Connects with settings' url and credentials (copied) and subscribes to channel (copied).
 * Returns NULL with errstr filled. */
struct ad_redis_sub *ad_redis_sub_new(struct event_base *base,
                                      const struct ad_settings_redis_sink *settings,
                                      const char *channel, struct ad_metrics *metrics,
                                      const struct ad_redis_sub_handler *handler, char *errstr,
                                      size_t errstr_size);
/* Accepts NULL. May be called from inside the handler's callbacks. */
void ad_redis_sub_destroy(struct ad_redis_sub *s);

/* Whether the subscription is in place now. */
bool ad_redis_sub_subscribed(const struct ad_redis_sub *s);

/* Adds the subscription's part of /status. */
void ad_redis_sub_status(const struct ad_redis_sub *s, json_t *out);

#endif
