#include "detect/judge.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "detect/entity_table.h"
#include "detect/recurrence.h"
#include "detect/seasonal.h"
#include "detect/surprise.h"

/* What the judge remembers of one entity (about 1 KiB at one feature and 5-minute steps). */
struct entity {
    int64_t last_bucket;
    bool lstm_started; /* the LSTM stream has its prior */
    struct ad_surprise lstm, seasonal;
    struct ad_recurrence recurrence;
    uint32_t windows;
    /* Then, per feature, how often it is observed in the step before a judged window's newest
     * (a float each), then the seasonal baseline's state. */
    float tail[];
};

/* Features observed this often before (or more) are usually there: a gap in them is an
 * input that was down, not the entity's own rhythm. */
#define USUAL         0.95
#define USUAL_WINDOWS 100 /* the rate's memory, in windows */

struct ad_judge {
    struct ad_entity_table *table;
    size_t features;
    int64_t step_ms, idle_buckets;
    bool lstm, seasonal;
    struct ad_feature_control *controls; /* NULL: none */
    uint64_t untracked;
    struct entity *scratch; /* an entity judged from priors alone, when the table is full */
};

static float *rates_of(struct entity *e)
{
    return e->tail;
}

static void *baseline_of(const struct ad_judge *j, struct entity *e)
{
    return e->tail + j->features;
}

/* Rounded up so that the next record in the table keeps its doubles aligned. */
static size_t entity_size(size_t features, int64_t step_ms)
{
    size_t size =
        sizeof(struct entity) + features * sizeof(float) + ad_seasonal_size(features, step_ms);
    size_t align = _Alignof(struct entity);
    return (size + align - 1) / align * align;
}

static void start(struct ad_judge *j, struct entity *e)
{
    e->last_bucket = INT64_MIN;
    e->lstm_started = false;
    /* Seasonal scores are distances in units of their usual size: mean and spread about 1. */
    ad_surprise_init(&e->seasonal, 1.0, 1.0);
    ad_recurrence_init(&e->recurrence);
    e->windows = 0;
    for (size_t f = 0; f < j->features; f++)
        rates_of(e)[f] = 0;
    ad_seasonal_init(baseline_of(j, e), j->features, j->step_ms);
}

struct ad_judge *ad_judge_new(const struct ad_judge_options *o)
{
    struct ad_judge *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->features = o->features;
    j->step_ms = o->step_ms;
    j->idle_buckets = o->idle_buckets;
    j->lstm = o->lstm;
    j->seasonal = o->seasonal;
    j->table = ad_entity_table_new(entity_size(o->features, o->step_ms), o->max_entities);
    j->scratch = malloc(entity_size(o->features, o->step_ms));
    if (o->controls) {
        j->controls = malloc((o->features ? o->features : 1) * sizeof *j->controls);
        if (j->controls)
            memcpy(j->controls, o->controls, o->features * sizeof *j->controls);
    }
    if (!j->table || !j->scratch || (o->controls && !j->controls)) {
        ad_judge_destroy(j);
        return NULL;
    }
    return j;
}

void ad_judge_destroy(struct ad_judge *j)
{
    if (!j)
        return;
    ad_entity_table_destroy(j->table);
    free(j->scratch);
    free(j->controls);
    free(j);
}

/* The LSTM's score less the features back from an unusual gap: observed now but not in the
 * step before, or in fewer than half of the steps the network saw, while they are usually
 * observed. Their errors come from fill values. Updates the rates. */
