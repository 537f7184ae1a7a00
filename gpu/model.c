#include "gpu/model.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/errstr.h"
#include "base/file.h"
#include "base/sha256.h"
#include "gpu/safetensors.h"

/* Bounds on what a manifest may describe, and on the files read before they are checked. */
#define MAX_MANIFEST_BYTES (16u << 20)
#define MAX_WEIGHTS_BYTES  (1024u << 20)
#define MAX_LAYERS         4
#define MAX_HIDDEN         1024
#define MAX_FEATURES       64
#define MAX_WINDOW         4096
#define MAX_REWARM         1000000

struct ad_model {
    atomic_int refs;
    char *dir;
    char *name;
    char *version;
    size_t features; /* F */
    size_t window;   /* T */
    enum ad_time_input time_inputs[AD_MODEL_MAX_TIME_INPUTS];
    size_t n_time_inputs;
    int64_t step_ms;
    float *mean, *std;
    struct ad_model_calibration calibration;
    float *error_std;
    struct ad_lstm_weights weights;
    float *arena; /* every float array of the weights, one allocation */
    enum ad_model_mode mode;
    size_t rewarm_every; /* stream models: architecture.rewarm_every */
    float *golden_input, *golden_output;
    /* Stream models: inputs stepped after the warm-up over golden_input, and each step's
     * output. */
    float *golden_step_input, *golden_step_output;
    size_t golden_steps;
    double golden_tolerance;
    json_t *describe;
    json_t *feature_names; /* the manifest's "features" */
};

static atomic_uint_fast64_t next_id = 1;

/* ---- files ---- */

/* A file of the version: without blocking, only a regular one (base/file.h). */
static uint8_t *read_file(const char *path, size_t limit, size_t *len, char *errstr,
                          size_t errstr_size)
{
    char why[256];
    char *buf = ad_file_read(path, limit, len, NULL, why, sizeof why);
    if (!buf)
        ad_errstr_set(errstr, errstr_size, "%s: %s", path, why);
    return (uint8_t *)buf;
}

/* ---- the manifest ---- */

static int number(json_t *v, double *out)
{
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return -1;
    *out = json_number_value(v);
    return 0;
}

/* A list of n finite numbers into out; positive ones when positive is set. */
static int floats(json_t *v, size_t n, bool positive, float *out)
{
    if (!json_is_array(v) || json_array_size(v) != n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        double d;
        if (number(json_array_get(v, i), &d) < 0 || (positive && !(d > 0)))
            return -1;
        out[i] = (float)d;
    }
    return 0;
}

static int only_keys(json_t *obj, const char *const *keys, const char *where, char *errstr,
                     size_t errstr_size)
{
    const char *k;
    json_t *v;
    json_object_foreach (obj, k, v) {
        bool known = false;
        for (const char *const *p = keys; *p && !known; p++)
            known = strcmp(*p, k) == 0;
        if (!known)
            return ad_errstr_set(errstr, errstr_size, "%s: unknown key \"%s\"", where, k);
    }
    return 0;
}

