/*
 * The CUDA backend's plan (gpu/lstm_dev.c) on an emulated device, so that its layout is
 * checked on machines without a GPU: the chunking, the packing of strided windows, every
 * GEMM's shape and leading dimensions, the kernels' indexing (the same lstm_cell.h code the
 * kernels run), the layer chaining, the weights cache and the buffers.
 *
 * The emulated device is strict where a real one would be silently wrong: cublasSgemm's
 * column-major definition and its argument checks, every operand inside one device
 * allocation, copies only between pinned host memory and the device, fresh memory poisoned
 * with NaN, and queued operations run only at sync (as late as a stream may run them), so
 * host memory touched too early or read too soon shows up as a wrong or NaN result.
 */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gpu/lstm_dev.h"
#include "lstm_ref.h"

#define TOL 1e-4

/* The emulated device. */

enum op_kind {
    OP_ALLOC,
    OP_ALLOC_HOST,
    OP_UPLOAD,
    OP_DOWNLOAD,
    OP_GEMM,
    OP_CELL,
    OP_BIAS,
    OP_COPY,
    OP_GATHER,
    OP_SCATTER,
    OP_STEP,
    OP_FUSED,
    OP_LAYER,
    OP_N
};

struct region {
    char *base;
    size_t bytes;
    int host;
};

struct op {
    enum op_kind kind;
    void *dst;
    const void *src;
    size_t bytes;
    int m, n, k, lda, ldb, ldc;
    const float *a, *b;
    float *c;
    struct ad_lstm_cell_args cell;
    struct ad_lstm_bias_args bias;
    struct ad_lstm_gather_args gather;
    struct ad_lstm_scatter_args scatter;
    struct ad_lstm_step_args step;
    struct ad_lstm_fused_args fused;
    struct ad_lstm_layer_args layer;
    const char *table_end; /* of the allocation the states lie in: slots are checked at run */
};

struct emu {
    struct region regions[64];
    size_t n_regions;
    struct op *queue;
    size_t n_queue, cap_queue;
    long calls[OP_N];
    enum op_kind fail_kind;
    long fail_at; /* fail the fail_at-th call of fail_kind (1-based); 0: never */
    size_t smem;  /* shared memory of a block, as the device would refuse a launch beyond */
    unsigned last_per_thread; /* of the last fused layer queued */
    char violation[512];
};

static void violate(struct emu *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void violate(struct emu *e, const char *fmt, ...)
{
    if (e->violation[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->violation, sizeof e->violation, fmt, ap);
    va_end(ap);
}

static int injected(struct emu *e, enum op_kind kind, char *errstr, size_t errstr_size)
{
    e->calls[kind]++;
    if (e->fail_at != 0 && e->fail_kind == kind && e->calls[kind] == e->fail_at) {
        snprintf(errstr, errstr_size, "injected failure of op %d", (int)kind);
        return -1;
    }
    return 0;
}

static struct region *find(struct emu *e, const void *p)
{
    for (size_t i = 0; i < e->n_regions; i++) {
        struct region *r = &e->regions[i];
        if ((const char *)p >= r->base && (const char *)p < r->base + r->bytes)
            return r;
    }
    return NULL;
}

/* [p, p + bytes) lies in one allocation of the right kind. */
static void check_span(struct emu *e, const void *p, size_t bytes, int host, const char *what)
{
    struct region *r = find(e, p);
    if (r == NULL || r->host != host) {
        violate(e, "%s: %p is not in %s memory", what, p, host ? "pinned host" : "device");
        return;
    }
    if ((const char *)p + bytes > r->base + r->bytes)
        violate(e, "%s: %zu bytes at offset %zu overrun an allocation of %zu", what, bytes,
                (size_t)((const char *)p - r->base), r->bytes);
}

/* A column-major rows × cols matrix with leading dimension ld. */
static void check_matrix(struct emu *e, const float *p, int rows, int cols, int ld,
                         const char *what)
{
    if (rows > 0 && cols > 0)
        check_span(e, p, ((size_t)(cols - 1) * ld + rows) * sizeof(float), 0, what);
}

static void enqueue(struct emu *e, const struct op *o)
{
    if (e->n_queue == e->cap_queue) {
        e->cap_queue = e->cap_queue ? 2 * e->cap_queue : 256;
        e->queue = realloc(e->queue, e->cap_queue * sizeof *e->queue);
        if (e->queue == NULL)
            abort();
    }
    e->queue[e->n_queue++] = *o;
}

static int emu_alloc_kind(struct emu *e, size_t bytes, void **p, int host, char *errstr,
                          size_t errstr_size)
{
    *p = NULL;
    if (injected(e, host ? OP_ALLOC_HOST : OP_ALLOC, errstr, errstr_size) < 0)
        return -1;
    if (e->n_regions == sizeof e->regions / sizeof e->regions[0])
        abort();
    char *m = malloc(bytes);
    if (m == NULL)
        abort();
    memset(m, 0xFF, bytes); /* every float a NaN until written */
    e->regions[e->n_regions++] = (struct region){m, bytes, host};
    *p = m;
    return 0;
}

static void emu_release_kind(struct emu *e, void *p, int host)
{
    if (p == NULL)
        return;
    if (e->n_queue > 0)
        violate(e, "memory released with %zu operations queued", e->n_queue);
    for (size_t i = 0; i < e->n_regions; i++) {
        if (e->regions[i].base == p) {
            if (e->regions[i].host != host)
                violate(e, "memory released as the wrong kind");
            free(p);
            e->regions[i] = e->regions[--e->n_regions];
            return;
        }
    }
    violate(e, "release of %p, which is not an allocation", p);
}

static int emu_alloc(void *ctx, size_t bytes, void **p, char *errstr, size_t errstr_size)
{
    return emu_alloc_kind(ctx, bytes, p, 0, errstr, errstr_size);
}

static void emu_release(void *ctx, void *p)
{
    emu_release_kind(ctx, p, 0);
}

static int emu_alloc_host(void *ctx, size_t bytes, void **p, char *errstr, size_t errstr_size)
{
    return emu_alloc_kind(ctx, bytes, p, 1, errstr, errstr_size);
}

static void emu_release_host(void *ctx, void *p)
{
    emu_release_kind(ctx, p, 1);
}

static int emu_upload(void *ctx, void *dst, const void *src, size_t bytes, char *errstr,
                      size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_UPLOAD, errstr, errstr_size) < 0)
        return -1;
    check_span(e, dst, bytes, 0, "upload destination");
    struct region *r = find(e, src);
    if (r != NULL) /* else the caller's weights: pageable memory that outlives the forward */
        check_span(e, src, bytes, 1, "upload source");
    enqueue(e, &(struct op){.kind = OP_UPLOAD, .dst = dst, .src = src, .bytes = bytes});
    return 0;
}

static int emu_download(void *ctx, void *dst, const void *src, size_t bytes, char *errstr,
                        size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_DOWNLOAD, errstr, errstr_size) < 0)
        return -1;
    check_span(e, src, bytes, 0, "download source");
    check_span(e, dst, bytes, 1, "download destination");
    enqueue(e, &(struct op){.kind = OP_DOWNLOAD, .dst = dst, .src = src, .bytes = bytes});
    return 0;
}

static int emu_gemm_tn(void *ctx, int m, int n, int k, const float *a, int lda, const float *b,
                       int ldb, float *c, int ldc, char *errstr, size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_GEMM, errstr, errstr_size) < 0)
        return -1;
    /* cublasSgemm's own checks for (T, N). */
    if (m < 0 || n < 0 || k < 0 || lda < (k > 1 ? k : 1) || ldb < (k > 1 ? k : 1) ||
        ldc < (m > 1 ? m : 1)) {
        snprintf(errstr, errstr_size, "cublasSgemm: CUBLAS_STATUS_INVALID_VALUE (emulated)");
        violate(e, "gemm m %d n %d k %d lda %d ldb %d ldc %d: invalid", m, n, k, lda, ldb, ldc);
        return -1;
    }
    check_matrix(e, a, k, m, lda, "gemm A");
    check_matrix(e, b, k, n, ldb, "gemm B");
    check_matrix(e, c, m, n, ldc, "gemm C");
    if (find(e, c) == find(e, a) || find(e, c) == find(e, b))
        violate(e, "gemm C shares an allocation with A or B");
    enqueue(e, &(struct op){.kind = OP_GEMM,
                            .m = m,
                            .n = n,
                            .k = k,
                            .a = a,
                            .lda = lda,
                            .b = b,
                            .ldb = ldb,
                            .c = c,
                            .ldc = ldc});
    return 0;
}

