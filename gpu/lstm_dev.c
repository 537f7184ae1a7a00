/* The device forward's plan and bookkeeping (lstm_dev.h), independent of CUDA. */

#include "gpu/lstm_dev.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/errstr.h"

/* Keeps every size of a chunk far inside the int that cuBLAS and the kernels index with. */
#define MAX_DIM ((size_t)1 << 16)

/* cuBLAS is fastest on 256-byte aligned matrices: each weight starts on such a boundary. */
#define ALIGN_FLOATS 64

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

void ad_lstm_dev_init(struct ad_lstm_dev *d, const struct ad_lstm_dev_ops *ops, void *ctx)
{
    memset(d, 0, sizeof *d);
    d->ops = ops;
    d->ctx = ctx;
    d->gate_bytes = AD_LSTM_DEV_GATE_BYTES;
    d->fused_layers = 1;
}

static void buf_release(struct ad_lstm_dev *d, struct ad_lstm_dev_buf *b, int host)
{
    if (b->p != NULL) {
        if (host)
            d->ops->release_host(d->ctx, b->p);
        else
            d->ops->release(d->ctx, b->p);
    }
    b->p = NULL;
    b->cap = 0;
}

/* Grows b to at least bytes, by half again at least, so that slowly growing batches settle. */
static int buf_reserve(struct ad_lstm_dev *d, struct ad_lstm_dev_buf *b, size_t bytes, int host,
                       char *errstr, size_t errstr_size)
{
    if (bytes <= b->cap)
        return 0;
    size_t cap = b->cap + b->cap / 2;
    if (cap < bytes)
        cap = bytes;
    buf_release(d, b, host);
    void *p = NULL;
    int rc = host ? d->ops->alloc_host(d->ctx, cap, &p, errstr, errstr_size)
                  : d->ops->alloc(d->ctx, cap, &p, errstr, errstr_size);
    if (rc < 0)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void model_drop(struct ad_lstm_dev *d, struct ad_lstm_dev_model *m)
{
    d->ops->release(d->ctx, m->block);
    memset(m, 0, sizeof *m);
}

void ad_lstm_dev_release(struct ad_lstm_dev *d)
{
    if (d->ops == NULL)
        return;
    /* A failed forward may leave work queued that still reads these buffers. */
    d->ops->sync(d->ctx, NULL, 0);
    for (size_t i = 0; i < AD_LSTM_DEV_MODELS; i++)
        model_drop(d, &d->models[i]);
    struct ad_lstm_dev_buf *dev[] = {&d->x,   &d->gates, &d->rec,   &d->h, &d->c,
                                     &d->seq, &d->out,   &d->slots, &d->st};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        buf_release(d, dev[i], 0);
    buf_release(d, &d->stage_in, 1);
    buf_release(d, &d->stage_slots, 1);
    buf_release(d, &d->stage_out, 1);
}

static int check_args(const char *what, const struct ad_lstm_weights *w, const float *x,
                      size_t batch, size_t steps, size_t x_stride, const float *out, char *errstr,
                      size_t errstr_size)
{
    if (w == NULL) {
        ad_errstr_set(errstr, errstr_size, "%s: no weights", what);
        return -1;
    }
    if (w->layers < 1 || w->layers > AD_LSTM_MAX_LAYERS) {
        ad_errstr_set(errstr, errstr_size, "%s: %zu layers (1 to %d)", what, w->layers,
                      AD_LSTM_MAX_LAYERS);
        return -1;
    }
    if (w->inputs < 1 || w->inputs > MAX_DIM || w->hidden < 1 || w->hidden > MAX_DIM ||
        w->outputs < 1 || w->outputs > MAX_DIM) {
        ad_errstr_set(errstr, errstr_size,
                      "%s: inputs %zu, hidden %zu, outputs %zu (1 to %zu each)", what, w->inputs,
                      w->hidden, w->outputs, MAX_DIM);
        return -1;
    }
    for (size_t l = 0; l < w->layers; l++) {
        if (w->w_ih[l] == NULL || w->w_hh[l] == NULL || w->bias[l] == NULL) {
            ad_errstr_set(errstr, errstr_size, "%s: layer %zu has no weights", what, l);
            return -1;
        }
    }
    if (w->head_w == NULL || w->head_b == NULL) {
        ad_errstr_set(errstr, errstr_size, "%s: the head has no weights", what);
        return -1;
    }
    if (steps < 1 || steps > INT_MAX) {
        ad_errstr_set(errstr, errstr_size, "%s: %zu steps (1 to %d)", what, steps, INT_MAX);
        return -1;
    }
    size_t len = steps * w->inputs; /* no overflow: both are bounded above */
    if (x_stride < len) {
        ad_errstr_set(errstr, errstr_size, "%s: x_stride %zu is less than steps %zu × features %zu",
                      what, x_stride, steps, w->inputs);
        return -1;
    }
    if (batch == 0)
        return 0;
    if (x == NULL || out == NULL) {
        ad_errstr_set(errstr, errstr_size, "%s: no input or output", what);
        return -1;
    }
    if (batch > SIZE_MAX / sizeof(float) / len || batch > SIZE_MAX / sizeof(float) / w->outputs) {
        ad_errstr_set(errstr, errstr_size, "%s: batch %zu is too large", what, batch);
        return -1;
    }
    return 0;
}

size_t ad_lstm_dev_chunk(const struct ad_lstm_weights *w, size_t batch, size_t steps,
                         size_t gate_bytes)
{
    size_t per_window = steps * 4 * w->hidden * sizeof(float);
    size_t most = gate_bytes / per_window;
    if (most < 1)
        most = 1;
    /* GEMM n = rows × steps and the kernels' element indices are ints. */
    most = min_size(most, INT_MAX / steps);
    most = min_size(most, INT_MAX / w->hidden);
    most = min_size(most, INT_MAX / w->outputs);
    most = min_size(most, INT_MAX / (2 * w->layers * w->hidden)); /* a stream step's states */
    most = min_size(most, batch);
    size_t chunks = (batch + most - 1) / most;
    return (batch + chunks - 1) / chunks;
}

static size_t align_up(size_t floats)
{
    return (floats + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

static int same_weights(const struct ad_lstm_weights *a, const struct ad_lstm_weights *b)
{
    if (a->id != b->id || a->layers != b->layers || a->inputs != b->inputs ||
        a->hidden != b->hidden || a->outputs != b->outputs || a->head_w != b->head_w ||
        a->head_b != b->head_b)
        return 0;
    for (size_t l = 0; l < a->layers; l++) {
        if (a->w_ih[l] != b->w_ih[l] || a->w_hh[l] != b->w_hh[l] || a->bias[l] != b->bias[l])
            return 0;
    }
    return 1;
}

/* Queues the upload of w into one new device block held by slot (which is empty). */
static int model_upload(struct ad_lstm_dev *d, struct ad_lstm_dev_model *slot,
                        const struct ad_lstm_weights *w, char *errstr, size_t errstr_size)
{
    size_t H = w->hidden, G = 4 * H, O = w->outputs;
    size_t off_ih[AD_LSTM_MAX_LAYERS], off_hh[AD_LSTM_MAX_LAYERS], off_b[AD_LSTM_MAX_LAYERS];
    size_t total = 0, in = w->inputs;
    for (size_t l = 0; l < w->layers; l++) {
        off_ih[l] = total;
        total += align_up(G * in);
        off_hh[l] = total;
        total += align_up(G * H);
        off_b[l] = total;
        total += align_up(G);
        in = H;
    }
    size_t off_hw = total;
    total += align_up(O * H);
    size_t off_hb = total;
    total += align_up(O);

    void *block = NULL;
    if (d->ops->alloc(d->ctx, total * sizeof(float), &block, errstr, errstr_size) < 0)
        return -1;
    /* The slot owns the block from here, so that any failure below still frees it. */
    slot->block = block;
    float *base = block;
    struct ad_lstm_weights dev = *w;
    in = w->inputs;
    for (size_t l = 0; l < w->layers; l++) {
        dev.w_ih[l] = base + off_ih[l];
        dev.w_hh[l] = base + off_hh[l];
        dev.bias[l] = base + off_b[l];
        if (d->ops->upload(d->ctx, base + off_ih[l], w->w_ih[l], G * in * sizeof(float), errstr,
                           errstr_size) < 0 ||
            d->ops->upload(d->ctx, base + off_hh[l], w->w_hh[l], G * H * sizeof(float), errstr,
                           errstr_size) < 0 ||
            d->ops->upload(d->ctx, base + off_b[l], w->bias[l], G * sizeof(float), errstr,
                           errstr_size) < 0)
            return -1;
        in = H;
    }
    dev.head_w = base + off_hw;
    dev.head_b = base + off_hb;
    if (d->ops->upload(d->ctx, base + off_hw, w->head_w, O * H * sizeof(float), errstr,
                       errstr_size) < 0 ||
        d->ops->upload(d->ctx, base + off_hb, w->head_b, O * sizeof(float), errstr, errstr_size) <
            0)
        return -1;
    slot->host = *w;
    slot->dev = dev;
    slot->used = d->tick;
    d->model_uploads++;
    return 0;
}

/* The device copy of w: cached, or uploaded into an empty or the least recently used slot. */
static struct ad_lstm_dev_model *model_get(struct ad_lstm_dev *d, const struct ad_lstm_weights *w,
                                           char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < AD_LSTM_DEV_MODELS; i++) {
        struct ad_lstm_dev_model *m = &d->models[i];
        if (m->used == 0 || m->host.id != w->id)
            continue;
        if (same_weights(&m->host, w)) {
            m->used = d->tick;
            return m;
        }
        /* The id was reused for other weights, against lstm.h: never serve stale ones. */
        model_drop(d, m);
    }
    struct ad_lstm_dev_model *slot = NULL;
    for (size_t i = 0; i < AD_LSTM_DEV_MODELS; i++) {
        struct ad_lstm_dev_model *m = &d->models[i];
        if (m->used == 0) {
            slot = m;
            break;
        }
        if (slot == NULL || m->used < slot->used)
            slot = m;
    }
    model_drop(d, slot);
    return model_upload(d, slot, w, errstr, errstr_size) < 0 ? NULL : slot;
}

static void pack(float *dst, const float *x, size_t rows, size_t len, size_t x_stride)
{
    if (x_stride == len) {
        memcpy(dst, x, rows * len * sizeof(float));
        return;
    }
    for (size_t b = 0; b < rows; b++)
        memcpy(dst + b * len, x + b * x_stride, len * sizeof(float));
}

/* The head on h ([rows][H]) into d->out. */
static int run_head(struct ad_lstm_dev *d, const struct ad_lstm_weights *dw, const float *h,
                    size_t rows, char *errstr, size_t errstr_size)
{
    int H = (int)dw->hidden, O = (int)dw->outputs;
    if (d->ops->gemm_tn(d->ctx, O, (int)rows, H, dw->head_w, H, h, H, d->out.p, O, errstr,
                        errstr_size) < 0)
        return -1;
    struct ad_lstm_bias_args b = {
        .out = d->out.p, .bias = dw->head_b, .rows = (unsigned)rows, .cols = (unsigned)O};
    return d->ops->add_bias(d->ctx, &b, errstr, errstr_size);
}

/* Whether a forward's layers run as fused kernels: W_hh and the narrowest tile fit. */
static int use_layer_fused(const struct ad_lstm_dev *d, const struct ad_lstm_weights *w)
{
    return d->fused_layers && d->ops->layer_fused != NULL && w->hidden <= AD_LSTM_FUSED_THREADS &&
           ad_lstm_layer_smem_bytes((unsigned)w->hidden, 1) <= d->fused_smem;
}

/* Windows per thread of the fused layer for a chunk of rows: the most that fit and still give
 * every block the device runs at once a tile of its own (fewer, wider tiles read each W_hh
 * value from shared memory for more windows, but leave multiprocessors idle). */
static unsigned layer_per_thread(const struct ad_lstm_dev *d, const struct ad_lstm_weights *w,
                                 size_t rows)
{
    unsigned H = (unsigned)w->hidden;
    for (unsigned r = AD_LSTM_LAYER_MAX_PER_THREAD; r > 1; r /= 2) {
        size_t tile = ad_lstm_layer_tile(H, r);
        if (ad_lstm_layer_smem_bytes(H, r) <= d->fused_smem &&
            (rows + tile - 1) / tile >= d->layer_blocks)
            return r;
    }
    return 1;
}

/* One layer's steps in one kernel; with a table (a warm-up) the final h and c into slots. */
static int run_layer_fused(struct ad_lstm_dev *d, const struct ad_lstm_weights *dw, size_t l,
                           size_t rows, size_t steps, struct ad_lstm_dev_table *table, char *errstr,
                           size_t errstr_size)
{
    struct ad_lstm_layer_args a = {.gates = d->gates.p,
                                   .w_hh = dw->w_hh[l],
                                   .bias = dw->bias[l],
                                   .seq = l + 1 < dw->layers ? d->seq.p : NULL,
                                   .h = d->h.p,
                                   .states = table != NULL ? table->p : NULL,
                                   .slots = table != NULL ? d->slots.p : NULL,
                                   .rows = (unsigned)rows,
                                   .steps = (unsigned)steps,
                                   .hidden = (unsigned)dw->hidden,
                                   .state_floats = (unsigned)(2 * dw->layers * dw->hidden),
                                   .layer = (unsigned)l,
                                   .per_thread = layer_per_thread(d, dw, rows)};
    if (d->ops->layer_fused(d->ctx, &a, errstr, errstr_size) < 0)
        return -1;
    d->last_layer_fused++;
    return 0;
}

/*
 * Queues the network on the rows windows in d->x; the outputs land in d->out. With a table
 * (a warm-up), each layer's final h and c also go to the slots in d->slots.
 */
static int run_chunk(struct ad_lstm_dev *d, const struct ad_lstm_weights *dw, size_t rows,
                     size_t steps, struct ad_lstm_dev_table *table, char *errstr,
                     size_t errstr_size)
{
    const struct ad_lstm_dev_ops *ops = d->ops;
    int H = (int)dw->hidden, G = 4 * H;
    int n_rows = (int)rows, n_all = (int)(rows * steps);
    float *gates = d->gates.p, *rec = d->rec.p, *h = d->h.p, *c = d->c.p, *seq = d->seq.p;
    const float *in = d->x.p;
    int in_dim = (int)dw->inputs;
    int fused = use_layer_fused(d, dw);
    for (size_t l = 0; l < dw->layers; l++) {
        int top = l + 1 == dw->layers;
        /* Row-major [n][k] is column-major k × n: gates^T (G × n) = W_ih (k × G)^T · in^T. */
        if (ops->gemm_tn(d->ctx, G, n_all, in_dim, dw->w_ih[l], in_dim, in, in_dim, gates, G,
                         errstr, errstr_size) < 0)
            return -1;
        if (fused) {
            /* seq is this GEMM's operand and the kernel's output: the stream orders them. */
            if (run_layer_fused(d, dw, l, rows, steps, table, errstr, errstr_size) < 0)
                return -1;
            in = seq;
            in_dim = H;
            continue;
        }
        for (size_t t = 0; t < steps; t++) {
            if (t > 0 && ops->gemm_tn(d->ctx, G, n_rows, H, dw->w_hh[l], H, h, H, rec, G, errstr,
                                      errstr_size) < 0)
                return -1;
            struct ad_lstm_cell_args a = {.gates = gates,
                                          .rec = rec,
                                          .bias = dw->bias[l],
                                          .c = c,
                                          .h = h,
                                          .seq = top ? NULL : seq,
                                          .rows = (unsigned)rows,
                                          .steps = (unsigned)steps,
                                          .hidden = (unsigned)H,
                                          .t = (unsigned)t,
                                          .first = t == 0};
            if (ops->cell(d->ctx, &a, errstr, errstr_size) < 0)
                return -1;
        }
        if (table != NULL) {
            /* Before the next layer's first step overwrites h and c. */
            struct ad_lstm_scatter_args a = {.states = table->p,
                                             .slots = d->slots.p,
                                             .h = h,
                                             .c = c,
                                             .rows = (unsigned)rows,
                                             .hidden = (unsigned)H,
                                             .state_floats = (unsigned)(2 * dw->layers * H),
                                             .layer = (unsigned)l};
            if (ops->scatter(d->ctx, &a, errstr, errstr_size) < 0)
                return -1;
        }
        /* The next layer's input GEMM reads all of seq before its steps overwrite it. */
        in = seq;
        in_dim = H;
    }
    return run_head(d, dw, h, rows, errstr, errstr_size);
}

/* Windows a fused step's block takes at once, and whether the device runs it for w. */
static unsigned fused_tile(const struct ad_lstm_weights *w)
{
    size_t tile = AD_LSTM_FUSED_THREADS / w->hidden;
    return tile > 0 ? (unsigned)tile : 1;
}

static int use_fused(const struct ad_lstm_dev *d, const struct ad_lstm_weights *w)
{
    return d->ops->step_fused != NULL &&
           ad_lstm_fused_smem_bytes((unsigned)w->hidden, fused_tile(w)) <= d->fused_smem;
}

/* One stream step of the rows windows whose inputs are in d->x and slots in d->slots. */
static int run_step_chunk(struct ad_lstm_dev *d, const struct ad_lstm_weights *dw,
                          struct ad_lstm_dev_table *table, size_t rows, char *errstr,
                          size_t errstr_size)
{
    const struct ad_lstm_dev_ops *ops = d->ops;
    int H = (int)dw->hidden, G = 4 * H, S = (int)(2 * dw->layers * dw->hidden);
    int n_rows = (int)rows, fused = use_fused(d, dw);
    float *gates = d->gates.p, *rec = d->rec.p, *h = d->h.p, *st = d->st.p;
    /* Every layer's h_prev, copied before the first cell overwrites any of them in the table
     * (the GEMMs need them contiguous, the slots are not). */
    struct ad_lstm_gather_args ga = {.states = table->p,
                                     .slots = d->slots.p,
                                     .dst = st,
                                     .rows = (unsigned)rows,
                                     .state_floats = (unsigned)S};
    if (!fused && ops->gather(d->ctx, &ga, errstr, errstr_size) < 0)
        return -1;
    const float *in = d->x.p;
    int in_dim = (int)dw->inputs;
    for (size_t l = 0; l < dw->layers; l++) {
        if (ops->gemm_tn(d->ctx, G, n_rows, in_dim, dw->w_ih[l], in_dim, in, in_dim, gates, G,
                         errstr, errstr_size) < 0)
            return -1;
        /* h is the input GEMM's operand above and the cell's output below: the stream orders
         * the read before the write. */
        if (fused) {
            struct ad_lstm_fused_args a = {.gates = gates,
                                           .w_hh = dw->w_hh[l],
                                           .bias = dw->bias[l],
                                           .states = table->p,
                                           .slots = d->slots.p,
                                           .h = h,
                                           .rows = (unsigned)rows,
                                           .hidden = (unsigned)H,
                                           .state_floats = (unsigned)S,
                                           .layer = (unsigned)l,
                                           .tile = fused_tile(dw)};
            if (ops->step_fused(d->ctx, &a, errstr, errstr_size) < 0)
                return -1;
        } else {
            struct ad_lstm_step_args a = {.gates = gates,
                                          .rec = rec,
                                          .bias = dw->bias[l],
                                          .states = table->p,
                                          .slots = d->slots.p,
                                          .h = h,
                                          .rows = (unsigned)rows,
                                          .hidden = (unsigned)H,
                                          .state_floats = (unsigned)S,
                                          .layer = (unsigned)l};
            if (ops->gemm_tn(d->ctx, G, n_rows, H, dw->w_hh[l], H, st + 2 * l * (size_t)H, S, rec,
                             G, errstr, errstr_size) < 0 ||
                ops->step(d->ctx, &a, errstr, errstr_size) < 0)
                return -1;
        }
        in = h;
        in_dim = H;
    }
    return run_head(d, dw, h, rows, errstr, errstr_size);
}

enum mode { FORWARD, WARM_UP, STEP };

static const char *const mode_names[] = {"LSTM forward", "LSTM warm-up", "LSTM step"};

/* The table exists, and every slot's state lies inside it. */
static int check_table(const char *what, const struct ad_lstm_weights *w,
                       const struct ad_lstm_dev_table *table, const uint32_t *slots, size_t batch,
                       char *errstr, size_t errstr_size)
{
    if (table == NULL || table->p == NULL) {
        ad_errstr_set(errstr, errstr_size, "%s: no table of states", what);
        return -1;
    }
    if (batch > 0 && slots == NULL) {
        ad_errstr_set(errstr, errstr_size, "%s: no slots", what);
        return -1;
    }
    size_t row = 2 * w->layers * w->hidden * sizeof(float); /* bounded: checked before */
    size_t capacity = table->bytes / row;
    for (size_t i = 0; i < batch; i++) {
        if (slots[i] >= capacity) {
            ad_errstr_set(errstr, errstr_size, "%s: slot %u beyond the table's %zu", what,
                          (unsigned)slots[i], capacity);
            return -1;
        }
    }
    return 0;
}

static int run(struct ad_lstm_dev *d, enum mode mode, const struct ad_lstm_weights *w,
               struct ad_lstm_dev_table *table, const float *x, size_t batch, size_t steps,
               size_t x_stride, const uint32_t *slots, float *out, char *errstr, size_t errstr_size)
{
    const char *what = mode_names[mode];
    if (check_args(what, w, x, batch, steps, x_stride, out, errstr, errstr_size) < 0 ||
        (mode != FORWARD && check_table(what, w, table, slots, batch, errstr, errstr_size) < 0))
        return AD_LSTM_DEV_INVALID;
    d->last_chunks = 0;
    d->last_layer_fused = 0;
    if (batch == 0)
        return AD_LSTM_DEV_OK;

    size_t F = w->inputs, H = w->hidden, O = w->outputs, len = steps * F;
    size_t S = 2 * w->layers * H;
    size_t chunk = ad_lstm_dev_chunk(w, batch, steps, d->gate_bytes);
    size_t f = sizeof(float), u = sizeof(uint32_t);
    /* The fused step and the fused layer need no rec; the fused step no gathered states, the
     * fused layer no c (it stays on chip). */
    int fused = mode == STEP ? use_fused(d, w) : use_layer_fused(d, w);
    /* Growing frees buffers: nothing may be queued yet. */
    if (buf_reserve(d, &d->x, chunk * len * f, 0, errstr, errstr_size) < 0 ||
        buf_reserve(d, &d->gates, chunk * steps * 4 * H * f, 0, errstr, errstr_size) < 0 ||
        (!fused && buf_reserve(d, &d->rec, chunk * 4 * H * f, 0, errstr, errstr_size) < 0) ||
        buf_reserve(d, &d->h, chunk * H * f, 0, errstr, errstr_size) < 0 ||
        (mode != STEP && !fused &&
         buf_reserve(d, &d->c, chunk * H * f, 0, errstr, errstr_size) < 0) ||
        (mode != STEP && w->layers > 1 &&
         buf_reserve(d, &d->seq, chunk * steps * H * f, 0, errstr, errstr_size) < 0) ||
        (mode == STEP && !fused &&
         buf_reserve(d, &d->st, chunk * S * f, 0, errstr, errstr_size) < 0) ||
        (mode != FORWARD && buf_reserve(d, &d->slots, chunk * u, 0, errstr, errstr_size) < 0) ||
        buf_reserve(d, &d->out, chunk * O * f, 0, errstr, errstr_size) < 0 ||
        buf_reserve(d, &d->stage_in, batch * len * f, 1, errstr, errstr_size) < 0 ||
        (mode != FORWARD &&
         buf_reserve(d, &d->stage_slots, batch * u, 1, errstr, errstr_size) < 0) ||
        buf_reserve(d, &d->stage_out, batch * O * f, 1, errstr, errstr_size) < 0)
        return AD_LSTM_DEV_FAILED;

    d->tick++;
    struct ad_lstm_dev_model *m = model_get(d, w, errstr, errstr_size);
    if (m == NULL)
        return AD_LSTM_DEV_FAILED;

    float *stage_in = d->stage_in.p, *stage_out = d->stage_out.p;
    uint32_t *stage_slots = d->stage_slots.p;
    size_t chunks = 0;
    for (size_t start = 0; start < batch; start += chunk) {
        size_t rows = min_size(chunk, batch - start);
        float *in = stage_in + start * len;
        /* Packing the next chunk overlaps the device's work on this one. */
        pack(in, x + start * x_stride, rows, len, x_stride);
        if (d->ops->upload(d->ctx, d->x.p, in, rows * len * f, errstr, errstr_size) < 0)
            return AD_LSTM_DEV_FAILED;
        if (mode != FORWARD) {
            memcpy(stage_slots + start, slots + start, rows * u);
            if (d->ops->upload(d->ctx, d->slots.p, stage_slots + start, rows * u, errstr,
                               errstr_size) < 0)
                return AD_LSTM_DEV_FAILED;
        }
        int rc = mode == STEP ? run_step_chunk(d, &m->dev, table, rows, errstr, errstr_size)
                              : run_chunk(d, &m->dev, rows, steps, mode == WARM_UP ? table : NULL,
                                          errstr, errstr_size);
        if (rc < 0 || d->ops->download(d->ctx, stage_out + start * O, d->out.p, rows * O * f,
                                       errstr, errstr_size) < 0)
            return AD_LSTM_DEV_FAILED;
        chunks++;
    }
    if (d->ops->sync(d->ctx, errstr, errstr_size) < 0)
        return AD_LSTM_DEV_FAILED;
    memcpy(out, stage_out, batch * O * f);
    d->last_chunks = chunks;
    return AD_LSTM_DEV_OK;
}

int ad_lstm_dev_forward(struct ad_lstm_dev *d, const struct ad_lstm_weights *w, const float *x,
                        size_t batch, size_t steps, size_t x_stride, float *out, char *errstr,
                        size_t errstr_size)
{
    return run(d, FORWARD, w, NULL, x, batch, steps, x_stride, NULL, out, errstr, errstr_size);
}

int ad_lstm_dev_warm_up_slots(struct ad_lstm_dev *d, const struct ad_lstm_weights *w, void *table,
                              const float *x, size_t batch, size_t steps, size_t x_stride,
                              const uint32_t *slots, float *out, char *errstr, size_t errstr_size)
{
    return run(d, WARM_UP, w, table, x, batch, steps, x_stride, slots, out, errstr, errstr_size);
}

int ad_lstm_dev_step_slots(struct ad_lstm_dev *d, const struct ad_lstm_weights *w, void *table,
                           const float *x, size_t batch, size_t x_stride, const uint32_t *slots,
                           float *out, char *errstr, size_t errstr_size)
{
    /* One step: the chunking and the checks of a forward over one input per window. */
    return run(d, STEP, w, table, x, batch, 1, x_stride, slots, out, errstr, errstr_size);
}

int ad_lstm_dev_states_resize(struct ad_lstm_dev *d, void **table, size_t old_bytes,
                              size_t new_bytes, char *errstr, size_t errstr_size)
{
    struct ad_lstm_dev_table *old = *table;
    if ((old == NULL ? 0 : old->bytes) != old_bytes || new_bytes < old_bytes || new_bytes == 0) {
        ad_errstr_set(errstr, errstr_size, "LSTM states: a table of %zu bytes cannot become %zu",
                      old == NULL ? 0 : old->bytes, new_bytes);
        return AD_LSTM_DEV_INVALID;
    }
    struct ad_lstm_dev_table *t = malloc(sizeof *t);
    if (t == NULL) {
        ad_errstr_set(errstr, errstr_size, "LSTM states: out of memory");
        return AD_LSTM_DEV_INVALID;
    }
    void *p = NULL;
    if (d->ops->alloc(d->ctx, new_bytes, &p, errstr, errstr_size) < 0) {
        free(t);
        return AD_LSTM_DEV_INVALID; /* nothing queued, the old table intact */
    }
    t->p = p;
    t->bytes = new_bytes;
    if (old != NULL && old_bytes > 0) {
        /* The old table may still be in use by queued work: the copy is queued after it. */
        if (d->ops->copy(d->ctx, t->p, old->p, old_bytes, errstr, errstr_size) < 0 ||
            d->ops->sync(d->ctx, errstr, errstr_size) < 0) {
            /* The copy may still be queued: wait for it (its error is already said) first. */
            d->ops->sync(d->ctx, NULL, 0);
            d->ops->release(d->ctx, t->p);
            free(t);
            return AD_LSTM_DEV_FAILED;
        }
        d->ops->release(d->ctx, old->p);
        free(old);
    }
    *table = t;
    return AD_LSTM_DEV_OK;
}

void ad_lstm_dev_states_free(struct ad_lstm_dev *d, void *table)
{
    struct ad_lstm_dev_table *t = table;
    if (t == NULL)
        return;
    /* A failed call may leave work queued on it. */
    d->ops->sync(d->ctx, NULL, 0);
    d->ops->release(d->ctx, t->p);
    free(t);
}
