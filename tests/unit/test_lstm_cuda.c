/*
 * The CUDA LSTM backend. Without arguments (the `unit` test) it checks what holds on any
 * machine: without a device or a CUDA build, ad_lstm_backend_cuda_new fails and says why.
 * With --require-device (the `gpu` test) it skips with status 77 when no backend can be made,
 * and otherwise compares the backend with the plain reference forward (tests/unit/lstm_ref.c)
 * on random models: |got - want| <= 1e-4 * max(1, |want|), every output written; and its stream
 * mode (states by slot on the device) with the reference and with its own windowed forward.
 */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gpu/device.h"
#include "gpu/lstm.h"
#include "gpu/lstm_backend.h"
#include "gpu/lstm_cuda.h"
#include "lstm_ref.h"

#define TOL 1e-4

/* Windows of a large batch compared with the reference (it is slow): first, last, random. */
#define SAMPLED 64

static struct ad_lstm_backend *backend; /* the gpu group's */

/* Anywhere. */

static void test_destroy_null(void **state)
{
    (void)state;
    ad_lstm_backend_destroy(NULL);
}

static void test_new_says_why(void **state)
{
    (void)state;
    struct ad_gpu_info info;
    ad_gpu_probe(0, &info);
    char err[256] = "";
    struct ad_lstm_backend *b = ad_lstm_backend_cuda_new(0, err, sizeof err);
    if (info.device_count == 0) {
        assert_null(b);
        printf("ad_lstm_backend_cuda_new: %s\n", err);
        if (!info.built_with_cuda) {
            assert_non_null(strstr(err, "built without CUDA"));
        } else {
            /* The driver's reason, as the probe gives it (error 35 on a machine with none). */
            assert_non_null(strstr(err, "no usable CUDA device"));
            assert_non_null(strstr(err, "cuda"));
        }
        return;
    }
    assert_non_null(b);
    assert_string_equal(ad_lstm_backend_kind(b), "cuda");
    const char *d = ad_lstm_backend_description(b);
    assert_non_null(strstr(d, info.name));
    assert_non_null(strstr(d, "(device 0, compute "));
    assert_non_null(strstr(d, "CUDA runtime "));
    ad_lstm_backend_destroy(b);
}

static void test_bad_ordinal(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(ad_lstm_backend_cuda_new(-1, err, sizeof err));
    assert_true(strlen(err) > 0);
    err[0] = '\0';
    assert_null(ad_lstm_backend_cuda_new(1000, err, sizeof err));
    assert_true(strlen(err) > 0);
    /* A NULL or empty err buffer is allowed. */
    assert_null(ad_lstm_backend_cuda_new(1000, NULL, 0));
}

static int fake_forward(void *impl, const struct ad_lstm_weights *w, const float *x, size_t batch,
                        size_t steps, size_t x_stride, float *out, char *errstr, size_t errstr_size)
{
    (void)impl, (void)w, (void)x, (void)batch, (void)steps, (void)x_stride, (void)out;
    (void)errstr, (void)errstr_size;
    return 0;
}

static void fake_destroy(void *impl)
{
    free(impl);
}

/* The CUDA knobs refuse other backends; the dispatch reaches a backend's ops. */
static void test_hooks_and_dispatch(void **state)
{
    (void)state;
    static const struct ad_lstm_backend_ops ops = {
        .kind = "fake", .forward = fake_forward, .destroy = fake_destroy};
    struct ad_lstm_backend *b = calloc(1, sizeof *b);
    assert_non_null(b);
    b->ops = &ops;
    b->impl = malloc(16);
    snprintf(b->description, sizeof b->description, "a fake");
    assert_string_equal(ad_lstm_backend_kind(b), "fake");
    assert_string_equal(ad_lstm_backend_description(b), "a fake");
    assert_int_equal(ad_lstm_forward(b, NULL, NULL, 0, 1, 1, NULL, NULL, 0), 0);
    /* A backend without a stream mode says so rather than running something else. */
    char err[128];
    assert_int_equal(ad_lstm_step(b, NULL, NULL, 0, 1, NULL, NULL, err, sizeof err), -1);
    assert_string_equal(err, "the fake backend has no stream mode");
    assert_int_equal(ad_lstm_warm_up(b, NULL, NULL, 0, 1, 1, NULL, NULL, err, sizeof err), -1);
    /* Nor a table of states by slot. */
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 1, 1, 2, 4, 2, 1.0f, 1);
    assert_null(ad_lstm_states_new(b, &m.w, err, sizeof err));
    assert_string_equal(err, "the fake backend has no stream mode");
    lstm_ref_model_free(&m);
    struct ad_lstm_cuda_stats s;
    assert_int_equal(ad_lstm_cuda_set_profiling(b, true), -1);
    assert_int_equal(ad_lstm_cuda_last_stats(b, &s), -1);
    assert_int_equal(ad_lstm_cuda_set_gate_bytes(b, 1), -1);
    assert_int_equal(ad_lstm_cuda_set_profiling(NULL, true), -1);
    ad_lstm_backend_destroy(b); /* frees impl through the ops, then b: ASan checks */
}

