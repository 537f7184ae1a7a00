#ifndef AD_BUCKET_H
#define AD_BUCKET_H

/*
 * Bucket arithmetic on the event-time grid. Buckets are aligned to the Unix epoch,
 * start = floor(t / step) * step, so every source and every replica puts the same instant in
 * the same bucket. Times and steps are milliseconds; step must be positive.
 */

#include <stdint.h>

/* Start of the bucket holding t (floor division, also for times before 1970). */
int64_t ad_bucket_start(int64_t t, int64_t step);

/* Exclusive end of the bucket holding t. */
int64_t ad_bucket_end(int64_t t, int64_t step);

/* Index of the bucket holding t on the grid: ad_bucket_start(t) / step. */
int64_t ad_bucket_index(int64_t t, int64_t step);

/* Whether the bucket starting at bucket_start may close: every source's watermark has passed
 * its end plus the allowed lateness. */
int ad_bucket_closable(int64_t bucket_start, int64_t step, int64_t allowed_lateness,
                       int64_t watermark);

#endif