static int emu_cell(void *ctx, const struct ad_lstm_cell_args *a, char *errstr, size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_CELL, errstr, errstr_size) < 0)
        return -1;
    size_t rows = a->rows, steps = a->steps, H = a->hidden, f = sizeof(float);
    if (a->t >= a->steps || a->first != (a->t == 0))
        violate(e, "cell: step %u of %u, first %d", a->t, a->steps, a->first);
    check_span(e, a->gates, rows * steps * 4 * H * f, 0, "cell gates");
    if (!a->first)
        check_span(e, a->rec, rows * 4 * H * f, 0, "cell rec");
    check_span(e, a->bias, 4 * H * f, 0, "cell bias");
    check_span(e, a->c, rows * H * f, 0, "cell c");
    check_span(e, a->h, rows * H * f, 0, "cell h");
    if (a->seq != NULL)
        check_span(e, a->seq, rows * steps * H * f, 0, "cell seq");
    enqueue(e, &(struct op){.kind = OP_CELL, .cell = *a});
    return 0;
}

static int emu_add_bias(void *ctx, const struct ad_lstm_bias_args *a, char *errstr,
                        size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_BIAS, errstr, errstr_size) < 0)
        return -1;
    check_span(e, a->out, (size_t)a->rows * a->cols * sizeof(float), 0, "bias out");
    check_span(e, a->bias, a->cols * sizeof(float), 0, "bias bias");
    enqueue(e, &(struct op){.kind = OP_BIAS, .bias = *a});
    return 0;
}

static int emu_copy(void *ctx, void *dst, const void *src, size_t bytes, char *errstr,
                    size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_COPY, errstr, errstr_size) < 0)
        return -1;
    check_span(e, dst, bytes, 0, "copy destination");
    check_span(e, src, bytes, 0, "copy source");
    if (find(e, dst) == find(e, src))
        violate(e, "copy within one allocation");
    enqueue(e, &(struct op){.kind = OP_COPY, .dst = dst, .src = src, .bytes = bytes});
    return 0;
}

/* The table the states pointer lies in; its slots are known only when the op runs. */
static const char *table_end(struct emu *e, const float *states, const char *what)
{
    struct region *r = find(e, states);
    if (r == NULL || r->host) {
        violate(e, "%s: the states are not in device memory", what);
        return NULL;
    }
    return r->base + r->bytes;
}

static int emu_gather(void *ctx, const struct ad_lstm_gather_args *a, char *errstr,
                      size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_GATHER, errstr, errstr_size) < 0)
        return -1;
    check_span(e, a->slots, a->rows * sizeof(uint32_t), 0, "gather slots");
    check_span(e, a->dst, (size_t)a->rows * a->state_floats * sizeof(float), 0, "gather dst");
    enqueue(e, &(struct op){.kind = OP_GATHER,
                            .gather = *a,
                            .table_end = table_end(e, a->states, "gather")});
    return 0;
}

static int emu_scatter(void *ctx, const struct ad_lstm_scatter_args *a, char *errstr,
                       size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_SCATTER, errstr, errstr_size) < 0)
        return -1;
    size_t n = (size_t)a->rows * a->hidden * sizeof(float);
    check_span(e, a->slots, a->rows * sizeof(uint32_t), 0, "scatter slots");
    check_span(e, a->h, n, 0, "scatter h");
    check_span(e, a->c, n, 0, "scatter c");
    if ((size_t)2 * (a->layer + 1) * a->hidden > a->state_floats)
        violate(e, "scatter: layer %u beyond a state of %u floats", a->layer, a->state_floats);
    enqueue(e, &(struct op){.kind = OP_SCATTER,
                            .scatter = *a,
                            .table_end = table_end(e, a->states, "scatter")});
    return 0;
}

static int emu_step(void *ctx, const struct ad_lstm_step_args *a, char *errstr, size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_STEP, errstr, errstr_size) < 0)
        return -1;
    size_t rows = a->rows, H = a->hidden, f = sizeof(float);
    check_span(e, a->gates, rows * 4 * H * f, 0, "step gates");
    check_span(e, a->rec, rows * 4 * H * f, 0, "step rec");
    check_span(e, a->bias, 4 * H * f, 0, "step bias");
    check_span(e, a->slots, rows * sizeof(uint32_t), 0, "step slots");
    check_span(e, a->h, rows * H * f, 0, "step h");
    if (find(e, a->h) == find(e, a->states))
        violate(e, "step h inside the table");
    if (2 * (a->layer + 1) * H > a->state_floats)
        violate(e, "step: layer %u beyond a state of %u floats", a->layer, a->state_floats);
    enqueue(
        e, &(struct op){.kind = OP_STEP, .step = *a, .table_end = table_end(e, a->states, "step")});
    return 0;
}

static int emu_step_fused(void *ctx, const struct ad_lstm_fused_args *a, char *errstr,
                          size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_FUSED, errstr, errstr_size) < 0)
        return -1;
    size_t rows = a->rows, H = a->hidden, f = sizeof(float);
    check_span(e, a->gates, rows * 4 * H * f, 0, "fused gates");
    check_span(e, a->w_hh, 4 * H * H * f, 0, "fused w_hh");
    check_span(e, a->bias, 4 * H * f, 0, "fused bias");
    check_span(e, a->slots, rows * sizeof(uint32_t), 0, "fused slots");
    check_span(e, a->h, rows * H * f, 0, "fused h");
    if (2 * (a->layer + 1) * H > a->state_floats)
        violate(e, "fused: layer %u beyond a state of %u floats", a->layer, a->state_floats);
    /* One thread per unit of a tile's windows, at most a block's. */
    if (a->tile < 1 || (a->tile > 1 && a->tile * H > AD_LSTM_FUSED_THREADS))
        violate(e, "fused: a tile of %u windows of %zu units", a->tile, H);
    if (ad_lstm_fused_smem_bytes(a->hidden, a->tile) > e->smem) {
        snprintf(errstr, errstr_size, "fused: too much shared memory (emulated)");
        violate(e, "fused: %zu bytes of shared memory, %zu allowed",
                ad_lstm_fused_smem_bytes(a->hidden, a->tile), e->smem);
        return -1;
    }
    enqueue(e, &(struct op){
                   .kind = OP_FUSED, .fused = *a, .table_end = table_end(e, a->states, "fused")});
    return 0;
}

static int emu_layer_fused(void *ctx, const struct ad_lstm_layer_args *a, char *errstr,
                           size_t errstr_size)
{
    struct emu *e = ctx;
    if (injected(e, OP_LAYER, errstr, errstr_size) < 0)
        return -1;
    size_t rows = a->rows, steps = a->steps, H = a->hidden, f = sizeof(float);
    check_span(e, a->gates, rows * steps * 4 * H * f, 0, "layer gates");
    check_span(e, a->w_hh, 4 * H * H * f, 0, "layer w_hh");
    check_span(e, a->bias, 4 * H * f, 0, "layer bias");
    check_span(e, a->h, rows * H * f, 0, "layer h");
    if (a->seq != NULL) {
        check_span(e, a->seq, rows * steps * H * f, 0, "layer seq");
        if (find(e, a->seq) == find(e, a->gates))
            violate(e, "layer: seq shares an allocation with the gates");
    }
    if (a->states != NULL) {
        check_span(e, a->slots, rows * sizeof(uint32_t), 0, "layer slots");
        if (find(e, a->h) == find(e, a->states))
            violate(e, "layer h inside the table");
        if (2 * (a->layer + 1) * H > a->state_floats)
            violate(e, "layer: layer %u beyond a state of %u floats", a->layer, a->state_floats);
    }
    if (steps < 1 || H > AD_LSTM_FUSED_THREADS || a->per_thread < 1 ||
        a->per_thread > AD_LSTM_LAYER_MAX_PER_THREAD)
        violate(e, "layer: %zu steps, H %zu, %u windows a thread", steps, H, a->per_thread);
    size_t smem = ad_lstm_layer_smem_bytes(a->hidden, a->per_thread);
    if (smem > e->smem) {
        snprintf(errstr, errstr_size, "layer: too much shared memory (emulated)");
        violate(e, "layer: %zu bytes of shared memory, %zu allowed", smem, e->smem);
        return -1;
    }
    e->last_per_thread = a->per_thread;
    enqueue(e,
            &(struct op){.kind = OP_LAYER,
                         .layer = *a,
                         .table_end = a->states != NULL ? table_end(e, a->states, "layer") : NULL});
    return 0;
}

/* At run time, as a kernel would index: each slot's whole state inside the table, and the
 * slots of one launch distinct (else two threads write one float). */
static int slots_ok(struct emu *e, const struct op *o, const float *states, const uint32_t *slots,
                    unsigned rows, unsigned state_floats)
{
    for (unsigned b = 0; b < rows; b++) {
        const char *end = (const char *)(states + ((size_t)slots[b] + 1) * state_floats);
        if (o->table_end == NULL || end > o->table_end) {
            violate(e, "op %d: slot %u of window %u beyond the table", (int)o->kind, slots[b], b);
            return 0;
        }
        for (unsigned k = 0; k < b; k++) {
            if (slots[k] == slots[b]) {
                violate(e, "op %d: windows %u and %u share slot %u", (int)o->kind, k, b, slots[b]);
                return 0;
            }
        }
    }
    return 1;
}

