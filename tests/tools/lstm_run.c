/*
 * Runs a backend's forward pass on weights from a safetensors file (the tensor names of
 * docs/models.md; layers and sizes come from the shapes) and float32 inputs, for the parity
 * tests that compare it with torch.nn.LSTM:
 *
 *     lstm-run [--cuda] WEIGHTS.safetensors INPUT.f32 BATCH STEPS OUTPUT.f32
 *
 * INPUT.f32 holds BATCH × STEPS × F little-endian floats; OUTPUT.f32 gets BATCH × F.
 * Exits 77 with --cuda when no CUDA device is usable.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/lstm.h"
#include "gpu/safetensors.h"

static void *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    void *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static float *tensor(const struct ad_safetensors *st, const char *name)
{
    const struct ad_tensor *t = ad_safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "lstm-run: no tensor %s\n", name);
        exit(1);
    }
    float *out = malloc(t->elements * sizeof *out);
    ad_safetensors_read(st, t, out);
    return out;
}

int main(int argc, char **argv)
{
    int cuda = argc > 1 && strcmp(argv[1], "--cuda") == 0;
    if (argc != 6 + cuda) {
        fprintf(stderr, "usage: lstm-run [--cuda] WEIGHTS INPUT.f32 BATCH STEPS OUTPUT.f32\n");
        return 2;
    }
    argv += cuda;
    size_t len, in_len;
    char err[512], name[64];
    /* First, so that a machine without a device skips before anything is allocated. */
    struct ad_lstm_backend *b = cuda ? ad_lstm_backend_cuda_new(0, err, sizeof err)
                                     : ad_lstm_backend_cpu_new(1, err, sizeof err);
    if (!b) {
        fprintf(stderr, "lstm-run: %s\n", err);
        return cuda ? 77 : 1;
    }
    uint8_t *buf = read_all(argv[1], &len);
    struct ad_safetensors st;
    if (!buf || ad_safetensors_parse(buf, len, &st, err, sizeof err) < 0) {
        fprintf(stderr, "lstm-run: %s: %s\n", argv[1], buf ? err : "cannot read");
        return 1;
    }
    struct ad_lstm_weights w = {.id = 1};
    const struct ad_tensor *ih0 = ad_safetensors_find(&st, "lstm.weight_ih_l0");
    if (!ih0) {
        fprintf(stderr, "lstm-run: no lstm.weight_ih_l0\n");
        return 1;
    }
    w.hidden = ih0->shape[0] / 4;
    w.inputs = ih0->shape[1];
    w.outputs = ad_safetensors_find(&st, "head.bias")->shape[0];
    for (w.layers = 0; w.layers < AD_LSTM_MAX_LAYERS; w.layers++) {
        snprintf(name, sizeof name, "lstm.weight_ih_l%zu", w.layers);
        if (!ad_safetensors_find(&st, name))
            break;
        size_t l = w.layers;
        w.w_ih[l] = tensor(&st, name);
        snprintf(name, sizeof name, "lstm.weight_hh_l%zu", l);
        w.w_hh[l] = tensor(&st, name);
        snprintf(name, sizeof name, "lstm.bias_ih_l%zu", l);
        float *bias = tensor(&st, name);
        snprintf(name, sizeof name, "lstm.bias_hh_l%zu", l);
        float *bias_hh = tensor(&st, name);
        for (size_t k = 0; k < 4 * w.hidden; k++)
            bias[k] += bias_hh[k];
        free(bias_hh);
        w.bias[l] = bias;
    }
    w.head_w = tensor(&st, "head.weight");
    w.head_b = tensor(&st, "head.bias");

    size_t batch = strtoul(argv[3], NULL, 10), steps = strtoul(argv[4], NULL, 10);
    float *x = read_all(argv[2], &in_len);
    if (!x || in_len != batch * steps * w.inputs * sizeof(float)) {
        fprintf(stderr, "lstm-run: %s: expected %zu floats\n", argv[2], batch * steps * w.inputs);
        return 1;
    }
    float *out = malloc(batch * w.outputs * sizeof *out);
    if (ad_lstm_forward(b, &w, x, batch, steps, steps * w.inputs, out, err, sizeof err) < 0) {
        fprintf(stderr, "lstm-run: %s\n", err);
        return 1;
    }
    FILE *fp = fopen(argv[5], "wb");
    if (!fp || fwrite(out, sizeof(float), batch * w.outputs, fp) != batch * w.outputs) {
        fprintf(stderr, "lstm-run: cannot write %s\n", argv[5]);
        return 1;
    }
    fclose(fp);
    ad_lstm_backend_destroy(b);
    for (size_t l = 0; l < w.layers; l++) {
        free((void *)w.w_ih[l]);
        free((void *)w.w_hh[l]);
        free((void *)w.bias[l]);
    }
    free((void *)w.head_w);
    free((void *)w.head_b);
    free(out);
    free(x);
    ad_safetensors_free(&st);
    free(buf);
    return 0;
}