static double lstm_without_gaps(struct ad_judge *j, struct entity *e,
                                const struct ad_judge_input *in, size_t *left_out)
{
    size_t F = j->features, T = in->steps, scored = 0;
    float *rate = rates_of(e);
    double sum = 0, kept = 0;
    *left_out = 0;
    e->windows++;
    uint32_t memory = e->windows < USUAL_WINDOWS ? e->windows : USUAL_WINDOWS;
    for (size_t f = 0; f < F; f++) {
        if (!in->observed[f] || !isfinite(in->values[f]))
            continue;
        bool before = T >= 2 && in->steps_mask[(T - 2) * F + f];
        size_t seen = 0;
        for (size_t t = 0; t + 1 < T; t++)
            seen += in->steps_mask[t * F + f] != 0;
        bool gap = !before || 2 * seen < T - 1;
        bool usual = e->windows > USUAL_WINDOWS / 4 && rate[f] >= USUAL;
        rate[f] += ((before ? 1.0f : 0.0f) - rate[f]) / (float)memory;
        double share = in->lstm_shares ? in->lstm_shares[f] : 0;
        scored++;
        sum += share;
        if (gap && usual) {
            (*left_out)++;
            if (in->lstm_shares)
                in->lstm_shares[f] = 0;
        } else {
            kept += share;
        }
    }
    if (!isfinite(in->lstm_score) || !*left_out)
        return in->lstm_score;
    for (size_t f = 0; in->lstm_shares && kept > 0 && f < F; f++)
        in->lstm_shares[f] = (float)(in->lstm_shares[f] / kept);
    if (scored == *left_out)
        return NAN;
    /* score² = Σ r² / observed and share = r² / Σ r²: what is left, over those left. */
    double all = in->lstm_score * in->lstm_score * (double)scored;
    return sqrt((sum > 0 ? all * kept / sum : 0) / (double)(scored - *left_out));
}

void ad_judge_window(struct ad_judge *j, const struct ad_judge_input *in, double threshold,
                     struct ad_verdict *out, float *seasonal_shares)
{
    uint32_t id = ad_entity_table_find(j->table, in->key, in->len);
    struct entity *e;
    if (!id && (id = ad_entity_table_add(j->table, in->key, in->len)) != 0)
        start(j, ad_entity_table_record(j->table, id));
    if (id) {
        e = ad_entity_table_record(j->table, id);
    } else {
        j->untracked++;
        e = j->scratch;
        start(j, e);
    }
    e->last_bucket = in->bucket;

    double lstm_gated = NAN, seasonal_gated = NAN;
    *out = (struct ad_verdict){
        .surprise = NAN, .lstm_surprise = NAN, .seasonal_surprise = NAN, .decided = AD_JUDGE_NONE};
    out->seasonal_score =
        ad_seasonal_update(baseline_of(j, e), j->features, j->step_ms, in->bucket_ms, in->values,
                           in->observed, j->controls, seasonal_shares);
    out->lstm_score = lstm_without_gaps(j, e, in, &out->gap_features);
    if (isfinite(out->seasonal_score) && j->seasonal)
        out->seasonal_surprise =
            ad_surprise_update(&e->seasonal, out->seasonal_score, &seasonal_gated);
    if (in->model && isfinite(out->lstm_score) && j->lstm) {
        if (!e->lstm_started) {
            const struct ad_model_calibration *c = ad_model_calibration(in->model);
            ad_surprise_init(&e->lstm, c->score_mean, c->score_std);
            e->lstm_started = true;
        }
        out->lstm_surprise = ad_surprise_update(&e->lstm, out->lstm_score, &lstm_gated);
    }

    bool both = isfinite(lstm_gated) && isfinite(seasonal_gated);
    if (isfinite(lstm_gated) && !(seasonal_gated > lstm_gated)) {
        out->surprise = lstm_gated;
        out->decided = AD_JUDGE_LSTM;
    } else if (isfinite(seasonal_gated)) {
        out->surprise = seasonal_gated;
        out->decided = AD_JUDGE_SEASONAL;
    }
    if (both)
        out->surprise = fmax(out->surprise - log10(2.0), 0);
    if (out->surprise >= threshold &&
        ad_recurrence_seen(&e->recurrence, j->step_ms, in->bucket_ms, out->surprise)) {
        out->recurring = true;
        out->surprise = 0;
    }
}

void ad_judge_expire(struct ad_judge *j, int64_t bucket)
{
    int64_t oldest = bucket - j->idle_buckets;
    for (uint32_t id = 0; (id = ad_entity_table_next(j->table, id));) {
        const struct entity *e = ad_entity_table_record(j->table, id);
        if (e->last_bucket < oldest)
            ad_entity_table_remove(j->table, id);
    }
}

size_t ad_judge_entities(const struct ad_judge *j)
{
    return ad_entity_table_count(j->table);
}

uint64_t ad_judge_untracked(const struct ad_judge *j)
{
    return j->untracked;
}
