/*
 * The CUDA backend of ad_lstm: lstm_dev.c's plan on one stream, cuBLAS for the GEMMs and two
 * small kernels (lstm_cell.h) for the pointwise work. FP32 throughout, TF32 off: the CPU
 * backend is the reference and the two must agree to 1e-4.
 *
 * The scorer thread owns the backend, its stream, its cuBLAS handle and its buffers. The CUDA
 * runtime keeps the current device per host thread, so every entry point selects the device
 * again: in the daemon one thread makes and uses the backend, but tests and benchmarks may not.
 */

#include "base/errstr.h"
#include "gpu/lstm_backend.h"
#include "gpu/lstm_cuda.h"
#include "gpu/lstm_dev.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#define THREADS 256

/* One pair of events around one copy, while profiling. */
struct prof_copy {
    cudaEvent_t start, stop;
    size_t bytes;
    bool down;
};

struct cuda_impl {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    struct ad_lstm_dev dev;
    int sms; /* multiprocessors */
    bool broken;
    char broken_why[512];

    struct ad_lstm_cuda_stats stats;
    size_t h2d_bytes, d2h_bytes; /* of the forward running */
    bool profiling, span_started;
    cudaEvent_t span_start, span_stop;
    struct prof_copy *copies; /* events created on first use, kept for the next forwards */
    size_t n_copies, cap_copies, made_copies;
};

static int cuda_fail(cudaError_t e, const char *what, char *errstr, size_t errstr_size)
{
    ad_errstr_set(errstr, errstr_size, "%s: %s (%s)", what, cudaGetErrorString(e),
                  cudaGetErrorName(e));
    return -1;
}

static int blas_fail(cublasStatus_t s, const char *what, char *errstr, size_t errstr_size)
{
    ad_errstr_set(errstr, errstr_size, "%s: %s (%s)", what, cublasGetStatusString(s),
                  cublasGetStatusName(s));
    return -1;
}

