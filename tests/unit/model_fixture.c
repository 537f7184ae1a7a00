#include "model_fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/sha256.h"
#include "gpu/lstm.h"

#define MAX_TENSORS (4 * AD_LSTM_MAX_LAYERS + 2)

const char *fixture_feature_name(size_t i)
{
    static char names[64][32];
    snprintf(names[i % 64], sizeof names[0], "src.f%zu", i);
    return names[i % 64];
}

static float random_unit(unsigned *seed)
{
    return (float)rand_r(seed) / (float)RAND_MAX * 2.0f - 1.0f;
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16); /* truncation: the values are made exact in bf16 first */
}

static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Values are drawn from a grid that f16 holds exactly (multiples of 2^-10 in [-1, 1]). */
static uint16_t to_f16(float f)
{
    if (f == 0.0f)
        return 0;
    uint16_t sign = f < 0 ? 0x8000 : 0;
    float a = fabsf(f);
    int e;
    float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    int exp16 = e - 1 + 15;  /* a = (2m) * 2^(e-1) */
    uint16_t mant = (uint16_t)lrintf((2.0f * m - 1.0f) * 1024.0f);
    return sign | (uint16_t)(exp16 << 10) | mant;
}

struct tensor {
    char name[48];
    size_t rows, cols;
    float *values;
};

/* A stream model's mode and golden steps: after the warm-up over x, K random inputs stepped one
 * at a time through the CPU backend. */
static int add_stream(json_t *manifest, struct ad_lstm_backend *cpu,
                      const struct ad_lstm_weights *w, const float *x, size_t steps, size_t F,
                      size_t rewarm_every, unsigned *seed)
{
    enum { K = 3 };
    float state[2 * AD_LSTM_MAX_LAYERS * 1024], y[64], in[64];
    char err[256];
    if (ad_lstm_warm_up(cpu, w, x, 1, steps, steps * F, y, state, err, sizeof err) < 0)
        return -1;
    json_t *inputs = json_array(), *outputs = json_array();
    for (int k = 0; k < K; k++) {
        json_t *row = json_array(), *out = json_array();
        for (size_t f = 0; f < F; f++) {
            in[f] = random_unit(seed);
            json_array_append_new(row, json_real(in[f]));
        }
        if (ad_lstm_step(cpu, w, in, 1, F, state, y, err, sizeof err) < 0) {
            json_decref(row);
            json_decref(out);
            json_decref(inputs);
            json_decref(outputs);
            return -1;
        }
        for (size_t f = 0; f < F; f++)
            json_array_append_new(out, json_real(y[f]));
        json_array_append_new(inputs, row);
        json_array_append_new(outputs, out);
    }
    json_t *golden = json_object_get(manifest, "golden");
    json_object_set_new(golden, "step_inputs", inputs);
    json_object_set_new(golden, "step_outputs", outputs);
    json_t *arch = json_object_get(manifest, "architecture");
    json_object_set_new(arch, "mode", json_string("stream"));
    json_object_set_new(arch, "rewarm_every", json_integer((json_int_t)rewarm_every));
    return 0;
}

