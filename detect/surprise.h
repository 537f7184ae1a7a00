#ifndef AD_SURPRISE_H
#define AD_SURPRISE_H

/*
 * How surprising a window's score is for its entity (docs/scoring.md, "From score to
 * surprise"), for one stream of scores (the LSTM's, or the seasonal baseline's).
 *
 * The anomaly likelihood of Numenta's HTM, kept as its tail instead of its cumulative value so
 * that it never saturates: a short running mean of the entity's scores against the
 * exponentially weighted mean and spread that short mean has had,
 *
 *     short_n  = short_{n-1} + (score_n − short_{n-1}) / min(n, SHORT)
 *     z        = (short_n − long_mean) / max(sqrt(long_var), FLOOR · prior_std, 1e-6)
 *     surprise = −log10 Q(z)                         Q: the standard normal upper tail
 *
 * (long_mean, long_var) start from a prior worth PRIOR windows and then follow the entity with
 * weight max(1/(n + PRIOR), 1/LONG), updated after the surprise is taken so that an incident
 * does not raise the bar it is measured by. A surprise of 5 is a one-in-100,000 window.
 *
 * Then a gate against the entity's own history of surprises: an entity whose surprises are
 * often high (heavy-tailed counts, say) must beat GATE_K times the 99th percentile of its own
 * recent surprises, kept in a decayed histogram; below that the gated surprise is 0.
 *
 * A value type: a stream's whole state is this struct, owned by whoever embeds it.
 */

#include <stdint.h>

#include "config/settings.h" /* AD_SURPRISE_SHORT, the windows of the short mean */

#define AD_SURPRISE_PRIOR     32   /* windows the prior counts as */
#define AD_SURPRISE_LONG      1000 /* windows of memory, at most */
#define AD_SURPRISE_FLOOR     0.05 /* the spread's floor, as a share of the prior's */
#define AD_SURPRISE_BIN       0.25 /* the gate's histogram: bins this wide ... */
#define AD_SURPRISE_BINS      64   /* ... this many, then one for the rest */
#define AD_SURPRISE_GATE_Q    0.99 /* the percentile of past surprises ... */
#define AD_SURPRISE_GATE_K    1.5  /* ... times this, to beat */
#define AD_SURPRISE_GATE_MIN  50   /* windows before the gate applies */
#define AD_SURPRISE_GATE_KEEP 2000 /* windows of memory of the gate's histogram */

struct ad_surprise {
    uint32_t n, seen;
    double short_mean, long_mean, long_var, floor;
    float total; /* the histogram's decayed count */
    float hist[AD_SURPRISE_BINS + 1];
};

/* Starts a stream from a prior mean and spread of its scores. */
void ad_surprise_init(struct ad_surprise *s, double prior_mean, double prior_std);

/*
 * Adds one score (finite). Returns the window's surprise, −log10 of the chance of a short mean
 * this far above the entity's usual (0 when below it), and in *gated the same after the gate
 * (0 when the entity's own recent surprises say it is not unusual for it); gated may be NULL.
 */
double ad_surprise_update(struct ad_surprise *s, double score, double *gated);

/* −log10 Q(z), the standard normal upper tail, accurate far beyond where Q underflows. */
double ad_surprise_of_z(double z);

/* The likelihood of docs/scoring.md's earlier versions, 1 − 10^−surprise: near 1 it cannot
 * tell 6 from 60, which is why decisions use the surprise. */
double ad_surprise_likelihood(double surprise);

#endif
