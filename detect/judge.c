#include "detect/judge.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "detect/entity_table.h"
#include "detect/recurrence.h"
#include "detect/seasonal.h"
#include "detect/surprise.h"

/* Series of what entities show: none yet, one, or left out by the limit. */
enum { SERIES_NONE, SERIES_SHOWN, SERIES_LEFT_OUT };

/*
 * Each entity (about 1 KiB at one feature and 5-minute steps): what it is beside its history
 * (its last window, what it shows, its hold), then its history from `lstm_started` to the end
 * of the record: its streams, its recurrence memory, how often each feature is observed and its
 * seasonal baseline (ad_seasonal_size bytes). The history is what ad_judge_undo puts back and a
 * hold keeps a copy of.
 */
struct entity {
    int64_t last_bucket;
    float shown_score, shown_surprise;
    uint8_t shown_anomalous, series;
    uint32_t hold; /* index + 1 into holds; 0: none */
    /* history */
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

#define HISTORY offsetof(struct entity, lstm_started)

/* One window as it was judged, enough to judge it again; values[F], the LSTM's shares[F] and
 * flags[F] (HELD_*) follow. */
struct held_window {
    int64_t bucket, bucket_ms;
    double score, threshold, cal_mean, cal_std;
    bool has_model, anomalous;
};

enum {
    HELD_OBSERVED = 1, /* the newest bucket observed the feature */
    HELD_BEFORE = 2,   /* and the step before it did */
    HELD_GAP = 4,      /* it is back from a gap: not before, or in under half the steps */
    HELD_SCORED = 8    /* observed and finite: the LSTM scored it */
};

/* An entity's history from before the first window held, and the windows since. */
struct hold {
    uint32_t entity; /* 0: a free slot */
    unsigned char *checkpoint;
    unsigned char *log; /* n windows of stride bytes */
    size_t n, cap;
    size_t anomalous; /* of the windows held, those marked anomalous */
};

struct ad_judge {
    struct ad_entity_table *table;
    size_t features;
    int64_t step_ms, idle_buckets;
    bool lstm, seasonal;
    struct ad_feature_control *controls; /* NULL: none */
    uint64_t untracked;
    size_t record_size, history_size, stride;
    struct entity *scratch; /* an entity judged from priors alone, when the table is full */
    struct entity *work;    /* a hold's checkpoint being moved on */
    /* The entity judged last: its history before the window, and the window. */
    unsigned char *before;
    uint32_t before_id;
    bool logged; /* the window went into the entity's hold */
    unsigned char *last;
    uint8_t *observed; /* the window's newest bucket's mask, features entries */
    /* holds */
    struct hold *holds;
    size_t max_held, hold_windows, n_held, n_holds, cap_holds;
    uint64_t unheld;
    /* series */
    size_t series_limit, series;
    uint64_t left_out;
};

/* Rounded up so that the next record in the table keeps its doubles aligned. */
static size_t entity_size(size_t features, int64_t step_ms)
{
    size_t size =
        sizeof(struct entity) + features * sizeof(float) + ad_seasonal_size(features, step_ms);
    size_t align = _Alignof(struct entity);
    return (size + align - 1) / align * align;
}

static unsigned char *history(struct entity *e)
{
    return (unsigned char *)e + HISTORY;
}

static float *rates_of(struct entity *e)
{
    return e->tail;
}

static void *baseline_of(const struct ad_judge *j, struct entity *e)
{
    return e->tail + j->features;
}

static struct held_window *held_at(const struct ad_judge *j, unsigned char *log, size_t i)
{
    return (struct held_window *)(log + i * j->stride);
}

static float *held_values(struct held_window *w)
{
    return (float *)(w + 1);
}

static float *held_shares(const struct ad_judge *j, struct held_window *w)
{
    return held_values(w) + j->features;
}

static uint8_t *held_flags(const struct ad_judge *j, struct held_window *w)
{
    return (uint8_t *)(held_shares(j, w) + j->features);
}

static void start(struct ad_judge *j, struct entity *e)
{
    e->last_bucket = INT64_MIN;
    e->shown_score = e->shown_surprise = NAN;
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
    j->max_held = o->hold_windows ? o->max_held : 0;
    j->hold_windows = o->hold_windows;
    j->series_limit = o->series_limit;
    j->record_size = entity_size(o->features, o->step_ms);
    j->history_size = j->record_size - HISTORY;
    j->stride = (sizeof(struct held_window) + o->features * (2 * sizeof(float) + 1) + 7) / 8 * 8;
    j->table = ad_entity_table_new(j->record_size, o->max_entities);
    j->scratch = malloc(j->record_size);
    j->work = malloc(j->record_size);
    j->before = malloc(j->history_size);
    j->last = malloc(j->stride);
    j->observed = malloc(o->features ? o->features : 1);
    if (o->controls) {
        j->controls = malloc((o->features ? o->features : 1) * sizeof *j->controls);
        if (j->controls)
            memcpy(j->controls, o->controls, o->features * sizeof *j->controls);
    }
    if (!j->table || !j->scratch || !j->work || !j->before || !j->last || !j->observed ||
        (o->controls && !j->controls)) {
        ad_judge_destroy(j);
        return NULL;
    }
    return j;
}

static void release(struct ad_judge *j, uint32_t index)
{
    struct hold *h = &j->holds[index];
    free(h->checkpoint);
    free(h->log);
    *h = (struct hold){0};
    j->n_held--;
}

void ad_judge_destroy(struct ad_judge *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n_holds; i++)
        if (j->holds[i].entity)
            release(j, (uint32_t)i);
    free(j->holds);
    ad_entity_table_destroy(j->table);
    free(j->scratch);
    free(j->work);
    free(j->before);
    free(j->last);
    free(j->observed);
    free(j->controls);
    free(j);
}

