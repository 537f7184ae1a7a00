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

/*
 * The fused step: the recurrent product and the cell in one kernel, W_hh in shared memory.
 * A block loads W_hh once, transposed (sw[k][4H + 1]: a warp's threads read consecutive
 * floats, and the padding spreads the transposing writes over the banks), then takes tiles of
 * `tile` windows: it copies their h_prev from the table into sh[tile][H], waits for the whole
 * block (h_prev of a window is read by all its H threads and overwritten by them), and each
 * thread computes one unit of one window: 4 dot products of length H from shared memory, the
 * gates, c and h, written by slot. Windows are independent, so blocks never wait for each
 * other. Threads per block: AD_LSTM_FUSED_THREADS; tile = max(1, threads / H).
 */
#define AD_LSTM_FUSED_THREADS 256

struct ad_lstm_fused_args {
    const float *gates; /* [rows][4H]: x · W_ih^T */
    const float *w_hh;  /* [4H][H] */
    const float *bias;  /* [4H] */
    float *states;
    const uint32_t *slots;
    float *h; /* [rows][H] */
    unsigned rows, hidden, state_floats, layer, tile;
};

/* Shared memory a block needs: sw then sh. */
static inline AD_LSTM_HD size_t ad_lstm_fused_smem_bytes(unsigned hidden, unsigned tile)
{
    return ((size_t)hidden * (4 * hidden + 1) + (size_t)tile * hidden) * sizeof(float);
}

/* Element e of 4H × H. */
static inline AD_LSTM_HD void ad_lstm_fused_load_w(const struct ad_lstm_fused_args a, float *sw,
                                                   unsigned e)
{
    unsigned r = e / a.hidden, k = e - r * a.hidden;
    sw[(size_t)k * (4 * a.hidden + 1) + r] = a.w_hh[e];
}

/* Element e of n × H, for the tile of n windows from window `first`. */
static inline AD_LSTM_HD void ad_lstm_fused_load_h(const struct ad_lstm_fused_args a, float *sh,
                                                   unsigned first, unsigned e)
{
    unsigned lb = e / a.hidden, j = e - lb * a.hidden;
    sh[e] = a.states[ad_lstm_state_at(a.slots[first + lb], a.state_floats, a.layer, a.hidden) + j];
}

/* Element e of n × H, once the whole tile's h_prev is in sh. */
static inline AD_LSTM_HD void ad_lstm_fused_cell(const struct ad_lstm_fused_args a, const float *sw,
                                                 const float *sh, unsigned first, unsigned e)
{
    unsigned lb = e / a.hidden, j = e - lb * a.hidden, b = first + lb;
    size_t H = a.hidden, P = 4 * H + 1;
    const float *hp = sh + (size_t)lb * H;
    float ri = 0.0f, rf = 0.0f, rg = 0.0f, ro = 0.0f;
    for (size_t k = 0; k < H; k++) {
        const float *wk = sw + k * P + j;
        float hk = hp[k];
        ri += wk[0] * hk;
        rf += wk[H] * hk;
        rg += wk[2 * H] * hk;
        ro += wk[3 * H] * hk;
    }
    const float *g = a.gates + (size_t)b * 4 * H + j;
    const float *bias = a.bias + j;
    float *st = a.states + ad_lstm_state_at(a.slots[b], a.state_floats, a.layer, a.hidden);
    float c, h;
    ad_lstm_pointwise(g[0] + bias[0] + ri, g[H] + bias[H] + rf, g[2 * H] + bias[2 * H] + rg,
                      g[3 * H] + bias[3 * H] + ro, &st[H + j], &c, &h);
    st[j] = h;
    st[H + j] = c;
    a.h[(size_t)b * H + j] = h;
}

#endif
