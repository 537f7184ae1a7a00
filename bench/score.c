/*
 * CPU scoring throughput: windows per second of the CPU backend's forward pass for the
 * benchmark's network (T = 64 windows, so 63 steps, F = 8, H = 64, one layer), random weights
 * and inputs, best of several runs; and stream mode's step (one new input per window from a
 * kept state, after a warm-up, the states in a table by slot as serving keeps them), the cost
 * of scoring a window in that mode. bench/score.py runs
 * it beside torch.nn.LSTM and prints the ratios.
 *
 *     bench_score THREADS BATCH [BATCH ...]     prints one JSON object per batch size
 */

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "gpu/lstm.h"

#define STEPS  63
#define F      8
#define H      64
#define LAYERS 1

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float *random_floats(size_t n, float scale, unsigned *seed)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = scale * ((float)rand_r(seed) / (float)RAND_MAX * 2.0f - 1.0f);
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_score THREADS BATCH [BATCH ...]\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    unsigned seed = 7;
    char err[256];
    struct ad_lstm_weights w = {.id = 1, .layers = LAYERS, .inputs = F, .hidden = H, .outputs = F};
    w.w_ih[0] = random_floats(4 * H * F, 0.3f, &seed);
    w.w_hh[0] = random_floats(4 * H * H, 0.15f, &seed);
    w.bias[0] = random_floats(4 * H, 0.1f, &seed);
    w.head_w = random_floats(F * H, 0.2f, &seed);
    w.head_b = random_floats(F, 0.1f, &seed);
    struct ad_lstm_backend *b = ad_lstm_backend_cpu_new(threads, err, sizeof err);
    if (!b) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    /* flops per window: input projection, recurrence, head (multiply-adds count as 2) */
    double flops = 2.0 * (F * 4 * H + H * 4 * H) * STEPS + 2.0 * H * F;
    for (int a = 2; a < argc; a++) {
        size_t batch = strtoul(argv[a], NULL, 10);
        float *x = random_floats(batch * STEPS * F, 1.0f, &seed);
        float *out = malloc(batch * F * sizeof *out);
        /* The states as serving keeps them: a table by slot, the batch's slots spread over
         * twice its size (every other slot), as entities of a store are. */
        struct ad_lstm_states *states = ad_lstm_states_new(b, &w, err, sizeof err);
        uint32_t *slots = malloc(batch * sizeof *slots);
        if (!states || !slots || ad_lstm_states_reserve(states, 2 * batch, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        for (size_t i = 0; i < batch; i++)
            slots[i] = (uint32_t)(2 * (batch - 1 - i));
        double best = 1e30, best_step = 1e30;
        /* Enough repetitions for about a second of work, at least three. */
        int runs = 0;
        double total = 0;
        while (runs < 3 || (total < 1.0 && runs < 50)) {
            double t0 = seconds();
            if (ad_lstm_forward(b, &w, x, batch, STEPS, STEPS * F, out, err, sizeof err) < 0) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
            double t = seconds() - t0;
            total += t;
            best = t < best ? t : best;
            runs++;
        }
        /* Stream mode as served: warmed up once over the window, then a step per bucket (the
         * window's newest input stands in for the next bucket's), states by slot. */
        if (ad_lstm_warm_up_slots(b, &w, states, x, batch, STEPS, STEPS * F, slots, out, err,
                                  sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        for (runs = 0, total = 0; runs < 3 || (total < 1.0 && runs < 2000); runs++) {
            double t0 = seconds();
            if (ad_lstm_step_slots(b, &w, states, x + (STEPS - 1) * F, batch, STEPS * F, slots, out,
                                   err, sizeof err) < 0) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
            double t = seconds() - t0;
            total += t;
            best_step = t < best_step ? t : best_step;
        }
        printf("{\"batch\": %zu, \"threads\": %d, \"seconds\": %.6f, \"windows_per_second\": "
               "%.1f, \"gflops\": %.2f, \"step_seconds\": %.6f, \"steps_per_second\": %.1f, "
               "\"backend\": \"%s\"}\n",
               batch, threads, best, (double)batch / best, flops * (double)batch / best / 1e9,
               best_step, (double)batch / best_step, ad_lstm_backend_description(b));
        fflush(stdout);
        free(x);
        free(out);
        ad_lstm_states_destroy(states);
        free(slots);
    }
    ad_lstm_backend_destroy(b);
    return 0;
}
