#ifndef AD_ALERTS_H
#define AD_ALERTS_H

/*
 * The alert state machine of one detector (docs/alerts.md): per entity, inactive → pending →
 * firing → resolved over the detector's scored windows, with repeats, flap detection and
 * deterministic alert ids. Loop thread only.
 *
 * Everything runs on event time (window ends), never on the wall clock, so replaying the same
 * windows gives the same notifications with the same ids: after a restart, in an offline
 * replay, on another replica. The wall clock appears only in a document's notified_at.
 *
 * Only entities with something to remember are tracked: an entity that is inactive, has no
 * firing alert outstanding, and whose anomalous flag has not changed within the flap window
 * behaves exactly like one never seen, so it is dropped. The table therefore holds the
 * entities in or near an incident, at most max_entities of them; an anomalous window of a new
 * entity that finds it full makes no alert and is counted as untracked.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config/settings.h"

/* Hex digits of an alert id (128 bits of a SHA-256). */
#define AD_ALERT_ID_LEN 32

struct ad_alerts;

/* One scored window of one entity. Everything is borrowed for the call. */
struct ad_alert_window {
    const char *key; /* the entity's label values in key order, NUL-separated */
    size_t key_len;
    int64_t start_ms, end_ms; /* the window's span; end is its newest bucket's end */
    double score;             /* the LSTM's (NaN: none) */
    double surprise; /* how unusual for the entity, −log10 of a chance (NaN: not judged) */
    double surprise_threshold, score_threshold; /* the thresholds (NaN: none) */
    double seasonal_score;                      /* the seasonal baseline's (NaN: none) */
    const char *stream;  /* the stream the surprise came from: "lstm" or "seasonal" (NULL) */
    bool recurring;      /* its surprise was set to 0: it recurs at this time of day */
    bool anomalous;      /* as docs/scoring.md decides it */
    const float *shares; /* one per feature, of the stream the surprise came from; NULL: none */
    const char *model;   /* the model's name; NULL: unknown */
    const char *model_version;
    int64_t now_ms;          /* wall clock, for notified_at only */
    const char *maintenance; /* the maintenance window it was in (scores only); NULL: none */
};

/* One notification, owned by whoever receives it (ad_alert_free). */
struct ad_alert {
    char id[AD_ALERT_ID_LEN + 1]; /* hex, deterministic (docs/alerts.md) */
    const char *state;            /* "firing" or "resolved" (static) */
    char *entity;                 /* "label=value,label=value": Kafka key, Redis hash field */
    char *key;                    /* the entity key: label values in key order, NUL-separated */
    size_t key_len;
    int64_t end_ms; /* the event time it is for: the window end (or the expiry) */
    char *json;     /* the document, one line of compact JSON, no newline */
    size_t json_len;
};

/* Receives an alert and takes ownership of it. It must not call into the same ad_alerts. */
typedef void (*ad_alert_fn)(void *arg, struct ad_alert *alert);

/* What /status and the metrics show. */
struct ad_alerts_counts {
    size_t tracked;           /* entities in the table */
    size_t pending, firing;   /* entities in each state */
    size_t flapping;          /* entities whose notifications are held back */
    size_t outstanding;       /* entities whose last notification was "firing" */
    uint64_t notified_firing; /* notifications made, by state (expiries included) */
    uint64_t notified_resolved;
    uint64_t held_back; /* state changes not notified because the entity was flapping */
    uint64_t untracked; /* anomalous windows of new entities that found the table full */
    uint64_t stale;     /* windows not newer than the entity's last one, ignored */
};

/*
 * detector names the alerts; key_labels and features name the key's values and the shares
 * (copied). settings is copied. Returns NULL when out of memory.
 */
struct ad_alerts *ad_alerts_new(const char *detector, const struct ad_settings_alert *settings,
                                const struct ad_strlist *key_labels,
                                const struct ad_strlist *features, size_t max_entities);
/* Live reload: new settings (copied) apply from the next window on; every entity keeps its
 * state, runs and flap history. */
void ad_alerts_configure(struct ad_alerts *a, const struct ad_settings_alert *settings);
void ad_alerts_destroy(struct ad_alerts *a);

/*
 * Feeds the entity's next window. Windows of one entity must come in order of end_ms; one that
 * is not newer than the entity's last is ignored (counted as stale). Returns 1 with *out set
 * to a new alert (the caller owns it) when the window makes a notification, 0 when it does
 * not, -1 when out of memory (no notification is lost: the next window makes it).
 */
int ad_alerts_observe(struct ad_alerts *a, const struct ad_alert_window *w, struct ad_alert **out);

/*
 * Forgets every entity whose newest window ended before oldest_end_ms (the pipeline calls it
 * as entities go idle, with an event time). An entity whose last notification was "firing" is
 * resolved first: the "resolved" alert (ends_at = oldest_end_ms) goes to emit, which takes it.
 * now_ms is the wall clock for notified_at. Returns the number of entities forgotten, or -1
 * when out of memory (the entities whose alert could not be made stay, for the next call).
 */
int ad_alerts_expire(struct ad_alerts *a, int64_t oldest_end_ms, int64_t now_ms, ad_alert_fn emit,
                     void *arg);

void ad_alert_free(struct ad_alert *alert);

/*
 * A scored window as one line of compact JSON (no newline), in the alert document's terms
 * (docs/replay.md, "Scores"): detector, entity, labels, the window's span, score, likelihood,
 * thresholds, anomalous, warming_up, model, and every feature's share. Returns a string the
 * caller frees, with its length in *len; NULL when out of memory.
 */
char *ad_alerts_window_json(const struct ad_alerts *a, const struct ad_alert_window *w,
                            bool warming_up, size_t *len);

void ad_alerts_counts(const struct ad_alerts *a, struct ad_alerts_counts *out);
/* Adds the counts to out (an object): tracked, pending, firing, flapping, ... */
void ad_alerts_status(const struct ad_alerts *a, json_t *out);

/* The id of the alert for (detector, entity key, event time, model version): 32 hex digits of
 * a SHA-256 over the four, each length-prefixed. version may be NULL (as ""). */
void ad_alert_id(const char *detector, const char *key, size_t key_len, int64_t end_ms,
                 const char *version, char id[AD_ALERT_ID_LEN + 1]);

#endif