/* ---- judging ---- */

/* The LSTM's score of w less the features back from an unusual gap: observed now but not in
 * the step before, or in fewer than half of the steps the network saw, while they are usually
 * observed. Their errors come from fill values. Updates e's rates; lstm_shares (NULL: not
 * wanted) gets the shares of what is left. */
static double lstm_without_gaps(struct ad_judge *j, struct entity *e, struct held_window *w,
                                float *lstm_shares, size_t *left_out)
{
    size_t F = j->features, scored = 0;
    float *rate = rates_of(e);
    const float *shares = held_shares(j, w);
    const uint8_t *flags = held_flags(j, w);
    double sum = 0, kept = 0;
    *left_out = 0;
    e->windows++;
    uint32_t memory = e->windows < USUAL_WINDOWS ? e->windows : USUAL_WINDOWS;
    for (size_t f = 0; f < F; f++) {
        if (lstm_shares)
            lstm_shares[f] = shares[f];
        if (!(flags[f] & HELD_SCORED))
            continue;
        bool before = flags[f] & HELD_BEFORE;
        bool usual = e->windows > USUAL_WINDOWS / 4 && rate[f] >= USUAL;
        rate[f] += ((before ? 1.0f : 0.0f) - rate[f]) / (float)memory;
        scored++;
        sum += shares[f];
        if ((flags[f] & HELD_GAP) && usual) {
            (*left_out)++;
            if (lstm_shares)
                lstm_shares[f] = 0;
        } else {
            kept += shares[f];
        }
    }
    if (!isfinite(w->score) || !*left_out)
        return w->score;
    for (size_t f = 0; lstm_shares && kept > 0 && f < F; f++)
        lstm_shares[f] = (float)(lstm_shares[f] / kept);
    if (scored == *left_out)
        return NAN;
    /* score² = Σ r² / observed and share = r² / Σ r²: what is left, over those left. */
    double all = w->score * w->score * (double)scored;
    return sqrt((sum > 0 ? all * kept / sum : 0) / (double)(scored - *left_out));
}

