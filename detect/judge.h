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

/* Forgets entities whose last window is older than bucket − idle_buckets. */
void ad_judge_expire(struct ad_judge *j, int64_t bucket);

size_t ad_judge_entities(const struct ad_judge *j);
/* Windows that found the table full. */
uint64_t ad_judge_untracked(const struct ad_judge *j);

#endif
