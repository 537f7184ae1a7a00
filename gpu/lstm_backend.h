#ifndef AD_LSTM_BACKEND_H
#define AD_LSTM_BACKEND_H

/* What a backend implements (private to gpu/). */

#include "gpu/lstm.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ad_lstm_backend_ops {
    const char *kind;
    int (*forward)(void *impl, const struct ad_lstm_weights *w, const float *x, size_t batch,
                   size_t steps, size_t x_stride, float *out, char *errstr, size_t errstr_size);
    /* Stream mode (ad_lstm_warm_up, ad_lstm_step); NULL where the backend has none yet. */
    int (*warm_up)(void *impl, const struct ad_lstm_weights *w, const float *x, size_t batch,
                   size_t steps, size_t x_stride, float *out, float *state, char *errstr,
                   size_t errstr_size);
    int (*step)(void *impl, const struct ad_lstm_weights *w, const float *x, size_t batch,
                size_t x_stride, float *state, float *out, char *errstr, size_t errstr_size);
    void (*destroy)(void *impl);
};

/* A constructor allocates it with malloc or calloc; ad_lstm_backend_destroy (lstm.c) calls
 * ops->destroy(impl) and then frees it. */
struct ad_lstm_backend {
    const struct ad_lstm_backend_ops *ops;
    void *impl;
    char description[256];
};

#ifdef __cplusplus
}
#endif

#endif
