#ifndef AD_LSTM_H
#define AD_LSTM_H

/*
 * The network's forward pass behind one interface, with a CPU backend (CBLAS, the reference
 * and the fallback) and a CUDA backend (cuBLAS plus CUDA kernels, in lstm_cuda.cu). A backend
 * belongs to the thread that created it (the scorer thread); nothing here is thread-safe.
 *
 * The network (docs/models.md): a multi-layer LSTM, PyTorch's gate order (input, forget,
 * cell, output), over `steps` inputs of F features, and a linear head on the last hidden
 * state of the top layer that gives F outputs.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AD_LSTM_MAX_LAYERS 4

/* Float32 weights, row-major as PyTorch stores them. Immutable once made. */
struct ad_lstm_weights {
    uint64_t id;    /* unique per loaded model: backends may cache device copies by it */
    size_t layers;  /* L, 1..AD_LSTM_MAX_LAYERS */
    size_t inputs;  /* F */
    size_t hidden;  /* H */
    size_t outputs; /* the head's outputs (F) */
    const float *w_ih[AD_LSTM_MAX_LAYERS]; /* [4H][inputs] for layer 0, [4H][H] above */
    const float *w_hh[AD_LSTM_MAX_LAYERS]; /* [4H][H] */
    const float *bias[AD_LSTM_MAX_LAYERS]; /* [4H]: bias_ih + bias_hh */
    const float *head_w;                   /* [outputs][H] */
    const float *head_b;                   /* [outputs] */
};

struct ad_lstm_backend;

/* threads: worker threads that split a batch between them, 0 for one per core. */
struct ad_lstm_backend *ad_lstm_backend_cpu_new(int threads, char *errstr, size_t errstr_size);

/* NULL with err saying why when this build has no CUDA backend or device is not usable. */
struct ad_lstm_backend *ad_lstm_backend_cuda_new(int device, char *errstr, size_t errstr_size);

void ad_lstm_backend_destroy(struct ad_lstm_backend *b);

/* "cpu" or "cuda". */
const char *ad_lstm_backend_kind(const struct ad_lstm_backend *b);
/* A human description: "OpenBLAS 0.3.21, 2 threads", "NVIDIA H100 80GB HBM3 (device 0)". */
const char *ad_lstm_backend_description(const struct ad_lstm_backend *b);

/*
 * Runs the network on batch inputs: input b, step t, feature f is x[b * x_stride + t * F + f]
 * (x_stride >= steps * F lets a caller pass windows longer than steps). Writes out[b * F_out +
 * o]. Returns 0, or -1 with err on a failure of the device or of memory; the CUDA backend is
 * then unusable and the caller falls back to the CPU.
 */
int ad_lstm_forward(struct ad_lstm_backend *b, const struct ad_lstm_weights *w, const float *x,
                    size_t batch, size_t steps, size_t x_stride, float *out, char *errstr,
                    size_t errstr_size);

/*
 * Stream mode: a window's state is kept between buckets and each new bucket costs one step.
 * A window's state is ad_lstm_state_floats(w) floats: per layer, from the bottom, h (H floats)
 * then c (H floats).
 *
 * ad_lstm_warm_up is ad_lstm_forward (from a zero state, over `steps` inputs) that also writes
 * each window's state after its last input to state[b * S ...]. ad_lstm_step takes one input
 * per window (input b is x[b * x_stride + f]), moves each window's state on by that input,
 * and writes the head's output on the new state to out[b * F_out + o]: the prediction of the
 * window's next input. A warm-up over k inputs followed by steps over the next ones gives what
 * ad_lstm_forward over all of them gives, to rounding. Both return -1 with err on a failure, or
 * when the backend has no stream mode with the states in host memory (the CUDA backend keeps
 * them on the device only: ad_lstm_states below).
 */
size_t ad_lstm_state_floats(const struct ad_lstm_weights *w);

int ad_lstm_warm_up(struct ad_lstm_backend *b, const struct ad_lstm_weights *w, const float *x,
                    size_t batch, size_t steps, size_t x_stride, float *out, float *state,
                    char *errstr, size_t errstr_size);

int ad_lstm_step(struct ad_lstm_backend *b, const struct ad_lstm_weights *w, const float *x,
                 size_t batch, size_t x_stride, float *state, float *out, char *errstr,
                 size_t errstr_size);

/*
 * States the backend keeps between buckets, one per slot (the window store's entity slot): in
 * host memory on the CPU, resident on the device for CUDA, so that a bucket sends only its new
 * inputs and the list of slots. A table is made for one backend and freed before it; a slot
 * holds nothing meaningful until a warm-up writes it.
 *
 * ad_lstm_warm_up_slots and ad_lstm_step_slots are ad_lstm_warm_up and ad_lstm_step with
 * window b's state in slot slots[b] of the table instead of in the caller's memory. The slots
 * of one call are distinct and below the table's capacity.
 */
struct ad_lstm_states;

struct ad_lstm_states *ad_lstm_states_new(struct ad_lstm_backend *b,
                                          const struct ad_lstm_weights *w, char *errstr,
                                          size_t errstr_size);
void ad_lstm_states_destroy(struct ad_lstm_states *s); /* accepts NULL */
/* Makes room for slots 0 .. slots - 1, keeping what the slots below the old capacity held. */
int ad_lstm_states_reserve(struct ad_lstm_states *s, size_t slots, char *errstr,
                           size_t errstr_size);
size_t ad_lstm_states_capacity(const struct ad_lstm_states *s);
/* Bytes the table holds (on the device for CUDA). */
size_t ad_lstm_states_bytes(const struct ad_lstm_states *s);

int ad_lstm_warm_up_slots(struct ad_lstm_backend *b, const struct ad_lstm_weights *w,
                          struct ad_lstm_states *states, const float *x, size_t batch, size_t steps,
                          size_t x_stride, const uint32_t *slots, float *out, char *errstr,
                          size_t errstr_size);
int ad_lstm_step_slots(struct ad_lstm_backend *b, const struct ad_lstm_weights *w,
                       struct ad_lstm_states *states, const float *x, size_t batch, size_t x_stride,
                       const uint32_t *slots, float *out, char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif

#endif
