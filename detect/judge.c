#include "detect/judge.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "detect/entity_table.h"
#include "detect/recurrence.h"
#include "detect/seasonal.h"
#include "detect/surprise.h"

/* Each entity: its streams, then its seasonal baseline (ad_seasonal_size bytes). */
struct entity {
    int64_t last_bucket;
    bool lstm_started; /* the LSTM stream has its prior */
    struct ad_surprise lstm, seasonal;
    struct ad_recurrence recurrence;
    float baseline[]; /* the seasonal baseline's state */
};

struct ad_judge {
    struct ad_entity_table *table;
    size_t features;
    int64_t step_ms, idle_buckets;
    bool lstm, seasonal;
    struct ad_feature_control *controls; /* NULL: none */
    uint64_t untracked;
    struct entity *scratch; /* an entity judged from priors alone, when the table is full */
};

/* Rounded up so that the next record in the table keeps its doubles aligned. */
static size_t entity_size(size_t features, int64_t step_ms)
{
    size_t size = sizeof(struct entity) + ad_seasonal_size(features, step_ms);
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
    ad_seasonal_init(e->baseline, j->features, j->step_ms);
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

void ad_judge_window(struct ad_judge *j, const char *key, size_t len, int64_t bucket,
                     int64_t bucket_ms, const float *values, const uint8_t *observed,
                     double lstm_score, const struct ad_model *model, double threshold,
                     struct ad_verdict *out, float *seasonal_shares)
{
    uint32_t id = ad_entity_table_find(j->table, key, len);
    struct entity *e;
    if (!id && (id = ad_entity_table_add(j->table, key, len)) != 0)
        start(j, ad_entity_table_record(j->table, id));
    if (id) {
        e = ad_entity_table_record(j->table, id);
    } else {
        j->untracked++;
        e = j->scratch;
        start(j, e);
    }
    e->last_bucket = bucket;

    double lstm_gated = NAN, seasonal_gated = NAN;
    *out = (struct ad_verdict){
        .surprise = NAN, .lstm_surprise = NAN, .seasonal_surprise = NAN, .decided = AD_JUDGE_NONE};
    out->seasonal_score = ad_seasonal_update(e->baseline, j->features, j->step_ms, bucket_ms,
                                             values, observed, j->controls, seasonal_shares);
    if (isfinite(out->seasonal_score) && j->seasonal)
        out->seasonal_surprise =
            ad_surprise_update(&e->seasonal, out->seasonal_score, &seasonal_gated);
    if (model && isfinite(lstm_score) && j->lstm) {
        if (!e->lstm_started) {
            const struct ad_model_calibration *c = ad_model_calibration(model);
            ad_surprise_init(&e->lstm, c->score_mean, c->score_std);
            e->lstm_started = true;
        }
        out->lstm_surprise = ad_surprise_update(&e->lstm, lstm_score, &lstm_gated);
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
        ad_recurrence_seen(&e->recurrence, j->step_ms, bucket_ms, out->surprise)) {
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