/* For functions with nothing to clean up: returns -1 with err naming the call. */
#define CUDA_TRY(call)                                        \
    do {                                                      \
        cudaError_t e_ = (call);                              \
        if (e_ != cudaSuccess)                                \
            return cuda_fail(e_, #call, errstr, errstr_size); \
    } while (0)

static __global__ void __launch_bounds__(THREADS)
    cell_kernel(const struct ad_lstm_cell_args a, unsigned n)
{
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        ad_lstm_cell_at(a, i);
}

static __global__ void __launch_bounds__(THREADS)
    bias_kernel(const struct ad_lstm_bias_args a, unsigned n)
{
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        ad_lstm_bias_at(a, i);
}

static __global__ void __launch_bounds__(THREADS)
    gather_kernel(const struct ad_lstm_gather_args a, unsigned n)
{
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        ad_lstm_gather_at(a, i);
}

static __global__ void __launch_bounds__(THREADS)
    scatter_kernel(const struct ad_lstm_scatter_args a, unsigned n)
{
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        ad_lstm_scatter_at(a, i);
}

static __global__ void __launch_bounds__(THREADS)
    step_kernel(const struct ad_lstm_step_args a, unsigned n)
{
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        ad_lstm_step_at(a, i);
}

/* lstm_cell.h's fused step; grid-stride over tiles so that a block loads W_hh once. */
static __global__ void __launch_bounds__(AD_LSTM_FUSED_THREADS)
    fused_kernel(const struct ad_lstm_fused_args a)
{
    extern __shared__ float smem[];
    float *sw = smem, *sh = smem + (size_t)a.hidden * (4 * a.hidden + 1);
    unsigned weights = 4 * a.hidden * a.hidden;
    for (unsigned e = threadIdx.x; e < weights; e += blockDim.x)
        ad_lstm_fused_load_w(a, sw, e);
    for (unsigned first = blockIdx.x * a.tile; first < a.rows; first += gridDim.x * a.tile) {
        unsigned n = (a.rows - first < a.tile ? a.rows - first : a.tile) * a.hidden;
        __syncthreads(); /* W_hh in place; the last tile's h_prev no longer read */
        for (unsigned e = threadIdx.x; e < n; e += blockDim.x)
            ad_lstm_fused_load_h(a, sh, first, e);
        __syncthreads(); /* the tile's h_prev read before any of it is overwritten */
        for (unsigned e = threadIdx.x; e < n; e += blockDim.x)
            ad_lstm_fused_cell(a, sw, sh, first, e);
    }
}

/* lstm_cell.h's fused layer: a block takes tiles of windows (grid-stride, loading W_hh once)
 * and runs each through every step; one barrier per step (sh holds h twice). */
static __global__ void __launch_bounds__(AD_LSTM_FUSED_THREADS)
    layer_kernel(const struct ad_lstm_layer_args a)
{
    extern __shared__ float smem[];
    unsigned H = a.hidden, tile = ad_lstm_layer_tile(H, a.per_thread);
    float *sw = smem, *sh = smem + (size_t)H * (4 * H + 1);
    unsigned weights = 4 * H * H;
    for (unsigned e = threadIdx.x; e < weights; e += blockDim.x)
        ad_lstm_load_w_hh(a.w_hh, H, sw, e);
    __syncthreads(); /* W_hh in place */
    for (unsigned first = blockIdx.x * tile; first < a.rows; first += gridDim.x * tile) {
        unsigned n = a.rows - first < tile ? a.rows - first : tile;
        float c[AD_LSTM_LAYER_MAX_PER_THREAD];
        for (unsigned t = 0; t < a.steps; t++) {
            float *prev = sh + (size_t)(t & 1) * tile * H, *next = sh + (size_t)(~t & 1) * tile * H;
            ad_lstm_layer_step(a, sw, prev, next, first, n, threadIdx.x, t, c);
            __syncthreads(); /* h_t written before step t + 1 reads it */
        }
    }
}

/* Profiling: the span starts at the forward's first queued operation. */
static int prof_touch(struct cuda_impl *c, char *errstr, size_t errstr_size)
{
    if (!c->profiling || c->span_started)
        return 0;
    CUDA_TRY(cudaEventRecord(c->span_start, c->stream));
    c->span_started = true;
    return 0;
}

static struct prof_copy *prof_next(struct cuda_impl *c, char *errstr, size_t errstr_size)
{
    if (c->n_copies == c->cap_copies) {
        size_t cap = c->cap_copies ? 2 * c->cap_copies : 64;
        void *p = realloc(c->copies, cap * sizeof *c->copies);
        if (p == NULL) {
            ad_errstr_set(errstr, errstr_size, "out of memory for profiling events");
            return NULL;
        }
        c->copies = static_cast<struct prof_copy *>(p);
        c->cap_copies = cap;
    }
    struct prof_copy *pc = &c->copies[c->n_copies];
    if (c->n_copies == c->made_copies) {
        cudaError_t e = cudaEventCreate(&pc->start);
        if (e == cudaSuccess) {
            e = cudaEventCreate(&pc->stop);
            if (e != cudaSuccess)
                cudaEventDestroy(pc->start);
        }
        if (e != cudaSuccess) {
            cuda_fail(e, "cudaEventCreate", errstr, errstr_size);
            return NULL;
        }
        c->made_copies++;
    }
    c->n_copies++;
    return pc;
}

static int copy_async(struct cuda_impl *c, void *dst, const void *src, size_t bytes, bool down,
                      char *errstr, size_t errstr_size)
{
    if (prof_touch(c, errstr, errstr_size) < 0)
        return -1;
    struct prof_copy *pc = NULL;
    if (c->profiling) {
        if ((pc = prof_next(c, errstr, errstr_size)) == NULL)
            return -1;
        pc->bytes = bytes;
        pc->down = down;
        CUDA_TRY(cudaEventRecord(pc->start, c->stream));
    }
    cudaError_t e = cudaMemcpyAsync(
        dst, src, bytes, down ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice, c->stream);
    if (e != cudaSuccess) {
        char what[96];
        snprintf(what, sizeof what, "cudaMemcpyAsync(%zu bytes, %s)", bytes,
                 down ? "device to host" : "host to device");
        return cuda_fail(e, what, errstr, errstr_size);
    }
    if (pc != NULL)
        CUDA_TRY(cudaEventRecord(pc->stop, c->stream));
    if (down)
        c->d2h_bytes += bytes;
    else
        c->h2d_bytes += bytes;
    return 0;
}

/* The device ops of lstm_dev.h. */

static int op_alloc(void *ctx, size_t bytes, void **p, char *errstr, size_t errstr_size)
{
    (void)ctx;
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        char what[64];
        snprintf(what, sizeof what, "cudaMalloc(%zu bytes)", bytes);
        /* Not sticky, but the last error: a later launch's check must not report it. */
        cudaGetLastError();
        return cuda_fail(e, what, errstr, errstr_size);
    }
    return 0;
}

