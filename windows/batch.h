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
    bool last_of_bucket; /* the last batch handed on for this bucket */
};

/* Called with each batch; takes ownership (free with ad_window_batch_free). */
typedef void (*ad_window_consumer_fn)(void *arg, struct ad_window_batch *batch);

void ad_window_batch_free(struct ad_window_batch *b);

/* The key of window i (not NUL-terminated) and its length. */
const char *ad_window_batch_key(const struct ad_window_batch *b, size_t i, size_t *len);

/*
 * Splits a key into at most max label values: values[k] points into key, lens[k] is its
 * length. Returns how many values the key holds.
 */
size_t ad_entity_key_split(const char *key, size_t len, const char **values, size_t *lens,
                           size_t max);

#endif
