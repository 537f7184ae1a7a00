#ifndef AD_SERVING_H
#define AD_SERVING_H

/*
 * One detector's serving side, on the loop thread: the model it scores with, the batches it
 * has handed to the scorer, each entity's anomaly likelihood and alert state, the window
 * export, and which closed buckets are done, that is scored and every alert derived from them
 * acknowledged by every sink, so that the Kafka offsets of their events may be committed.
 *
 * Without a model (none in the store yet, or none that loads) windows still flow: they are
 * counted as unscored, exported, and their buckets are done. That is how a first model gets
 * its training data.
 *
 * The model is loaded from model_store.path/<model>/CURRENT when the serving side is made;
 * later versions come from the store's watcher (ad_serving_offer_model, ad_serving_refuse_model),
 * which also reports a first version that fails to load. A version that fails is logged and
 * counted once, and the serving one stays.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "base/metrics.h"
#include "config/settings.h"
#include "detect/alerts.h"
#include "gpu/scorer.h"
#include "windows/batch.h"

struct ad_serving;
struct ad_maintenance;

/* Where a detector's alerts go: the pipeline's sinks. */
struct ad_serving_outlet {
    /* Hands an alert on (borrowed for the call). Returns how many acknowledgements to wait
     * for: ad_serving_ack(v, seq) once per sink that has it safe; 0 when there are no sinks. */
    size_t (*publish)(void *arg, const struct ad_alert *alert, uint64_t seq);
    /* Each scored window, in order, as ad_alerts_window_json writes it (borrowed for the
     * call); NULL: not wanted, and no document is made. */
    void (*scored)(void *arg, const char *json, size_t len);
    /* A notification made again while windows were rebuilt after a restart, not sent because
     * it was acknowledged before (borrowed for the call); NULL: not wanted. */
    void (*rebuilt)(void *arg, const struct ad_alert *alert);
    void *arg;
};

/*
 * For detector d of s (borrowed: s must outlive the serving side). scorer may be NULL: nothing
 * is scored then. user is the caller's, for ad_serving_user. Returns NULL with err filled when
 * the export cannot be opened or memory runs out; a missing model is not an error.
 */
struct ad_serving *ad_serving_new(const struct ad_settings *s, size_t d, struct ad_scorer *scorer,
                                  const struct ad_serving_outlet *outlet,
                                  struct ad_metrics *metrics, void *user, char *errstr,
                                  size_t errstr_size);
void ad_serving_destroy(struct ad_serving *v);

/* Takes a batch of windows of a closed bucket (ownership too) and sends it to be scored. */
void ad_serving_submit(struct ad_serving *v, struct ad_window_batch *batch);
/* Every batch of buckets up to and including bucket has been submitted. */
void ad_serving_closed(struct ad_serving *v, int64_t bucket);
/* The serving side a job came back for (its owner), and its user pointer. */
struct ad_serving *ad_serving_of(const struct ad_score_job *job);
void *ad_serving_user(const struct ad_serving *v);

/*
 * An event read again after a restart fed the entity key (borrowed): its windows ending at or
 * before notified_through_ms were notified and acknowledged before, so what the alert state
 * machine makes for them as the windows are rebuilt is not sent again (docs/delivery.md).
 */
void ad_serving_mark_replayed(struct ad_serving *v, const char *key, size_t len,
                              int64_t notified_through_ms);

/* A job of this detector came back from the scorer: likelihoods, export, counts. Frees it. */
void ad_serving_finish(struct ad_serving *v, struct ad_score_job *job);

/* The newest bucket up to which everything is done; INT64_MIN before any. */
int64_t ad_serving_done_through(const struct ad_serving *v);
/* Batches submitted and not yet finished. */
size_t ad_serving_in_flight(const struct ad_serving *v);
/* Alerts handed on and not yet acknowledged by every sink. */
size_t ad_serving_unacked(const struct ad_serving *v);
/* One sink has alert seq safe. */
void ad_serving_ack(struct ad_serving *v, uint64_t seq);

/* A new version of the detector's model (a reference, which this takes): served from the next
 * batch on when it fits the detector's windows, else refused like a version that fails to
 * load. */
void ad_serving_offer_model(struct ad_serving *v, struct ad_model *m);
/* A new version was found and refused (error says why): logged and counted; the serving one
 * stays. */
void ad_serving_refuse_model(struct ad_serving *v, const char *error);

/* The time written into the notified_at of the alerts made from now on: ms, instead of the
 * wall clock (INT64_MIN, the default). An offline replay gives its own event-time clock, so
 * that its output depends on its input alone. */
void ad_serving_set_notified_at(struct ad_serving *v, int64_t ms);

/* A new set of maintenance windows for this detector (live reload; ownership too). */
void ad_serving_set_maintenance(struct ad_serving *v, struct ad_maintenance *m);
/* A new scoring.entity_metrics_limit (live reload). */
void ad_serving_set_series_limit(struct ad_serving *v, size_t limit);

/* The families of /metrics/entities (docs/entity-metrics.md). */
enum ad_serving_family {
    AD_ENTITY_SCORE,     /* anomalyd_entity_score */
    AD_ENTITY_SURPRISE,  /* anomalyd_entity_surprise */
    AD_ENTITY_ANOMALOUS, /* anomalyd_entity_anomalous */
    AD_ENTITY_FAMILIES
};
/* Name and help of a family. */
const char *ad_serving_family_name(enum ad_serving_family f);
const char *ad_serving_family_help(enum ad_serving_family f);
/* Writes the samples of family for every entity with series, in Prometheus' text format,
 * labelled with the detector and the entity's key labels. */
void ad_serving_write_entities(const struct ad_serving *v, enum ad_serving_family family,
                               FILE *out);

/* Whether a mark may name id: a notification of this detector remembered, or a mark kept. */
bool ad_serving_knows_alert(const struct ad_serving *v, const char *id);
/* The mark of the alert of id (a new reference), or NULL. */
json_t *ad_serving_mark_of(const struct ad_serving *v, const char *id);
/*
 * Marks the alert of notification id (docs/feedback.md): kept in the marks file, then, for a
 * false positive, its anomalous windows taken out of the entity's history. Fills reply with the
 * mark and what happened to the history. Returns an HTTP status: 200, 404 (id not known), 503
 * (the mark cannot be kept; reply says why).
 */
int ad_serving_mark(struct ad_serving *v, const char *id, const char *verdict, const char *comment,
                    const char *by, json_t *reply);

/* The version served now; NULL when none. */
const struct ad_model *ad_serving_model(const struct ad_serving *v);

/* The model (or why there is none), and what was scored. */
void ad_serving_status(const struct ad_serving *v, json_t *out);

#endif