/* On a device. */

static float *make_input(size_t batch, size_t steps, size_t F, size_t x_stride, uint64_t seed)
{
    float *x = malloc(batch * x_stride * sizeof *x);
    assert_non_null(x);
    memset(x, 0xFF, batch * x_stride * sizeof *x); /* NaN padding: reading it shows */
    for (size_t b = 0; b < batch; b++)
        lstm_ref_fill(x + b * x_stride, steps * F, 2.0f, &seed);
    return x;
}

/* Runs the backend on the batch and checks every output written and the sampled ones right. */
static void check(struct ad_lstm_backend *b, const struct ad_lstm_weights *w, const float *x,
                  size_t batch, size_t steps, size_t x_stride, uint64_t seed)
{
    size_t O = w->outputs;
    float *out = malloc(batch * O * sizeof *out);
    assert_non_null(out);
    memset(out, 0xFF, batch * O * sizeof *out);
    char err[512] = "";
    if (ad_lstm_forward(b, w, x, batch, steps, x_stride, out, err, sizeof err) != 0)
        fail_msg("forward: %s", err);
    for (size_t i = 0; i < batch * O; i++) {
        if (!isfinite(out[i]))
            fail_msg("output %zu of window %zu not written (%g)", i % O, i / O, out[i]);
    }
    size_t rows[SAMPLED], n = 0;
    if (batch > SAMPLED) {
        rows[n++] = 0;
        rows[n++] = batch - 1;
        while (n < SAMPLED)
            rows[n++] = (size_t)((lstm_ref_uniform(&seed) + 1.0f) * 0.5f * (float)batch) % batch;
    }
    char why[256];
    if (lstm_ref_check(w, x, batch, steps, x_stride, out, n ? rows : NULL, n, TOL, why,
                       sizeof why) != 0)
        fail_msg("L %zu F %zu H %zu steps %zu batch %zu x_stride %zu: %s", w->layers, w->inputs,
                 w->hidden, steps, batch, x_stride, why);
    free(out);
}

static void test_gpu_parity(void **state)
{
    (void)state;
    static const size_t layers[] = {1, 2}, hidden[] = {16, 64, 128}, feats[] = {1, 8},
                        stepss[] = {1, 64}, batches[] = {1, 7, 1000};
    uint64_t id = 1, seed = 1;
    for (size_t li = 0; li < 2; li++)
        for (size_t hi = 0; hi < 3; hi++)
            for (size_t fi = 0; fi < 2; fi++)
                for (size_t si = 0; si < 2; si++)
                    for (size_t bi = 0; bi < 3; bi++) {
                        size_t L = layers[li], H = hidden[hi], F = feats[fi], S = stepss[si];
                        size_t B = batches[bi];
                        struct lstm_ref_model m;
                        lstm_ref_model_init(&m, ++id, L, F, H, F, 1.0f, ++seed);
                        /* Tight windows, and windows one step longer plus odd padding. */
                        size_t stride = (bi + si) % 2 ? S * F : (S + 1) * F + 3;
                        float *x = make_input(B, S, F, stride, ++seed);
                        check(backend, &m.w, x, B, S, stride, seed);
                        free(x);
                        lstm_ref_model_free(&m);
                    }
}