static bool valid_version(const char *s)
{
    if (!*s || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
            return false;
    return true;
}

/* architecture.time_inputs: absent, or a list of distinct periods, "day" and "week". */
static int read_time_inputs(struct ad_model *m, json_t *list, const char *where, char *errstr,
                            size_t errstr_size)
{
    static const char *const names[] = {[AD_TIME_DAY] = "day", [AD_TIME_WEEK] = "week"};
    if (!list)
        return 0;
    if (!json_is_array(list) || json_array_size(list) > AD_MODEL_MAX_TIME_INPUTS)
        return ad_errstr_set(errstr, errstr_size,
                             "%s: time_inputs must list at most %d of \"day\" and \"week\"", where,
                             AD_MODEL_MAX_TIME_INPUTS);
    for (size_t i = 0; i < json_array_size(list); i++) {
        const char *name = json_string_value(json_array_get(list, i));
        size_t k = 0;
        while (k < sizeof names / sizeof *names && !(name && strcmp(name, names[k]) == 0))
            k++;
        for (size_t j = 0; k < sizeof names / sizeof *names && j < m->n_time_inputs; j++)
            if (m->time_inputs[j] == (enum ad_time_input)k)
                k = sizeof names / sizeof *names;
        if (k == sizeof names / sizeof *names)
            return ad_errstr_set(errstr, errstr_size,
                                 "%s: time_inputs[%zu] must be \"day\" or \"week\", each once",
                                 where, i);
        m->time_inputs[m->n_time_inputs++] = (enum ad_time_input)k;
    }
    return 0;
}

struct manifest {
    size_t layers, hidden;
    char sha256[AD_SHA256_HEX_LEN + 1];
    json_t *golden;
};

static int read_manifest(struct ad_model *m, json_t *doc, const char *path, struct manifest *mf,
                         char *errstr, size_t errstr_size)
{
    static const char *const top[] = {
        "format",       "model",       "version",        "created_at",
        "features",     "window",      "step_ms",        "normalization",
        "architecture", "calibration", "weights_sha256", "golden",
        "training",     NULL};
    static const char *const norm_keys[] = {"mean", "std", NULL};
    static const char *const arch_keys[] = {"type",        "layers", "hidden",       "predicts",
                                            "time_inputs", "mode",   "rewarm_every", NULL};
    static const char *const cal_keys[] = {"error_std", "score_mean", "score_std", "threshold",
                                           NULL};
    static const char *const golden_keys[] = {"input",       "output",       "tolerance",
                                              "step_inputs", "step_outputs", NULL};
    char where[4200];

    if (!json_is_object(doc))
        return ad_errstr_set(errstr, errstr_size, "%s: expected a JSON object", path);
    if (only_keys(doc, top, path, errstr, errstr_size) < 0)
        return -1;
    for (const char *const *k = top; *k; k++)
        if (!json_object_get(doc, *k))
            return ad_errstr_set(errstr, errstr_size, "%s: missing key \"%s\"", path, *k);
    if (!json_is_integer(json_object_get(doc, "format")) ||
        json_integer_value(json_object_get(doc, "format")) != 1)
        return ad_errstr_set(errstr, errstr_size, "%s: format must be 1", path);
    const char *name = json_string_value(json_object_get(doc, "model"));
    const char *version = json_string_value(json_object_get(doc, "version"));
    if (!name || !*name || !version || !valid_version(version))
        return ad_errstr_set(errstr, errstr_size,
                             "%s: model and version must be names (letters, digits, ._-)", path);
    if (!json_is_string(json_object_get(doc, "created_at")))
        return ad_errstr_set(errstr, errstr_size, "%s: created_at must be a string", path);
    m->name = strdup(name);
    m->version = strdup(version);

    json_t *features = json_object_get(doc, "features");
    if (!json_is_array(features) || json_array_size(features) == 0 ||
        json_array_size(features) > MAX_FEATURES)
        return ad_errstr_set(errstr, errstr_size, "%s: features must list 1 to %d names", path,
                             MAX_FEATURES);
    for (size_t i = 0; i < json_array_size(features); i++)
        if (!json_is_string(json_array_get(features, i)))
            return ad_errstr_set(errstr, errstr_size, "%s: features[%zu] must be a string", path,
                                 i);
    m->features = json_array_size(features);

    json_t *window = json_object_get(doc, "window");
    if (!json_is_integer(window) || json_integer_value(window) < 2 ||
        json_integer_value(window) > MAX_WINDOW)
        return ad_errstr_set(errstr, errstr_size, "%s: window must be an integer from 2 to %d",
                             path, MAX_WINDOW);
    m->window = (size_t)json_integer_value(window);
    json_t *step = json_object_get(doc, "step_ms");
    if (!json_is_integer(step) || json_integer_value(step) <= 0)
        return ad_errstr_set(errstr, errstr_size, "%s: step_ms must be a positive integer", path);
    m->step_ms = json_integer_value(step);

    json_t *norm = json_object_get(doc, "normalization");
    snprintf(where, sizeof where, "%s: normalization", path);
    if (!json_is_object(norm) || only_keys(norm, norm_keys, where, errstr, errstr_size) < 0)
        return json_is_object(norm)
                   ? -1
                   : ad_errstr_set(errstr, errstr_size, "%s must be an object", where);
    m->mean = calloc(m->features, sizeof(float));
    m->std = calloc(m->features, sizeof(float));
    m->error_std = calloc(m->features, sizeof(float));
    if (!m->mean || !m->std || !m->error_std)
        return ad_errstr_set(errstr, errstr_size, "out of memory");
    if (floats(json_object_get(norm, "mean"), m->features, false, m->mean) < 0 ||
        floats(json_object_get(norm, "std"), m->features, true, m->std) < 0)
        return ad_errstr_set(errstr, errstr_size,
                             "%s: mean and std must list %zu finite numbers, std above 0", where,
                             m->features);

    json_t *arch = json_object_get(doc, "architecture");
    snprintf(where, sizeof where, "%s: architecture", path);
    if (!json_is_object(arch) || only_keys(arch, arch_keys, where, errstr, errstr_size) < 0)
        return json_is_object(arch)
                   ? -1
                   : ad_errstr_set(errstr, errstr_size, "%s must be an object", where);
    json_t *layers = json_object_get(arch, "layers"), *hidden = json_object_get(arch, "hidden");
    if (!json_is_string(json_object_get(arch, "type")) ||
        strcmp(json_string_value(json_object_get(arch, "type")), "lstm") != 0 ||
        !json_is_string(json_object_get(arch, "predicts")) ||
        strcmp(json_string_value(json_object_get(arch, "predicts")), "next") != 0)
        return ad_errstr_set(errstr, errstr_size, "%s: type must be lstm and predicts next", where);
    if (!json_is_integer(layers) || json_integer_value(layers) < 1 ||
        json_integer_value(layers) > MAX_LAYERS || !json_is_integer(hidden) ||
        json_integer_value(hidden) < 1 || json_integer_value(hidden) > MAX_HIDDEN)
        return ad_errstr_set(errstr, errstr_size, "%s: layers must be 1 to %d and hidden 1 to %d",
                             where, MAX_LAYERS, MAX_HIDDEN);
    mf->layers = (size_t)json_integer_value(layers);
    mf->hidden = (size_t)json_integer_value(hidden);
    if (read_time_inputs(m, json_object_get(arch, "time_inputs"), where, errstr, errstr_size) < 0)
        return -1;
    json_t *mode = json_object_get(arch, "mode");
    if (mode && !(json_is_string(mode) && (strcmp(json_string_value(mode), "windowed") == 0 ||
                                           strcmp(json_string_value(mode), "stream") == 0)))
        return ad_errstr_set(errstr, errstr_size, "%s: mode must be windowed or stream", where);
    m->mode = mode && strcmp(json_string_value(mode), "stream") == 0 ? AD_MODEL_STREAM
                                                                     : AD_MODEL_WINDOWED;
    json_t *rewarm = json_object_get(arch, "rewarm_every");
    if (m->mode == AD_MODEL_STREAM &&
        !(json_is_integer(rewarm) && json_integer_value(rewarm) >= 1 &&
          json_integer_value(rewarm) <= MAX_REWARM))
        return ad_errstr_set(errstr, errstr_size,
                             "%s: a stream model needs rewarm_every, 1 to %d buckets", where,
                             MAX_REWARM);
    if (m->mode == AD_MODEL_WINDOWED && rewarm)
        return ad_errstr_set(errstr, errstr_size, "%s: rewarm_every is for stream models", where);
    m->rewarm_every = rewarm ? (size_t)json_integer_value(rewarm) : 0;

    json_t *cal = json_object_get(doc, "calibration");
    snprintf(where, sizeof where, "%s: calibration", path);
    if (!json_is_object(cal) || only_keys(cal, cal_keys, where, errstr, errstr_size) < 0)
        return json_is_object(cal)
                   ? -1
                   : ad_errstr_set(errstr, errstr_size, "%s must be an object", where);
    if (floats(json_object_get(cal, "error_std"), m->features, true, m->error_std) < 0 ||
        number(json_object_get(cal, "score_mean"), &m->calibration.score_mean) < 0 ||
        number(json_object_get(cal, "score_std"), &m->calibration.score_std) < 0 ||
        number(json_object_get(cal, "threshold"), &m->calibration.threshold) < 0 ||
        m->calibration.score_std < 0)
        return ad_errstr_set(errstr, errstr_size,
                             "%s: error_std must list %zu numbers above 0; score_mean, "
                             "score_std (>= 0) and threshold must be finite numbers",
                             where, m->features);
    m->calibration.error_std = m->error_std;

    const char *sha = json_string_value(json_object_get(doc, "weights_sha256"));
    if (!sha || strlen(sha) != AD_SHA256_HEX_LEN || strspn(sha, "0123456789abcdef") != 64)
        return ad_errstr_set(errstr, errstr_size,
                             "%s: weights_sha256 must be 64 lowercase hex digits", path);
    memcpy(mf->sha256, sha, sizeof mf->sha256);

    json_t *golden = json_object_get(doc, "golden");
    snprintf(where, sizeof where, "%s: golden", path);
    if (!json_is_object(golden) || only_keys(golden, golden_keys, where, errstr, errstr_size) < 0)
        return json_is_object(golden)
                   ? -1
                   : ad_errstr_set(errstr, errstr_size, "%s must be an object", where);
    mf->golden = golden;
    if (!json_is_object(json_object_get(doc, "training")))
        return ad_errstr_set(errstr, errstr_size, "%s: training must be an object", path);
    return 0;
}

/* ---- the weights ---- */

struct tensor_spec {
    char name[48];
    size_t rows, cols; /* cols 0: a vector */
    float *into;
};

static int load_weights(struct ad_model *m, const struct manifest *mf, const uint8_t *buf,
                        size_t len, const char *path, char *errstr, size_t errstr_size)
{
    struct ad_safetensors st;
    char why[512];
    size_t L = mf->layers, H = mf->hidden, F = m->features;
    struct tensor_spec specs[4 * MAX_LAYERS + 2];
    size_t n = 0, total = 0;
    int rc = -1;

    if (ad_safetensors_parse(buf, len, &st, why, sizeof why) < 0) {
        ad_errstr_set(errstr, errstr_size, "%s: %s", path, why);
        goto out;
    }
    for (size_t l = 0; l < L; l++) {
        size_t in = l == 0 ? ad_model_inputs(m) : H;
        snprintf(specs[n].name, sizeof specs[n].name, "lstm.weight_ih_l%zu", l);
        specs[n].rows = 4 * H, specs[n++].cols = in;
        snprintf(specs[n].name, sizeof specs[n].name, "lstm.weight_hh_l%zu", l);
        specs[n].rows = 4 * H, specs[n++].cols = H;
        snprintf(specs[n].name, sizeof specs[n].name, "lstm.bias_ih_l%zu", l);
        specs[n].rows = 4 * H, specs[n++].cols = 0;
        snprintf(specs[n].name, sizeof specs[n].name, "lstm.bias_hh_l%zu", l);
        specs[n].rows = 4 * H, specs[n++].cols = 0;
    }
    snprintf(specs[n].name, sizeof specs[n].name, "head.weight");
    specs[n].rows = F, specs[n++].cols = H;
    snprintf(specs[n].name, sizeof specs[n].name, "head.bias");
    specs[n].rows = F, specs[n++].cols = 0;

    if (st.n_tensors != n) {
        /* Name the one that should not be there, or the one missing. */
        for (size_t i = 0; i < st.n_tensors; i++) {
            bool expected = false;
            for (size_t j = 0; j < n && !expected; j++)
                expected = strcmp(st.tensors[i].name, specs[j].name) == 0;
            if (!expected) {
                ad_errstr_set(errstr, errstr_size, "%s: unexpected tensor %s for %zu layer(s)",
                              path, st.tensors[i].name, L);
                goto out;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        total += specs[i].rows * (specs[i].cols ? specs[i].cols : 1);
    m->arena = malloc((total + L * 4 * H) * sizeof(float));
    if (!m->arena) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto out;
    }
    float *next = m->arena;
    for (size_t i = 0; i < n; i++) {
        const struct ad_tensor *t = ad_safetensors_find(&st, specs[i].name);
        size_t want_rank = specs[i].cols ? 2 : 1;
        if (!t) {
            ad_errstr_set(errstr, errstr_size, "%s: missing tensor %s", path, specs[i].name);
            goto out;
        }
        if (t->rank != want_rank || t->shape[0] != specs[i].rows ||
            (want_rank == 2 && t->shape[1] != specs[i].cols)) {
            if (want_rank == 2)
                ad_errstr_set(errstr, errstr_size,
                              "%s: tensor %s has the wrong shape; expected [%zu, %zu]", path,
                              t->name, specs[i].rows, specs[i].cols);
            else
                ad_errstr_set(errstr, errstr_size,
                              "%s: tensor %s has the wrong shape; expected [%zu]", path, t->name,
                              specs[i].rows);
            goto out;
        }
        specs[i].into = next;
        ad_safetensors_read(&st, t, next);
        for (size_t k = 0; k < t->elements; k++) {
            if (!isfinite(next[k])) {
                ad_errstr_set(errstr, errstr_size,
                              "%s: tensor %s holds a non-finite value at index %zu", path, t->name,
                              k);
                goto out;
            }
        }
        next += t->elements;
    }
    struct ad_lstm_weights *w = &m->weights;
    w->id = atomic_fetch_add(&next_id, 1);
    w->layers = L;
    w->inputs = ad_model_inputs(m);
    w->hidden = H;
    w->outputs = F;
    for (size_t l = 0; l < L; l++) {
        float *bias = next;
        for (size_t k = 0; k < 4 * H; k++)
            bias[k] = specs[4 * l + 2].into[k] + specs[4 * l + 3].into[k];
        next += 4 * H;
        w->w_ih[l] = specs[4 * l].into;
        w->w_hh[l] = specs[4 * l + 1].into;
        w->bias[l] = bias;
    }
    w->head_w = specs[4 * L].into;
    w->head_b = specs[4 * L + 1].into;
    rc = 0;
out:
    ad_safetensors_free(&st);
    return rc;
}

/* 0 when got (F floats) is want within the golden tolerance; else -1 with err naming what. */
static int same_output(const struct ad_model *m, const struct ad_lstm_backend *backend,
                       const char *what, const float *got, const float *want, char *errstr,
                       size_t errstr_size)
{
    for (size_t f = 0; f < m->features; f++) {
        double limit = m->golden_tolerance * fmax(1.0, fabs((double)want[f]));
        if (!(fabs((double)got[f] - (double)want[f]) <= limit))
            return ad_errstr_set(
                errstr, errstr_size,
                "%s/manifest.json: the golden sample does not reproduce on the %s backend: "
                "%s %zu is %.9g, the manifest says %.9g (tolerance %g)",
                m->dir, ad_lstm_backend_kind(backend), what, f, (double)got[f], (double)want[f],
                m->golden_tolerance);
    }
    return 0;
}

/* A stream model's golden sample as serving runs it: a warm-up into a slot of a state table,
 * then one step at a time. */
static int verify_stream(const struct ad_model *m, struct ad_lstm_backend *backend, char *errstr,
                         size_t errstr_size)
{
    size_t steps = m->window - 1, in = ad_model_inputs(m);
    float got[MAX_FEATURES];
    char why[256], what[64];
    const uint32_t slot = 0;
    int rc = -1;
    struct ad_lstm_states *states = ad_lstm_states_new(backend, &m->weights, why, sizeof why);
    if (!states || ad_lstm_states_reserve(states, 1, why, sizeof why) < 0 ||
        ad_lstm_warm_up_slots(backend, &m->weights, states, m->golden_input, 1, steps, steps * in,
                              &slot, got, why, sizeof why) < 0) {
        ad_errstr_set(errstr, errstr_size,
                      "%s/manifest.json: cannot run the golden sample on the %s backend: %s",
                      m->dir, ad_lstm_backend_kind(backend), why);
        goto out;
    }
    if (same_output(m, backend, "the warm-up's output", got, m->golden_output, errstr,
                    errstr_size) < 0)
        goto out;
    for (size_t k = 0; k < m->golden_steps; k++) {
        if (ad_lstm_step_slots(backend, &m->weights, states, m->golden_step_input + k * in, 1, in,
                               &slot, got, why, sizeof why) < 0) {
            ad_errstr_set(errstr, errstr_size,
                          "%s/manifest.json: cannot run the golden sample on the %s backend: %s",
                          m->dir, ad_lstm_backend_kind(backend), why);
            goto out;
        }
        snprintf(what, sizeof what, "step %zu's output", k);
        if (same_output(m, backend, what, got, m->golden_step_output + k * m->features, errstr,
                        errstr_size) < 0)
            goto out;
    }
    rc = 0;
out:
    ad_lstm_states_destroy(states);
    return rc;
}

int ad_model_verify(const struct ad_model *m, struct ad_lstm_backend *backend, char *errstr,
                    size_t errstr_size)
{
    size_t steps = m->window - 1, in = ad_model_inputs(m);
    float got[MAX_FEATURES];
    char why[256];
    if (m->mode == AD_MODEL_STREAM)
        return verify_stream(m, backend, errstr, errstr_size);
    if (ad_lstm_forward(backend, &m->weights, m->golden_input, 1, steps, steps * in, got, why,
                        sizeof why) < 0)
        return ad_errstr_set(errstr, errstr_size,
                             "%s/manifest.json: cannot run the golden sample on the %s backend: %s",
                             m->dir, ad_lstm_backend_kind(backend), why);
    return same_output(m, backend, "output", got, m->golden_output, errstr, errstr_size);
}

/* A stream model's steps after the warm-up: step_inputs and step_outputs, as many rows each,
 * 1 to GOLDEN_MAX_STEPS. A windowed model has neither. */
#define GOLDEN_MAX_STEPS 256
static int read_golden_steps(struct ad_model *m, json_t *golden, const char *path, char *errstr,
                             size_t errstr_size)
{
    size_t F = m->features, in = ad_model_inputs(m);
    json_t *inputs = json_object_get(golden, "step_inputs");
    json_t *outputs = json_object_get(golden, "step_outputs");
    if (m->mode == AD_MODEL_WINDOWED)
        return inputs || outputs ? ad_errstr_set(errstr, errstr_size,
                                                 "%s: golden.step_inputs and step_outputs are "
                                                 "for stream models (architecture.mode)",
                                                 path)
                                 : 0;
    size_t k = json_array_size(inputs);
    if (!json_is_array(inputs) || !json_is_array(outputs) || k < 1 || k > GOLDEN_MAX_STEPS ||
        json_array_size(outputs) != k)
        return ad_errstr_set(errstr, errstr_size,
                             "%s: a stream model's golden needs step_inputs and step_outputs, "
                             "1 to %d rows each, as many of one as of the other",
                             path, GOLDEN_MAX_STEPS);
    m->golden_steps = k;
    m->golden_step_input = calloc(k * in, sizeof *m->golden_step_input);
    m->golden_step_output = calloc(k * F, sizeof *m->golden_step_output);
    if (!m->golden_step_input || !m->golden_step_output)
        return ad_errstr_set(errstr, errstr_size, "out of memory");
    for (size_t t = 0; t < k; t++) {
        if (floats(json_array_get(inputs, t), in, false, m->golden_step_input + t * in) < 0)
            return ad_errstr_set(errstr, errstr_size,
                                 "%s: golden.step_inputs[%zu] must list %zu finite numbers", path,
                                 t, in);
        if (floats(json_array_get(outputs, t), F, false, m->golden_step_output + t * F) < 0)
            return ad_errstr_set(errstr, errstr_size,
                                 "%s: golden.step_outputs[%zu] must list %zu finite numbers", path,
                                 t, F);
    }
    return 0;
}

/* The CPU backend must reproduce the manifest's golden output before the model is trusted. */
static int check_golden(struct ad_model *m, json_t *golden, const char *path, char *errstr,
                        size_t errstr_size)
{
    size_t steps = m->window - 1, F = m->features, in = ad_model_inputs(m);
    json_t *input = json_object_get(golden, "input");
    struct ad_lstm_backend *cpu = NULL;
    char why[256];

    if (number(json_object_get(golden, "tolerance"), &m->golden_tolerance) < 0 ||
        m->golden_tolerance <= 0 || m->golden_tolerance >= 1)
        return ad_errstr_set(errstr, errstr_size,
                             "%s: golden.tolerance must be a number between 0 and 1", path);
    m->golden_input = calloc(steps * in, sizeof *m->golden_input);
    m->golden_output = calloc(F, sizeof *m->golden_output);
    if (!m->golden_input || !m->golden_output)
        return ad_errstr_set(errstr, errstr_size, "out of memory");
    if (!json_is_array(input) || json_array_size(input) != steps)
        return ad_errstr_set(errstr, errstr_size,
                             "%s: golden.input must have window - 1 = %zu rows", path, steps);
    for (size_t t = 0; t < steps; t++)
        if (floats(json_array_get(input, t), in, false, m->golden_input + t * in) < 0)
            return ad_errstr_set(errstr, errstr_size,
                                 "%s: golden.input[%zu] must list %zu finite numbers", path, t, in);
    if (floats(json_object_get(golden, "output"), F, false, m->golden_output) < 0)
        return ad_errstr_set(errstr, errstr_size, "%s: golden.output must list %zu finite numbers",
                             path, F);
    if (read_golden_steps(m, golden, path, errstr, errstr_size) < 0)
        return -1;
    cpu = ad_lstm_backend_cpu_new(1, why, sizeof why);
    if (!cpu)
        return ad_errstr_set(errstr, errstr_size, "%s: cannot run the golden sample: %s", path,
                             why);
    int rc = ad_model_verify(m, cpu, errstr, errstr_size);
    ad_lstm_backend_destroy(cpu);
    return rc;
}

static int check_expect(const struct ad_model *m, const struct ad_model_expect *e, const char *path,
                        char *errstr, size_t errstr_size)
{
    if (!e)
        return 0;
    json_t *features = m->feature_names;
    if (e->features) {
        bool same = json_array_size(features) == e->features->len;
        for (size_t i = 0; same && i < e->features->len; i++)
            same =
                strcmp(json_string_value(json_array_get(features, i)), e->features->items[i]) == 0;
        if (!same)
            return ad_errstr_set(errstr, errstr_size,
                                 "%s: the model's features differ from the detector's", path);
    }
    if (e->window && e->window != m->window)
        return ad_errstr_set(errstr, errstr_size,
                             "%s: the model's window is %zu steps, the detector's %zu", path,
                             m->window, e->window);
    if (e->step_ms && e->step_ms != m->step_ms)
        return ad_errstr_set(errstr, errstr_size,
                             "%s: the model's step is %lld ms, the detector's %lld ms", path,
                             (long long)m->step_ms, (long long)e->step_ms);
    return 0;
}

struct ad_model *ad_model_parse(const char *dir, const uint8_t *manifest, size_t manifest_len,
                                const uint8_t *weights, size_t weights_len,
                                const struct ad_model_expect *expect, char *errstr,
                                size_t errstr_size)
{
    char manifest_path[4096], weights_path[4096], hex[AD_SHA256_HEX_LEN + 1];
    struct ad_model *m = calloc(1, sizeof *m);
    json_t *doc = NULL;
    json_error_t jerr;
    struct manifest mf = {0};

    if (!m) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    atomic_init(&m->refs, 1);
    m->dir = strdup(dir);
    snprintf(manifest_path, sizeof manifest_path, "%s/manifest.json", dir);
    snprintf(weights_path, sizeof weights_path, "%s/model.safetensors", dir);
    if (!m->dir) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto err;
    }
    if (manifest_len > MAX_MANIFEST_BYTES || weights_len > MAX_WEIGHTS_BYTES) {
        ad_errstr_set(errstr, errstr_size, "%s: more than %u bytes",
                      manifest_len > MAX_MANIFEST_BYTES ? manifest_path : weights_path,
                      manifest_len > MAX_MANIFEST_BYTES ? MAX_MANIFEST_BYTES : MAX_WEIGHTS_BYTES);
        goto err;
    }
    doc = json_loadb((const char *)manifest, manifest_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        ad_errstr_set(errstr, errstr_size, "%s:%d:%d: %s", manifest_path, jerr.line, jerr.column,
                      jerr.text);
        goto err;
    }
    if (read_manifest(m, doc, manifest_path, &mf, errstr, errstr_size) < 0)
        goto err;
    m->feature_names = json_incref(json_object_get(doc, "features"));
    if (check_expect(m, expect, manifest_path, errstr, errstr_size) < 0)
        goto err;
    ad_sha256_hex(weights, weights_len, hex);
    if (strcmp(hex, mf.sha256) != 0) {
        ad_errstr_set(errstr, errstr_size, "%s: sha256 is %s, the manifest says %s", weights_path,
                      hex, mf.sha256);
        goto err;
    }
    if (load_weights(m, &mf, weights, weights_len, weights_path, errstr, errstr_size) < 0 ||
        check_golden(m, mf.golden, manifest_path, errstr, errstr_size) < 0)
        goto err;

    m->describe = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:s, s:f, s:O}", "name", m->name,
                            "version", m->version, "dir", m->dir, "layers", (int)mf.layers,
                            "hidden", (int)mf.hidden, "window", (int)m->window, "mode",
                            m->mode == AD_MODEL_STREAM ? "stream" : "windowed", "threshold",
                            m->calibration.threshold, "training", json_object_get(doc, "training"));
    json_decref(doc);
    return m;
err:
    json_decref(doc);
    ad_model_unref(m);
    return NULL;
}

