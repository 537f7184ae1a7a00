#ifndef AD_JUDGE_H
#define AD_JUDGE_H

/*
 * How unusual a window is for its entity (docs/scoring.md): two streams of scores per entity,
 * each turned into a surprise against the entity's own history (detect/surprise.h):
 *
 *   - the LSTM's score of the window, when a model serves;
 *   - the seasonal baseline's score of the newest bucket (detect/seasonal.h), always, from
 *     the entity's second day on, with or without a model.
 *
 * The window's surprise is the larger of the two gated surprises, less log10(2) when both
 * streams spoke (the chance that either of two tests fires is twice the chance of one).
 * Replaces the anomaly likelihood of earlier versions, which saturated at 1.
 *
 * A table of entities, owned by one thread. An entity's state outlives model versions: a new
 * version's scores are judged against what the entity's scores have been, which a retrained
 * model of the same data keeps close.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpu/model.h"

struct ad_judge;

/* How a detector judges (its settings, copied). */
struct ad_judge_options {
    size_t features;
    int64_t step_ms;
    size_t max_entities;  /* kept at most */
    int64_t idle_buckets; /* an entity is forgotten this many buckets after its last window */
    bool lstm, seasonal;  /* the streams judged (detectors[].streams) */
    const struct ad_feature_control *controls; /* features entries; NULL: every deviation */
    /* Holding history (docs/feedback.md): at most max_held entities keep their state from
     * before their anomalous windows of the last hold_windows windows, and those windows, so
     * that a false positive can take them out again; 0 and 0: nothing is held. */
    size_t max_held, hold_windows;
    size_t series_limit; /* entities shown as series (ad_judge_show), at most */
};

/* NULL when out of memory. */
struct ad_judge *ad_judge_new(const struct ad_judge_options *o);
void ad_judge_destroy(struct ad_judge *j); /* accepts NULL */

enum ad_judge_stream { AD_JUDGE_NONE, AD_JUDGE_LSTM, AD_JUDGE_SEASONAL };

struct ad_verdict {
    double surprise;      /* the window's: what the threshold is compared with; NaN: none */
    double lstm_surprise; /* each stream's before its gate; NaN: the stream had no score */
    double seasonal_surprise;
    double seasonal_score;        /* the baseline's score (NaN: no profile for the slot yet) */
    double lstm_score;            /* the LSTM's, less features back from a gap (NaN: none) */
    size_t gap_features;          /* features left out of it: back from an unusual gap */
    enum ad_judge_stream decided; /* the stream whose surprise the window's is */
    /* It reached the threshold at a time of day it often does (docs/scoring.md, "Recurring
     * surprises"): no news, so its surprise is given as 0. */
    bool recurring;
    uint32_t entity; /* the entity's id in the table, for the calls below; 0: not tracked */
};

/* One window as the judge takes it (all borrowed for the call). */
struct ad_judge_input {
    const char *key; /* the entity's key, len bytes */
    size_t len;
    int64_t bucket, bucket_ms; /* the newest bucket: its index and start */
    const float *values;       /* the newest bucket's values, features entries */
    const uint8_t *observed;   /* which of them the bucket observed */
    const uint8_t *steps_mask; /* the window's masks, steps × features, oldest first */
    size_t steps;              /* T */
    double lstm_score;         /* NaN: not scored */
    /* Features entries (NULL: none); those left out become 0, the rest their share of what
     * is left. */
    float *lstm_shares;
    const struct ad_model *model; /* that scored it; NULL: none serves */
};

/*
 * Judges one window: the seasonal baseline's score of its newest bucket, and the LSTM's score
 * less the features back from an unusual gap (docs/scoring.md, "Gaps"). A surprise at or over
 * threshold that recurs at this time of day is given as 0 (out->recurring). seasonal_shares
 * (features floats, may be NULL) gets each feature's share of the baseline's score. When the
 * table is full the window is judged from priors alone and counted as untracked.
 */
void ad_judge_window(struct ad_judge *j, const struct ad_judge_input *in, double threshold,
                     struct ad_verdict *out, float *seasonal_shares);

/*
 * Takes the window just judged for entity (the verdict's entity; nothing else may have been
 * judged since) out of the entity's history again: its streams, gates, seasonal profile and
 * recurrence memory are as before the window, as if it had never come (docs/maintenance.md).
 * The verdict stands; the entity's last window and what ad_judge_show keeps stay.
 */
void ad_judge_undo(struct ad_judge *j, uint32_t entity);

/*
 * The window just judged for entity was anomalous: from it on the entity's history is held
 * (its state from before the window, and its windows since, for hold_windows windows after its
 * newest anomalous one), so that ad_judge_forget can take anomalous windows out later. Returns
 * 0, or -1 when max_held entities are held already (counted; the window cannot be taken
 * back).
 */
int ad_judge_hold(struct ad_judge *j, uint32_t entity);

/* What ad_judge_forget did. */
struct ad_judge_forgotten {
    size_t windows;  /* anomalous windows taken out of the history */
    size_t replayed; /* windows judged again after them, into the restored state */
    bool partial;    /* the span begins before what is held: older windows stay */
};

/*
 * A false positive (docs/feedback.md): takes every anomalous window of entity key (len bytes)
 * whose end lies in [from_end_ms, through_end_ms] out of its history, by restoring the state
 * held from before the first held window and judging the held windows again without them.
 * Returns 0, or -1 when nothing of the entity is held (not tracked, not held, or every window
 * of the span already left the hold).
 */
int ad_judge_forget(struct ad_judge *j, const char *key, size_t len, int64_t from_end_ms,
                    int64_t through_end_ms, struct ad_judge_forgotten *out);

/* ---- what the entities show (/metrics/entities) ---- */

struct ad_judge_shown {
    float score, surprise; /* NaN: none */
    bool anomalous;
    bool series; /* it has series: one of the first series_limit entities */
};

/* Keeps the latest score, surprise and flag of entity's window for ad_judge_next. An entity
 * that finds series_limit entities with series already is left out (counted, once until it
 * is forgotten or gets a series). */
void ad_judge_show(struct ad_judge *j, uint32_t entity, double score, double surprise,
                   bool anomalous);
/* Iteration over the tracked entities: the id after `after` (0 to start), 0 at the end; with
 * its key (borrowed) and what it shows. */
uint32_t ad_judge_next(const struct ad_judge *j, uint32_t after, const char **key, size_t *len,
                       struct ad_judge_shown *shown);
/* A new limit: entities over it lose their series (and are counted as left out). */
void ad_judge_set_series_limit(struct ad_judge *j, size_t limit);
/* Entities with series now; and entities the limit left out, in total. */
size_t ad_judge_series(const struct ad_judge *j);
uint64_t ad_judge_left_out(const struct ad_judge *j);

/* Forgets entities whose last window is older than bucket − idle_buckets. */
void ad_judge_expire(struct ad_judge *j, int64_t bucket);

size_t ad_judge_entities(const struct ad_judge *j);
/* Windows that found the table full. */
uint64_t ad_judge_untracked(const struct ad_judge *j);
/* Entities whose history is held now; anomalous windows that found max_held taken. */
size_t ad_judge_held(const struct ad_judge *j);
uint64_t ad_judge_unheld(const struct ad_judge *j);

/* The entity's history (streams, gates, profile, recurrence) as bytes, for tests that compare
 * it before and after; NULL when not tracked. */
const void *ad_judge_history(struct ad_judge *j, const char *key, size_t len, size_t *size);

#endif
