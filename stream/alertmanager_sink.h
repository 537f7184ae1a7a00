#ifndef AD_ALERTMANAGER_SINK_H
#define AD_ALERTMANAGER_SINK_H

/*
 * The Alertmanager sink (docs/alertmanager.md): every alert goes to every configured
 * Alertmanager as `POST /api/v2/alerts`, in Alertmanager's terms: labels (alertname = the
 * detector, the entity's labels, severity, static labels), annotations (summary, surprise,
 * score, likelihood, top features, model version, the alert id), startsAt, endsAt and a
 * generatorURL from the configured template.
 *
 * Delivery: at least once, in the pipeline's accounting. An alert is acknowledged once every
 * Alertmanager answered 200 to a request that held it. Each Alertmanager has one request in
 * flight at a time and takes the queue in order (a batch of up to 64 alerts), so an entity's
 * firing and resolved reach each one in the order made; an Alertmanager that fails is retried
 * after a backoff (100 ms doubling to 30 s, ±20%) while the others go on. Nothing is dropped:
 * while one is down the queue grows, and ad_alertmanager_sink_full() tells the pipeline to pause
 * its sources at settings->queue_limit.
 *
 * Resends: Alertmanager's client contract is that a firing alert is sent again regularly with
 * endsAt ahead of the next send, so that alerts of a client that died expire by themselves. The
 * sink keeps the firing alert of each (detector, entity) and sends it again every
 * resend_interval with endsAt = now + 4 × resend_interval (the first send does the same); a
 * resolved alert sends its ends_at and is forgotten. Resends are not notifications: no
 * acknowledgement waits for them, and a failed one is tried again at the next interval.
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
#include "stream/sink.h"

struct ad_alertmanager_sink;

/* settings is copied. ack(ack_arg, token) is called once per token sent, when every
 * Alertmanager has it; it may call ad_alertmanager_sink_send but must not destroy the sink.
 * Returns NULL with errstr filled. */
struct ad_alertmanager_sink *
ad_alertmanager_sink_new(struct event_base *base,
                         const struct ad_settings_alertmanager_sink *settings,
                         struct ad_metrics *metrics, ad_sink_ack_fn ack, void *ack_arg,
                         char *errstr, size_t errstr_size);

/* Queues msg (an alert document, docs/alerts.md), converted. 0, or -1 when out of memory or
 * when the document is not an alert (logged; nothing will be acknowledged for it). */
int ad_alertmanager_sink_send(struct ad_alertmanager_sink *s, const struct ad_alert_msg *msg,
                              uint64_t token);

/* An alert made again while windows were rebuilt after a restart, whose notification was
 * acknowledged before: not sent as a notification, only remembered, so that a firing one is
 * resent (at once, then every interval) and does not expire while it still fires. */
void ad_alertmanager_sink_restore(struct ad_alertmanager_sink *s, const struct ad_alert_msg *msg);

/* Whether the alerts not yet acknowledged reach queue_limit. */
bool ad_alertmanager_sink_full(const struct ad_alertmanager_sink *s);
/* Alerts sent and not yet acknowledged by every Alertmanager. */
size_t ad_alertmanager_sink_queued(const struct ad_alertmanager_sink *s);

/* Keeps sending until the queue is empty or deadline_ms (ad_clock_mono_ms) passes, then calls
 * done(arg, flushed) from the loop, never from inside this call. Call it once. */
void ad_alertmanager_sink_stop(struct ad_alertmanager_sink *s, int64_t deadline_ms,
                               void (*done)(void *arg, bool flushed), void *arg);

/* Aborts the requests and drops the queue (never acknowledged). Accepts NULL. */
void ad_alertmanager_sink_destroy(struct ad_alertmanager_sink *s);

/* Per Alertmanager: up, acknowledged through, last error, backoff; the queue and the firing
 * alerts resent. */
void ad_alertmanager_sink_status(const struct ad_alertmanager_sink *s, json_t *out);

#endif