/* The fused kernel's phases, a block at a time: what a barrier separates runs in order, in
 * shared memory that starts as NaN. */
static void run_fused(struct emu *e, const struct op *o)
{
    const struct ad_lstm_fused_args *a = &o->fused;
    if (!slots_ok(e, o, a->states, a->slots, a->rows, a->state_floats))
        return;
    size_t bytes = ad_lstm_fused_smem_bytes(a->hidden, a->tile);
    float *smem = malloc(bytes);
    if (smem == NULL)
        abort();
    memset(smem, 0xFF, bytes);
    float *sw = smem, *sh = smem + (size_t)a->hidden * (4 * a->hidden + 1);
    for (unsigned i = 0; i < 4 * a->hidden * a->hidden; i++)
        ad_lstm_fused_load_w(*a, sw, i);
    for (unsigned first = 0; first < a->rows; first += a->tile) {
        unsigned n = (a->rows - first < a->tile ? a->rows - first : a->tile) * a->hidden;
        memset(sh, 0xFF, (size_t)a->tile * a->hidden * sizeof *sh); /* the last tile's: stale */
        for (unsigned i = 0; i < n; i++)
            ad_lstm_fused_load_h(*a, sh, first, i);
        for (unsigned i = 0; i < n; i++)
            ad_lstm_fused_cell(*a, sw, sh, first, i);
    }
    free(smem);
}

/* The fused layer's phases, a block (a tile) at a time: the load of W_hh, then each step for
 * every thread of the block before the next step (the kernel's barriers), in shared memory
 * that starts as NaN (a tile finds the last one's h there) and registers that do too. */
static void run_layer_fused(struct emu *e, const struct op *o)
{
    const struct ad_lstm_layer_args *a = &o->layer;
    if (a->states != NULL && !slots_ok(e, o, a->states, a->slots, a->rows, a->state_floats))
        return;
    unsigned H = a->hidden, tile = ad_lstm_layer_tile(H, a->per_thread);
    size_t bytes = ad_lstm_layer_smem_bytes(H, a->per_thread);
    float *smem = malloc(bytes);
    float(*c)[AD_LSTM_LAYER_MAX_PER_THREAD] = malloc(AD_LSTM_FUSED_THREADS * sizeof *c);
    if (smem == NULL || c == NULL)
        abort();
    memset(smem, 0xFF, bytes);
    float *sw = smem, *sh = smem + (size_t)H * (4 * H + 1);
    for (unsigned i = 0; i < 4 * H * H; i++)
        ad_lstm_load_w_hh(a->w_hh, H, sw, i);
    for (unsigned first = 0; first < a->rows; first += tile) {
        unsigned n = a->rows - first < tile ? a->rows - first : tile;
        memset(sh, 0xFF, (size_t)2 * tile * H * sizeof *sh);
        memset(c, 0xFF, AD_LSTM_FUSED_THREADS * sizeof *c);
        for (unsigned t = 0; t < a->steps; t++) {
            float *prev = sh + (size_t)(t & 1) * tile * H, *next = sh + (size_t)(~t & 1) * tile * H;
            for (unsigned th = 0; th < AD_LSTM_FUSED_THREADS; th++)
                ad_lstm_layer_step(*a, sw, prev, next, first, n, th, t, c[th]);
        }
    }
    free(c);
    free(smem);
}

static void run(struct emu *e, const struct op *o)
{
    switch (o->kind) {
    case OP_UPLOAD:
    case OP_DOWNLOAD:
        memcpy(o->dst, o->src, o->bytes);
        break;
    case OP_GEMM:
        /* cuBLAS: C = op(A) op(B), column-major, op(A) = A^T, so C(i, j) = sum A(p, i) B(p, j). */
        for (int j = 0; j < o->n; j++) {
            for (int i = 0; i < o->m; i++) {
                const float *ai = o->a + (size_t)i * o->lda, *bj = o->b + (size_t)j * o->ldb;
                float acc = 0.0f;
                for (int p = 0; p < o->k; p++)
                    acc += ai[p] * bj[p];
                o->c[i + (size_t)j * o->ldc] = acc;
            }
        }
        break;
    case OP_CELL:
        /* Every thread of the launch: the kernel is `if (i < n) ad_lstm_cell_at(a, i)`. */
        for (unsigned i = 0; i < o->cell.rows * o->cell.hidden; i++)
            ad_lstm_cell_at(o->cell, i);
        break;
    case OP_BIAS:
        for (unsigned i = 0; i < o->bias.rows * o->bias.cols; i++)
            ad_lstm_bias_at(o->bias, i);
        break;
    case OP_COPY:
        memcpy(o->dst, o->src, o->bytes);
        break;
    case OP_GATHER: {
        const struct ad_lstm_gather_args *a = &o->gather;
        if (slots_ok(e, o, a->states, a->slots, a->rows, a->state_floats))
            for (unsigned i = 0; i < a->rows * a->state_floats; i++)
                ad_lstm_gather_at(*a, i);
        break;
    }
    case OP_SCATTER: {
        const struct ad_lstm_scatter_args *a = &o->scatter;
        if (slots_ok(e, o, a->states, a->slots, a->rows, a->state_floats))
            for (unsigned i = 0; i < a->rows * a->hidden; i++)
                ad_lstm_scatter_at(*a, i);
        break;
    }
    case OP_FUSED:
        run_fused(e, o);
        break;
    case OP_LAYER:
        run_layer_fused(e, o);
        break;
    case OP_STEP: {
        const struct ad_lstm_step_args *a = &o->step;
        if (slots_ok(e, o, a->states, a->slots, a->rows, a->state_floats))
            for (unsigned i = 0; i < a->rows * a->hidden; i++)
                ad_lstm_step_at(*a, i);
        break;
    }
    default:
        abort();
    }
}

static int emu_sync(void *ctx, char *errstr, size_t errstr_size)
{
    (void)errstr;
    (void)errstr_size;
    struct emu *e = ctx;
    for (size_t i = 0; i < e->n_queue; i++)
        run(e, &e->queue[i]);
    e->n_queue = 0;
    return 0;
}

static const struct ad_lstm_dev_ops emu_ops = {
    .alloc = emu_alloc,
    .release = emu_release,
    .alloc_host = emu_alloc_host,
    .release_host = emu_release_host,
    .upload = emu_upload,
    .download = emu_download,
    .gemm_tn = emu_gemm_tn,
    .cell = emu_cell,
    .add_bias = emu_add_bias,
    .sync = emu_sync,
    .copy = emu_copy,
    .gather = emu_gather,
    .scatter = emu_scatter,
    .step = emu_step,
    .step_fused = emu_step_fused,
    .layer_fused = emu_layer_fused,
};

/* A block's shared memory on the emulated device: H = 64's fused step fits, 128's does not. */
#define EMU_SMEM ((size_t)100 << 10)

struct fixture {
    struct emu emu;
    struct ad_lstm_dev dev;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (fx == NULL)
        return -1;
    ad_lstm_dev_init(&fx->dev, &emu_ops, &fx->emu);
    fx->emu.smem = EMU_SMEM; /* the plan's fused_smem stays 0 (no fused step) unless a test
                              * sets it */
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    ad_lstm_dev_release(&fx->dev);
    /* Everything allocated was freed, and nothing broke the device's rules on the way. */
    assert_int_equal(fx->emu.n_regions, 0);
    assert_string_equal(fx->emu.violation, "");
    free(fx->emu.queue);
    free(fx);
    return 0;
}

/* Inputs for batch windows x_stride apart; the padding is NaN so that reading it shows. */
static float *make_input(size_t batch, size_t steps, size_t F, size_t x_stride, uint64_t seed)
{
    float *x = malloc(batch * x_stride * sizeof *x);
    assert_non_null(x);
    memset(x, 0xFF, batch * x_stride * sizeof *x);
    for (size_t b = 0; b < batch; b++)
        lstm_ref_fill(x + b * x_stride, steps * F, 2.0f, &seed);
    return x;
}

