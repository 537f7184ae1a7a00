#include "gpu/score.h"

#include <math.h>

#include "windows/window_store.h"

void ad_score_inputs(const struct ad_model *m, const struct ad_window_batch *batch, size_t first,
                     size_t n, float *x)
{
    size_t F = batch->n_features, T = batch->window_len, steps = T - 1;
    const float *mean = ad_model_mean(m), *std = ad_model_std(m);
    float scale[AD_WINDOW_MAX_FEATURES];
    for (size_t f = 0; f < F; f++)
        scale[f] = 1.0f / std[f];
    for (size_t w = 0; w < n; w++) {
        const float *in = batch->values + (first + w) * T * F;
        float *out = x + w * steps * F;
        for (size_t i = 0; i < steps * F; i++) {
            size_t f = i % F;
            float v = (in[i] - mean[f]) * scale[f];
            out[i] = isfinite(v) ? v : 0.0f;
        }
    }
}

size_t ad_score_windows(const struct ad_model *m, const struct ad_window_batch *batch, size_t first,
                        size_t n, const float *predictions, float *scores, float *shares)
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