/* Large weights and inputs: saturated gates, expf overflowing to infinity. */
static void test_gpu_saturation(void **state)
{
    (void)state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 500, 2, 8, 64, 8, 6.0f, 99);
    float *x = make_input(300, 20, 8, 160, 5);
    for (size_t i = 0; i < 300 * 160; i++)
        x[i] *= 20.0f;
    check(backend, &m.w, x, 300, 20, 160, 3);
    free(x);
    lstm_ref_model_free(&m);
}

/* A batch in several chunks, the last one short. */
static void test_gpu_chunks(void **state)
{
    (void)state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 600, 2, 8, 64, 8, 1.0f, 4);
    size_t S = 63, stride = 64 * 8;
    float *x = make_input(1000, S, 8, stride, 6);
    assert_int_equal(ad_lstm_cuda_set_gate_bytes(backend, 150 * S * 4 * 64 * sizeof(float)), 0);
    check(backend, &m.w, x, 1000, S, stride, 7);
    struct ad_lstm_cuda_stats s;
    assert_int_equal(ad_lstm_cuda_last_stats(backend, &s), 0);
    assert_int_equal(s.chunks, 7); /* 1000 windows, at most 150 a chunk: 7 of 143 */
    assert_int_equal(ad_lstm_cuda_set_gate_bytes(backend, (size_t)1 << 30), 0);
    check(backend, &m.w, x, 1000, S, stride, 7);
    assert_int_equal(ad_lstm_cuda_last_stats(backend, &s), 0);
    assert_int_equal(s.chunks, 1);
    free(x);
    lstm_ref_model_free(&m);
}

struct model_case {
    struct lstm_ref_model m;
    float *x;
};

/* Two models alternating, then more models than the cache holds: always the right weights. */
static void test_gpu_weights_cache(void **state)
{
    (void)state;
    enum { N = 6, B = 50, S = 12 };
    struct model_case mc[N];
    for (size_t i = 0; i < N; i++) {
        lstm_ref_model_init(&mc[i].m, 700 + i, 1 + i % 2, 4, 16 + 16 * i, 4, 1.0f, 10 + i);
        mc[i].x = make_input(B, S, 4, S * 4, 20 + i);
    }
    struct ad_lstm_cuda_stats s;
    assert_int_equal(ad_lstm_cuda_last_stats(backend, &s), 0);
    uint64_t before = s.model_uploads;
    for (int r = 0; r < 6; r++)
        check(backend, &mc[r % 2].m.w, mc[r % 2].x, B, S, S * 4, r);
    assert_int_equal(ad_lstm_cuda_last_stats(backend, &s), 0);
    assert_int_equal(s.model_uploads - before, 2);
    for (int r = 0; r < 3 * N; r++)
        check(backend, &mc[r * 5 % N].m.w, mc[r * 5 % N].x, B, S, S * 4, r);
    for (size_t i = 0; i < N; i++) {
        free(mc[i].x);
        lstm_ref_model_free(&mc[i].m);
    }
}

/* Small, large, small: the buffers grow and the small batch after the large one is right. */
static void test_gpu_buffers_grow(void **state)
{
    (void)state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 800, 2, 8, 32, 8, 1.0f, 8);
    size_t S = 30, stride = S * 8;
    float *x = make_input(5000, S, 8, stride, 9);
    static const size_t batches[] = {3, 5000, 3, 1200, 1};
    for (size_t i = 0; i < 5; i++)
        check(backend, &m.w, x, batches[i], S, stride, i);
    free(x);
    lstm_ref_model_free(&m);
}

/* Bad arguments fail the call but leave the backend usable. */
static void test_gpu_invalid_arguments(void **state)
{
    (void)state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 900, 1, 8, 16, 8, 1.0f, 8);
    float *x = make_input(4, 5, 8, 40, 1);
    float out[32];
    char err[256] = "";
    assert_int_equal(ad_lstm_forward(backend, &m.w, x, 4, 5, 39, out, err, sizeof err), -1);
    assert_non_null(strstr(err, "x_stride"));
    check(backend, &m.w, x, 4, 5, 40, 1);
    free(x);
    lstm_ref_model_free(&m);
}

