#ifndef AD_LSTM_DEV_H
#define AD_LSTM_DEV_H

/*
 * What the CUDA backend does, apart from CUDA itself: the argument checks, the chunking of a
 * batch, the weights cache, the buffers and the order of every copy, GEMM and kernel of a
 * forward. It drives a device through ad_lstm_dev_ops; lstm_cuda.cu gives it a stream, cuBLAS
 * and kernels, and tests/unit/test_lstm_dev.c an emulated device (cuBLAS's column-major GEMM on
 * the host, operations queued until sync) that runs it on machines without a GPU. Private to
 * gpu/ and its tests; owned by one thread.
 *
 * A forward, for each chunk of at most `chunk` windows, all queued on one stream:
 *   pack the chunk's windows (x_stride apart) into pinned staging, upload it;
 *   per layer: gates = X · W_ih^T for all rows × steps at once (one GEMM);
 *              per step t: rec = h · W_hh^T (one GEMM; none at t = 0, where h = 0), then one
 *              kernel: the gates, c and h, and h again into the next layer's input;
 *   out = h · head_w^T (one GEMM), + head_b (one kernel); download into pinned staging.
 * then one sync and a copy of the outputs to the caller. Where the fused layer fits (W_hh in a
 * block's shared memory), each layer's steps are instead one kernel after the input GEMM:
 * the recurrent product, the cell and, in a warm-up, the final h and c into the slots.
 *
 * Stream mode keeps a table of states on the device (struct ad_lstm_dev_table), one per slot,
 * so that a call moves only its new inputs, its slots (uint32) and its outputs. Per chunk:
 *   warm-up: a forward as above, with the chunk's slots uploaded too, and after each layer's
 *            last step one kernel that scatters the layer's h and c into the windows' slots;
 *   step:    pack and upload the chunk's one input per window and its slots; gather the
 *            windows' states into a contiguous [rows][S] copy (one kernel); per layer:
 *            gates = in · W_ih^T, rec = h_prev · W_hh^T (two GEMMs, h_prev read from the copy
 *            with ldb S), then one kernel: the cell, c_prev read and h, c written by slot, h
 *            also into a contiguous buffer, the next layer's input; then the head as above.
 *            With the fused step (W_hh fits in a block's shared memory), per layer only the
 *            input GEMM and one kernel: no gather, no recurrent GEMM.
 */

#include <stddef.h>
#include <stdint.h>

#include "gpu/lstm.h"
#include "gpu/lstm_cell.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A device. Each returns 0, or -1 having written err. Queued operations (upload, download,
 * gemm_tn, cell, add_bias) run in the order queued and may not have run until sync returns:
 * host memory they read or write must stay untouched until then. alloc and release are not
 * queued; release is called only when nothing is queued.
 */
struct ad_lstm_dev_ops {
    int (*alloc)(void *ctx, size_t bytes, void **p, char *errstr, size_t errstr_size);
    void (*release)(void *ctx, void *p); /* accepts NULL */
    /* Host memory that copies can run from asynchronously (pinned). */
    int (*alloc_host)(void *ctx, size_t bytes, void **p, char *errstr, size_t errstr_size);
    void (*release_host)(void *ctx, void *p); /* accepts NULL */
    int (*upload)(void *ctx, void *dst, const void *src, size_t bytes, char *errstr,
                  size_t errstr_size);
    int (*download)(void *ctx, void *dst, const void *src, size_t bytes, char *errstr,
                    size_t errstr_size);
    /* cublasSgemm(CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, 1, a, lda, b, ldb, 0, c, ldc). */
    int (*gemm_tn)(void *ctx, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                   float *c, int ldc, char *errstr, size_t errstr_size);
    int (*cell)(void *ctx, const struct ad_lstm_cell_args *a, char *errstr, size_t errstr_size);
    int (*add_bias)(void *ctx, const struct ad_lstm_bias_args *a, char *errstr, size_t errstr_size);
    int (*sync)(void *ctx, char *errstr, size_t errstr_size);
    /* Stream mode: a device-to-device copy, and the kernels of lstm_cell.h's stream part. */
    int (*copy)(void *ctx, void *dst, const void *src, size_t bytes, char *errstr,
                size_t errstr_size);
    int (*gather)(void *ctx, const struct ad_lstm_gather_args *a, char *errstr, size_t errstr_size);
    int (*scatter)(void *ctx, const struct ad_lstm_scatter_args *a, char *errstr,
                   size_t errstr_size);
    int (*step)(void *ctx, const struct ad_lstm_step_args *a, char *errstr, size_t errstr_size);
    /* The fused step (lstm_cell.h): NULL, or used when its shared memory fits fused_smem. */
    int (*step_fused)(void *ctx, const struct ad_lstm_fused_args *a, char *errstr,
                      size_t errstr_size);
    /* The fused layer (lstm_cell.h): NULL, or used by forwards and warm-ups when its shared
     * memory fits fused_smem and fused_layers is on. */
    int (*layer_fused)(void *ctx, const struct ad_lstm_layer_args *a, char *errstr,
                       size_t errstr_size);
};