static void op_release(void *ctx, void *p)
{
    (void)ctx;
    if (p != NULL)
        cudaFree(p);
}

static int op_alloc_host(void *ctx, size_t bytes, void **p, char *errstr, size_t errstr_size)
{
    (void)ctx;
    *p = NULL;
    cudaError_t e = cudaHostAlloc(p, bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        *p = NULL;
        char what[64];
        snprintf(what, sizeof what, "cudaHostAlloc(%zu bytes)", bytes);
        /* Not sticky, but the last error: a later launch's check must not report it. */
        cudaGetLastError();
        return cuda_fail(e, what, errstr, errstr_size);
    }
    return 0;
}

static void op_release_host(void *ctx, void *p)
{
    (void)ctx;
    if (p != NULL)
        cudaFreeHost(p);
}

static int op_upload(void *ctx, void *dst, const void *src, size_t bytes, char *errstr,
                     size_t errstr_size)
{
    return copy_async(static_cast<struct cuda_impl *>(ctx), dst, src, bytes, false, errstr,
                      errstr_size);
}

static int op_download(void *ctx, void *dst, const void *src, size_t bytes, char *errstr,
                       size_t errstr_size)
{
    return copy_async(static_cast<struct cuda_impl *>(ctx), dst, src, bytes, true, errstr,
                      errstr_size);
}

static int op_gemm_tn(void *ctx, int m, int n, int k, const float *a, int lda, const float *b,
                      int ldb, float *c, int ldc, char *errstr, size_t errstr_size)
{
    struct cuda_impl *ci = static_cast<struct cuda_impl *>(ctx);
    if (prof_touch(ci, errstr, errstr_size) < 0)
        return -1;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s = cublasSgemm(ci->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, a, lda, b,
                                   ldb, &zero, c, ldc);
    if (s != CUBLAS_STATUS_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "cublasSgemm(T, N, m %d, n %d, k %d)", m, n, k);
        return blas_fail(s, what, errstr, errstr_size);
    }
    return 0;
}

/* An elementwise kernel: one thread per element, n of them (lstm_dev.c keeps n under
 * INT_MAX). */
template <typename Args>
static int launch_each(void *ctx, void (*kernel)(const Args, unsigned), const Args *a, unsigned n,
                       char *errstr, size_t errstr_size)
{
    struct cuda_impl *c = static_cast<struct cuda_impl *>(ctx);
    if (prof_touch(c, errstr, errstr_size) < 0)
        return -1;
    kernel<<<(n + THREADS - 1) / THREADS, THREADS, 0, c->stream>>>(*a, n);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* A persistent kernel over `tiles` tiles: as many blocks as run at once and no more, since each
 * loads W_hh into its shared memory once for many tiles. */
template <typename Args>
static int launch_persistent(void *ctx, void (*kernel)(const Args), const Args *a, size_t smem,
                             unsigned tiles, char *errstr, size_t errstr_size)
{
    struct cuda_impl *c = static_cast<struct cuda_impl *>(ctx);
    if (prof_touch(c, errstr, errstr_size) < 0)
        return -1;
    int per_sm = 0;
    CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, AD_LSTM_FUSED_THREADS,
                                                           smem));
    unsigned most = (unsigned)(per_sm > 0 ? per_sm : 1) * (unsigned)c->sms;
    unsigned blocks = tiles < most ? tiles : most;
    kernel<<<blocks, AD_LSTM_FUSED_THREADS, smem, c->stream>>>(*a);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

