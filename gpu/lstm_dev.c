/* The device forward's plan and bookkeeping (lstm_dev.h), independent of CUDA. */

#include "gpu/lstm_dev.h"

#include <limits.h>
#include <stdio.h>
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
    struct ad_lstm_dev_buf *dev[] = {&d->x, &d->gates, &d->rec, &d->h, &d->c, &d->seq, &d->out};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        buf_release(d, dev[i], 0);
    buf_release(d, &d->stage_in, 1);
    buf_release(d, &d->stage_out, 1);
}

static int check_args(const struct ad_lstm_weights *w, const float *x, size_t batch, size_t steps,
                      size_t x_stride, const float *out, char *errstr, size_t errstr_size)
{
    if (w == NULL) {
        ad_errstr_set(errstr, errstr_size, "LSTM forward: no weights");
        return -1;
    }
    if (w->layers < 1 || w->layers > AD_LSTM_MAX_LAYERS) {
        ad_errstr_set(errstr, errstr_size, "LSTM forward: %zu layers (1 to %d)", w->layers,
                      AD_LSTM_MAX_LAYERS);
        return -1;
    }
    if (w->inputs < 1 || w->inputs > MAX_DIM || w->hidden < 1 || w->hidden > MAX_DIM ||
        w->outputs < 1 || w->outputs > MAX_DIM) {
        ad_errstr_set(errstr, errstr_size,
                      "LSTM forward: inputs %zu, hidden %zu, outputs %zu (1 to %zu each)",
                      w->inputs, w->hidden, w->outputs, MAX_DIM);
        return -1;
    }
    for (size_t l = 0; l < w->layers; l++) {
        if (w->w_ih[l] == NULL || w->w_hh[l] == NULL || w->bias[l] == NULL) {
            ad_errstr_set(errstr, errstr_size, "LSTM forward: layer %zu has no weights", l);
            return -1;
        }
    }
    if (w->head_w == NULL || w->head_b == NULL) {
        ad_errstr_set(errstr, errstr_size, "LSTM forward: the head has no weights");
        return -1;
    }
    if (steps < 1 || steps > INT_MAX) {
        ad_errstr_set(errstr, errstr_size, "LSTM forward: %zu steps (1 to %d)", steps, INT_MAX);
        return -1;
    }
    size_t len = steps * w->inputs; /* no overflow: both are bounded above */
    if (x_stride < len) {
        ad_errstr_set(errstr, errstr_size,
                      "LSTM forward: x_stride %zu is less than steps %zu × features %zu", x_stride,
                      steps, w->inputs);
        return -1;
    }
    if (batch == 0)
        return 0;
    if (x == NULL || out == NULL) {
        ad_errstr_set(errstr, errstr_size, "LSTM forward: no input or output");
        return -1;
    }
    if (batch > SIZE_MAX / sizeof(float) / len || batch > SIZE_MAX / sizeof(float) / w->outputs) {
        ad_errstr_set(errstr, errstr_size, "LSTM forward: batch %zu is too large", batch);
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

/* Queues the network on the rows windows in d->x; the outputs land in d->out. */
static int run_chunk(struct ad_lstm_dev *d, const struct ad_lstm_weights *dw, size_t rows,
                     size_t steps, char *errstr, size_t errstr_size)
{
    const struct ad_lstm_dev_ops *ops = d->ops;
    int H = (int)dw->hidden, G = 4 * H, O = (int)dw->outputs;
    int n_rows = (int)rows, n_all = (int)(rows * steps);
    float *gates = d->gates.p, *rec = d->rec.p, *h = d->h.p, *c = d->c.p, *seq = d->seq.p;
    const float *in = d->x.p;
    int in_dim = (int)dw->inputs;
    for (size_t l = 0; l < dw->layers; l++) {
        int top = l + 1 == dw->layers;
        /* Row-major [n][k] is column-major k × n: gates^T (G × n) = W_ih (k × G)^T · in^T. */
        if (ops->gemm_tn(d->ctx, G, n_all, in_dim, dw->w_ih[l], in_dim, in, in_dim, gates, G,
                         errstr, errstr_size) < 0)
            return -1;
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
        /* The next layer's input GEMM reads all of seq before its steps overwrite it. */
        in = seq;
        in_dim = H;
    }
    if (ops->gemm_tn(d->ctx, O, n_rows, H, dw->head_w, H, h, H, d->out.p, O, errstr, errstr_size) <
        0)
        return -1;
    struct ad_lstm_bias_args b = {
        .out = d->out.p, .bias = dw->head_b, .rows = (unsigned)rows, .cols = (unsigned)O};
    return ops->add_bias(d->ctx, &b, errstr, errstr_size);
}

int ad_lstm_dev_forward(struct ad_lstm_dev *d, const struct ad_lstm_weights *w, const float *x,
                        size_t batch, size_t steps, size_t x_stride, float *out, char *errstr,
                        size_t errstr_size)
{
    if (check_args(w, x, batch, steps, x_stride, out, errstr, errstr_size) < 0)
        return AD_LSTM_DEV_INVALID;
    d->last_chunks = 0;
    if (batch == 0)
        return AD_LSTM_DEV_OK;

    size_t F = w->inputs, H = w->hidden, O = w->outputs, len = steps * F;
    size_t chunk = ad_lstm_dev_chunk(w, batch, steps, d->gate_bytes);
    size_t f = sizeof(float);
    /* Growing frees buffers: nothing may be queued yet. */
    if (buf_reserve(d, &d->x, chunk * len * f, 0, errstr, errstr_size) < 0 ||
        buf_reserve(d, &d->gates, chunk * steps * 4 * H * f, 0, errstr, errstr_size) < 0 ||
        buf_reserve(d, &d->rec, chunk * 4 * H * f, 0, errstr, errstr_size) < 0 ||
        buf_reserve(d, &d->h, chunk * H * f, 0, errstr, errstr_size) < 0 ||
        buf_reserve(d, &d->c, chunk * H * f, 0, errstr, errstr_size) < 0 ||
        (w->layers > 1 &&
         buf_reserve(d, &d->seq, chunk * steps * H * f, 0, errstr, errstr_size) < 0) ||
        buf_reserve(d, &d->out, chunk * O * f, 0, errstr, errstr_size) < 0 ||
        buf_reserve(d, &d->stage_in, batch * len * f, 1, errstr, errstr_size) < 0 ||
        buf_reserve(d, &d->stage_out, batch * O * f, 1, errstr, errstr_size) < 0)
        return AD_LSTM_DEV_FAILED;

    d->tick++;
    struct ad_lstm_dev_model *m = model_get(d, w, errstr, errstr_size);
    if (m == NULL)
        return AD_LSTM_DEV_FAILED;

    float *stage_in = d->stage_in.p, *stage_out = d->stage_out.p;
    size_t chunks = 0;
    for (size_t start = 0; start < batch; start += chunk) {
        size_t rows = min_size(chunk, batch - start);
        float *in = stage_in + start * len;
        /* Packing the next chunk overlaps the device's work on this one. */
        pack(in, x + start * x_stride, rows, len, x_stride);
        if (d->ops->upload(d->ctx, d->x.p, in, rows * len * f, errstr, errstr_size) < 0 ||
            run_chunk(d, &m->dev, rows, steps, errstr, errstr_size) < 0 ||
            d->ops->download(d->ctx, stage_out + start * O, d->out.p, rows * O * f, errstr,
                             errstr_size) < 0)
            return AD_LSTM_DEV_FAILED;
        chunks++;
    }
    if (d->ops->sync(d->ctx, errstr, errstr_size) < 0)
        return AD_LSTM_DEV_FAILED;
    memcpy(out, stage_out, batch * O * f);
    d->last_chunks = chunks;
    return AD_LSTM_DEV_OK;
}
