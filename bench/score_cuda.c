/*
 * Windows per second through the CUDA backend, the scorer's whole call: windows of T = 64
 * steps of F = 8 features in pageable host memory (as the window store hands them on), the
 * first 63 steps run through a one-layer LSTM of H = 64 and the head, outputs back in host
 * memory. Best of N timed forwards after warm-up; also the FLOP/s this amounts to and, from a
 * separate profiled forward, how much of it the copies to and from the device take. Each batch
 * runs both plans of the windowed forward in the same process: the fused layer (one kernel per
 * layer for all steps, the default where W_hh fits in shared memory) and the GEMM and cell
 * kernel per step; their outputs must agree. Then stream mode: a warm-up of B windows into
 * slots, and the best of N steps of all of them (one new input each): stream steps/s.
 *
 * The floors on an H100: at least 100 M stream steps/s, and the fused windowed forward
 * at least 2x torch's cuDNN LSTM (bench/score_cuda_torch.py; scripts/gpu-check bench prints
 * the ratio).
 *
 *   bench_score_cuda [--runs N] [--gate-mib M] [--layers L] [--hidden H] [B ...]
 *
 * B defaults to 1024 16384 131072; --gate-mib sets the most gate pre-activations one chunk
 * keeps on the device (lstm_cuda.h). Exits 77 when there is no CUDA backend.
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu/lstm.h"
#include "gpu/lstm_cuda.h"

#define T 64
#define F 8

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float uniform(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

/* Best of runs forwards after 3 warm-ups, in seconds; 0 on a failure (said on stderr). */
static double time_forward(struct ad_lstm_backend *b, const struct ad_lstm_weights *w,
                           const float *x, size_t B, size_t steps, float *out, int runs)
{
    char err[512];
    double best = 1e30;
    for (int r = 0; r < 3 + runs; r++) {
        double t0 = now_s();
        if (ad_lstm_forward(b, w, x, B, steps, T * F, out, err, sizeof err) != 0) {
            fprintf(stderr, "forward B %zu: %s\n", B, err);
            return 0;
        }
        double dt = now_s() - t0;
        if (r >= 3 && dt < best)
            best = dt;
    }
    return best;
}

/* Stream mode: B windows warmed up over `steps` inputs into slots 0 .. B - 1, then the best of
 * runs steps of all of them (after 3 untimed), in seconds; 0 on a failure. */
static double time_stream(struct ad_lstm_backend *b, const struct ad_lstm_weights *w,
                          const float *x, size_t B, size_t steps, float *out, int runs)
{
    char err[512];
    double best = 0;
    uint32_t *slots = malloc(B * sizeof *slots);
    float *in = malloc(B * F * sizeof *in);
    struct ad_lstm_states *st = ad_lstm_states_new(b, w, err, sizeof err);
    if (slots == NULL || in == NULL || st == NULL ||
        ad_lstm_states_reserve(st, B, err, sizeof err) < 0) {
        fprintf(stderr, "stream B %zu: %s\n", B,
                slots == NULL || in == NULL ? "out of memory" : err);
        goto done;
    }
    for (size_t i = 0; i < B; i++) {
        slots[i] = (uint32_t)i;
        memcpy(in + i * F, x + i * T * F + steps * F, F * sizeof *in); /* the window's last input */
    }
    if (ad_lstm_warm_up_slots(b, w, st, x, B, steps, T * F, slots, out, err, sizeof err) != 0) {
        fprintf(stderr, "warm-up B %zu: %s\n", B, err);
        goto done;
    }
    best = 1e30;
    for (int r = 0; r < 3 + runs; r++) {
        double t0 = now_s();
        if (ad_lstm_step_slots(b, w, st, in, B, F, slots, out, err, sizeof err) != 0) {
            fprintf(stderr, "step B %zu: %s\n", B, err);
            best = 0;
            goto done;
        }
        double dt = now_s() - t0;
        if (r >= 3 && dt < best)
            best = dt;
    }
done:
    ad_lstm_states_destroy(st);
    free(in);
    free(slots);
    return best;
}

static void fill(float *p, size_t n, float scale, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        p[i] = scale * uniform(s);
}

/* The multiply-adds of the network per window, 2 flops each; the pointwise work not counted. */
static double flops_per_window(size_t layers, size_t hidden, size_t steps)
{
    double f = 0;
    size_t in = F;
    for (size_t l = 0; l < layers; l++) {
        f += 2.0 * (double)(in * 4 * hidden + hidden * 4 * hidden) * (double)steps;
        in = hidden;
    }
    return f + 2.0 * (double)(hidden * F);
}