/* Runs the forward and compares it with the reference; out is poisoned and guarded. */
static void check_forward(struct fixture *fx, const struct ad_lstm_weights *w, const float *x,
                          size_t batch, size_t steps, size_t x_stride, const double *want)
{
    size_t O = w->outputs, guard = 16;
    float *out = malloc((batch * O + guard) * sizeof *out);
    assert_non_null(out);
    memset(out, 0xFF, batch * O * sizeof *out);
    for (size_t i = 0; i < guard; i++)
        out[batch * O + i] = 12345.0f;
    char err[256] = "";
    int rc = ad_lstm_dev_forward(&fx->dev, w, x, batch, steps, x_stride, out, err, sizeof err);
    if (rc != AD_LSTM_DEV_OK)
        fail_msg("forward: %d: %s", rc, err);
    assert_string_equal(fx->emu.violation, "");
    assert_int_equal(fx->emu.n_queue, 0);
    for (size_t i = 0; i < batch * O; i++) {
        double lim = TOL * (fabs(want[i]) > 1.0 ? fabs(want[i]) : 1.0);
        if (!(fabs(out[i] - want[i]) <= lim))
            fail_msg("L %zu F %zu H %zu steps %zu batch %zu stride %zu chunks %zu: window %zu "
                     "output %zu: got %.9g, want %.9g",
                     w->layers, w->inputs, w->hidden, steps, batch, x_stride, fx->dev.last_chunks,
                     i / O, i % O, out[i], want[i]);
    }
    for (size_t i = 0; i < guard; i++)
        assert_true(out[batch * O + i] == 12345.0f);
    free(out);
}

static double *reference(const struct ad_lstm_weights *w, const float *x, size_t batch,
                         size_t steps, size_t x_stride)
{
    double *want = malloc(batch * w->outputs * sizeof *want);
    assert_non_null(want);
    for (size_t b = 0; b < batch; b++)
        lstm_ref_window(w, x + b * x_stride, steps, want + b * w->outputs);
    return want;
}

/* Gate bytes that make chunks of `windows` windows. */
static size_t gate_bytes_for(size_t windows, size_t steps, size_t H)
{
    return windows * steps * 4 * H * sizeof(float);
}

/* The shapes of the GPU test, at batches an emulator can afford, in one chunk and in many. */
static void test_parity(void **state)
{
    struct fixture *fx = *state;
    static const size_t layers[] = {1, 2, 3}, hidden[] = {16, 64, 128}, feats[] = {1, 8},
                        stepss[] = {1, 64}, batches[] = {1, 7, 37};
    uint64_t id = 100, seed = 1;
    size_t cases = 0;
    for (size_t li = 0; li < 3; li++)
        for (size_t hi = 0; hi < 3; hi++)
            for (size_t fi = 0; fi < 2; fi++)
                for (size_t si = 0; si < 2; si++)
                    for (size_t bi = 0; bi < 3; bi++) {
                        size_t L = layers[li], H = hidden[hi], F = feats[fi], S = stepss[si];
                        size_t B = batches[bi];
                        /* Keep the run short: the widest shapes only at small batches. */
                        if (H == 128 && S == 64 && (B > 7 || L > 2))
                            continue;
                        struct lstm_ref_model m;
                        lstm_ref_model_init(&m, ++id, L, F, H, F, 1.0f, ++seed);
                        /* Windows tightly packed, and longer than steps as the scorer's are. */
                        size_t stride = (bi + si) % 2 ? S * F : (S + 1) * F + 3;
                        float *x = make_input(B, S, F, stride, ++seed);
                        double *want = reference(&m.w, x, B, S, stride);
                        fx->dev.gate_bytes = AD_LSTM_DEV_GATE_BYTES;
                        check_forward(fx, &m.w, x, B, S, stride, want);
                        assert_int_equal(fx->dev.last_chunks, 1);
                        if (B > 1) {
                            fx->dev.gate_bytes = gate_bytes_for(3, S, H);
                            check_forward(fx, &m.w, x, B, S, stride, want);
                            assert_int_equal(fx->dev.last_chunks, (B + 2) / 3);
                        }
                        free(want);
                        free(x);
                        lstm_ref_model_free(&m);
                        cases++;
                    }
    assert_true(cases > 80);
}

/* Saturated gates: large weights and inputs drive expf to 0 and infinity. */
static void test_saturation(void **state)
{
    struct fixture *fx = *state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 7, 2, 8, 32, 8, 6.0f, 99);
    size_t B = 9, S = 20, stride = S * 8;
    float *x = make_input(B, S, 8, stride, 5);
    for (size_t i = 0; i < B * stride; i++)
        x[i] *= 20.0f;
    double *want = reference(&m.w, x, B, S, stride);
    check_forward(fx, &m.w, x, B, S, stride, want);
    free(want);
    free(x);
    lstm_ref_model_free(&m);
}

struct model_case {
    struct lstm_ref_model m;
    float *x;
    double *want;
};

static void model_case_init(struct model_case *c, uint64_t id, size_t L, size_t H, size_t B,
                            size_t S)
{
    lstm_ref_model_init(&c->m, id, L, 4, H, 4, 1.0f, id * 7);
    c->x = make_input(B, S, 4, S * 4, id * 11);
    c->want = reference(&c->m.w, c->x, B, S, S * 4);
}

static void model_case_free(struct model_case *c)
{
    free(c->x);
    free(c->want);
    lstm_ref_model_free(&c->m);
}

/* Uploads happen once per model while it stays cached; the least recently used goes first. */
static void test_weights_cache(void **state)
{
    struct fixture *fx = *state;
    enum { N = 6, B = 5, S = 6 };
    struct model_case mc[N];
    for (size_t i = 0; i < N; i++)
        model_case_init(&mc[i], 1000 + i, 1 + i % 2, 8 + 8 * i, B, S);

    /* Two models alternating: two uploads in all. */
    for (int r = 0; r < 6; r++) {
        struct model_case *c = &mc[r % 2];
        check_forward(fx, &c->m.w, c->x, B, S, S * 4, c->want);
    }
    assert_int_equal(fx->dev.model_uploads, 2);

    /* 0 1 are cached; then 2 3 fill the cache, 0 is a hit, 4 evicts 1 (least recent), 1
     * evicts 2, 0 is a hit, 2 evicts 3, 5 evicts 4. */
    static const size_t order[] = {2, 3, 0, 4, 1, 0, 2, 5};
    static const uint64_t uploads[] = {3, 4, 4, 5, 6, 6, 7, 8};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        struct model_case *c = &mc[order[i]];
        check_forward(fx, &c->m.w, c->x, B, S, S * 4, c->want);
        assert_int_equal(fx->dev.model_uploads, uploads[i]);
    }
    /* What is cached now still serves right: 1, 0, 2 and 5, with no upload. */
    static const size_t cached[] = {1, 0, 2, 5};
    for (size_t i = 0; i < 4; i++) {
        struct model_case *c = &mc[cached[i]];
        check_forward(fx, &c->m.w, c->x, B, S, S * 4, c->want);
    }
    assert_int_equal(fx->dev.model_uploads, 8);
    for (size_t i = 0; i < N; i++)
        model_case_free(&mc[i]);
}

/* An id reused for other weights (against lstm.h's contract) is not served stale. */
static void test_reused_id(void **state)
{
    struct fixture *fx = *state;
    struct model_case a, b;
    model_case_init(&a, 42, 1, 16, 3, 5);
    model_case_init(&b, 43, 1, 16, 3, 5);
    b.m.w.id = 42;
    check_forward(fx, &a.m.w, a.x, 3, 5, 20, a.want);
    check_forward(fx, &b.m.w, b.x, 3, 5, 20, b.want);
    assert_int_equal(fx->dev.model_uploads, 2);
    model_case_free(&a);
    model_case_free(&b);
}

/* Buffers grow to the largest batch and stay; smaller batches after it allocate nothing. */
static void test_buffers_grow(void **state)
{
    struct fixture *fx = *state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 5, 2, 8, 16, 8, 1.0f, 3);
    size_t S = 9, stride = S * 8 + 8;
    static const size_t batches[] = {1, 40, 1, 25, 40};
    float *x = make_input(40, S, 8, stride, 8);
    double *want = reference(&m.w, x, 40, S, stride);
    long allocs = 0;
    for (size_t i = 0; i < 5; i++) {
        check_forward(fx, &m.w, x, batches[i], S, stride, want);
        if (i == 1)
            allocs = fx->emu.calls[OP_ALLOC] + fx->emu.calls[OP_ALLOC_HOST];
    }
    assert_int_equal(fx->emu.calls[OP_ALLOC] + fx->emu.calls[OP_ALLOC_HOST], allocs);
    assert_true(fx->dev.stage_in.cap >= 40 * S * 8 * sizeof(float));
    free(want);
    free(x);
    lstm_ref_model_free(&m);
}

