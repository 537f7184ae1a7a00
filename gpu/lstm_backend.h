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
    /* Slot states (ad_lstm_states) in the backend's own memory. NULL: the table lives in host
     * memory and lstm.c gathers each call's states around warm_up and step. states_resize
     * moves a table of old_bytes to one of new_bytes (*p NULL: a new one), keeping the old
     * bytes; states_free accepts NULL. The slot calls run as their ad_lstm_ counterparts. */
    int (*states_resize)(void *impl, void **p, size_t old_bytes, size_t new_bytes, char *errstr,
                         size_t errstr_size);
    void (*states_free)(void *impl, void *p);
    int (*warm_up_slots)(void *impl, const struct ad_lstm_weights *w, void *states, const float *x,
                         size_t batch, size_t steps, size_t x_stride, const uint32_t *slots,
                         float *out, char *errstr, size_t errstr_size);
    int (*step_slots)(void *impl, const struct ad_lstm_weights *w, void *states, const float *x,
                      size_t batch, size_t x_stride, const uint32_t *slots, float *out,
                      char *errstr, size_t errstr_size);
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
