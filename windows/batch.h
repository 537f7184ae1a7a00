#ifndef AD_BATCH_H
#define AD_BATCH_H

/*
 * A batch of windows that closed together: B windows of T steps of F features, one contiguous
 * float array (B×T×F, row-major, oldest step first) as the scorer wants it, with a mask of the
 * same shape and the entity key of every window.
 *
 * An entity key is the entity's label values, in the detector's key order, joined with NUL
 * bytes: "checkout\0checkout-7f9c" for keys [service, instance]. Values never hold NUL.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ad_batch_pool;

struct ad_window_batch {
    char *detector;        /* owned */
    size_t detector_index; /* the detector's position in the config */
    int64_t bucket_start;  /* the bucket that closed: the newest step of every window */
    int64_t step;
    size_t n_windows;    /* B */
    size_t window_len;   /* T */
    size_t n_features;   /* F */
    float *values;       /* B*T*F */
    uint8_t *mask;       /* B*T*F: 1 where the bucket had data for the feature, else 0 */
    char *keys;          /* every key, back to back */
    size_t *key_offsets; /* B + 1 offsets into keys */
    /* B: buckets from the start of the entity's history to the newest step, both included
     * (saturating). A history starts with the entity's first data, and again after a silence
     * at least as long as the window; shorter gaps are part of it. A window with history < T
     * reaches before it (a warm-up). NULL (a batch made elsewhere): full histories. */
    uint32_t *history;
    /* B: the entity's slot in its store (below the store's max_entities) and its birth, a
     * number no other entity of the process has had, so that a slot taken over by a new
     * entity is not mistaken for the old one (stream states, docs/scoring.md). NULL (a batch
     * made elsewhere): unknown, each window stands alone. */
    uint32_t *slots;
    uint64_t *born;
    bool last_of_bucket; /* the last batch handed on for this bucket */
    /* On the last batch of a bucket: the bucket's windows left out because their newest
     * bucket had no data (a window is scored on its newest step, so there was nothing to
     * score), to be counted as unscored like the windows of the batch; 0 on the others. A
     * last batch may hold no window but these. */
    size_t skipped_no_data;
    /* When the store began closing the bucket (ad_clock_mono_seconds), the same for every
     * batch of it: where the delivery latency of the bucket's alerts starts. 0: unknown. */
    double closed_at;
    /* The maker's: where the buffers go back to when the batch is freed (NULL: to free()),
     * and how many windows and key bytes they have room for. */
    struct ad_batch_pool *pool;
    size_t capacity;
    size_t keys_capacity;
};

/* Called with each batch; takes ownership (free with ad_window_batch_free). */
typedef void (*ad_window_consumer_fn)(void *arg, struct ad_window_batch *batch);

/* Frees b, or hands it back to its pool. Any thread. */
void ad_window_batch_free(struct ad_window_batch *b);

/*
 * Batches handed back, for the next close to fill again. A bucket of 100k windows of T = 64,
 * F = 8 is 256 MB: malloc serves that with fresh pages from mmap every time, and faulting them
 * in cost more than assembling the windows (15x here, docs/BENCHMARKS.md). The pool keeps up
 * to `keep` batches, as its maker sets (what is out at a close: a bucket's worth when the
 * scorer keeps up, the whole queue when it is behind), and frees the rest.
 *
 * Its maker and every batch it hands out hold a reference; the last one frees it, so batches
 * may outlive their store. Thread-safe.
 */
struct ad_batch_pool *ad_batch_pool_new(void);
/* Drops the maker's reference. */
void ad_batch_pool_release(struct ad_batch_pool *p);
void ad_batch_pool_keep(struct ad_batch_pool *p, size_t keep);
/* Batches handed out and not back yet. */
size_t ad_batch_pool_out(struct ad_batch_pool *p);
/* A batch handed back with room for at least `windows` windows, or NULL; it is the caller's
 * to reset (only its buffers, capacities and pool are kept). */
struct ad_window_batch *ad_batch_pool_take(struct ad_batch_pool *p, size_t windows);
/* Makes freeing b (a batch the caller allocated) hand it back to p. */
void ad_batch_pool_adopt(struct ad_batch_pool *p, struct ad_window_batch *b);

/* The key of window i (not NUL-terminated) and its length. */
const char *ad_window_batch_key(const struct ad_window_batch *b, size_t i, size_t *len);

/*
 * Splits a key into at most max label values: values[k] points into key, lens[k] is its
 * length. Returns how many values the key holds.
 */
size_t ad_entity_key_split(const char *key, size_t len, const char **values, size_t *lens,
                           size_t max);

#endif
