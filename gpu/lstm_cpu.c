/*
 * The CPU backend: the reference and the fallback.
 *
 * Per layer, the input projection of every step of every window is one GEMM (it does not
 * depend on the recurrence), then each step is one GEMM of the previous hidden states with
 * W_hh and one fused pass over the gates. The batch is cut into chunks so the gate
 * pre-activations of a chunk stay a few megabytes rather than B×T×4H floats.
 */

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "base/errstr.h"
#include "gpu/lstm_backend.h"

/* OpenBLAS' own controls; cblas.h of the reference BLAS does not declare them. */
void openblas_set_num_threads(int num_threads);
char *openblas_get_config(void);
char *openblas_get_corename(void);

/* Windows per chunk: big enough for efficient GEMMs, small enough that the chunk's gate
 * pre-activations (chunk × steps × 4H floats) stay near the caches. */
#define CHUNK 256

#define MAX_THREADS 256

/* One worker's scratch, grown on demand and kept between batches. */
struct workspace {
    float *floats;
    size_t size;
};

/* A batch shared by the workers: each claims the next chunk until none is left. */
struct job {
    const struct ad_lstm_weights *w;
    const float *x;
    float *out;
    float *state;                  /* a warm-up's or a step's; NULL: a windowed forward */
    size_t batch, steps, x_stride; /* steps 0: one stream step from state */
    atomic_size_t next_chunk;
    atomic_bool failed;
};

struct cpu;

struct worker {
    struct cpu *cpu;
    struct workspace ws;
};

/*
 * The helpers live as long as the backend: a batch every bucket would otherwise pay a thread
 * creation and a join per helper, which at 10k entities is a visible share of a bucket's
 * scoring. A batch is a generation: the caller publishes the job, wakes the helpers, works
 * itself, and waits until every helper is done with it.
 */
struct cpu {
    int threads;
    struct worker workers[MAX_THREADS]; /* [0]: the calling thread */
    pthread_t tids[MAX_THREADS];
    size_t helpers; /* started */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t generation;
    size_t busy; /* helpers still on this generation's job */
    bool stopping;
    struct job *job;
};

static float *workspace_get(struct workspace *ws, size_t floats)
{
    if (floats > ws->size) {
        float *grown = realloc(ws->floats, floats * sizeof *grown);
        if (!grown)
            return NULL;
        ws->floats = grown;
        ws->size = floats;
    }
    return ws->floats;
}

/*
 * exp(x) without a library call or a branch, so that the gate loop vectorizes: Cody-Waite range
 * reduction and the Cephes polynomial (relative error about 1e-7, well inside the backends'
 * 1e-4). The gates are where the time goes once the GEMMs are efficient: libm's scalar expf and
 * tanhf took 60% of it.
 */
static inline float exp_approx(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* Round x·log2(e) to the nearest integer by adding 1.5·2^23: the sum's low mantissa bits
     * are that integer. */
    const float shifter = 12582912.0f;
    float shifted = x * 1.44269504088896341f + shifter;
    union {
        float f;
        int32_t i;
    } bits = {.f = shifted};
    float n = shifted - shifter;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale = {.i = (bits.i - 0x4B400000 + 127) << 23};
    return p * scale.f;
}

static inline float sigmoid(float x)
{
    return 1.0f / (1.0f + exp_approx(-x));
}

static inline float tanh_approx(float x)
{
    return 2.0f / (1.0f + exp_approx(-2.0f * x)) - 1.0f;
}

/*
 * One step of one layer for n windows: pre holds, per window, the step's input projection plus
 * the recurrent product; the bias is added here. Gates in PyTorch's order (input, forget, cell,
 * output); c is updated in place and the new hidden state goes to h. Built for AVX-512, AVX2 and
 * the baseline; the loader picks what the CPU has.
 */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void
step_gates(size_t n, size_t H, const float *restrict pre, const float *restrict bias,
           float *restrict c, float *restrict h)
{
    const float *bi = bias, *bf = bias + H, *bg = bias + 2 * H, *bo = bias + 3 * H;
    for (size_t b = 0; b < n; b++) {
        const float *p = pre + b * 4 * H;
        float *cb = c + b * H, *hb = h + b * H;
#pragma omp simd
        for (size_t j = 0; j < H; j++) {
            float gi = sigmoid(p[j] + bi[j]);
            float gf = sigmoid(p[H + j] + bf[j]);
            float gg = tanh_approx(p[2 * H + j] + bg[j]);
            float go = sigmoid(p[3 * H + j] + bo[j]);
            float cell = gf * cb[j] + gi * gg;
            cb[j] = cell;
            hb[j] = go * tanh_approx(cell);
        }
    }
}

