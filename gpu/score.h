#ifndef AD_SCORE_H
#define AD_SCORE_H

/*
 * From windows to scores (docs/models.md, "The score"): the network's input is the window's
 * first T − 1 steps, normalized with the model's statistics; its output predicts the newest
 * step, and the score is the root mean square of the calibrated prediction errors over the
 * features observed in that step. Plain functions over arrays, used by the scorer thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/settings.h"
#include "gpu/model.h"
#include "windows/batch.h"

/*
 * Writes the network's input for windows first .. first + n − 1 of batch into x (n × (T − 1) ×
 * I floats, I = ad_model_inputs, the layout of ad_lstm_forward with x_stride (T − 1) × I):
 * per step, (value − mean) / std for each feature, 0 (the mean) where a value is missing or not
 * finite (NaN from the `nan` fill policy), then the model's time inputs of the step's bucket
 * start (ad_score_time_inputs).
 */
void ad_score_inputs(const struct ad_model *m, const struct ad_window_batch *batch, size_t first,
                     size_t n, float *x);

/* The same for windows idx[0 .. n - 1] of batch (the warm-up of a stream model). */
void ad_score_inputs_of(const struct ad_model *m, const struct ad_window_batch *batch,
                        const uint32_t *idx, size_t n, float *x);

/* The input a stream model's state reads to predict the newest bucket: step T − 2 (the bucket
 * before the newest) of windows idx[0 .. n − 1], I floats each, laid out as ad_score_inputs'
 * rows. */
void ad_score_step_inputs(const struct ad_model *m, const struct ad_window_batch *batch,
                          const uint32_t *idx, size_t n, float *x);

/* The model's time inputs at bucket_ms: sin and cos of each period's phase (UTC; a week
 * starts on Monday), 2 floats per time input into out. */
void ad_score_time_inputs(const struct ad_model *m, int64_t bucket_ms, float *out);

/*
 * Scores windows first .. first + n − 1 from the network's predictions for them (n × F):
 * scores[i] is window first + i's score, or NaN when its newest step observed no feature;
 * shares[i × F + f] is feature f's part of its squared error (0 where unobserved; the shares
 * sum to 1, or are all 0 when the error is 0). controls (F entries, NULL: none) makes a
 * feature's error 0 when its deviation from the prediction goes the way that does not matter
 * or is smaller than its minimum (ad_score_counts). Returns how many windows got a score.
 */
size_t ad_score_windows(const struct ad_model *m, const struct ad_window_batch *batch, size_t first,
                        size_t n, const float *predictions,
                        const struct ad_feature_control *controls, float *scores, float *shares);

/* Whether a deviation of actual from expected counts under control (NULL: always). */
bool ad_score_counts(const struct ad_feature_control *control, double actual, double expected);

#endif