int main(int argc, char **argv)
{
    int runs = 10;
    size_t gate_mib = 0, layers = 1, hidden = 64;
    size_t batches[16] = {1024, 16384, 131072}, n_batches = 3, given = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--gate-mib") == 0 && i + 1 < argc)
            gate_mib = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--layers") == 0 && i + 1 < argc)
            layers = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--hidden") == 0 && i + 1 < argc)
            hidden = strtoull(argv[++i], NULL, 10);
        else if (argv[i][0] != '-' && given < 16)
            batches[given++] = strtoull(argv[i], NULL, 10);
        else {
            fprintf(stderr,
                    "usage: %s [--runs N] [--gate-mib M] [--layers L] [--hidden H] "
                    "[B ...]\n",
                    argv[0]);
            return 2;
        }
    }
    if (given > 0)
        n_batches = given;
    if (runs < 1 || layers < 1 || layers > AD_LSTM_MAX_LAYERS || hidden < 1) {
        fprintf(stderr, "bad --runs, --layers or --hidden\n");
        return 2;
    }

    char err[512];
    struct ad_lstm_backend *b = ad_lstm_backend_cuda_new(0, err, sizeof err);
    if (b == NULL) {
        printf("skipped: %s\n", err);
        return 77;
    }
    if (gate_mib > 0)
        ad_lstm_cuda_set_gate_bytes(b, gate_mib << 20);

    /* One model, PyTorch's initialisation. */
    size_t H = hidden, G = 4 * H, steps = T - 1, total = 0, in = F;
    for (size_t l = 0; l < layers; l++) {
        total += G * in + G * H + G;
        in = H;
    }
    total += F * H + F;
    float *weights = malloc(total * sizeof(float));
    if (weights == NULL)
        return 1;
    uint64_t seed = 1;
    fill(weights, total, 1.0f / sqrtf((float)H), &seed);
    struct ad_lstm_weights w = {.id = 1, .layers = layers, .inputs = F, .hidden = H, .outputs = F};
    float *p = weights;
    in = F;
    for (size_t l = 0; l < layers; l++) {
        w.w_ih[l] = p;
        p += G * in;
        w.w_hh[l] = p;
        p += G * H;
        w.bias[l] = p;
        p += G;
        in = H;
    }
    w.head_w = p;
    w.head_b = p + F * H;

    double fpw = flops_per_window(layers, H, steps);
    printf("backend: %s\n", ad_lstm_backend_description(b));
    printf("network: T %d (%zu steps in), F %d, H %zu, %zu layer(s), %.4f MFLOP/window; best of "
           "%d after 3 warm-ups\n",
           T, steps, F, H, layers, fpw * 1e-6, runs);
    printf("%8s %6s %10s %14s %10s %7s %9s %9s %9s %6s\n", "B", "plan", "best ms", "windows/s",
           "GFLOP/s", "chunks", "h2d ms", "d2h ms", "span ms", "copy%");

    int rc = 0;
    for (size_t bi = 0; bi < n_batches && rc == 0; bi++) {
        size_t B = batches[bi];
        float *x = malloc(B * T * F * sizeof(float));
        float *out = malloc(B * F * sizeof(float));
        if (x == NULL || out == NULL) {
            fprintf(stderr, "out of memory for B %zu\n", B);
            free(x);
            free(out);
            rc = 1;
            break;
        }
        fill(x, B * T * F, 2.0f, &seed);
        double speed[2] = {0, 0};
        float *first = malloc(B * F * sizeof(float));
        if (first == NULL) {
            rc = 1;
            free(x);
            free(out);
            break;
        }
        /* The fused layer first (the backend's default), then the GEMM per step. */
        for (int plan = 0; plan < 2 && rc == 0; plan++) {
            ad_lstm_cuda_set_fused_layers(b, plan == 0);
            double best = time_forward(b, &w, x, B, steps, out, runs);
            if (best == 0) {
                rc = 1;
                break;
            }
            /* One more forward, profiled, for the share of the copies. */
            struct ad_lstm_cuda_stats s;
            memset(&s, 0, sizeof s);
            ad_lstm_cuda_set_profiling(b, true);
            if (ad_lstm_forward(b, &w, x, B, steps, T * F, out, err, sizeof err) != 0) {
                fprintf(stderr, "forward B %zu: %s\n", B, err);
                rc = 1;
            }
            ad_lstm_cuda_set_profiling(b, false);
            ad_lstm_cuda_last_stats(b, &s);
            for (size_t i = 0; i < B * F && rc == 0; i++) {
                /* NaN fails both comparisons; the plans agree as the tests require. */
                float d = plan == 0 ? 0.0f : fabsf(out[i] - first[i]);
                if (!(out[i] == out[i]) || !(d <= 1e-4f * fmaxf(1.0f, fabsf(first[i])))) {
                    fprintf(stderr, "B %zu: output %zu is %g (fused %g)\n", B, i, out[i], first[i]);
                    rc = 1;
                }
            }
            if (plan == 0)
                memcpy(first, out, B * F * sizeof(float));
            speed[plan] = (double)B / best;
            if (rc == 0)
                printf("%8zu %6s %10.3f %14.0f %10.1f %7zu %9.3f %9.3f %9.3f %5.1f%%\n", B,
                       s.layer_fused > 0 ? "fused" : "gemm", best * 1e3, (double)B / best,
                       fpw * (double)B / best * 1e-9, s.chunks, s.h2d_ms, s.d2h_ms, s.span_ms,
                       s.span_ms > 0 ? 100.0 * (s.h2d_ms + s.d2h_ms) / s.span_ms : 0.0);
        }
        ad_lstm_cuda_set_fused_layers(b, true);
        if (rc == 0)
            printf("%8zu %6s fused / gemm: %.2fx\n", B, "ratio", speed[0] / speed[1]);
        if (rc == 0) {
            double best = time_stream(b, &w, x, B, steps, out, runs);
            if (best == 0)
                rc = 1;
            else
                printf("%8zu %6s %10.3f %14.0f stream steps/s (floor 100 M)\n", B, "stream",
                       best * 1e3, (double)B / best);
        }
        free(first);
        free(x);
        free(out);
    }
    printf("copy%%: share of the profiled forward's device span spent in copies; the span\n"
           "runs from its first queued operation to its last, host packing gaps included.\n");
    ad_lstm_backend_destroy(b);
    free(weights);
    return rc;
}
