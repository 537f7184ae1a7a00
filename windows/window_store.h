#ifndef AD_WINDOW_STORE_H
#define AD_WINDOW_STORE_H

/*
 * The window store of one detector: per entity a ring of the last T closed buckets of F
 * features (with a mask of which cells had data), sparse accumulators for the buckets still
 * open, and the close that turns a watermark into batches of windows.
 *
 * Buckets are the epoch-aligned grid of the detector's step (bucket.h); a bucket is referred
 * to by its index, floor(t / step). An observation lands in the open bucket of its event time
 * and is aggregated per feature (sum, mean, min, max or last by event time). A bucket closes
 * when the watermark reaches its end plus the allowed lateness; then every entity gets the
 * bucket's values in its ring (a bucket without data for a feature is filled per the feature's
 * policy: zero, carry the previous value, or NaN, with mask 0), and every entity that had data
 * within the window [b - T + 1, b] has one window: handed on when the entity had data in b, else
 * only counted (a window is scored on its newest step; batch.h's skipped_no_data). Observations
 * for a closed bucket are late: dropped and counted.
 *
 * Entities are created on first sight and evicted when they have had no data for the idle
 * timeout (in event time, so a replay gives the same result), or, when the store holds
 * max_entities, the least recently seen one makes room for a new one. Both are counted.
 *
 * Not thread-safe: the loop thread owns it.
 */

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/metrics.h"
#include "config/settings.h"
#include "windows/batch.h"

#define AD_WINDOW_MAX_FEATURES 64

enum ad_agg { AD_AGG_SUM, AD_AGG_MEAN, AD_AGG_MIN, AD_AGG_MAX, AD_AGG_LAST };

struct ad_window_spec {
    const char *detector; /* copied */
    size_t detector_index;
    int64_t step;                     /* ms */
    size_t window_len;                /* T */
    size_t n_features;                /* F, 1..AD_WINDOW_MAX_FEATURES */
    const enum ad_agg *aggs;          /* F entries, copied */
    const enum ad_fill_policy *fills; /* F entries, copied */
    int64_t allowed_lateness;
    size_t max_entities;
    int64_t entity_idle_timeout;
    size_t max_batch; /* windows per batch */
    /* Open buckets one entity may hold; an observation that would need more is refused.
     * 0: enough for the allowed lateness plus a margin. */
    size_t max_open_buckets;
};

struct ad_window_store;

/* metrics may be NULL. Returns NULL with errstr filled. */
struct ad_window_store *ad_window_store_new(const struct ad_window_spec *spec,
                                            struct ad_metrics *metrics,
                                            ad_window_consumer_fn consumer, void *consumer_arg,
                                            char *errstr, size_t errstr_size);
void ad_window_store_destroy(struct ad_window_store *s);

enum ad_window_add {
    AD_WINDOW_ADDED,
    AD_WINDOW_LATE,     /* its bucket has closed */
    AD_WINDOW_TOO_FAR,  /* it would open more buckets than the entity may hold */
    AD_WINDOW_NO_ENTITY /* the entity could not be created (out of memory) */
};

/*
 * Adds one event's observations for the entity with key (see batch.h) at event time t:
 * values[f] for every feature f whose bit is set in present. Late and refused observations
 * are counted.
 */
enum ad_window_add ad_window_store_add(struct ad_window_store *s, const char *key, size_t len,
                                       int64_t t, const double *values, uint64_t present);

/*
 * Closes, in order, every bucket whose end plus the allowed lateness is at or before
 * watermark, handing on the windows of each. Returns the index of the newest closed bucket
 * (INT64_MIN when none has closed yet).
 */
int64_t ad_window_store_advance(struct ad_window_store *s, int64_t watermark);

/* Changes the windows per batch (> 0) from the next bucket that closes on. */
void ad_window_store_set_max_batch(struct ad_window_store *s, size_t max_batch);

/* The newest closed bucket's index, INT64_MIN before the first close. */
int64_t ad_window_store_closed_through(const struct ad_window_store *s);
size_t ad_window_store_entities(const struct ad_window_store *s);
/* The oldest bucket some entity holds open (INT64_MAX when none), and how many open buckets
 * an entity may hold: an event that would open more is refused as too far. The pipeline keeps
 * Kafka partitions from running that far ahead (docs/windows.md, "Partitions far ahead"). */
int64_t ad_window_store_oldest_open(const struct ad_window_store *s);
size_t ad_window_store_max_open(const struct ad_window_store *s);
/* Bytes held for entities (rings, masks, keys, index, open accumulators). */
size_t ad_window_store_bytes(const struct ad_window_store *s);

/* Entities, open buckets, memory, the watermark and what was dropped. */
void ad_window_store_status(const struct ad_window_store *s, json_t *out);

#endif
