#ifndef AD_LSTM_CELL_H
#define AD_LSTM_CELL_H

/*
 * The pointwise work of a device forward, written once: the CUDA kernels (lstm_cuda.cu) call
 * these per thread, and the host emulation in tests/unit/test_lstm_dev.c calls them per
 * element, so the layout the kernels use is checked on machines without a GPU. Private to
 * gpu/ and its tests.
 *
 * Every matrix is row-major. A chunk holds `rows` windows; the per-step matrices of a layer
 * (gate pre-activations, layer outputs) keep window b's step t at row b * steps + t, the order
 * in which the windows arrive, so one GEMM covers all steps.
 */

#include <math.h>
#include <stddef.h>

#ifdef __CUDACC__
#define AD_LSTM_HD __host__ __device__
#else
#define AD_LSTM_HD
#endif

/* One step t of one layer, for rows × H elements. */
struct ad_lstm_cell_args {
    const float *gates; /* [rows * steps][4H]: x · W_ih^T for every step */
    const float *rec;   /* [rows][4H]: h_{t-1} · W_hh^T; not read when first */
    const float *bias;  /* [4H]: bias_ih + bias_hh */
    float *c;           /* [rows][H]: c_{t-1} in (not read when first), c_t out */
    float *h;           /* [rows][H]: h_t out */
    float *seq;         /* [rows * steps][H]: h_t again, the next layer's input; NULL on top */
    unsigned rows, steps, hidden, t;
    int first; /* t == 0: h_{-1} = c_{-1} = 0, so rec and c are garbage and must not be read */
};

/* The head's bias on out[rows][cols]. */
struct ad_lstm_bias_args {
    float *out;
    const float *bias; /* [cols] */
    unsigned rows, cols;
};

/* expf, not __expf: a saturated gate must come out 0 or 1 exactly as on the CPU. */
static inline AD_LSTM_HD float ad_lstm_sigmoid(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

/* Element i of rows × H (i < rows * hidden): hidden unit j of window b. */
static inline AD_LSTM_HD void ad_lstm_cell_at(const struct ad_lstm_cell_args a, unsigned i)
{
    unsigned b = i / a.hidden, j = i - b * a.hidden;
    size_t H = a.hidden;
    size_t row = (size_t)b * a.steps + a.t;
    const float *g = a.gates + row * 4 * H + j;
    const float *bias = a.bias + j;
    /* PyTorch's gate order: input, forget, cell, output. */
    float pi = g[0] + bias[0];
    float pf = g[H] + bias[H];
    float pg = g[2 * H] + bias[2 * H];
    float po = g[3 * H] + bias[3 * H];
    if (!a.first) {
        const float *r = a.rec + (size_t)b * 4 * H + j;
        pi += r[0];
        pf += r[H];
        pg += r[2 * H];
        po += r[3 * H];
    }
    float ig = ad_lstm_sigmoid(pi);
    float gg = tanhf(pg);
    float og = ad_lstm_sigmoid(po);
    float c = ig * gg;
    if (!a.first)
        c += ad_lstm_sigmoid(pf) * a.c[i];
    float h = og * tanhf(c);
    a.c[i] = c;
    a.h[i] = h;
    if (a.seq != NULL)
        a.seq[row * H + j] = h;
}

/* Element i of rows × cols. */
static inline AD_LSTM_HD void ad_lstm_bias_at(const struct ad_lstm_bias_args a, unsigned i)
{
    a.out[i] += a.bias[i % a.cols];
}

#endif
