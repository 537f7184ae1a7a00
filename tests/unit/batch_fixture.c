#include "batch_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ad_window_batch *fixture_batch(size_t n, size_t T, size_t F, unsigned seed)
{
    struct ad_window_batch *b = calloc(1, sizeof *b);
    b->detector = strdup("fixture");
    b->bucket_start = 1000 * 10000;
    b->step = 10000;
    b->n_windows = n;
    b->window_len = T;
    b->n_features = F;
    b->values = malloc(n * T * F * sizeof(float));
    b->mask = malloc(n * T * F);
    b->keys = malloc(n * 16 + 1);
    b->key_offsets = malloc((n + 1) * sizeof(size_t));
    b->last_of_bucket = true;
    for (size_t i = 0; i < n * T * F; i++) {
        size_t f = i % F;
        b->values[i] =
            10.0f * (float)f + (1.0f + (float)f) * ((float)rand_r(&seed) / RAND_MAX - 0.5f);
        b->mask[i] = 1;
    }
    size_t used = 0;
    b->key_offsets[0] = 0;
    for (size_t w = 0; w < n; w++) {
        used += (size_t)sprintf(b->keys + used, "e%zu", w);
        b->key_offsets[w + 1] = used;
    }
    return b;
}