struct ad_model *ad_model_load(const char *dir, const struct ad_model_expect *expect, char *errstr,
                               size_t errstr_size)
{
    char path[4096];
    size_t manifest_len = 0, weights_len = 0;
    uint8_t *weights = NULL, *manifest;
    struct ad_model *m = NULL;

    snprintf(path, sizeof path, "%s/manifest.json", dir);
    manifest = read_file(path, MAX_MANIFEST_BYTES, &manifest_len, errstr, errstr_size);
    if (!manifest)
        goto out;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    weights = read_file(path, MAX_WEIGHTS_BYTES, &weights_len, errstr, errstr_size);
    if (!weights)
        goto out;
    m = ad_model_parse(dir, manifest, manifest_len, weights, weights_len, expect, errstr,
                       errstr_size);
out:
    free(manifest);
    free(weights);
    return m;
}

struct ad_model *ad_model_load_current(const char *store, const char *name,
                                       const struct ad_model_expect *expect, char *errstr,
                                       size_t errstr_size)
{
    char path[4096], version[256] = "", dir[4096];
    snprintf(path, sizeof path, "%s/%s/CURRENT", store, name);
    char why[256];
    size_t len = 0;
    /* The model store's watcher reads CURRENT with the same 4 KiB bound. */
    char *text = ad_file_read(path, 4096, &len, NULL, why, sizeof why);
    if (!text) {
        ad_errstr_set(errstr, errstr_size, "%s: %s", path, why);
        return NULL;
    }
    size_t first = strcspn(text, "\r\n"); /* the first line names the version */
    if (first < sizeof version)
        memcpy(version, text, first);
    version[first < sizeof version ? first : 0] = '\0';
    free(text);
    if (!valid_version(version)) {
        ad_errstr_set(errstr, errstr_size, "%s: \"%s\" is not a version name", path, version);
        return NULL;
    }
    snprintf(dir, sizeof dir, "%s/%s/%s", store, name, version);
    return ad_model_load(dir, expect, errstr, errstr_size);
}

