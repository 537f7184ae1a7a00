#ifndef AD_OUTBOX_H
#define AD_OUTBOX_H

/*
 * The alert sinks of one pipeline, as one: the Kafka sink when sinks.kafka is configured, the
 * Redis sink when sinks.redis is, the Alertmanager sink when sinks.alertmanager is. Each alert goes
 * to every sink; each sink acknowledges it once it is safe there (docs/sinks.md), through the one
 * callback given here, on the loop thread. Sinks never drop: when one has too much unacknowledged,
 * ad_outbox_full says so and the pipeline pauses its Kafka sources until it drains.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "base/metrics.h"
#include "config/config.h"
#include "config/settings.h"
#include "detect/alerts.h"

struct ad_outbox;

typedef void (*ad_outbox_ack_fn)(void *arg, uint64_t token);

/* Builds the configured sinks (none is fine). Returns NULL with err filled. */
struct ad_outbox *ad_outbox_new(struct event_base *base, const struct ad_settings *s,
                                struct ad_metrics *metrics, ad_outbox_ack_fn ack, void *ack_arg,
                                char *errstr, size_t errstr_size);

/*
 * A reload changed the sinks section (docs/config.md, "Reloading"): each sink named (kafka,
 * redis) is replaced by one built from s, or removed when s no longer configures it; the
 * other sinks, and the pipeline, go on untouched. Every new sink is built first: when one
 * cannot be, nothing changes and -1 is returned with errstr filled. Then the alerts a replaced
 * sink had not had acknowledged are sent through its successor in the order they were sent,
 * under the same tokens (the destination may have some already: at least once, the ids tell),
 * and those of a removed sink are acknowledged, since no sink owes them any more. The outbox
 * keeps a reference to config, whose settings the new sinks borrow, for as long as they live.
 * Returns 0.
 */
int ad_outbox_replace(struct ad_outbox *o, struct event_base *base, struct ad_config *config,
                      struct ad_metrics *metrics, bool kafka, bool redis, char *errstr,
                      size_t errstr_size);

/* Hands alert (borrowed) of detector to every sink. Returns how many acknowledgements of token
 * will come: one per sink that took it. */
size_t ad_outbox_publish(struct ad_outbox *o, const char *detector, const struct ad_alert *alert,
                         uint64_t token);

/* An alert made again while windows were rebuilt after a restart, acknowledged before the
 * restart (borrowed): sinks that keep state of their own (Alertmanager's resends) take it back;
 * nothing is sent as a notification and nothing will be acknowledged. */
void ad_outbox_restore(struct ad_outbox *o, const char *detector, const struct ad_alert *alert);

/* Some sink holds as many unacknowledged alerts as it may. */
bool ad_outbox_full(const struct ad_outbox *o);

/* Flushes every sink until deadline_ms (ad_clock_mono_ms), then calls done(arg, flushed):
 * flushed is false when something was still unacknowledged. */
void ad_outbox_stop(struct ad_outbox *o, int64_t deadline_ms, void (*done)(void *arg, bool flushed),
                    void *arg);
void ad_outbox_destroy(struct ad_outbox *o);

void ad_outbox_status(const struct ad_outbox *o, json_t *out);

#endif