static int op_cell(void *ctx, const struct ad_lstm_cell_args *a, char *errstr, size_t errstr_size)
{
    return launch_each(ctx, cell_kernel, a, a->rows * a->hidden, errstr, errstr_size);
}

static int op_add_bias(void *ctx, const struct ad_lstm_bias_args *a, char *errstr,
                       size_t errstr_size)
{
    return launch_each(ctx, bias_kernel, a, a->rows * a->cols, errstr, errstr_size);
}

static int op_copy(void *ctx, void *dst, const void *src, size_t bytes, char *errstr,
                   size_t errstr_size)
{
    struct cuda_impl *c = static_cast<struct cuda_impl *>(ctx);
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream);
    if (e != cudaSuccess) {
        char what[96];
        snprintf(what, sizeof what, "cudaMemcpyAsync(%zu bytes, device to device)", bytes);
        return cuda_fail(e, what, errstr, errstr_size);
    }
    return 0;
}

static int op_gather(void *ctx, const struct ad_lstm_gather_args *a, char *errstr,
                     size_t errstr_size)
{
    return launch_each(ctx, gather_kernel, a, a->rows * a->state_floats, errstr, errstr_size);
}

static int op_scatter(void *ctx, const struct ad_lstm_scatter_args *a, char *errstr,
                      size_t errstr_size)
{
    return launch_each(ctx, scatter_kernel, a, a->rows * a->hidden, errstr, errstr_size);
}

static int op_step(void *ctx, const struct ad_lstm_step_args *a, char *errstr, size_t errstr_size)
{
    return launch_each(ctx, step_kernel, a, a->rows * a->hidden, errstr, errstr_size);
}

static int op_step_fused(void *ctx, const struct ad_lstm_fused_args *a, char *errstr,
                         size_t errstr_size)
{
    return launch_persistent(ctx, fused_kernel, a, ad_lstm_fused_smem_bytes(a->hidden, a->tile),
                             (a->rows + a->tile - 1) / a->tile, errstr, errstr_size);
}

static int op_layer_fused(void *ctx, const struct ad_lstm_layer_args *a, char *errstr,
                          size_t errstr_size)
{
    unsigned tile = ad_lstm_layer_tile(a->hidden, a->per_thread);
    return launch_persistent(ctx, layer_kernel, a,
                             ad_lstm_layer_smem_bytes(a->hidden, a->per_thread),
                             (a->rows + tile - 1) / tile, errstr, errstr_size);
}

static int op_sync(void *ctx, char *errstr, size_t errstr_size)
{
    struct cuda_impl *c = static_cast<struct cuda_impl *>(ctx);
    if (c->span_started)
        CUDA_TRY(cudaEventRecord(c->span_stop, c->stream));
    /* The one wait of a forward; kernel faults surface here. */
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    return 0;
}

static const struct ad_lstm_dev_ops dev_ops = {
    op_alloc,   op_release, op_alloc_host, op_release_host, op_upload, op_download,
    op_gemm_tn, op_cell,    op_add_bias,   op_sync,         op_copy,   op_gather,
    op_scatter, op_step,    op_step_fused, op_layer_fused,
};

