#ifndef AD_TEST_BATCH_FIXTURE_H
#define AD_TEST_BATCH_FIXTURE_H

#include <stddef.h>

#include "windows/batch.h"

/* A batch of n windows of T steps of F features, values near mean[f] = 10 f (the model
 * fixture's normalization), every cell observed, keys "e0", "e1", ... */
struct ad_window_batch *fixture_batch(size_t n, size_t T, size_t F, unsigned seed);

#endif
