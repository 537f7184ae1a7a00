#ifndef AD_LSTM_CUDA_H
#define AD_LSTM_CUDA_H

/*
 * Knobs and measurements of the CUDA backend for its tests and benchmarks (private to gpu/,
 * tests/ and bench/). Each returns -1 when b is not a CUDA backend, which is always the case
 * in a build without CUDA.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpu/lstm.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ad_lstm_cuda_stats {
    /* Of the last successful forward. */
    size_t chunks;
    size_t layer_fused;          /* launches of the fused layer: 0 where the GEMM per step ran */
    size_t h2d_bytes, d2h_bytes; /* weights uploaded by it included */
    /* Only while profiling (events around every copy), else 0. */
    double h2d_ms, d2h_ms; /* device time of the copies */
    double span_ms;        /* first queued operation to last: device work and idle gaps */
    /* Since the backend was made. */
    uint64_t model_uploads;
};

/* Times every copy with CUDA events from the next forward on. */
int ad_lstm_cuda_set_profiling(struct ad_lstm_backend *b, bool on);
int ad_lstm_cuda_last_stats(const struct ad_lstm_backend *b, struct ad_lstm_cuda_stats *out);
/* The most bytes of gate pre-activations one chunk of a batch keeps on the device (default
 * AD_LSTM_DEV_GATE_BYTES); a batch larger than that runs in several chunks. */
int ad_lstm_cuda_set_gate_bytes(struct ad_lstm_backend *b, size_t bytes);

/* Whether forwards and warm-ups run each layer as one fused kernel where it fits (the
 * default) or as a GEMM and a kernel per step. */
int ad_lstm_cuda_set_fused_layers(struct ad_lstm_backend *b, bool on);

#ifdef __cplusplus
}
#endif

#endif