/*
 * The network on n windows of one chunk; x rows are windows (stride x_stride). Everything is
 * laid out step-major ([step][window][...]) so that one step's rows are contiguous: the
 * recurrent GEMM accumulates straight into that step's pre-activations, and a lower layer writes
 * each step's hidden states straight into the next layer's input.
 */
static int forward_chunk(struct workspace *ws, const struct ad_lstm_weights *w, const float *x,
                         size_t n, size_t steps, size_t x_stride, float *out, float *state)
{
    size_t S = ad_lstm_state_floats(w);
    size_t H = w->hidden, F = w->inputs, G = 4 * H;
    size_t rows = n * steps, width_max = F > H ? F : H;
    /* in, next: a layer's input and output, [steps][n][width]; pre: [steps][n][4H]; c, h: the
     * top layer's state, [n][H]. */
    float *in = workspace_get(ws, 2 * rows * width_max + rows * G + 2 * n * H);
    if (!in)
        return -1;
    float *next = in + rows * width_max, *pre = next + rows * width_max, *c = pre + rows * G;
    float *h = c + n * H;

    for (size_t t = 0; t < steps; t++)
        for (size_t b = 0; b < n; b++)
            memcpy(in + (t * n + b) * F, x + b * x_stride + t * F, F * sizeof(float));
    size_t width = F;
    for (size_t l = 0; l < w->layers; l++) {
        bool top = l + 1 == w->layers;
        /* The input projection of every step and window at once. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)G, (int)width, 1.0f,
                    in, (int)width, w->w_ih[l], (int)width, 0.0f, pre, (int)G);
        memset(c, 0, n * H * sizeof(float));
        for (size_t t = 0; t < steps; t++) {
            float *pre_t = pre + t * n * G;
            float *h_t = top ? h : next + t * n * H;
            if (t > 0) { /* pre_t += h_{t-1} · W_hh^T */
                const float *h_prev = top ? h : next + (t - 1) * n * H;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)G, (int)H, 1.0f,
                            h_prev, (int)H, w->w_hh[l], (int)H, 1.0f, pre_t, (int)G);
            }
            step_gates(n, H, pre_t, w->bias[l], c, h_t);
        }
        /* A warm-up: each window's state after its last step, for the stream to go on from. */
        const float *h_last = top ? h : next + (steps - 1) * n * H;
        for (size_t b = 0; state && b < n; b++) {
            memcpy(state + b * S + l * 2 * H, h_last + b * H, H * sizeof(float));
            memcpy(state + b * S + l * 2 * H + H, c + b * H, H * sizeof(float));
        }
        if (!top) {
            float *swap = in;
            in = next;
            next = swap;
            width = H;
        }
    }
    /* out = h_last · head_w^T + head_b */
    for (size_t b = 0; b < n; b++)
        memcpy(out + b * w->outputs, w->head_b, w->outputs * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)w->outputs, (int)H, 1.0f, h,
                (int)H, w->head_w, (int)H, 1.0f, out, (int)w->outputs);
    return 0;
}

/*
 * One step of n windows from their states (S floats each: per layer h, then c), which it
 * updates; x rows are the windows' new inputs (stride x_stride). The same GEMMs and gates as a
 * windowed step, with the batch's rows in place of the window's steps.
 */