/* Reads the events of the forward that just synchronized. */
static int prof_collect(struct cuda_impl *c, char *errstr, size_t errstr_size)
{
    float ms;
    for (size_t i = 0; i < c->n_copies; i++) {
        struct prof_copy *pc = &c->copies[i];
        CUDA_TRY(cudaEventElapsedTime(&ms, pc->start, pc->stop));
        if (pc->down)
            c->stats.d2h_ms += ms;
        else
            c->stats.h2d_ms += ms;
    }
    if (c->span_started) {
        CUDA_TRY(cudaEventElapsedTime(&ms, c->span_start, c->span_stop));
        c->stats.span_ms = ms;
    }
    return 0;
}

/* Work on a backend that failed before is refused, naming the first failure. */
static bool refused(const struct cuda_impl *c, char *errstr, size_t errstr_size)
{
    if (c->broken)
        ad_errstr_set(errstr, errstr_size, "CUDA backend unusable after an earlier failure: %s",
                      c->broken_why);
    return c->broken;
}

/* Selects the device and clears the call's counters. */
static int begin(struct cuda_impl *c, char *why, size_t why_size)
{
    c->h2d_bytes = c->d2h_bytes = 0;
    c->n_copies = 0;
    c->span_started = false;
    cudaError_t e = cudaSetDevice(c->device);
    if (e != cudaSuccess)
        return cuda_fail(e, "cudaSetDevice", why, why_size);
    return 0;
}

/* What a call's ad_lstm_dev_status means for the caller and the backend. */
static int finish(struct cuda_impl *c, int rc, char *why, size_t why_size, char *errstr,
                  size_t errstr_size)
{
    if (rc == AD_LSTM_DEV_INVALID) {
        ad_errstr_set(errstr, errstr_size, "%s", why);
        return -1; /* nothing was queued: the backend is as good as before */
    }
    if (rc == AD_LSTM_DEV_OK) {
        struct ad_lstm_cuda_stats s;
        memset(&s, 0, sizeof s);
        s.chunks = c->dev.last_chunks;
        s.layer_fused = c->dev.last_layer_fused;
        s.h2d_bytes = c->h2d_bytes;
        s.d2h_bytes = c->d2h_bytes;
        c->stats = s;
        if (prof_collect(c, why, why_size) == 0)
            return 0;
    }
    c->broken = true;
    snprintf(c->broken_why, sizeof c->broken_why, "%s", why);
    ad_errstr_set(errstr, errstr_size, "%s", why);
    return -1;
}

static int cuda_forward(void *impl, const struct ad_lstm_weights *w, const float *x, size_t batch,
                        size_t steps, size_t x_stride, float *out, char *errstr, size_t errstr_size)
{
    struct cuda_impl *c = static_cast<struct cuda_impl *>(impl);
    if (refused(c, errstr, errstr_size))
        return -1;
    char why[sizeof c->broken_why] = "";
    int rc = begin(c, why, sizeof why) < 0
                 ? AD_LSTM_DEV_FAILED
                 : ad_lstm_dev_forward(&c->dev, w, x, batch, steps, x_stride, out, why, sizeof why);
    return finish(c, rc, why, sizeof why, errstr, errstr_size);
}

static int cuda_states_resize(void *impl, void **p, size_t old_bytes, size_t new_bytes,
                              char *errstr, size_t errstr_size)
{
    struct cuda_impl *c = static_cast<struct cuda_impl *>(impl);
    if (refused(c, errstr, errstr_size))
        return -1;
    char why[sizeof c->broken_why] = "";
    int rc = begin(c, why, sizeof why) < 0
                 ? AD_LSTM_DEV_FAILED
                 : ad_lstm_dev_states_resize(&c->dev, p, old_bytes, new_bytes, why, sizeof why);
    return finish(c, rc, why, sizeof why, errstr, errstr_size);
}

static void cuda_states_free(void *impl, void *p)
{
    struct cuda_impl *c = static_cast<struct cuda_impl *>(impl);
    /* Even on a broken backend: letting go is all that is left to do. */
    cudaSetDevice(c->device);
    ad_lstm_dev_states_free(&c->dev, p);
    cudaGetLastError();
}

