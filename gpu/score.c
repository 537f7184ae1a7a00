#include "gpu/score.h"

#include <math.h>
#include <string.h>

#include "windows/window_store.h"

/* The phase of a period at time ms, in [0, 1): UTC, so that every replica and a replay agree;
 * a week starts on Monday 00:00 (the Unix epoch was a Thursday). */
static double phase(int64_t ms, enum ad_time_input period)
{
    const double day = 86400000.0, week = 7 * day;
    double t = (double)ms;
    if (period == AD_TIME_WEEK)
        return fmod(fmod(t + 3 * day, week) + week, week) / week;
    return fmod(fmod(t, day) + day, day) / day;
}

void ad_score_time_inputs(const struct ad_model *m, int64_t bucket_ms, float *out)
{
    enum ad_time_input periods[AD_MODEL_MAX_TIME_INPUTS];
    size_t n = ad_model_time_inputs(m, periods);
    for (size_t k = 0; k < n; k++) {
        double angle = 2 * M_PI * phase(bucket_ms, periods[k]);
        out[2 * k] = (float)sin(angle);
        out[2 * k + 1] = (float)cos(angle);
    }
}

/* Row t of window w's input: the normalized features of step t, then the time inputs of the
 * step's bucket start (copied from `same` when given: every window of a batch shares them). */
static void input_row(const struct ad_model *m, const struct ad_window_batch *batch, size_t w,
                      size_t t, const float *scale, const float *same, float *out)
{
    size_t F = batch->n_features, T = batch->window_len, I = ad_model_inputs(m);
    const float *mean = ad_model_mean(m);
    const float *in = batch->values + (w * T + t) * F;
    for (size_t f = 0; f < F; f++) {
        float v = (in[f] - mean[f]) * scale[f];
        out[f] = isfinite(v) ? v : 0.0f;
    }
    if (I == F)
        return;
    if (same) {
        memcpy(out + F, same, (I - F) * sizeof *out);
        return;
    }
    int64_t start = batch->bucket_start - (int64_t)(T - 1 - t) * batch->step;
    ad_score_time_inputs(m, start, out + F);
}

static void scales(const struct ad_model *m, size_t F, float *scale)
{
    const float *std = ad_model_std(m);
    for (size_t f = 0; f < F; f++)
        scale[f] = 1.0f / std[f];
}

/* Windows idx[0 .. n - 1] (NULL: first .. first + n - 1), each T - 1 rows. */
static void inputs(const struct ad_model *m, const struct ad_window_batch *batch,
                   const uint32_t *idx, size_t first, size_t n, float *x)
{
    size_t T = batch->window_len, steps = T - 1, I = ad_model_inputs(m);
    float scale[AD_WINDOW_MAX_FEATURES];
    scales(m, batch->n_features, scale);
    for (size_t k = 0; k < n; k++) {
        size_t w = idx ? idx[k] : first + k;
        for (size_t t = 0; t < steps; t++)
            input_row(m, batch, w, t, scale, k ? x + t * I + batch->n_features : NULL,
                      x + (k * steps + t) * I);
    }
}

void ad_score_inputs(const struct ad_model *m, const struct ad_window_batch *batch, size_t first,
                     size_t n, float *x)
{
    inputs(m, batch, NULL, first, n, x);
}

void ad_score_inputs_of(const struct ad_model *m, const struct ad_window_batch *batch,
                        const uint32_t *idx, size_t n, float *x)
{
    inputs(m, batch, idx, 0, n, x);
}

void ad_score_step_inputs(const struct ad_model *m, const struct ad_window_batch *batch,
                          const uint32_t *idx, size_t n, float *x)
{
    size_t T = batch->window_len, I = ad_model_inputs(m);
    float scale[AD_WINDOW_MAX_FEATURES];
    scales(m, batch->n_features, scale);
    for (size_t k = 0; k < n; k++)
        input_row(m, batch, idx[k], T - 2, scale, k ? x + batch->n_features : NULL, x + k * I);
}

bool ad_score_counts(const struct ad_feature_control *control, double actual, double expected)
{
    if (!control)
        return true;
    double d = actual - expected;
    if ((control->direction == AD_DIRECTION_UP && !(d > 0)) ||
        (control->direction == AD_DIRECTION_DOWN && !(d < 0)))
        return false;
    return fabs(d) >= fmax(control->min_abs, control->min_rel * fabs(expected));
}

size_t ad_score_windows(const struct ad_model *m, const struct ad_window_batch *batch, size_t first,
                        size_t n, const float *predictions,
                        const struct ad_feature_control *controls, float *scores, float *shares)
{
    size_t F = batch->n_features, T = batch->window_len, scored = 0;
    const float *mean = ad_model_mean(m), *std = ad_model_std(m);
    const float *error_std = ad_model_calibration(m)->error_std;
    for (size_t w = 0; w < n; w++) {
        const float *newest = batch->values + ((first + w) * T + T - 1) * F;
        const uint8_t *seen = batch->mask + ((first + w) * T + T - 1) * F;
        const float *predicted = predictions + w * F;
        float *share = shares + w * F;
        double sum = 0;
        size_t observed = 0;
        for (size_t f = 0; f < F; f++) {
            share[f] = 0.0f;
            if (!seen[f] || !isfinite(newest[f]))
                continue;
            double actual = ((double)newest[f] - mean[f]) / std[f];
            double r = (actual - predicted[f]) / error_std[f];
            if (controls &&
                !ad_score_counts(&controls[f], newest[f], predicted[f] * (double)std[f] + mean[f]))
                r = 0; /* a deviation that does not matter: as if predicted */
            share[f] = (float)(r * r);
            sum += r * r;
            observed++;
        }
        if (!observed || !isfinite(sum)) {
            scores[w] = NAN;
            for (size_t f = 0; f < F; f++)
                share[f] = 0.0f;
            continue;
        }
        for (size_t f = 0; f < F && sum > 0; f++)
            share[f] = (float)(share[f] / sum);
        scores[w] = (float)sqrt(sum / (double)observed);
        scored++;
    }
    return scored;
}
