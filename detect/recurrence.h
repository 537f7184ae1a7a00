#ifndef AD_RECURRENCE_H
#define AD_RECURRENCE_H

/*
 * What recurs at the same time of day is not news (docs/scoring.md, "Recurring surprises"): a
 * nightly batch job that spikes the CPU at about 03:10, a report that floods a queue every
 * morning. Neither model predicts them from a short history (a job's start drifts, its size
 * varies), so without this each would alert every day.
 *
 * Per slot of the day (the seasonal baseline's slots, UTC), the days on which an anomalous
 * surprise happened in it and the largest such surprise. A surprise recurs when, in its slot
 * or a neighbouring one, anomalous surprises at least half its size happened on RECUR_NEED of
 * the RECUR_DAYS days before. A value type, sized for the most slots.
 */

#include <stdbool.h>
#include <stdint.h>

#include "detect/seasonal.h"

#define AD_RECURRENCE_DAYS  3   /* days looked back on */
#define AD_RECURRENCE_NEED  2   /* of them, days the slot was anomalous on */
#define AD_RECURRENCE_SHARE 0.5 /* their surprise, at least this share of the new one */

struct ad_recurrence {
    int64_t day;                     /* the day bit 0 of each slot's days stands for */
    uint8_t days[AD_SEASONAL_SLOTS]; /* bit k: anomalous on day − k */
    float level[AD_SEASONAL_SLOTS];  /* the largest surprise of those days */
};

void ad_recurrence_init(struct ad_recurrence *r);

/*
 * An anomalous surprise (at or over the detector's threshold) of the bucket starting at
 * bucket_ms, on a grid of step_ms: whether it recurs (then it is no news). Records it either
 * way, so that tomorrow's can be compared with it.
 */
bool ad_recurrence_seen(struct ad_recurrence *r, int64_t step_ms, int64_t bucket_ms,
                        double surprise);

#endif