int fixture_write(const char *dir, const struct fixture_model *spec)
{
    const char *dtype = spec->dtype ? spec->dtype : "F32";
    size_t L = spec->layers, H = spec->hidden, F = spec->features, T = spec->window;
    size_t width = strcmp(dtype, "F32") == 0 ? 4 : 2;
    unsigned seed = spec->seed ? spec->seed : 1;
    struct tensor t[MAX_TENSORS];
    size_t n = 0;
    int rc = -1;

    for (size_t l = 0; l < L; l++) {
        size_t in = l == 0 ? F : H;
        snprintf(t[n].name, sizeof t[n].name, "lstm.weight_ih_l%zu", l);
        t[n].rows = 4 * H, t[n++].cols = in;
        snprintf(t[n].name, sizeof t[n].name, "lstm.weight_hh_l%zu", l);
        t[n].rows = 4 * H, t[n++].cols = H;
        snprintf(t[n].name, sizeof t[n].name, "lstm.bias_ih_l%zu", l);
        t[n].rows = 4 * H, t[n++].cols = 0;
        snprintf(t[n].name, sizeof t[n].name, "lstm.bias_hh_l%zu", l);
        t[n].rows = 4 * H, t[n++].cols = 0;
    }
    snprintf(t[n].name, sizeof t[n].name, "head.weight");
    t[n].rows = F, t[n++].cols = H;
    snprintf(t[n].name, sizeof t[n].name, "head.bias");
    t[n].rows = F, t[n++].cols = 0;

    json_t *header = json_object();
    size_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        size_t count = t[i].rows * (t[i].cols ? t[i].cols : 1);
        t[i].values = malloc(count * sizeof(float));
        for (size_t k = 0; k < count; k++) {
            float v = 0.3f * random_unit(&seed);
            /* exact in every dtype: a multiple of 2^-10 with few significant bits */
            v = roundf(v * 64.0f) / 64.0f;
            t[i].values[k] = v;
        }
        json_t *shape = t[i].cols ? json_pack("[I,I]", (json_int_t)t[i].rows, (json_int_t)t[i].cols)
                                  : json_pack("[I]", (json_int_t)t[i].rows);
        json_object_set_new(header, t[i].name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtype, "shape", shape,
                                      "data_offsets", (json_int_t)offset,
                                      (json_int_t)(offset + count * width)));
        offset += count * width;
    }
    json_object_set_new(header, "__metadata__", json_pack("{s:s}", "format", "pt"));
    char *header_text = json_dumps(header, JSON_COMPACT | JSON_SORT_KEYS);
    size_t header_len = strlen(header_text);
    size_t total = 8 + header_len + offset;
    uint8_t *file = malloc(total);
    for (int i = 0; i < 8; i++)
        file[i] = (uint8_t)((uint64_t)header_len >> (8 * i));
    memcpy(file + 8, header_text, header_len);
    uint8_t *data = file + 8 + header_len;
    offset = 0;
    for (size_t i = 0; i < n; i++) {
        size_t count = t[i].rows * (t[i].cols ? t[i].cols : 1);
        for (size_t k = 0; k < count; k++) {
            float v = t[i].values[k];
            if (width == 4) {
                memcpy(data + offset, &v, 4);
            } else {
                uint16_t h = strcmp(dtype, "BF16") == 0 ? to_bf16(v) : to_f16(v);
                if (strcmp(dtype, "BF16") == 0)
                    t[i].values[k] = from_bf16(h);
                data[offset] = (uint8_t)h;
                data[offset + 1] = (uint8_t)(h >> 8);
            }
            offset += width;
        }
    }

    /* The golden sample: a random normalized window through the CPU backend. */
    struct ad_lstm_weights w = {.id = 0, .layers = L, .inputs = F, .hidden = H, .outputs = F};
    float *bias[AD_LSTM_MAX_LAYERS];
    for (size_t l = 0; l < L; l++) {
        w.w_ih[l] = t[4 * l].values;
        w.w_hh[l] = t[4 * l + 1].values;
        bias[l] = malloc(4 * H * sizeof(float));
        for (size_t k = 0; k < 4 * H; k++)
            bias[l][k] = t[4 * l + 2].values[k] + t[4 * l + 3].values[k];
        w.bias[l] = bias[l];
    }
    w.head_w = t[4 * L].values;
    w.head_b = t[4 * L + 1].values;
    size_t steps = T - 1;
    float *x = malloc(steps * F * sizeof(float)), *y = malloc(F * sizeof(float));
    for (size_t i = 0; i < steps * F; i++)
        x[i] = random_unit(&seed);
    char err[256];
    struct ad_lstm_backend *cpu = ad_lstm_backend_cpu_new(1, err, sizeof err);
    if (!cpu || ad_lstm_forward(cpu, &w, x, 1, steps, steps * F, y, err, sizeof err) < 0)
        goto out;

    char hex[AD_SHA256_HEX_LEN + 1];
    ad_sha256_hex(file, total, hex);
    json_t *features = json_array(), *mean = json_array(), *std = json_array();
    json_t *error_std = json_array(), *input = json_array(), *output = json_array();
    for (size_t f = 0; f < F; f++) {
        json_array_append_new(features, json_string(fixture_feature_name(f)));
        json_array_append_new(mean, json_real(10.0 * (double)f));
        json_array_append_new(std, json_real(1.0 + (double)f));
        json_array_append_new(error_std, json_real(0.5));
        json_array_append_new(output, json_real(y[f]));
    }
    for (size_t s = 0; s < steps; s++) {
        json_t *row = json_array();
        for (size_t f = 0; f < F; f++)
            json_array_append_new(row, json_real(x[s * F + f]));
        json_array_append_new(input, row);
    }
    json_t *manifest = json_pack(
        "{s:i, s:s, s:s, s:s, s:o, s:I, s:I, s:{s:o, s:o}, s:{s:s, s:I, s:I, s:s},"
        " s:{s:o, s:f, s:f, s:f}, s:s, s:{s:o, s:o, s:f}, s:{s:I}}",
        "format", 1, "model", "fixture", "version", "v1", "created_at", "2026-11-22T00:00:00Z",
        "features", features, "window", (json_int_t)T, "step_ms", (json_int_t)spec->step_ms,
        "normalization", "mean", mean, "std", std, "architecture", "type", "lstm", "layers",
        (json_int_t)L, "hidden", (json_int_t)H, "predicts", "next", "calibration", "error_std",
        error_std, "score_mean", 1.0, "score_std", 0.25, "threshold", 3.0, "weights_sha256", hex,
        "golden", "input", input, "output", output, "tolerance", 1e-4, "training", "windows",
        (json_int_t)1000);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(file, 1, total, fp) != total) {
        if (fp)
            fclose(fp);
        json_decref(manifest);
        goto out;
    }
    fclose(fp);
    if (spec->stream && add_stream(manifest, cpu, &w, x, steps, F,
                                   spec->rewarm_every ? spec->rewarm_every : 1000000, &seed) < 0) {
        json_decref(manifest);
        goto out;
    }
    rc = fixture_write_manifest(dir, manifest);
    json_decref(manifest);