/* Destroyed and made again, with models cached in the one destroyed. */
static void test_gpu_recreate(void **state)
{
    (void)state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 1000, 2, 8, 64, 8, 1.0f, 12);
    float *x = make_input(257, 16, 8, 128, 13);
    for (int r = 0; r < 3; r++) {
        char err[256] = "";
        struct ad_lstm_backend *b = ad_lstm_backend_cuda_new(0, err, sizeof err);
        if (b == NULL)
            fail_msg("ad_lstm_backend_cuda_new: %s", err);
        check(b, &m.w, x, 257, 16, 128, r);
        check(b, &m.w, x, 100, 16, 128, r);
        ad_lstm_backend_destroy(b);
    }
    free(x);
    lstm_ref_model_free(&m);
}

/* Profiling counts the copies a forward must make, and times them. */
static void test_gpu_profiling(void **state)
{
    (void)state;
    struct lstm_ref_model m;
    lstm_ref_model_init(&m, 1100, 1, 8, 64, 8, 1.0f, 14);
    size_t B = 4096, S = 63, stride = 64 * 8;
    float *x = make_input(B, S, 8, stride, 15);
    assert_int_equal(ad_lstm_cuda_set_profiling(backend, true), 0);
    check(backend, &m.w, x, B, S, stride, 1); /* uploads the weights */
    check(backend, &m.w, x, B, S, stride, 2);
    struct ad_lstm_cuda_stats s;
    assert_int_equal(ad_lstm_cuda_last_stats(backend, &s), 0);
    assert_int_equal(s.h2d_bytes, B * S * 8 * sizeof(float)); /* packed: no padding moved */
    assert_int_equal(s.d2h_bytes, B * 8 * sizeof(float));
    assert_true(s.h2d_ms > 0 && s.d2h_ms > 0);
    assert_true(s.span_ms + 0.01 >= s.h2d_ms + s.d2h_ms); /* event resolution: ~0.5 us */
    printf("B %zu: h2d %.3f ms, d2h %.3f ms, span %.3f ms\n", B, s.h2d_ms, s.d2h_ms, s.span_ms);
    assert_int_equal(ad_lstm_cuda_set_profiling(backend, false), 0);
    free(x);
    lstm_ref_model_free(&m);
}

/*
 * Stream mode with the states on the device: a warm-up into scattered slots, then steps, each
 * output against the reference over every input so far (1e-4) and against the backend's own
 * windowed forward (1e-5); the table grows half-way and keeps its states; a step moves only its
 * inputs and slots up and its outputs down.
 */
