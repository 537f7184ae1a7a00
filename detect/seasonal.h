#ifndef AD_SEASONAL_H
#define AD_SEASONAL_H

/*
 * The seasonal baseline of one entity (docs/scoring.md, "The seasonal baseline"): per
 * feature, a profile of the day in up to SLOTS slots (an exponentially weighted mean of the
 * values each slot of the day has had, UTC), and how far the newest value is from its slot's,
 * in units of the feature's usual distance (an exponentially weighted mean of |residual|).
 * It needs no model and scores from the entity's second day on, so a new deployment alerts
 * on day one, and it keeps scoring what the LSTM was never trained for.
 *
 *     z_f   = |x_f − profile_f[slot]| / scale_f        (0 when both are 0; 50 when only the
 *                                                        scale is)
 *     score = sqrt(mean over the features scored of z_f²)
 *
 * The state lives in memory the caller provides (ad_seasonal_size bytes, e.g. an entity
 * record's tail), so that a table of entities holds it without a pointer per entity.
 */

#include <stddef.h>
#include <stdint.h>

#include "config/settings.h"

#define AD_SEASONAL_SLOTS 48   /* at most, per day: half-hour slots */
#define AD_SEASONAL_ALPHA 0.3  /* a slot's weight for its newest value */
#define AD_SEASONAL_SCALE 1000 /* residuals in the scale's memory, at most */
#define AD_SEASONAL_FAR   50.0 /* z of a change from a feature that never moved */

/* Slots per day at this step: min(SLOTS, one day / step), at least 1. */
size_t ad_seasonal_slots(int64_t step_ms);
/* Bytes of state for features features at this step. */
size_t ad_seasonal_size(size_t features, int64_t step_ms);
/* Starts an empty baseline in mem (ad_seasonal_size bytes, aligned for a float). */
void ad_seasonal_init(void *mem, size_t features, int64_t step_ms);

/*
 * Adds the values of the bucket starting at bucket_ms (values[f] where observed[f] and finite;
 * the rest are left out) and returns the bucket's score, NaN when no feature had a profile for
 * its slot yet (the first day). controls (features entries, NULL: none) makes a feature's z 0
 * when its deviation from its slot's value does not count (gpu/score.h, ad_score_counts).
 * shares (features floats, may be NULL) gets each feature's share of the squared score.
 */
double ad_seasonal_update(void *mem, size_t features, int64_t step_ms, int64_t bucket_ms,
                          const float *values, const uint8_t *observed,
                          const struct ad_feature_control *controls, float *shares);

#endif