out:
    ad_lstm_backend_destroy(cpu);
    for (size_t l = 0; l < L; l++)
        free(bias[l]);
    for (size_t i = 0; i < n; i++)
        free(t[i].values);
    free(x);
    free(y);
    free(file);
    free(header_text);
    json_decref(header);
    return rc;
}

json_t *fixture_read_manifest(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    return json_load_file(path, 0, NULL);
}

int fixture_write_manifest(const char *dir, json_t *manifest)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    return json_dump_file(manifest, path, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
}

uint8_t *fixture_read_weights(const char *dir, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc(size > 0 ? (size_t)size : 1);
    *len = fread(buf, 1, (size_t)size, fp);
    fclose(fp);
    return buf;
}

int fixture_write_weights(const char *dir, const uint8_t *bytes, size_t len)
{
    char path[4096], hex[AD_SHA256_HEX_LEN + 1];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    size_t written = fwrite(bytes, 1, len, fp);
    fclose(fp);
    if (written != len)
        return -1;
    ad_sha256_hex(bytes, len, hex);
    json_t *m = fixture_read_manifest(dir);
    json_object_set_new(m, "weights_sha256", json_string(hex));
    int rc = fixture_write_manifest(dir, m);
    json_decref(m);
    return rc;
}

char *fixture_tempdir(void)
{
    char *dir = strdup("/tmp/anomalyd-test-XXXXXX");
    if (dir && !mkdtemp(dir)) {
        free(dir);
        return NULL;
    }
    return dir;
}

void fixture_remove(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}
