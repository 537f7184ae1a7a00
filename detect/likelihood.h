#ifndef AD_LIKELIHOOD_H
#define AD_LIKELIHOOD_H

/*
 * Anomaly likelihood per entity (docs/scoring.md): how unusual an entity's recent scores are
 * against its own long-term history. A score alone says how badly the model predicted one
 * window; some entities are always harder to predict than others, and one bad window is
 * common. The likelihood compares a short moving average of the entity's scores with the
 * distribution that average has had over a long span, with the model's calibration as the
 * prior while an entity is new:
 *
 *     short_n = short_{n-1} + (score_n − short_{n-1}) / min(n, SHORT)
 *     z       = (short_n − long_mean) / long_std
 *     likelihood = Φ(z)                      (the normal CDF: one-sided, high errors only)
 *
 * and only then is (long_mean, long_var) updated with short_n, so an anomaly does not mask
 * itself. A table of entities, owned by one thread.
 */

#include <stddef.h>
#include <stdint.h>

#include "config/settings.h"
#include "gpu/model.h"

/* Windows in the long history, and the weight of the prior in windows (the short average:
 * AD_LIKELIHOOD_SHORT in config/settings.h, which the config's defaults use too). */
#define AD_LIKELIHOOD_LONG  1000
#define AD_LIKELIHOOD_PRIOR 32

struct ad_likelihood;

/* Keeps at most max_entities; forgets an entity idle_buckets buckets after its last score. */
struct ad_likelihood *ad_likelihood_new(size_t max_entities, int64_t idle_buckets);
void ad_likelihood_destroy(struct ad_likelihood *l);

/*
 * Adds the score of the window of entity key that ends in bucket, scored by model, and returns
 * its likelihood in [0, 1]. An entity first seen, or last scored by another model, starts from
 * that model's calibration. When the table is full, the likelihood comes from the calibration
 * alone and nothing is stored. score must be finite.
 */
double ad_likelihood_update(struct ad_likelihood *l, const char *key, size_t len, int64_t bucket,
                            double score, const struct ad_model *model);

/* Forgets entities whose last score is older than bucket − idle_buckets. */
void ad_likelihood_expire(struct ad_likelihood *l, int64_t bucket);

size_t ad_likelihood_entities(const struct ad_likelihood *l);
/* Scores that found the table full. */
uint64_t ad_likelihood_untracked(const struct ad_likelihood *l);

#endif
