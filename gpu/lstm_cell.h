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

/* Element e of 4H × H of W_hh into sw[H][4H + 1], transposed and padded. */
static inline AD_LSTM_HD void ad_lstm_load_w_hh(const float *w_hh, unsigned hidden, float *sw,
                                                unsigned e)
{
    unsigned r = e / hidden, k = e - r * hidden;
    sw[(size_t)k * (4 * hidden + 1) + r] = w_hh[e];
}

/* Element e of 4H × H. */
static inline AD_LSTM_HD void ad_lstm_fused_load_w(const struct ad_lstm_fused_args a, float *sw,
                                                   unsigned e)
{
    ad_lstm_load_w_hh(a.w_hh, a.hidden, sw, e);
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

/*
 * The fused layer: every step of one layer of a windowed forward (or warm-up) in one kernel.
 * The input projection stays one GEMM before it (gates = X · W_ih^T for all steps); the kernel
 * does the rest, so per step only that step's input gates are read and, below the top layer,
 * its h written for the next layer's GEMM. W_hh sits in shared memory as in the fused step;
 * each block owns a tile of windows from their first step to their last, h in shared memory
 * (every unit of a window reads all of it) and c in registers (only its own thread reads it).
 *
 * Thread e of the block holds unit j = e % H of the windows g + r * groups of the tile
 * (g = e / H, groups = threads / H, r < per_thread; threads past groups * H idle, but still
 * meet the barriers). Windows are strided so that a warp's threads share theirs: h_prev is
 * read as a broadcast, and each W_hh value read from shared memory serves per_thread windows.
 * sh holds the tile's h twice: step t reads copy t % 2 and writes the other, so one barrier
 * per step orders step t's writes before step t + 1's reads, and step t's reads before step
 * t + 2 overwrites that copy. At the last step each thread writes the final h (the head's or
 * nobody's input) and, in a warm-up, h and c into the window's slot: no scatter kernel.
 */
#define AD_LSTM_LAYER_MAX_PER_THREAD 4

#ifdef __CUDACC__
#define AD_LSTM_UNROLL _Pragma("unroll")
#else
#define AD_LSTM_UNROLL
#endif

struct ad_lstm_layer_args {
    const float *gates; /* [rows * steps][4H]: x · W_ih^T for every step */
    const float *w_hh;  /* [4H][H] */
    const float *bias;  /* [4H]: bias_ih + bias_hh */
    float *seq;         /* [rows * steps][H]: each step's h, the next layer's input; NULL on top */
    float *h;           /* [rows][H]: the final h */
    float *states;      /* a warm-up's table: final h and c by slot; NULL in a forward */
    const uint32_t *slots;
    unsigned rows, steps, hidden, state_floats, layer;
    unsigned per_thread; /* windows a thread holds, 1 .. AD_LSTM_LAYER_MAX_PER_THREAD */
};

/* Windows a block owns at once. */
static inline AD_LSTM_HD unsigned ad_lstm_layer_tile(unsigned hidden, unsigned per_thread)
{
    return AD_LSTM_FUSED_THREADS / hidden * per_thread;
}

/* Shared memory a block needs: W_hh, then two copies of the tile's h. */
static inline AD_LSTM_HD size_t ad_lstm_layer_smem_bytes(unsigned hidden, unsigned per_thread)
{
    return ((size_t)hidden * (4 * hidden + 1) +
            (size_t)2 * ad_lstm_layer_tile(hidden, per_thread) * hidden) *
           sizeof(float);
}

/*
 * Thread e's step t for the tile of n windows from window `first`. c is the thread's cell
 * states, kept by the caller across steps (registers); h_prev (sh_prev, not read at t = 0,
 * where h = c = 0) is the tile's h_{t-1}, sh_next receives h_t.
 */
static inline AD_LSTM_HD void ad_lstm_layer_step(const struct ad_lstm_layer_args a, const float *sw,
                                                 const float *sh_prev, float *sh_next,
                                                 unsigned first, unsigned n, unsigned e, unsigned t,
                                                 float *c)
{
    unsigned H = a.hidden, groups = AD_LSTM_FUSED_THREADS / H, g = e / H, j = e - g * H;
    if (g >= groups || g >= n)
        return;
    /* This thread's windows inside the tile: g, g + groups, ... below n. */
    unsigned m = (n - g + groups - 1) / groups;
    if (m > a.per_thread)
        m = a.per_thread;
    size_t G = 4 * (size_t)H, P = G + 1;
    float acc[4][AD_LSTM_LAYER_MAX_PER_THREAD];
    /* The input gates first: their loads from device memory overlap the dot products. */
    AD_LSTM_UNROLL
    for (unsigned r = 0; r < AD_LSTM_LAYER_MAX_PER_THREAD; r++) {
        if (r < m) {
            size_t row = (size_t)(first + g + r * groups) * a.steps + t;
            const float *gx = a.gates + row * G + j;
            AD_LSTM_UNROLL
            for (unsigned q = 0; q < 4; q++)
                acc[q][r] = gx[q * H] + a.bias[q * H + j];
        }
    }
    if (t > 0) {
        for (unsigned k = 0; k < H; k++) {
            const float *wk = sw + k * P + j;
            float w0 = wk[0], w1 = wk[H], w2 = wk[2 * H], w3 = wk[3 * H];
            AD_LSTM_UNROLL
            for (unsigned r = 0; r < AD_LSTM_LAYER_MAX_PER_THREAD; r++) {
                if (r < m) {
                    float hk = sh_prev[(size_t)(g + r * groups) * H + k];
                    acc[0][r] += w0 * hk;
                    acc[1][r] += w1 * hk;
                    acc[2][r] += w2 * hk;
                    acc[3][r] += w3 * hk;
                }
            }
        }
    }
    AD_LSTM_UNROLL
    for (unsigned r = 0; r < AD_LSTM_LAYER_MAX_PER_THREAD; r++) {
        if (r < m) {
            unsigned lb = g + r * groups, b = first + lb;
            /* c_prev through a local: a pointer into c[] would put c in local memory. */
            float cp = c[r], cn, hn;
            /* PyTorch's gate order: input, forget, cell, output. */
            ad_lstm_pointwise(acc[0][r], acc[1][r], acc[2][r], acc[3][r], t > 0 ? &cp : NULL, &cn,
                              &hn);
            c[r] = cn;
            sh_next[(size_t)lb * H + j] = hn;
            if (a.seq != NULL)
                a.seq[((size_t)b * a.steps + t) * H + j] = hn;
            if (t + 1 == a.steps) {
                a.h[(size_t)b * H + j] = hn;
                if (a.states != NULL) {
                    float *st = a.states + ad_lstm_state_at(a.slots[b], a.state_floats, a.layer, H);
                    st[j] = hn;
                    st[H + j] = cn;
                }
            }
        }
    }
}

#endif
