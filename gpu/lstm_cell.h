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
#include <stdint.h>

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

/* The gates from their pre-activations, then c and h; c_prev NULL: the zero state. */
static inline AD_LSTM_HD void ad_lstm_pointwise(float pi, float pf, float pg, float po,
                                                const float *c_prev, float *c_out, float *h_out)
{
    float ig = ad_lstm_sigmoid(pi);
    float gg = tanhf(pg);
    float og = ad_lstm_sigmoid(po);
    float c = ig * gg;
    if (c_prev != NULL)
        c += ad_lstm_sigmoid(pf) * *c_prev;
    *c_out = c;
    *h_out = og * tanhf(c);
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
    float c, h;
    /* c_prev is read before c is written: the same element, so no other thread's. */
    ad_lstm_pointwise(pi, pf, pg, po, a.first ? NULL : &a.c[i], &c, &h);
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

/*
 * Stream mode. A table of states on the device holds, per slot, S = 2 L H floats: per layer
 * from the bottom, h then c. A call's window b has its state in slot slots[b] (distinct within
 * a call, so no two threads write one float).
 */

/* Where layer `layer`'s h of slot s starts; its c follows H floats on. */
static inline AD_LSTM_HD size_t ad_lstm_state_at(uint32_t slot, unsigned state_floats,
                                                 unsigned layer, unsigned hidden)
{
    return (size_t)slot * state_floats + (size_t)2 * layer * hidden;
}

/* Copies whole states of the call's windows from the table: dst[rows][S]. */
struct ad_lstm_gather_args {
    const float *states;
    const uint32_t *slots; /* [rows] */
    float *dst;
    unsigned rows, state_floats;
};

/* A warm-up's end: one layer's final h and c ([rows][H] each) into the windows' slots. */
struct ad_lstm_scatter_args {
    float *states;
    const uint32_t *slots;
    const float *h, *c;
    unsigned rows, hidden, state_floats, layer;
};

/* One stream step of one layer: the pre-activations from two GEMMs, c_prev from the table. */
struct ad_lstm_step_args {
    const float *gates; /* [rows][4H]: x · W_ih^T */
    const float *rec;   /* [rows][4H]: h_prev · W_hh^T */
    const float *bias;  /* [4H] */
    float *states;      /* h and c of the layer read and written by slot */
    const uint32_t *slots;
    float *h; /* [rows][H]: h again, the next layer's or the head's input */
    unsigned rows, hidden, state_floats, layer;
};

/* Element i of rows × S. */
static inline AD_LSTM_HD void ad_lstm_gather_at(const struct ad_lstm_gather_args a, unsigned i)
{
    unsigned b = i / a.state_floats, k = i - b * a.state_floats;
    a.dst[i] = a.states[(size_t)a.slots[b] * a.state_floats + k];
}

/* Element i of rows × H. */
static inline AD_LSTM_HD void ad_lstm_scatter_at(const struct ad_lstm_scatter_args a, unsigned i)
{
    unsigned b = i / a.hidden, j = i - b * a.hidden;
    float *st = a.states + ad_lstm_state_at(a.slots[b], a.state_floats, a.layer, a.hidden);
    st[j] = a.h[i];
    st[a.hidden + j] = a.c[i];
}

/* Element i of rows × H. */
static inline AD_LSTM_HD void ad_lstm_step_at(const struct ad_lstm_step_args a, unsigned i)
{
    unsigned b = i / a.hidden, j = i - b * a.hidden;
    size_t H = a.hidden;
    const float *g = a.gates + (size_t)b * 4 * H + j;
    const float *r = a.rec + (size_t)b * 4 * H + j;
    const float *bias = a.bias + j;
    float *st = a.states + ad_lstm_state_at(a.slots[b], a.state_floats, a.layer, a.hidden);
    float c, h;
    ad_lstm_pointwise(g[0] + bias[0] + r[0], g[H] + bias[H] + r[H],
                      g[2 * H] + bias[2 * H] + r[2 * H], g[3 * H] + bias[3 * H] + r[3 * H],
                      &st[H + j], &c, &h);
    st[j] = h;
    st[H + j] = c;
    a.h[i] = h;
}

#endif