struct ad_model *ad_model_ref(struct ad_model *m)
{
    atomic_fetch_add(&m->refs, 1);
    return m;
}

void ad_model_unref(struct ad_model *m)
{
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    free(m->dir);
    free(m->name);
    free(m->version);
    free(m->mean);
    free(m->std);
    free(m->error_std);
    free(m->arena);
    free(m->golden_input);
    free(m->golden_output);
    free(m->golden_step_input);
    free(m->golden_step_output);
    json_decref(m->describe);
    json_decref(m->feature_names);
    free(m);
}

const char *ad_model_name(const struct ad_model *m)
{
    return m->name;
}

const char *ad_model_version(const struct ad_model *m)
{
    return m->version;
}

const char *ad_model_dir(const struct ad_model *m)
{
    return m->dir;
}

size_t ad_model_features(const struct ad_model *m)
{
    return m->features;
}

size_t ad_model_window(const struct ad_model *m)
{
    return m->window;
}

enum ad_model_mode ad_model_mode(const struct ad_model *m)
{
    return m->mode;
}

size_t ad_model_rewarm_every(const struct ad_model *m)
{
    return m->rewarm_every;
}

size_t ad_model_time_inputs(const struct ad_model *m, enum ad_time_input *out)
{
    for (size_t i = 0; out && i < m->n_time_inputs; i++)
        out[i] = m->time_inputs[i];
    return m->n_time_inputs;
}

size_t ad_model_inputs(const struct ad_model *m)
{
    return m->features + 2 * m->n_time_inputs;
}

const struct ad_lstm_weights *ad_model_weights(const struct ad_model *m)
{
    return &m->weights;
}

const float *ad_model_mean(const struct ad_model *m)
{
    return m->mean;
}

const float *ad_model_std(const struct ad_model *m)
{
    return m->std;
}

const struct ad_model_calibration *ad_model_calibration(const struct ad_model *m)
{
    return &m->calibration;
}

void ad_model_describe(const struct ad_model *m, json_t *out)
{
    json_object_update(out, m->describe);
}

int ad_model_fits(const struct ad_model *m, const struct ad_model_expect *expect, char *errstr,
                  size_t errstr_size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", m->dir);
    return check_expect(m, expect, path, errstr, errstr_size);
}