static void test_invalid_arguments(void **state)
{
    struct fixture *fx = *state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 9, 1, 8, 16, 8, 1.0f, 3);
    float x[64 * 8], out[16];
    memset(x, 0, sizeof x);
    char err[256];
    struct ad_lstm_weights w = m.w;

    assert_int_equal(ad_lstm_dev_forward(&fx->dev, &w, x, 1, 4, 31, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_non_null(strstr(err, "x_stride 31"));
    assert_int_equal(ad_lstm_dev_forward(&fx->dev, &w, x, 1, 0, 8, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_int_equal(ad_lstm_dev_forward(&fx->dev, NULL, x, 1, 4, 32, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_int_equal(ad_lstm_dev_forward(&fx->dev, &w, NULL, 1, 4, 32, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    w.layers = 0;
    assert_int_equal(ad_lstm_dev_forward(&fx->dev, &w, x, 1, 4, 32, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    w.layers = AD_LSTM_MAX_LAYERS + 1;
    assert_int_equal(ad_lstm_dev_forward(&fx->dev, &w, x, 1, 4, 32, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    w = m.w;
    w.head_b = NULL;
    assert_int_equal(ad_lstm_dev_forward(&fx->dev, &w, x, 1, 4, 32, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    /* An empty batch is no work. */
    assert_int_equal(ad_lstm_dev_forward(&fx->dev, &m.w, NULL, 0, 4, 32, NULL, err, sizeof err),
                     AD_LSTM_DEV_OK);
    /* None of it touched the device. */
    for (int k = 0; k < OP_N; k++)
        assert_int_equal(fx->emu.calls[k], 0);
    lstm_ref_model_free(&m);
}

/* A failing device operation fails the forward with its message and leaks nothing. */
static void test_failures(void **state)
{
    struct fixture *fx = *state;
    struct model_case c;
    model_case_init(&c, 77, 2, 16, 6, 4);
    float out[6 * 4];
    char err[256];
    static const struct {
        enum op_kind kind;
        long at;
    } faults[] = {{OP_ALLOC, 1},  {OP_ALLOC, 3},  {OP_ALLOC, 8},   {OP_ALLOC_HOST, 2},
                  {OP_UPLOAD, 1}, {OP_UPLOAD, 9}, {OP_GEMM, 1},    {OP_GEMM, 5},
                  {OP_CELL, 3},   {OP_BIAS, 1},   {OP_DOWNLOAD, 1}};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
        struct emu *e = &fx->emu;
        memset(e->calls, 0, sizeof e->calls);
        e->fail_kind = faults[i].kind;
        e->fail_at = faults[i].at;
        err[0] = '\0';
        int rc = ad_lstm_dev_forward(&fx->dev, &c.m.w, c.x, 6, 4, 16, out, err, sizeof err);
        assert_int_equal(rc, AD_LSTM_DEV_FAILED);
        assert_non_null(strstr(err, "injected failure"));
        /* As the CUDA backend does: give up the device state; nothing may leak. */
        ad_lstm_dev_release(&fx->dev);
        assert_int_equal(e->n_regions, 0);
        assert_string_equal(e->violation, "");
        ad_lstm_dev_init(&fx->dev, &emu_ops, e);
        e->fail_at = 0;
    }
    model_case_free(&c);
}

static void test_chunk_sizes(void **state)
{
    (void)state;
    struct ad_lstm_weights w = {.layers = 1, .inputs = 8, .hidden = 64, .outputs = 8};
    /* The benchmark's shape: 16,384 windows of 63 steps fill the default 1 GiB. */
    assert_int_equal(ad_lstm_dev_chunk(&w, 131072, 63, AD_LSTM_DEV_GATE_BYTES), 16384);
    assert_int_equal(ad_lstm_dev_chunk(&w, 1000, 63, AD_LSTM_DEV_GATE_BYTES), 1000);
    /* As few chunks as the limit allows, as even as they go: at most 4 windows a chunk, 9
     * windows run as 3, 3, 3 (not 4, 4, 1) and 10 as 4, 4, 2. */
    assert_int_equal(ad_lstm_dev_chunk(&w, 9, 5, gate_bytes_for(4, 5, 64)), 3);
    assert_int_equal(ad_lstm_dev_chunk(&w, 10, 5, gate_bytes_for(4, 5, 64)), 4);
    assert_int_equal(ad_lstm_dev_chunk(&w, 8, 5, gate_bytes_for(4, 5, 64)), 4);
    /* Never less than one window, whatever the limit. */
    assert_int_equal(ad_lstm_dev_chunk(&w, 10, 5, 1), 1);
    /* GEMM n = rows × steps stays an int. */
    assert_true(ad_lstm_dev_chunk(&w, (size_t)1 << 40, 1000, (size_t)1 << 62) * 1000 <=
                (size_t)INT32_MAX);
}

/* ---- stream mode ---- */

#define STREAM_TOL 1e-5

/* A table of `slots` states, made as lstm.c makes one: resized from nothing. */
static struct ad_lstm_dev_table *table_new(struct fixture *fx, const struct ad_lstm_weights *w,
                                           size_t slots)
{
    void *t = NULL;
    char err[256] = "";
    size_t bytes = slots * 2 * w->layers * w->hidden * sizeof(float);
    if (ad_lstm_dev_states_resize(&fx->dev, &t, 0, bytes, err, sizeof err) != AD_LSTM_DEV_OK)
        fail_msg("resize: %s", err);
    return t;
}

/* n distinct slots below cap, in a scattered order (a seeded shuffle of 0 .. cap - 1). */
static uint32_t *scattered_slots(size_t n, size_t cap, uint64_t seed)
{
    uint32_t *all = malloc(cap * sizeof *all);
    assert_non_null(all);
    for (size_t i = 0; i < cap; i++)
        all[i] = (uint32_t)i;
    for (size_t i = cap - 1; i > 0; i--) {
        size_t j = (size_t)((lstm_ref_uniform(&seed) + 1.0f) * 0.5f * (float)(i + 1)) % (i + 1);
        uint32_t t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    assert_true(n <= cap);
    return all; /* the first n are the call's; the rest are slots nobody uses */
}

/* |got - want| <= tol * max(1, |want|) for rows × O outputs. */
static void expect_close(const float *got, const double *want, size_t n, double tol,
                         const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double lim = tol * (fabs(want[i]) > 1.0 ? fabs(want[i]) : 1.0);
        if (!(fabs(got[i] - want[i]) <= lim))
            fail_msg("%s: output %zu: got %.9g, want %.9g", what, i, got[i], want[i]);
    }
}

static void warm_up(struct fixture *fx, const struct ad_lstm_weights *w,
                    struct ad_lstm_dev_table *t, const float *x, size_t batch, size_t steps,
                    size_t stride, const uint32_t *slots, float *out)
{
    char err[256] = "";
    int rc = ad_lstm_dev_warm_up_slots(&fx->dev, w, t, x, batch, steps, stride, slots, out, err,
                                       sizeof err);
    if (rc != AD_LSTM_DEV_OK)
        fail_msg("warm-up: %d: %s", rc, err);
    assert_string_equal(fx->emu.violation, "");
    assert_int_equal(fx->emu.n_queue, 0);
}

static void step(struct fixture *fx, const struct ad_lstm_weights *w, struct ad_lstm_dev_table *t,
                 const float *x, size_t batch, size_t stride, const uint32_t *slots, float *out)
{
    char err[256] = "";
    int rc = ad_lstm_dev_step_slots(&fx->dev, w, t, x, batch, stride, slots, out, err, sizeof err);
    if (rc != AD_LSTM_DEV_OK)
        fail_msg("step: %d: %s", rc, err);
    assert_string_equal(fx->emu.violation, "");
    assert_int_equal(fx->emu.n_queue, 0);
}

/* Every byte of the slots listed is still what snapshot holds. */
static void expect_slots_unchanged(const struct ad_lstm_dev_table *t, const unsigned char *snapshot,
                                   const uint32_t *slots, size_t n, size_t row_bytes)
{
    const unsigned char *now = (const unsigned char *)t->p;
    for (size_t i = 0; i < n; i++)
        if (memcmp(now + slots[i] * row_bytes, snapshot + slots[i] * row_bytes, row_bytes) != 0)
            fail_msg("slot %u changed", (unsigned)slots[i]);
}

/*
 * A warm-up over T inputs into scattered slots, then K steps: each output matches the
 * reference over every input so far (1e-4) and the device's own windowed forward (1e-5);
 * slots nobody used stay poisoned. 1 and 2 layers, H 16 and 64 (and 128, past the fused
 * step's shared memory), batches 1, 7, 37, in one chunk and in chunks of 3, with the GEMM
 * step and with the fused one.
 */
static void test_stream_parity(void **state)
{
    struct fixture *fx = *state;
    static const size_t layers[] = {1, 2}, hidden[] = {16, 64, 128}, batches[] = {1, 7, 37};
    const size_t F = 3, T = 5, K = 4;
    uint64_t id = 3000, seed = 31;
    for (size_t li = 0; li < 2; li++)
        for (size_t hi = 0; hi < 3; hi++)
            for (size_t bi = 0; bi < 3; bi++)
                for (int variant = 0; variant < 4; variant++) {
                    size_t L = layers[li], H = hidden[hi], B = batches[bi];
                    int chunked = variant & 1, fused = variant >> 1;
                    if ((chunked && B == 1) || (H == 128 && (B > 7 || chunked)))
                        continue;
                    fx->dev.fused_smem = fused ? EMU_SMEM : 0;
                    memset(fx->emu.calls, 0, sizeof fx->emu.calls);
                    struct lstm_ref_model m;
                    lstm_ref_model_init(&m, ++id, L, F, H, F, 1.0f, ++seed);
                    /* Windows with one input spare and odd padding: NaN if read. */
                    size_t stride = (T + K + 1) * F + 2, cap = 3 * B + 5;
                    size_t row_bytes = 2 * L * H * sizeof(float);
                    float *x = make_input(B, T + K, F, stride, ++seed);
                    uint32_t *slots = scattered_slots(B, cap, ++seed);
                    float *out = malloc(B * F * sizeof *out);
                    float *win = malloc(B * F * sizeof *win);
                    double *want_win = malloc(B * F * sizeof *want_win);
                    assert_non_null(out);
                    assert_non_null(win);
                    assert_non_null(want_win);
                    struct ad_lstm_dev_table *t = table_new(fx, &m.w, cap);
                    unsigned char *poison = malloc(t->bytes);
                    assert_non_null(poison);
                    memcpy(poison, t->p, t->bytes);

                    char what[160], err[256];
                    for (size_t k = 0; k <= K; k++) {
                        size_t n = T + k; /* inputs seen so far */
                        memset(out, 0xFF, B * F * sizeof *out);
                        /* Chunks of 3 windows for the warm-up's T steps and for one step. */
                        fx->dev.gate_bytes = !chunked ? AD_LSTM_DEV_GATE_BYTES
                                             : k == 0 ? gate_bytes_for(3, T, H)
                                                      : gate_bytes_for(3, 1, H);
                        if (k == 0)
                            warm_up(fx, &m.w, t, x, B, T, stride, slots, out);
                        else
                            step(fx, &m.w, t, x + (n - 1) * F, B, stride, slots, out);
                        assert_int_equal(fx->dev.last_chunks, chunked ? (B + 2) / 3 : 1);
                        snprintf(what, sizeof what, "L %zu H %zu B %zu chunked %d after %zu", L, H,
                                 B, chunked, n);
                        double *want = reference(&m.w, x, B, n, stride);
                        expect_close(out, want, B * F, TOL, what);
                        free(want);
                        fx->dev.gate_bytes = AD_LSTM_DEV_GATE_BYTES;
                        assert_int_equal(ad_lstm_dev_forward(&fx->dev, &m.w, x, B, n, stride, win,
                                                             err, sizeof err),
                                         AD_LSTM_DEV_OK);
                        for (size_t i = 0; i < B * F; i++)
                            want_win[i] = win[i];
                        expect_close(out, want_win, B * F, STREAM_TOL, what);
                    }
                    /* The fused step where it fits, else the gather and GEMMs. */
                    int fits = fused && H <= 64;
                    assert_int_equal(fx->emu.calls[OP_FUSED],
                                     fits ? K * L * (chunked ? (B + 2) / 3 : 1) : 0);
                    assert_int_equal(fx->emu.calls[OP_GATHER],
                                     fits ? 0 : K * (chunked ? (B + 2) / 3 : 1));
                    /* The slots nobody named were never written: still the allocation's NaN. */
                    expect_slots_unchanged(t, poison, slots + B, cap - B, row_bytes);
                    ad_lstm_dev_states_free(&fx->dev, t);
                    free(poison);
                    free(out);
                    free(win);
                    free(want_win);
                    free(slots);
                    free(x);
                    lstm_ref_model_free(&m);
                }
}

/*
 * Two groups of windows in one table: stepping one leaves the other's states bit for bit, and
 * the other then steps on as if nothing had happened in between. Then the table grows: the
 * states survive the move, a window warmed up in the new part steps beside the old ones.
 */
static void test_stream_untouched_and_resize(void **state)
{
    struct fixture *fx = *state;
    const size_t F = 4, H = 16, L = 2, T = 6, K = 3, A = 9, B = 5;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 4000, L, F, H, F, 1.0f, 17);
    fx->dev.fused_smem = EMU_SMEM; /* the GEMM step's slots are checked in test_stream_parity */
    size_t stride = (T + K) * F, cap = 20, row_bytes = 2 * L * H * sizeof(float);
    float *x = make_input(A + B + 1, T + K, F, stride, 18);
    uint32_t *all = scattered_slots(A + B, cap, 19);
    const uint32_t *sa = all, *sb = all + A;
    const float *xa = x, *xb = x + A * stride;
    float out[(9 + 5 + 1) * 4];
    struct ad_lstm_dev_table *t = table_new(fx, &m.w, cap);
    warm_up(fx, &m.w, t, xa, A, T, stride, sa, out);
    warm_up(fx, &m.w, t, xb, B, T, stride, sb, out);

    unsigned char *before = malloc(t->bytes);
    assert_non_null(before);
    memcpy(before, t->p, t->bytes);
    for (size_t k = 0; k + 1 < K; k++) /* the last input comes after the move */
        step(fx, &m.w, t, xa + (T + k) * F, A, stride, sa, out);
    expect_slots_unchanged(t, before, sb, B, row_bytes);
    expect_slots_unchanged(t, before, all + A + B, cap - A - B, row_bytes);
    step(fx, &m.w, t, xb + T * F, B, stride, sb, out);
    double *want = reference(&m.w, xb, B, T + 1, stride);
    expect_close(out, want, B * F, TOL, "group b after group a's steps");
    free(want);

    /* Grow the table: what it held moves, the new part is fresh (poisoned) memory. */
    size_t old_bytes = t->bytes;
    memcpy(before, t->p, old_bytes);
    void *p = t;
    char err[256] = "";
    assert_int_equal(
        ad_lstm_dev_states_resize(&fx->dev, &p, old_bytes, 3 * old_bytes, err, sizeof err),
        AD_LSTM_DEV_OK);
    t = p;
    assert_int_equal(t->bytes, 3 * old_bytes);
    assert_memory_equal(t->p, before, old_bytes);
    assert_int_equal(fx->emu.n_queue, 0);
    /* A new window in the last slot, then a step of it with group a. */
    uint32_t last = (uint32_t)(3 * cap - 1);
    const float *xn = x + (A + B) * stride;
    warm_up(fx, &m.w, t, xn, 1, T + K - 1, stride, &last, out);
    float *xs = malloc((A + 1) * F * sizeof *xs); /* one input each, tightly packed */
    uint32_t slots[9 + 1];
    assert_non_null(xs);
    for (size_t i = 0; i < A; i++) {
        memcpy(xs + i * F, xa + i * stride + (T + K - 1) * F, F * sizeof *xs);
        slots[i] = sa[i];
    }
    memcpy(xs + A * F, xn + (T + K - 1) * F, F * sizeof *xs);
    slots[A] = last;
    step(fx, &m.w, t, xs, A + 1, F, slots, out);
    want = reference(&m.w, x, A + B + 1, T + K, stride);
    expect_close(out, want, A * F, TOL, "group a after the move");
    expect_close(out + A * F, want + (A + B) * F, F, TOL, "the new window");
    free(want);
    free(xs);
    free(before);
    ad_lstm_dev_states_free(&fx->dev, t);
    free(all);
    free(x);
    lstm_ref_model_free(&m);
}

/* Bad arguments of the stream calls fail before anything is queued or allocated. */
static void test_stream_invalid_arguments(void **state)
{
    struct fixture *fx = *state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 4100, 1, 8, 16, 8, 1.0f, 3);
    struct ad_lstm_dev_table *t = table_new(fx, &m.w, 10);
    memset(fx->emu.calls, 0, sizeof fx->emu.calls);
    float x[64 * 8], out[64];
    memset(x, 0, sizeof x);
    char err[256];
    uint32_t slots[] = {3, 9, 10};
    struct ad_lstm_dev *d = &fx->dev;

    assert_int_equal(ad_lstm_dev_step_slots(d, &m.w, t, x, 3, 8, slots, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_string_equal(err, "LSTM step: slot 10 beyond the table's 10");
    assert_int_equal(
        ad_lstm_dev_warm_up_slots(d, &m.w, t, x, 3, 2, 16, slots, out, err, sizeof err),
        AD_LSTM_DEV_INVALID);
    assert_string_equal(err, "LSTM warm-up: slot 10 beyond the table's 10");
    assert_int_equal(ad_lstm_dev_step_slots(d, &m.w, t, x, 2, 7, slots, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_non_null(strstr(err, "LSTM step: x_stride 7"));
    assert_int_equal(ad_lstm_dev_step_slots(d, &m.w, NULL, x, 2, 8, slots, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_string_equal(err, "LSTM step: no table of states");
    assert_int_equal(ad_lstm_dev_step_slots(d, &m.w, t, x, 2, 8, NULL, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_int_equal(ad_lstm_dev_step_slots(d, &m.w, t, x, 2, 8, slots, NULL, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_int_equal(
        ad_lstm_dev_warm_up_slots(d, &m.w, t, x, 2, 0, 16, slots, out, err, sizeof err),
        AD_LSTM_DEV_INVALID);
    assert_int_equal(ad_lstm_dev_step_slots(d, NULL, t, x, 2, 8, slots, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    /* States of another shape: two layers' worth of slots in a one-layer table are fewer. */
    struct lstm_ref_model m2;
    lstm_ref_model_init(&m2, 4101, 2, 8, 16, 8, 1.0f, 3);
    uint32_t five = 5;
    assert_int_equal(ad_lstm_dev_step_slots(d, &m2.w, t, x, 1, 8, &five, out, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_string_equal(err, "LSTM step: slot 5 beyond the table's 5");
    /* An empty batch is no work, with or without slots. */
    assert_int_equal(ad_lstm_dev_step_slots(d, &m.w, t, NULL, 0, 8, NULL, NULL, err, sizeof err),
                     AD_LSTM_DEV_OK);
    /* A resize that does not match the table, or shrinks it. */
    void *p = t;
    assert_int_equal(ad_lstm_dev_states_resize(d, &p, 100, 2000, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_int_equal(ad_lstm_dev_states_resize(d, &p, t->bytes, t->bytes - 4, err, sizeof err),
                     AD_LSTM_DEV_INVALID);
    assert_ptr_equal(p, t);
    for (int k = 0; k < OP_N; k++)
        assert_int_equal(fx->emu.calls[k], 0);
    ad_lstm_dev_states_free(d, t);
    lstm_ref_model_free(&m2);
    lstm_ref_model_free(&m);
}

/* A failing device operation in a warm-up, a step or a resize fails it with its message; the
 * table and the device state free without a leak or a release under queued work. */
static void test_stream_failures(void **state)
{
    struct fixture *fx = *state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 4200, 2, 4, 16, 4, 1.0f, 5);
    float *x = make_input(6, 5, 4, 20, 6);
    uint32_t slots[] = {7, 2, 0, 11, 5, 9};
    float out[6 * 4];
    char err[256];
    static const struct {
        int call; /* 0 warm-up, 1 step, 2 resize, 3 fused step */
        enum op_kind kind;
        long at;
        int rc;
    } faults[] = {
        {3, OP_FUSED, 1, AD_LSTM_DEV_FAILED},   {3, OP_FUSED, 2, AD_LSTM_DEV_FAILED},
        {3, OP_GEMM, 2, AD_LSTM_DEV_FAILED},    {3, OP_DOWNLOAD, 1, AD_LSTM_DEV_FAILED},
        {0, OP_ALLOC, 1, AD_LSTM_DEV_FAILED},   {0, OP_ALLOC_HOST, 2, AD_LSTM_DEV_FAILED},
        {0, OP_UPLOAD, 1, AD_LSTM_DEV_FAILED},  {0, OP_UPLOAD, 8, AD_LSTM_DEV_FAILED},
        {0, OP_SCATTER, 1, AD_LSTM_DEV_FAILED}, {0, OP_SCATTER, 2, AD_LSTM_DEV_FAILED},
        {0, OP_CELL, 4, AD_LSTM_DEV_FAILED},    {0, OP_DOWNLOAD, 1, AD_LSTM_DEV_FAILED},
        {1, OP_ALLOC, 1, AD_LSTM_DEV_FAILED},   {1, OP_UPLOAD, 2, AD_LSTM_DEV_FAILED},
        {1, OP_GATHER, 1, AD_LSTM_DEV_FAILED},  {1, OP_GEMM, 2, AD_LSTM_DEV_FAILED},
        {1, OP_GEMM, 4, AD_LSTM_DEV_FAILED},    {1, OP_STEP, 2, AD_LSTM_DEV_FAILED},
        {1, OP_BIAS, 1, AD_LSTM_DEV_FAILED},    {1, OP_DOWNLOAD, 1, AD_LSTM_DEV_FAILED},
        {2, OP_ALLOC, 1, AD_LSTM_DEV_INVALID},  {2, OP_COPY, 1, AD_LSTM_DEV_FAILED},
    };
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
        struct emu *e = &fx->emu;
        fx->dev.fused_smem = faults[i].call == 3 ? EMU_SMEM : 0;
        struct ad_lstm_dev_table *t = table_new(fx, &m.w, 12);
        /* Steps need warmed-up states; the warm-up case starts with nothing cached. */
        if (faults[i].call != 0)
            warm_up(fx, &m.w, t, x, 6, 4, 20, slots, out);
        memset(e->calls, 0, sizeof e->calls);
        e->fail_kind = faults[i].kind;
        e->fail_at = faults[i].at;
        err[0] = '\0';
        int rc;
        void *p = t;
        if (faults[i].call == 0)
            rc = ad_lstm_dev_warm_up_slots(&fx->dev, &m.w, t, x, 6, 4, 20, slots, out, err,
                                           sizeof err);
        else if (faults[i].call != 2)
            rc = ad_lstm_dev_step_slots(&fx->dev, &m.w, t, x + 16, 6, 20, slots, out, err,
                                        sizeof err);
        else
            rc = ad_lstm_dev_states_resize(&fx->dev, &p, t->bytes, 2 * t->bytes, err, sizeof err);
        if (rc != faults[i].rc || strstr(err, "injected failure") == NULL)
            fail_msg("fault %zu: %d: %s", i, rc, err);
        /* A failed resize leaves the old table in place. */
        assert_ptr_equal(p, t);
        e->fail_at = 0;
        ad_lstm_dev_states_free(&fx->dev, t);
        ad_lstm_dev_release(&fx->dev);
        assert_int_equal(e->n_regions, 0);
        assert_string_equal(e->violation, "");
        ad_lstm_dev_init(&fx->dev, &emu_ops, e);
    }
    free(x);
    lstm_ref_model_free(&m);
}

/* ---- the fused layer ---- */

/* |got - want| <= tol * max(1, |want|), want in float. */
static void expect_close_f(const float *got, const float *want, size_t n, double tol,
                           const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double lim = tol * (fabsf(want[i]) > 1.0f ? fabsf(want[i]) : 1.0);
        if (!(fabs((double)got[i] - want[i]) <= lim))
            fail_msg("%s: %zu: got %.9g, want %.9g", what, i, got[i], want[i]);
    }
}

/* A forward's outputs (poisoned first, so that an output not written shows). */
static float *forward(struct fixture *fx, const struct ad_lstm_weights *w, const float *x,
                      size_t batch, size_t steps, size_t stride)
{
    float *out = malloc(batch * w->outputs * sizeof *out);
    assert_non_null(out);
    memset(out, 0xFF, batch * w->outputs * sizeof *out);
    char err[256] = "";
    int rc = ad_lstm_dev_forward(&fx->dev, w, x, batch, steps, stride, out, err, sizeof err);
    if (rc != AD_LSTM_DEV_OK)
        fail_msg("forward: %d: %s", rc, err);
    assert_string_equal(fx->emu.violation, "");
    assert_int_equal(fx->emu.n_queue, 0);
    return out;
}

/*
 * One shape through the fused layer and through the GEMM per step, forward and warm-up: the
 * fused outputs against the reference (1e-4) and the GEMM plan's (1e-5), the fused warm-up's
 * states in every named slot against the GEMM warm-up's (1e-5), every other slot untouched.
 * chunk_rows: windows per chunk (0: one chunk); per_thread: the tile width the plan must pick.
 */
static void check_layer_fused(struct fixture *fx, const struct ad_lstm_weights *w, const float *x,
                              size_t B, size_t S, size_t stride, size_t chunk_rows,
                              unsigned per_thread, uint64_t seed)
{
    size_t L = w->layers, H = w->hidden, O = w->outputs;
    size_t chunks = chunk_rows ? (B + chunk_rows - 1) / chunk_rows : 1;
    int fits = ad_lstm_layer_smem_bytes((unsigned)H, 1) <= EMU_SMEM;
    char what[200];
    snprintf(what, sizeof what, "L %zu F %zu H %zu steps %zu B %zu stride %zu chunks %zu R %u", L,
             w->inputs, H, S, B, stride, chunks, per_thread);
    fx->dev.gate_bytes = chunk_rows ? gate_bytes_for(chunk_rows, S, H) : AD_LSTM_DEV_GATE_BYTES;
    fx->dev.fused_smem = EMU_SMEM;
    double *want = reference(w, x, B, S, stride);

    fx->dev.fused_layers = 1;
    memset(fx->emu.calls, 0, sizeof fx->emu.calls);
    fx->emu.last_per_thread = 0;
    float *fused = forward(fx, w, x, B, S, stride);
    assert_int_equal(fx->dev.last_chunks, chunks);
    expect_close(fused, want, B * O, TOL, what);
    /* One kernel per layer and chunk where W_hh fits, else the cell per step. */
    assert_int_equal(fx->emu.calls[OP_LAYER], fits ? L * chunks : 0);
    assert_int_equal(fx->emu.calls[OP_CELL], fits ? 0 : L * S * chunks);
    assert_int_equal(fx->emu.calls[OP_GEMM],
                     chunks * (L + 1 + (fits ? 0 : L * (S - 1)))); /* input, head, rec */
    if (fits)
        assert_int_equal(fx->emu.last_per_thread, per_thread);
    assert_int_equal(fx->dev.last_layer_fused, fits ? L * chunks : 0);

    /* Warm-ups into scattered slots of two tables, one each way. */
    size_t cap = B + B / 2 + 3, state = 2 * L * H, row_bytes = state * sizeof(float);
    uint32_t *slots = scattered_slots(B, cap, seed);
    struct ad_lstm_dev_table *tf = table_new(fx, w, cap), *tp = table_new(fx, w, cap);
    unsigned char *poison = malloc(tf->bytes);
    float *out_f = malloc(B * O * sizeof *out_f), *out_p = malloc(B * O * sizeof *out_p);
    assert_non_null(poison);
    assert_non_null(out_f);
    assert_non_null(out_p);
    memcpy(poison, tf->p, tf->bytes);
    memset(out_f, 0xFF, B * O * sizeof *out_f);
    fx->dev.fused_layers = 1;
    memset(fx->emu.calls, 0, sizeof fx->emu.calls);
    warm_up(fx, w, tf, x, B, S, stride, slots, out_f);
    assert_int_equal(fx->emu.calls[OP_LAYER], fits ? L * chunks : 0);
    assert_int_equal(fx->emu.calls[OP_SCATTER], fits ? 0 : L * chunks);
    /* The GEMM plan's warm-up: its outputs are its forward's (test_stream_parity). */
    fx->dev.fused_layers = 0;
    memset(fx->emu.calls, 0, sizeof fx->emu.calls);
    warm_up(fx, w, tp, x, B, S, stride, slots, out_p);
    assert_int_equal(fx->emu.calls[OP_LAYER], 0);
    assert_int_equal(fx->dev.last_layer_fused, 0);
    expect_close_f(fused, out_p, B * O, STREAM_TOL, what);
    expect_close(out_f, want, B * O, TOL, what);
    expect_close_f(out_f, out_p, B * O, STREAM_TOL, what);
    for (size_t i = 0; i < B; i++)
        expect_close_f(tf->p + slots[i] * state, tp->p + slots[i] * state, state, STREAM_TOL, what);
    expect_slots_unchanged(tf, poison, slots + B, cap - B, row_bytes);

    fx->dev.fused_layers = 1;
    fx->dev.gate_bytes = AD_LSTM_DEV_GATE_BYTES;
    ad_lstm_dev_states_free(&fx->dev, tf);
    ad_lstm_dev_states_free(&fx->dev, tp);
    free(out_f);
    free(out_p);
    free(poison);
    free(slots);
    free(fused);
    free(want);
}

/*
 * 1 to 3 layers, H 16 and 64 (128 falls back: its W_hh does not fit), F 1 and 8, 1, 2 and 63
 * steps, batches that no tile width divides, tight and padded strides, one chunk and chunks of
 * 3, the widest tiles (4 windows a thread) and the narrowest (1).
 */
static void test_layer_fused_parity(void **state)
{
    struct fixture *fx = *state;
    static const size_t layers[] = {1, 2, 3}, hidden[] = {16, 64, 128}, feats[] = {1, 8},
                        stepss[] = {1, 2, 63}, batches[] = {1, 7, 37, 300};
    uint64_t id = 6000, seed = 601;
    size_t cases = 0;
    for (size_t li = 0; li < 3; li++)
        for (size_t hi = 0; hi < 3; hi++)
            for (size_t fi = 0; fi < 2; fi++)
                for (size_t si = 0; si < 3; si++)
                    for (size_t bi = 0; bi < 4; bi++) {
                        size_t L = layers[li], H = hidden[hi], F = feats[fi], S = stepss[si];
                        size_t B = batches[bi];
                        /* Keep the run short: the widest shapes only at small batches. */
                        if ((H == 128 && (B > 37 || (S == 63 && (B > 7 || L > 1)))) ||
                            (B == 300 && S == 63 && (H > 16 || L > 1)) ||
                            (H == 64 && S == 63 && L == 3 && B > 7))
                            continue;
                        size_t v = cases++;
                        struct lstm_ref_model m;
                        lstm_ref_model_init(&m, ++id, L, F, H, F, 1.0f, ++seed);
                        size_t stride = v % 2 ? S * F : (S + 1) * F + 3;
                        float *x = make_input(B, S, F, stride, ++seed);
                        size_t chunk_rows = B > 3 && v % 3 == 1 ? 3 : 0;
                        int narrow = v % 4 >= 2;
                        fx->dev.layer_blocks = narrow ? (size_t)1 << 40 : 0;
                        check_layer_fused(fx, &m.w, x, B, S, stride, chunk_rows, narrow ? 1 : 4,
                                          ++seed);
                        free(x);
                        lstm_ref_model_free(&m);
                    }
    fx->dev.layer_blocks = 0;
    assert_true(cases > 140);
}

/*
 * Tile widths the plan picks from the blocks the device runs at once, and H = 48, where 256
 * threads hold 5 windows' units and 16 threads idle (they still meet every barrier).
 */
static void test_layer_fused_tiles(void **state)
{
    struct fixture *fx = *state;
    static const struct {
        size_t H, B, blocks;
        unsigned per_thread;
    } cases[] = {
        /* 300 windows at H 16: tiles of 64 make 5, of 32 make 10, of 16 make 19. */
        {16, 300, 5, 4}, {16, 300, 6, 2}, {16, 300, 10, 2}, {16, 300, 11, 1},
        {48, 1, 0, 4},   {48, 23, 0, 4},  {48, 23, 3, 2},   {48, 23, 5, 1},
        {64, 37, 3, 4},  {64, 37, 4, 2},  {32, 300, 0, 4},  {16, 64, 1, 4},
    };
    uint64_t seed = 701;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct lstm_ref_model m;
        lstm_ref_model_init(&m, 7000 + i, 2, 3, cases[i].H, 3, 1.0f, ++seed);
        size_t S = 9, stride = S * 3 + 1;
        float *x = make_input(cases[i].B, S, 3, stride, ++seed);
        fx->dev.layer_blocks = cases[i].blocks;
        check_layer_fused(fx, &m.w, x, cases[i].B, S, stride, 0, cases[i].per_thread, ++seed);
        free(x);
        lstm_ref_model_free(&m);
    }
    fx->dev.layer_blocks = 0;
}

/* A failing operation in a fused forward or warm-up fails it with its message; nothing leaks
 * and nothing is released under queued work. */
static void test_layer_fused_failures(void **state)
{
    struct fixture *fx = *state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 7500, 2, 4, 16, 4, 1.0f, 9);
    float *x = make_input(6, 5, 4, 20, 10);
    uint32_t slots[] = {7, 2, 0, 11, 5, 9};
    float out[6 * 4];
    char err[256];
    static const struct {
        enum op_kind kind;
        long at;
    } faults[] = {{OP_LAYER, 1}, {OP_LAYER, 2},  {OP_GEMM, 1}, {OP_GEMM, 2},
                  {OP_GEMM, 3},  {OP_UPLOAD, 9}, {OP_BIAS, 1}, {OP_DOWNLOAD, 1}};
    for (int warm = 0; warm < 2; warm++)
        for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
            struct emu *e = &fx->emu;
            fx->dev.fused_smem = EMU_SMEM;
            struct ad_lstm_dev_table *t = warm ? table_new(fx, &m.w, 12) : NULL;
            memset(e->calls, 0, sizeof e->calls);
            e->fail_kind = faults[i].kind;
            e->fail_at = faults[i].at;
            err[0] = '\0';
            int rc = warm ? ad_lstm_dev_warm_up_slots(&fx->dev, &m.w, t, x, 6, 5, 20, slots, out,
                                                      err, sizeof err)
                          : ad_lstm_dev_forward(&fx->dev, &m.w, x, 6, 5, 20, out, err, sizeof err);
            if (rc != AD_LSTM_DEV_FAILED || strstr(err, "injected failure") == NULL)
                fail_msg("%s fault %zu: %d: %s", warm ? "warm-up" : "forward", i, rc, err);
            assert_int_equal(e->calls[OP_CELL], 0);
            e->fail_at = 0;
            ad_lstm_dev_states_free(&fx->dev, t);
            ad_lstm_dev_release(&fx->dev);
            assert_int_equal(e->n_regions, 0);
            assert_string_equal(e->violation, "");
            ad_lstm_dev_init(&fx->dev, &emu_ops, e);
        }
    free(x);
    lstm_ref_model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_saturation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_weights_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reused_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffers_grow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures, setup, teardown),
        cmocka_unit_test(test_chunk_sizes),
        cmocka_unit_test_setup_teardown(test_stream_parity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_untouched_and_resize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_invalid_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layer_fused_parity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layer_fused_tiles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layer_fused_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