static void test_gpu_stream(void **state)
{
    (void)state;
    static const size_t layers[] = {1, 2}, hidden[] = {16, 64, 128}, batches[] = {1, 7, 1000};
    const size_t F = 8, T = 20, K = 5;
    uint64_t id = 1500, seed = 40;
    for (size_t li = 0; li < 2; li++)
        for (size_t hi = 0; hi < 3; hi++)
            for (size_t bi = 0; bi < 3; bi++) {
                size_t L = layers[li], H = hidden[hi], B = batches[bi];
                struct lstm_ref_model m;
                lstm_ref_model_init(&m, ++id, L, F, H, F, 1.0f, ++seed);
                size_t stride = (T + K) * F + 3;
                float *x = make_input(B, T + K, F, stride, ++seed);
                float *out = malloc(B * F * sizeof *out), *win = malloc(B * F * sizeof *win);
                uint32_t *slots = malloc(B * sizeof *slots);
                assert_non_null(out);
                assert_non_null(win);
                assert_non_null(slots);
                /* Distinct and scattered: b * 7919 mod a prime above 3B. */
                size_t prime = 3 * B + 2;
                for (bool composite = true; composite; prime++) {
                    composite = false;
                    for (size_t q = 2; q * q <= prime; q++)
                        composite |= prime % q == 0;
                }
                prime--;
                for (size_t b = 0; b < B; b++)
                    slots[b] = (uint32_t)((b * 7919 + 3) % prime);
                char err[512] = "";
                struct ad_lstm_states *st = ad_lstm_states_new(backend, &m.w, err, sizeof err);
                if (st == NULL)
                    fail_msg("states: %s", err);
                if (ad_lstm_states_reserve(st, prime, err, sizeof err) < 0)
                    fail_msg("reserve: %s", err);
                for (size_t k = 0; k <= K; k++) {
                    size_t n = T + k;
                    memset(out, 0xFF, B * F * sizeof *out);
                    int rc = k == 0 ? ad_lstm_warm_up_slots(backend, &m.w, st, x, B, T, stride,
                                                            slots, out, err, sizeof err)
                                    : ad_lstm_step_slots(backend, &m.w, st, x + (n - 1) * F, B,
                                                         stride, slots, out, err, sizeof err);
                    if (rc < 0)
                        fail_msg("L %zu H %zu B %zu after %zu: %s", L, H, B, n, err);
                    struct ad_lstm_cuda_stats s;
                    assert_int_equal(ad_lstm_cuda_last_stats(backend, &s), 0);
                    if (k > 0) {
                        assert_int_equal(s.h2d_bytes, B * (F * sizeof(float) + sizeof(uint32_t)));
                        assert_int_equal(s.d2h_bytes, B * F * sizeof(float));
                    }
                    size_t rows[SAMPLED], nr = 0;
                    if (B > SAMPLED) {
                        rows[nr++] = 0;
                        rows[nr++] = B - 1;
                        while (nr < SAMPLED)
                            rows[nr++] =
                                (size_t)((lstm_ref_uniform(&seed) + 1.0f) * 0.5f * (float)B) % B;
                    }
                    char why[256];
                    if (lstm_ref_check(&m.w, x, B, n, stride, out, nr ? rows : NULL, nr, TOL, why,
                                       sizeof why) != 0)
                        fail_msg("L %zu H %zu B %zu after %zu inputs: %s", L, H, B, n, why);
                    if (ad_lstm_forward(backend, &m.w, x, B, n, stride, win, err, sizeof err) < 0)
                        fail_msg("forward: %s", err);
                    for (size_t i = 0; i < B * F; i++) {
                        if (!(fabs(out[i] - win[i]) <= 1e-5 * fmax(1.0, fabs(win[i]))))
                            fail_msg("L %zu H %zu B %zu after %zu: output %zu: %.9g, window %.9g",
                                     L, H, B, n, i, out[i], win[i]);
                    }
                    if (k == 2 && ad_lstm_states_reserve(st, 5 * prime, err, sizeof err) < 0)
                        fail_msg("reserve: %s", err);
                }
                assert_true(ad_lstm_states_bytes(st) >= 5 * prime * 2 * L * H * sizeof(float));
                ad_lstm_states_destroy(st);
                free(slots);
                free(out);
                free(win);
                free(x);
                lstm_ref_model_free(&m);
            }
}

/*
 * The fused layer against the GEMM per step on the same backend: forward and warm-up (its
 * states seen through one step after it) agree to 1e-5 on every output, the forward with the
 * reference to 1e-4 (sampled); the fused layer ran wherever W_hh fits (H 16, 64), not at 128.
 */