static int step_chunk(struct workspace *ws, const struct ad_lstm_weights *w, const float *x,
                      size_t n, size_t x_stride, float *state, float *out)
{
    size_t H = w->hidden, G = 4 * H, S = ad_lstm_state_floats(w);
    /* pre: [n][4H]; c, h: one layer's, [n][H] */
    float *pre = workspace_get(ws, n * G + 2 * n * H);
    if (!pre)
        return -1;
    float *c = pre + n * G, *h = c + n * H;
    const float *in = x;
    size_t width = w->inputs, in_stride = x_stride;
    for (size_t l = 0; l < w->layers; l++) {
        float *layer = state + l * 2 * H;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)G, (int)width, 1.0f, in,
                    (int)in_stride, w->w_ih[l], (int)width, 0.0f, pre, (int)G);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)G, (int)H, 1.0f, layer,
                    (int)S, w->w_hh[l], (int)H, 1.0f, pre, (int)G);
        for (size_t b = 0; b < n; b++)
            memcpy(c + b * H, layer + b * S + H, H * sizeof(float));
        step_gates(n, H, pre, w->bias[l], c, h);
        for (size_t b = 0; b < n; b++) {
            memcpy(layer + b * S, h + b * H, H * sizeof(float));
            memcpy(layer + b * S + H, c + b * H, H * sizeof(float));
        }
        in = h;
        width = in_stride = H;
    }
    for (size_t b = 0; b < n; b++)
        memcpy(out + b * w->outputs, w->head_b, w->outputs * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)w->outputs, (int)H, 1.0f, h,
                (int)H, w->head_w, (int)H, 1.0f, out, (int)w->outputs);
    return 0;
}

static void work(struct worker *me, struct job *job)
{
    for (;;) {
        size_t b = atomic_fetch_add(&job->next_chunk, 1) * CHUNK;
        if (b >= job->batch || atomic_load(&job->failed))
            break;
        size_t n = job->batch - b < CHUNK ? job->batch - b : CHUNK;
        const float *x = job->x + b * job->x_stride;
        float *out = job->out + b * job->w->outputs;
        float *state = job->state ? job->state + b * ad_lstm_state_floats(job->w) : NULL;
        int rc = job->steps
                     ? forward_chunk(&me->ws, job->w, x, n, job->steps, job->x_stride, out, state)
                     : step_chunk(&me->ws, job->w, x, n, job->x_stride, state, out);
        if (rc < 0)
            atomic_store(&job->failed, true);
    }
}

static void *helper(void *arg)
{
    struct worker *me = arg;
    struct cpu *cpu = me->cpu;
    uint64_t seen = 0;
    pthread_mutex_lock(&cpu->mu);
    for (;;) {
        while (cpu->generation == seen && !cpu->stopping)
            pthread_cond_wait(&cpu->go, &cpu->mu);
        if (cpu->stopping)
            break;
        seen = cpu->generation;
        struct job *job = cpu->job;
        pthread_mutex_unlock(&cpu->mu);
        work(me, job);
        pthread_mutex_lock(&cpu->mu);
        if (--cpu->busy == 0)
            pthread_cond_signal(&cpu->done);
    }
    pthread_mutex_unlock(&cpu->mu);
    return NULL;
}

/*
 * Chunks are independent, so threads split the batch by chunks, each running single-threaded
 * BLAS: the GEMMs here (a few hundred rows by 4H) are too small for OpenBLAS' own threads to pay
 * off, and measured slower with two. The calling thread is one of the workers.
 */
static int run(struct cpu *cpu, const struct ad_lstm_weights *w, const float *x, size_t batch,
               size_t steps, size_t x_stride, float *out, float *state, char *errstr,
               size_t errstr_size)
{
    if (x_stride < (steps ? steps : 1) * w->inputs) {
        ad_errstr_set(errstr, errstr_size, "bad shape: %zu steps, stride %zu", steps, x_stride);
        return -1;
    }
    struct job job = {.w = w,
                      .x = x,
                      .out = out,
                      .state = state,
                      .batch = batch,
                      .steps = steps,
                      .x_stride = x_stride};
    atomic_init(&job.next_chunk, 0);
    atomic_init(&job.failed, false);
    /* One chunk is the caller's alone: waking the helpers would cost more than it saves. */
    bool shared = cpu->helpers > 0 && batch > CHUNK;
    if (shared) {
        pthread_mutex_lock(&cpu->mu);
        cpu->job = &job;
        cpu->busy = cpu->helpers;
        cpu->generation++;
        pthread_cond_broadcast(&cpu->go);
        pthread_mutex_unlock(&cpu->mu);
    }
    work(&cpu->workers[0], &job);
    if (shared) {
        pthread_mutex_lock(&cpu->mu);
        while (cpu->busy > 0)
            pthread_cond_wait(&cpu->done, &cpu->mu);
        cpu->job = NULL;
        pthread_mutex_unlock(&cpu->mu);
    }
    if (atomic_load(&job.failed)) {
        ad_errstr_set(errstr, errstr_size, "out of memory for the CPU backend's workspace");
        return -1;
    }
    return 0;
}

