/* The LSTM tests' reference forward and random models (lstm_ref.h). */

#include "lstm_ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float lstm_ref_uniform(uint64_t *state)
{
    /* splitmix64: good enough, and the same everywhere. */
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

void lstm_ref_fill(float *p, size_t n, float scale, uint64_t *state)
{
    for (size_t i = 0; i < n; i++)
        p[i] = scale * lstm_ref_uniform(state);
}

void lstm_ref_model_init(struct lstm_ref_model *m, uint64_t id, size_t layers, size_t inputs,
                         size_t hidden, size_t outputs, float scale, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    size_t G = 4 * hidden, total = 0, in = inputs;
    for (size_t l = 0; l < layers; l++) {
        total += G * in + G * hidden + G;
        in = hidden;
    }
    total += outputs * hidden + outputs;
    m->store = malloc(total * sizeof(float));
    if (m->store == NULL)
        abort();
    float k = scale / sqrtf((float)hidden);
    lstm_ref_fill(m->store, total, k, &seed);

    struct ad_lstm_weights *w = &m->w;
    w->id = id;
    w->layers = layers;
    w->inputs = inputs;
    w->hidden = hidden;
    w->outputs = outputs;
    float *p = m->store;
    in = inputs;
    for (size_t l = 0; l < layers; l++) {
        w->w_ih[l] = p;
        p += G * in;
        w->w_hh[l] = p;
        p += G * hidden;
        w->bias[l] = p;
        p += G;
        in = hidden;
    }
    w->head_w = p;
    p += outputs * hidden;
    w->head_b = p;
}

void lstm_ref_model_free(struct lstm_ref_model *m)
{
    free(m->store);
    m->store = NULL;
}

static double sigmoid(double v)
{
    return 1.0 / (1.0 + exp(-v));
}

void lstm_ref_window(const struct ad_lstm_weights *w, const float *x, size_t steps, double *out)
{
    size_t L = w->layers, F = w->inputs, H = w->hidden, O = w->outputs;
    double *h = calloc(L * H, sizeof *h);
    double *c = calloc(L * H, sizeof *c);
    double *in = calloc(F > H ? F : H, sizeof *in);
    double *gate = calloc(4 * H, sizeof *gate);
    if (h == NULL || c == NULL || in == NULL || gate == NULL)
        abort();
    for (size_t t = 0; t < steps; t++) {
        size_t in_dim = F;
        for (size_t f = 0; f < F; f++)
            in[f] = x[t * F + f];
        for (size_t l = 0; l < L; l++) {
            double *hl = h + l * H, *cl = c + l * H;
            /* All gates from h_{t-1} before h changes. */
            for (size_t r = 0; r < 4 * H; r++) {
                double acc = w->bias[l][r];
                for (size_t k = 0; k < in_dim; k++)
                    acc += (double)w->w_ih[l][r * in_dim + k] * in[k];
                for (size_t k = 0; k < H; k++)
                    acc += (double)w->w_hh[l][r * H + k] * hl[k];
                gate[r] = acc;
            }
            for (size_t j = 0; j < H; j++) {
                double i = sigmoid(gate[j]), f = sigmoid(gate[H + j]);
                double g = tanh(gate[2 * H + j]), o = sigmoid(gate[3 * H + j]);
                cl[j] = f * cl[j] + i * g;
                hl[j] = o * tanh(cl[j]);
            }
            for (size_t j = 0; j < H; j++)
                in[j] = hl[j];
            in_dim = H;
        }
    }
    const double *top = h + (L - 1) * H;
    for (size_t o = 0; o < O; o++) {
        double acc = w->head_b[o];
        for (size_t k = 0; k < H; k++)
            acc += (double)w->head_w[o * H + k] * top[k];
        out[o] = acc;
    }
    free(h);
    free(c);
    free(in);
    free(gate);
}

int lstm_ref_check(const struct ad_lstm_weights *w, const float *x, size_t batch, size_t steps,
                   size_t x_stride, const float *got, const size_t *rows, size_t n_rows, double tol,
                   char *why, size_t why_size)
{
    size_t O = w->outputs;
    double *want = malloc(O * sizeof *want);
    if (want == NULL)
        abort();
    int rc = 0;
    size_t n = rows != NULL ? n_rows : batch;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t b = rows != NULL ? rows[i] : i;
        lstm_ref_window(w, x + b * x_stride, steps, want);
        for (size_t o = 0; o < O; o++) {
            double g = got[b * O + o];
            double lim = tol * (fabs(want[o]) > 1.0 ? fabs(want[o]) : 1.0);
            /* Written so that a NaN fails. */
            if (!(fabs(g - want[o]) <= lim)) {
                snprintf(why, why_size, "window %zu output %zu: got %.9g, want %.9g", b, o, g,
                         want[o]);
                rc = -1;
                break;
            }
        }
    }
    free(want);
    return rc;
}