static void test_gpu_fused_layers(void **state)
{
    (void)state;
    static const size_t layers[] = {1, 2, 3}, hidden[] = {16, 64, 128}, stepss[] = {1, 2, 63},
                        batches[] = {1, 37, 1000};
    const size_t F = 8;
    uint64_t id = 2500, seed = 80;
    for (size_t li = 0; li < 3; li++)
        for (size_t hi = 0; hi < 3; hi++)
            for (size_t si = 0; si < 3; si++)
                for (size_t bi = 0; bi < 3; bi++) {
                    size_t L = layers[li], H = hidden[hi], S = stepss[si], B = batches[bi];
                    struct lstm_ref_model m;
                    lstm_ref_model_init(&m, ++id, L, F, H, F, 1.0f, ++seed);
                    size_t stride = (S + 1) * F + (bi % 2 ? 0 : 3);
                    float *x = make_input(B, S + 1, F, stride, ++seed);
                    float *out[2][2]; /* [plan: fused, gemm][forward, step after a warm-up] */
                    uint32_t *slots = malloc(B * sizeof *slots);
                    assert_non_null(slots);
                    for (size_t b = 0; b < B; b++)
                        slots[b] = (uint32_t)(B - 1 - b);
                    char err[512] = "";
                    for (int plan = 0; plan < 2; plan++) {
                        assert_int_equal(ad_lstm_cuda_set_fused_layers(backend, plan == 0), 0);
                        check(backend, &m.w, x, B, S, stride, seed);
                        for (int k = 0; k < 2; k++) {
                            out[plan][k] = malloc(B * F * sizeof(float));
                            assert_non_null(out[plan][k]);
                        }
                        if (ad_lstm_forward(backend, &m.w, x, B, S, stride, out[plan][0], err,
                                            sizeof err) != 0)
                            fail_msg("forward: %s", err);
                        struct ad_lstm_cuda_stats s;
                        assert_int_equal(ad_lstm_cuda_last_stats(backend, &s), 0);
                        assert_int_equal(s.layer_fused, plan == 0 && H <= 64 ? L * s.chunks : 0);
                        struct ad_lstm_states *st =
                            ad_lstm_states_new(backend, &m.w, err, sizeof err);
                        if (st == NULL || ad_lstm_states_reserve(st, B, err, sizeof err) < 0 ||
                            ad_lstm_warm_up_slots(backend, &m.w, st, x, B, S, stride, slots,
                                                  out[plan][1], err, sizeof err) != 0 ||
                            ad_lstm_step_slots(backend, &m.w, st, x + S * F, B, stride, slots,
                                               out[plan][1], err, sizeof err) != 0)
                            fail_msg("L %zu H %zu S %zu B %zu stream: %s", L, H, S, B, err);
                        ad_lstm_states_destroy(st);
                    }
                    for (int k = 0; k < 2; k++)
                        for (size_t i = 0; i < B * F; i++)
                            if (!(fabs(out[0][k][i] - out[1][k][i]) <=
                                  1e-5 * fmax(1.0, fabs(out[1][k][i]))))
                                fail_msg("L %zu H %zu S %zu B %zu %s: output %zu: fused %.9g, "
                                         "gemm %.9g",
                                         L, H, S, B, k ? "step" : "forward", i, out[0][k][i],
                                         out[1][k][i]);
                    for (int plan = 0; plan < 2; plan++)
                        for (int k = 0; k < 2; k++)
                            free(out[plan][k]);
                    free(slots);
                    free(x);
                    lstm_ref_model_free(&m);
                }
    ad_lstm_cuda_set_fused_layers(backend, true);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest anywhere[] = {
        cmocka_unit_test(test_destroy_null),
        cmocka_unit_test(test_new_says_why),
        cmocka_unit_test(test_bad_ordinal),
        cmocka_unit_test(test_hooks_and_dispatch),
    };
    if (argc < 2 || strcmp(argv[1], "--require-device") != 0)
        return cmocka_run_group_tests(anywhere, NULL, NULL);

    char err[256] = "";
    backend = ad_lstm_backend_cuda_new(0, err, sizeof err);
    if (backend == NULL) {
        printf("skipped: no CUDA backend: %s\n", err);
        return 77;
    }
    printf("backend: %s\n", ad_lstm_backend_description(backend));
    const struct CMUnitTest on_device[] = {
        cmocka_unit_test(test_gpu_parity),       cmocka_unit_test(test_gpu_saturation),
        cmocka_unit_test(test_gpu_chunks),       cmocka_unit_test(test_gpu_weights_cache),
        cmocka_unit_test(test_gpu_buffers_grow), cmocka_unit_test(test_gpu_invalid_arguments),
        cmocka_unit_test(test_gpu_recreate),     cmocka_unit_test(test_gpu_profiling),
        cmocka_unit_test(test_gpu_stream),       cmocka_unit_test(test_gpu_fused_layers),
    };
    int failed = cmocka_run_group_tests(anywhere, NULL, NULL);
    failed += cmocka_run_group_tests(on_device, NULL, NULL);
    ad_lstm_backend_destroy(backend);
    return failed;
}