/* Judges w against e's history, which it updates. */
static void judge(struct ad_judge *j, struct entity *e, struct held_window *w,
                  struct ad_verdict *out, float *seasonal_shares, float *lstm_shares)
{
    double lstm_gated = NAN, seasonal_gated = NAN;
    *out = (struct ad_verdict){
        .surprise = NAN, .lstm_surprise = NAN, .seasonal_surprise = NAN, .decided = AD_JUDGE_NONE};
    const uint8_t *flags = held_flags(j, w);
    for (size_t f = 0; f < j->features; f++)
        j->observed[f] = (flags[f] & HELD_OBSERVED) != 0;
    out->seasonal_score =
        ad_seasonal_update(baseline_of(j, e), j->features, j->step_ms, w->bucket_ms, held_values(w),
                           j->observed, j->controls, seasonal_shares);
    out->lstm_score = lstm_without_gaps(j, e, w, lstm_shares, &out->gap_features);
    if (isfinite(out->seasonal_score) && j->seasonal)
        out->seasonal_surprise =
            ad_surprise_update(&e->seasonal, out->seasonal_score, &seasonal_gated);
    if (w->has_model && isfinite(out->lstm_score) && j->lstm) {
        if (!e->lstm_started) {
            ad_surprise_init(&e->lstm, w->cal_mean, w->cal_std);
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
    if (out->surprise >= w->threshold &&
        ad_recurrence_seen(&e->recurrence, j->step_ms, w->bucket_ms, out->surprise)) {
        out->recurring = true;
        out->surprise = 0;
    }
}

/* The oldest window held leaves the hold: the checkpoint moves past it. */
static void roll(struct ad_judge *j, struct hold *h)
{
    struct held_window *oldest = held_at(j, h->log, 0);
    struct ad_verdict ignored;
    memcpy(history(j->work), h->checkpoint, j->history_size);
    judge(j, j->work, oldest, &ignored, NULL, NULL);
    memcpy(h->checkpoint, history(j->work), j->history_size);
    if (oldest->anomalous)
        h->anomalous--;
    h->n--;
    memmove(h->log, h->log + j->stride, h->n * j->stride);
}

static int append(struct ad_judge *j, struct hold *h, const unsigned char *w)
{
    if (ad_grow(&h->log, &h->cap, h->n + 1, j->stride) < 0)
        return -1;
    memcpy(h->log + h->n++ * j->stride, w, j->stride);
    return 0;
}

/* in as a held window, into j->last. */
static struct held_window *hold_form(struct ad_judge *j, const struct ad_judge_input *in,
                                     double threshold)
{
    size_t F = j->features, T = in->steps;
    struct held_window *w = (struct held_window *)j->last;
    *w = (struct held_window){.bucket = in->bucket,
                              .bucket_ms = in->bucket_ms,
                              .score = in->lstm_score,
                              .threshold = threshold,
                              .has_model = in->model != NULL};
    if (in->model) {
        const struct ad_model_calibration *c = ad_model_calibration(in->model);
        w->cal_mean = c->score_mean;
        w->cal_std = c->score_std;
    }
    memcpy(held_values(w), in->values, F * sizeof(float));
    float *shares = held_shares(j, w);
    uint8_t *flags = held_flags(j, w);
    for (size_t f = 0; f < F; f++) {
        shares[f] = in->lstm_shares ? in->lstm_shares[f] : 0;
        flags[f] = 0;
        if (!in->observed[f])
            continue;
        flags[f] = HELD_OBSERVED;
        if (!isfinite(in->values[f]))
            continue;
        bool before = T >= 2 && in->steps_mask[(T - 2) * F + f];
        size_t seen = 0;
        for (size_t t = 0; t + 1 < T; t++)
            seen += in->steps_mask[t * F + f] != 0;
        flags[f] |=
            HELD_SCORED | (before ? HELD_BEFORE : 0) | (!before || 2 * seen < T - 1 ? HELD_GAP : 0);
    }
    return w;
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

    struct held_window *w = hold_form(j, in, threshold);

    memcpy(j->before, history(e), j->history_size);
    j->before_id = id;
    j->logged = false;
    judge(j, e, w, out, seasonal_shares, in->lstm_shares);
    out->entity = id;

    if (id && e->hold) {
        struct hold *h = &j->holds[e->hold - 1];
        j->logged = append(j, h, j->last) == 0;
        while (h->n > j->hold_windows)
            roll(j, h);
        if (h->anomalous == 0 && h->n == j->hold_windows) {
            /* The newest anomalous window has left: nothing is left to take back. */
            release(j, e->hold - 1);
            e->hold = 0;
            j->logged = false;
        }
    }
}

void ad_judge_undo(struct ad_judge *j, uint32_t entity)
{
    if (!entity || entity != j->before_id)
        return;
    struct entity *e = ad_entity_table_record(j->table, entity);
    memcpy(history(e), j->before, j->history_size);
    if (j->logged && e->hold) {
        struct hold *h = &j->holds[e->hold - 1];
        if (held_at(j, h->log, h->n - 1)->anomalous)
            h->anomalous--;
        h->n--;
        if (h->n == 0 && h->anomalous == 0) {
            release(j, e->hold - 1);
            e->hold = 0;
        }
    }
    j->logged = false;
    j->before_id = 0; /* once */
}

int ad_judge_hold(struct ad_judge *j, uint32_t entity)
{
    if (!entity || entity != j->before_id)
        return -1;
    struct entity *e = ad_entity_table_record(j->table, entity);
    if (e->hold) {
        struct hold *h = &j->holds[e->hold - 1];
        struct held_window *w = j->logged ? held_at(j, h->log, h->n - 1) : NULL;
        if (w && !w->anomalous) {
            w->anomalous = true;
            h->anomalous++;
        }
        return w ? 0 : -1;
    }
    if (j->n_held >= j->max_held) {
        j->unheld++;
        return -1;
    }
    size_t slot = 0;
    while (slot < j->n_holds && j->holds[slot].entity)
        slot++;
    if (slot == j->n_holds) {
        if (ad_grow(&j->holds, &j->cap_holds, j->n_holds + 1, sizeof *j->holds) < 0)
            goto fail;
        j->holds[j->n_holds++] = (struct hold){0};
    }
    struct hold *h = &j->holds[slot];
    h->checkpoint = malloc(j->history_size);
    if (!h->checkpoint || append(j, h, j->last) < 0) {
        free(h->checkpoint);
        free(h->log);
        *h = (struct hold){0};
        goto fail;
    }
    memcpy(h->checkpoint, j->before, j->history_size);
    held_at(j, h->log, 0)->anomalous = true;
    h->anomalous = 1;
    h->entity = entity;
    e->hold = (uint32_t)slot + 1;
    j->n_held++;
    j->logged = true;
    return 0;
fail:
    j->unheld++;
    return -1;
}

int ad_judge_forget(struct ad_judge *j, const char *key, size_t len, int64_t from_end_ms,
                    int64_t through_end_ms, struct ad_judge_forgotten *out)
{
    *out = (struct ad_judge_forgotten){0};
    uint32_t id = ad_entity_table_find(j->table, key, len);
    struct entity *e = id ? ad_entity_table_record(j->table, id) : NULL;
    if (!e || !e->hold)
        return -1;
    struct hold *h = &j->holds[e->hold - 1];
    if (h->n == 0 || held_at(j, h->log, h->n - 1)->bucket_ms + j->step_ms < from_end_ms)
        return -1;
    out->partial = held_at(j, h->log, 0)->bucket_ms + j->step_ms > from_end_ms;
    /* From the checkpoint, every held window but the span's anomalous ones, in order. */
    memcpy(history(e), h->checkpoint, j->history_size);
    size_t kept = 0;
    for (size_t i = 0; i < h->n; i++) {
        struct held_window *w = held_at(j, h->log, i);
        int64_t end = w->bucket_ms + j->step_ms;
        if (w->anomalous && end >= from_end_ms && end <= through_end_ms) {
            out->windows++;
            h->anomalous--;
            continue;
        }
        struct ad_verdict ignored;
        judge(j, e, w, &ignored, NULL, NULL);
        out->replayed++;
        if (kept != i)
            memcpy(held_at(j, h->log, kept), w, j->stride);
        kept++;
    }
    h->n = kept;
    if (h->anomalous == 0) {
        release(j, e->hold - 1);
        e->hold = 0;
    }
    j->before_id = 0; /* an undo now would put back what this replaced */
    return 0;
}

/* ---- shown ---- */

void ad_judge_show(struct ad_judge *j, uint32_t entity, double score, double surprise,
                   bool anomalous)
{
    if (!entity)
        return;
    struct entity *e = ad_entity_table_record(j->table, entity);
    e->shown_score = (float)score;
    e->shown_surprise = (float)surprise;
    e->shown_anomalous = anomalous;
    if (e->series == SERIES_SHOWN)
        return;
    if (j->series < j->series_limit) {
        e->series = SERIES_SHOWN;
        j->series++;
    } else if (e->series == SERIES_NONE) {
        e->series = SERIES_LEFT_OUT;
        j->left_out++;
    }
}

uint32_t ad_judge_next(const struct ad_judge *j, uint32_t after, const char **key, size_t *len,
                       struct ad_judge_shown *shown)
{
    uint32_t id = ad_entity_table_next(j->table, after);
    if (!id)
        return 0;
    const struct entity *e = ad_entity_table_record(j->table, id);
    *key = ad_entity_table_key(j->table, id, len);
    *shown = (struct ad_judge_shown){.score = e->shown_score,
                                     .surprise = e->shown_surprise,
                                     .anomalous = e->shown_anomalous,
                                     .series = e->series == SERIES_SHOWN};
    return id;
}

void ad_judge_set_series_limit(struct ad_judge *j, size_t limit)
{
    j->series_limit = limit;
    for (uint32_t id = 0; j->series > limit && (id = ad_entity_table_next(j->table, id));) {
        struct entity *e = ad_entity_table_record(j->table, id);
        if (e->series == SERIES_SHOWN) {
            e->series = SERIES_LEFT_OUT;
            j->series--;
            j->left_out++;
        }
    }
}

size_t ad_judge_series(const struct ad_judge *j)
{
    return j->series;
}

uint64_t ad_judge_left_out(const struct ad_judge *j)
{
    return j->left_out;
}

/* ---- the table ---- */

void ad_judge_expire(struct ad_judge *j, int64_t bucket)
{
    int64_t oldest = bucket - j->idle_buckets;
    for (uint32_t id = 0; (id = ad_entity_table_next(j->table, id));) {
        struct entity *e = ad_entity_table_record(j->table, id);
        if (e->last_bucket >= oldest)
            continue;
        if (e->hold)
            release(j, e->hold - 1);
        if (e->series == SERIES_SHOWN)
            j->series--;
        if (j->before_id == id)
            j->before_id = 0;
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

size_t ad_judge_held(const struct ad_judge *j)
{
    return j->n_held;
}

uint64_t ad_judge_unheld(const struct ad_judge *j)
{
    return j->unheld;
}

const void *ad_judge_history(struct ad_judge *j, const char *key, size_t len, size_t *size)
{
    uint32_t id = ad_entity_table_find(j->table, key, len);
    if (!id)
        return NULL;
    *size = j->history_size;
    return history(ad_entity_table_record(j->table, id));
}
