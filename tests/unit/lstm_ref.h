#ifndef AD_TEST_LSTM_REF_H
#define AD_TEST_LSTM_REF_H

/*
 * For the LSTM tests: random models and inputs from a seed, and a plain reference forward
 * (straight loops, double arithmetic, one window at a time) that shares no code with any
 * backend.
 */

#include <stddef.h>
#include <stdint.h>

#include "gpu/lstm.h"

struct lstm_ref_model {
    struct ad_lstm_weights w;
    float *store; /* every tensor, one allocation */
};

/* Uniform in [-1, 1). */
float lstm_ref_uniform(uint64_t *state);
void lstm_ref_fill(float *p, size_t n, float scale, uint64_t *state);

/* Weights uniform in ±scale/sqrt(H) (PyTorch's initialisation when scale is 1). */
void lstm_ref_model_init(struct lstm_ref_model *m, uint64_t id, size_t layers, size_t inputs,
                         size_t hidden, size_t outputs, float scale, uint64_t seed);
void lstm_ref_model_free(struct lstm_ref_model *m);

/* One window: x[t * F + f] for t < steps; writes out[w->outputs]. */
void lstm_ref_window(const struct ad_lstm_weights *w, const float *x, size_t steps, double *out);

/*
 * Checks got[b * O + o] against the reference for the windows listed in rows (all when rows is
 * NULL), |got - want| <= tol * max(1, |want|). Returns 0, or -1 with the first miss in why.
 */
int lstm_ref_check(const struct ad_lstm_weights *w, const float *x, size_t batch, size_t steps,
                   size_t x_stride, const float *got, const size_t *rows, size_t n_rows, double tol,
                   char *why, size_t why_size);

#endif