/* Models whose weights stay on the device; the least recently used goes first. */
#define AD_LSTM_DEV_MODELS 4

/* At most this many bytes of gate pre-activations per chunk (B × steps × 4H floats). */
#define AD_LSTM_DEV_GATE_BYTES ((size_t)1 << 30)

struct ad_lstm_dev_model {
    uint64_t used;               /* the tick of the forward that last used it; 0: empty */
    struct ad_lstm_weights host; /* what it was uploaded from: id, shape, host pointers */
    struct ad_lstm_weights dev;  /* the same weights on the device */
    void *block;                 /* one allocation holding them all */
};

struct ad_lstm_dev_buf {
    void *p;
    size_t cap; /* bytes */
};

struct ad_lstm_dev {
    const struct ad_lstm_dev_ops *ops;
    void *ctx;
    size_t gate_bytes;
    size_t fused_smem; /* shared memory a block may have; 0: no fused step or layer */
    /* 1 (the default): a forward's or warm-up's layers run as one fused kernel each where
     * they fit fused_smem; 0: as a GEMM and a cell kernel per step (tests and benchmarks
     * compare the two). */
    int fused_layers;
    /* Blocks of the fused layer the device runs at once: a thread takes more windows only
     * while the tiles still number that many; 0: always the most. */
    size_t layer_blocks;
    uint64_t tick;
    struct ad_lstm_dev_model models[AD_LSTM_DEV_MODELS];
    /* Device: one chunk's input, gates, rec, h, c, layer outputs, head outputs; in stream
     * mode also its slots and its gathered states. */
    struct ad_lstm_dev_buf x, gates, rec, h, c, seq, out, slots, st;
    /* Pinned host: the whole batch's packed input, slots and outputs. */
    struct ad_lstm_dev_buf stage_in, stage_slots, stage_out;
    /* For tests and benchmarks. */
    uint64_t model_uploads;
    size_t last_chunks;
    size_t last_layer_fused; /* fused layer launches of the last call */
};

enum ad_lstm_dev_status {
    AD_LSTM_DEV_OK = 0,
    AD_LSTM_DEV_FAILED = -1,  /* the device failed: the backend is unusable */
    AD_LSTM_DEV_INVALID = -2, /* bad arguments; nothing was queued */
};

void ad_lstm_dev_init(struct ad_lstm_dev *d, const struct ad_lstm_dev_ops *ops, void *ctx);
/* Frees every buffer and cached model; nothing may be queued. Accepts a zeroed struct. */
void ad_lstm_dev_release(struct ad_lstm_dev *d);

/* ad_lstm_forward's contract; returns an ad_lstm_dev_status. */
int ad_lstm_dev_forward(struct ad_lstm_dev *d, const struct ad_lstm_weights *w, const float *x,
                        size_t batch, size_t steps, size_t x_stride, float *out, char *errstr,
                        size_t errstr_size);

/* A table of stream states on the device: what lstm.c holds as an ad_lstm_states' table. */
struct ad_lstm_dev_table {
    float *p;     /* device memory */
    size_t bytes; /* of p */
};

/*
 * Makes *table (NULL: none yet; else one of old_bytes) hold new_bytes, keeping the old bytes
 * (a device-to-device copy, then a sync before the old memory goes). On failure *table is
 * unchanged. Returns an ad_lstm_dev_status: INVALID when the allocation fails (nothing
 * queued: the device is still usable), FAILED when the copy does.
 */
int ad_lstm_dev_states_resize(struct ad_lstm_dev *d, void **table, size_t old_bytes,
                              size_t new_bytes, char *errstr, size_t errstr_size);
/* Frees a table after waiting for the work queued on it; accepts NULL. */
void ad_lstm_dev_states_free(struct ad_lstm_dev *d, void *table);

/* ad_lstm_warm_up_slots's and ad_lstm_step_slots's contracts on a table made above; each
 * slot must lie inside the table (INVALID otherwise, nothing queued). */
int ad_lstm_dev_warm_up_slots(struct ad_lstm_dev *d, const struct ad_lstm_weights *w, void *table,
                              const float *x, size_t batch, size_t steps, size_t x_stride,
                              const uint32_t *slots, float *out, char *errstr, size_t errstr_size);
int ad_lstm_dev_step_slots(struct ad_lstm_dev *d, const struct ad_lstm_weights *w, void *table,
                           const float *x, size_t batch, size_t x_stride, const uint32_t *slots,
                           float *out, char *errstr, size_t errstr_size);

/* Windows per chunk for a batch (batch >= 1, arguments checked), spread evenly over chunks. */
size_t ad_lstm_dev_chunk(const struct ad_lstm_weights *w, size_t batch, size_t steps,
                         size_t gate_bytes);

#ifdef __cplusplus
}
#endif

#endif