static int cuda_warm_up_slots(void *impl, const struct ad_lstm_weights *w, void *states,
                              const float *x, size_t batch, size_t steps, size_t x_stride,
                              const uint32_t *slots, float *out, char *errstr, size_t errstr_size)
{
    struct cuda_impl *c = static_cast<struct cuda_impl *>(impl);
    if (refused(c, errstr, errstr_size))
        return -1;
    char why[sizeof c->broken_why] = "";
    int rc = begin(c, why, sizeof why) < 0
                 ? AD_LSTM_DEV_FAILED
                 : ad_lstm_dev_warm_up_slots(&c->dev, w, states, x, batch, steps, x_stride, slots,
                                             out, why, sizeof why);
    return finish(c, rc, why, sizeof why, errstr, errstr_size);
}

static int cuda_step_slots(void *impl, const struct ad_lstm_weights *w, void *states,
                           const float *x, size_t batch, size_t x_stride, const uint32_t *slots,
                           float *out, char *errstr, size_t errstr_size)
{
    struct cuda_impl *c = static_cast<struct cuda_impl *>(impl);
    if (refused(c, errstr, errstr_size))
        return -1;
    char why[sizeof c->broken_why] = "";
    int rc = begin(c, why, sizeof why) < 0
                 ? AD_LSTM_DEV_FAILED
                 : ad_lstm_dev_step_slots(&c->dev, w, states, x, batch, x_stride, slots, out, why,
                                          sizeof why);
    return finish(c, rc, why, sizeof why, errstr, errstr_size);
}

static void impl_free(struct cuda_impl *c)
{
    if (c == NULL)
        return;
    /* Errors are ignored: after a fault the context may refuse everything, and there is
     * nothing better to do than to let go of what can be let go. */
    cudaSetDevice(c->device);
    ad_lstm_dev_release(&c->dev);
    for (size_t i = 0; i < c->made_copies; i++) {
        cudaEventDestroy(c->copies[i].start);
        cudaEventDestroy(c->copies[i].stop);
    }
    free(c->copies);
    if (c->span_start != NULL)
        cudaEventDestroy(c->span_start);
    if (c->span_stop != NULL)
        cudaEventDestroy(c->span_stop);
    if (c->blas != NULL)
        cublasDestroy(c->blas);
    if (c->stream != NULL)
        cudaStreamDestroy(c->stream);
    cudaGetLastError();
    free(c);
}

static void cuda_destroy(void *impl)
{
    impl_free(static_cast<struct cuda_impl *>(impl));
}

/* Stream mode by slot only, the states on the device; no warm_up and step with states in host
 * memory (ad_lstm_warm_up and ad_lstm_step say so). Positional: this is C++. */
static const struct ad_lstm_backend_ops backend_ops = {"cuda",
                                                       cuda_forward,
                                                       NULL,
                                                       NULL,
                                                       cuda_states_resize,
                                                       cuda_states_free,
                                                       cuda_warm_up_slots,
                                                       cuda_step_slots,
                                                       cuda_destroy};