static int cpu_forward(void *impl, const struct ad_lstm_weights *w, const float *x, size_t batch,
                       size_t steps, size_t x_stride, float *out, char *errstr, size_t errstr_size)
{
    if (steps == 0)
        return ad_errstr_set(errstr, errstr_size, "bad shape: 0 steps");
    return run(impl, w, x, batch, steps, x_stride, out, NULL, errstr, errstr_size);
}

static int cpu_warm_up(void *impl, const struct ad_lstm_weights *w, const float *x, size_t batch,
                       size_t steps, size_t x_stride, float *out, float *state, char *errstr,
                       size_t errstr_size)
{
    if (steps == 0)
        return ad_errstr_set(errstr, errstr_size, "bad shape: 0 steps");
    return run(impl, w, x, batch, steps, x_stride, out, state, errstr, errstr_size);
}

static int cpu_step(void *impl, const struct ad_lstm_weights *w, const float *x, size_t batch,
                    size_t x_stride, float *state, float *out, char *errstr, size_t errstr_size)
{
    return run(impl, w, x, batch, 0, x_stride, out, state, errstr, errstr_size);
}

static void cpu_destroy(void *impl)
{
    struct cpu *cpu = impl;
    pthread_mutex_lock(&cpu->mu);
    cpu->stopping = true;
    pthread_cond_broadcast(&cpu->go);
    pthread_mutex_unlock(&cpu->mu);
    for (size_t i = 0; i < cpu->helpers; i++)
        pthread_join(cpu->tids[i], NULL);
    for (int i = 0; i < MAX_THREADS; i++)
        free(cpu->workers[i].ws.floats);
    pthread_cond_destroy(&cpu->done);
    pthread_cond_destroy(&cpu->go);
    pthread_mutex_destroy(&cpu->mu);
    free(cpu);
}

static const struct ad_lstm_backend_ops cpu_ops = {.kind = "cpu",
                                                   .forward = cpu_forward,
                                                   .warm_up = cpu_warm_up,
                                                   .step = cpu_step,
                                                   .destroy = cpu_destroy};

struct ad_lstm_backend *ad_lstm_backend_cpu_new(int threads, char *errstr, size_t errstr_size)
{
    struct ad_lstm_backend *b = calloc(1, sizeof *b);
    struct cpu *cpu = calloc(1, sizeof *cpu);
    if (!b || !cpu) {
        free(b);
        free(cpu);
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (threads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 0 ? (int)cores : 1;
    }
    cpu->threads = threads < MAX_THREADS ? threads : MAX_THREADS;
    /* BLAS threads are process-wide; the scorer's CPU backend is the only BLAS user. */
    openblas_set_num_threads(1);
    pthread_mutex_init(&cpu->mu, NULL);
    pthread_cond_init(&cpu->go, NULL);
    pthread_cond_init(&cpu->done, NULL);
    for (int i = 0; i < cpu->threads; i++)
        cpu->workers[i].cpu = cpu;
    /* A helper that cannot start leaves its chunks to the others. */
    while (cpu->helpers + 1 < (size_t)cpu->threads &&
           pthread_create(&cpu->tids[cpu->helpers], NULL, helper,
                          &cpu->workers[cpu->helpers + 1]) == 0)
        cpu->helpers++;
    b->ops = &cpu_ops;
    b->impl = cpu;
    /* What really runs: OpenBLAS' build and the kernels it picked (OPENBLAS_CORETYPE can
     * force older ones), and the gate loop's clone (target_clones picks the widest). */
    __builtin_cpu_init();
    const char *gates = __builtin_cpu_supports("avx512f") ? "avx512f"
                        : __builtin_cpu_supports("avx2")  ? "avx2"
                                                          : "baseline";
    snprintf(b->description, sizeof b->description,
             "OpenBLAS %s, kernels %s, gates %s, %d worker thread%s x 1 BLAS thread",
             openblas_get_config(), openblas_get_corename(), gates, (int)cpu->helpers + 1,
             cpu->helpers == 0 ? "" : "s");
    return b;
}