/* Sets up the device, stream and cuBLAS handle of a new impl. */
static int impl_init(struct cuda_impl *c, int device, cudaDeviceProp *prop, int *runtime,
                     char *errstr, size_t errstr_size)
{
    CUDA_TRY(cudaSetDevice(device));
    CUDA_TRY(cudaGetDeviceProperties(prop, device));
    CUDA_TRY(cudaRuntimeGetVersion(runtime));
    CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUDA_TRY(cudaEventCreate(&c->span_start));
    CUDA_TRY(cudaEventCreate(&c->span_stop));
    cublasStatus_t s = cublasCreate(&c->blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        return blas_fail(s, "cublasCreate", errstr, errstr_size);
    }
    if ((s = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS)
        return blas_fail(s, "cublasSetStream", errstr, errstr_size);
    /* FP32 on the FP32 units: never CUBLAS_TF32_TENSOR_OP_MATH, whose 10-bit mantissas miss
     * the CPU parity tolerance. */
    if ((s = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS)
        return blas_fail(s, "cublasSetMathMode", errstr, errstr_size);
    return 0;
}

extern "C" struct ad_lstm_backend *ad_lstm_backend_cuda_new(int device, char *errstr,
                                                            size_t errstr_size)
{
    struct ad_lstm_backend *b = NULL;
    struct cuda_impl *c = NULL;
    cudaDeviceProp prop;
    int runtime = 0, count = 0;

    /* Without a driver this fails at once (cudaErrorInsufficientDriver): no device. */
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        ad_errstr_set(errstr, errstr_size, "no usable CUDA device: %s (%s)", cudaGetErrorString(e),
                      cudaGetErrorName(e));
        cudaGetLastError();
        goto fail;
    }
    if (device < 0 || device >= count) {
        ad_errstr_set(errstr, errstr_size, "CUDA device %d asked for, %d present", device, count);
        goto fail;
    }
    c = static_cast<struct cuda_impl *>(calloc(1, sizeof *c));
    b = static_cast<struct ad_lstm_backend *>(calloc(1, sizeof *b));
    if (c == NULL || b == NULL) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto fail;
    }
    c->device = device;
    if (impl_init(c, device, &prop, &runtime, errstr, errstr_size) < 0)
        goto fail;
    ad_lstm_dev_init(&c->dev, &dev_ops, c);
    c->sms = prop.multiProcessorCount;
    /* The fused step keeps W_hh in shared memory: 66 KB at H = 64, past the default 48 KB. */
    if (cudaFuncSetAttribute(fused_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)prop.sharedMemPerBlockOptin) == cudaSuccess &&
        cudaFuncSetAttribute(layer_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)prop.sharedMemPerBlockOptin) == cudaSuccess)
        c->dev.fused_smem = prop.sharedMemPerBlockOptin;
    else
        cudaGetLastError(); /* no fused kernels then: the GEMM plans work everywhere */
    /* Two fused-layer blocks an SM at least before a thread takes more windows: while one
     * waits at its barrier, the other computes. */
    c->dev.layer_blocks = 2 * (size_t)c->sms;
    b->ops = &backend_ops;
    b->impl = c;
    snprintf(b->description, sizeof b->description,
             "%s (device %d, compute %d.%d, CUDA runtime %d.%d)", prop.name, device, prop.major,
             prop.minor, runtime / 1000, runtime % 1000 / 10);
    return b;

fail:
    impl_free(c);
    free(b);
    return NULL;
}

static struct cuda_impl *impl_of(const struct ad_lstm_backend *b)
{
    if (b == NULL || b->ops != &backend_ops)
        return NULL;
    return static_cast<struct cuda_impl *>(b->impl);
}

extern "C" int ad_lstm_cuda_set_profiling(struct ad_lstm_backend *b, bool on)
{
    struct cuda_impl *c = impl_of(b);
    if (c == NULL)
        return -1;
    c->profiling = on;
    return 0;
}

extern "C" int ad_lstm_cuda_last_stats(const struct ad_lstm_backend *b,
                                       struct ad_lstm_cuda_stats *out)
{
    struct cuda_impl *c = impl_of(b);
    if (c == NULL)
        return -1;
    *out = c->stats;
    out->model_uploads = c->dev.model_uploads;
    return 0;
}

extern "C" int ad_lstm_cuda_set_fused_layers(struct ad_lstm_backend *b, bool on)
{
    struct cuda_impl *c = impl_of(b);
    if (c == NULL)
        return -1;
    c->dev.fused_layers = on;
    return 0;
}

extern "C" int ad_lstm_cuda_set_gate_bytes(struct ad_lstm_backend *b, size_t bytes)
{
    struct cuda_impl *c = impl_of(b);
    if (c == NULL || bytes == 0)
        return -1;
    c->dev.gate_bytes = bytes;
    return 0;
}
