/*
 * The model loader (docs/models.md): a complete version loads, in every dtype; each way a
 * version can be broken is refused with a message that names the file and the tensor or key.
 */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "gpu/model.h"
#include "model_fixture.h"

static const struct fixture_model base = {
    .layers = 2, .hidden = 16, .features = 3, .window = 8, .step_ms = 10000, .seed = 3};

struct ctx {
    char *dir;
    char err[1024];
};

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof *c);
    c->dir = fixture_tempdir();
    assert_non_null(c->dir);
    assert_int_equal(fixture_write(c->dir, &base), 0);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    fixture_remove(c->dir);
    free(c->dir);
    free(c);
    return 0;
}

/* Loads c->dir, expecting a refusal whose message holds every needle. */
static void assert_refused(struct ctx *c, const struct ad_model_expect *expect, ...)
{
    struct ad_model *m = ad_model_load(c->dir, expect, c->err, sizeof c->err);
    if (m)
        fail_msg("the model loaded; expected a refusal");
    va_list ap;
    va_start(ap, expect);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        if (!strstr(c->err, needle))
            fail_msg("\"%s\" not in the error: %s", needle, c->err);
    va_end(ap);
}

static void set_manifest(struct ctx *c, const char *key, json_t *value)
{
    json_t *m = fixture_read_manifest(c->dir);
    json_object_set_new(m, key, value);
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    json_decref(m);
}

/* The byte offset of a tensor's data in the file. */
static size_t tensor_offset(const uint8_t *file, const char *name)
{
    uint64_t header_len = 0;
    for (int i = 0; i < 8; i++)
        header_len |= (uint64_t)file[i] << (8 * i);
    json_t *h = json_loadb((const char *)file + 8, header_len, 0, NULL);
    assert_non_null(h);
    json_t *offsets = json_object_get(json_object_get(h, name), "data_offsets");
    size_t begin = (size_t)json_integer_value(json_array_get(offsets, 0));
    json_decref(h);
    return 8 + header_len + begin;
}

static void test_loads(void **state)
{
    struct ctx *c = *state;
    struct ad_strlist features = {.items = (char *[]){"src.f0", "src.f1", "src.f2"}, .len = 3};
    struct ad_model_expect expect = {.features = &features, .window = 8, .step_ms = 10000};
    struct ad_model *m = ad_model_load(c->dir, &expect, c->err, sizeof c->err);
    if (!m)
        fail_msg("%s", c->err);
    assert_string_equal(ad_model_version(m), "v1");
    assert_int_equal(ad_model_features(m), 3);
    assert_int_equal(ad_model_window(m), 8);
    const struct ad_lstm_weights *w = ad_model_weights(m);
    assert_int_equal(w->layers, 2);
    assert_int_equal(w->hidden, 16);
    assert_float_equal(ad_model_std(m)[2], 3.0, 1e-6);
    assert_float_equal(ad_model_calibration(m)->threshold, 3.0, 1e-9);
    json_t *d = json_object();
    ad_model_describe(m, d);
    assert_int_equal(json_integer_value(json_object_get(d, "hidden")), 16);
    json_decref(d);
    /* A second reference outlives the first. */
    struct ad_model *again = ad_model_ref(m);
    ad_model_unref(m);
    assert_string_equal(ad_model_name(again), "fixture");
    ad_model_unref(again);
}

static void test_half_precision_dtypes(void **state)
{
    struct ctx *c = *state;
    const char *dtypes[] = {"F16", "BF16"};
    for (size_t i = 0; i < 2; i++) {
        struct fixture_model spec = base;
        spec.dtype = dtypes[i];
        assert_int_equal(fixture_write(c->dir, &spec), 0);
        struct ad_model *m = ad_model_load(c->dir, NULL, c->err, sizeof c->err);
        if (!m)
            fail_msg("%s: %s", dtypes[i], c->err);
        ad_model_unref(m);
    }
}

static void test_load_current(void **state)
{
    struct ctx *c = *state;
    char store[4200], path[4300];
    snprintf(store, sizeof store, "%s/store", c->dir);
    snprintf(path, sizeof path, "%s/fixture", store);
    assert_int_equal(mkdir(store, 0755), 0);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/fixture/v1", store);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(fixture_write(path, &base), 0);

    /* No CURRENT yet: the error names the file. */
    assert_null(ad_model_load_current(store, "fixture", NULL, c->err, sizeof c->err));
    assert_non_null(strstr(c->err, "fixture/CURRENT"));

    snprintf(path, sizeof path, "%s/fixture/CURRENT", store);
    FILE *fp = fopen(path, "w");
    fputs("v1\n", fp);
    fclose(fp);
    struct ad_model *m = ad_model_load_current(store, "fixture", NULL, c->err, sizeof c->err);
    if (!m)
        fail_msg("%s", c->err);
    ad_model_unref(m);

    /* CURRENT may not point out of the model's folder. */
    fp = fopen(path, "w");
    fputs("../../etc\n", fp);
    fclose(fp);
    assert_null(ad_model_load_current(store, "fixture", NULL, c->err, sizeof c->err));
    assert_non_null(strstr(c->err, "is not a version name"));
}

/* FIFOs, folders and devices in a version's place are refused at once with what they are: a
 * FIFO would block open(2) until a writer came (the alarm makes that a failure). */
static void test_special_files(void **state)
{
    struct ctx *c = *state;
    char path[4300], store[4200];
    alarm(30);
    snprintf(path, sizeof path, "%s/manifest.json", c->dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkfifo(path, 0644), 0);
    assert_refused(c, NULL, "/manifest.json: is a FIFO, not a regular file", NULL);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_refused(c, NULL, "/manifest.json: is a directory, not a regular file", NULL);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(fixture_write(c->dir, &base), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", c->dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(symlink("/dev/zero", path), 0);
    assert_refused(c, NULL, "/model.safetensors: is a character device, not a regular file", NULL);

    snprintf(store, sizeof store, "%s/store", c->dir);
    snprintf(path, sizeof path, "%s/fixture", store);
    assert_int_equal(mkdir(store, 0755), 0);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/fixture/CURRENT", store);
    assert_int_equal(mkfifo(path, 0644), 0);
    assert_null(ad_model_load_current(store, "fixture", NULL, c->err, sizeof c->err));
    assert_non_null(strstr(c->err, "/fixture/CURRENT: is a FIFO, not a regular file"));
    alarm(0);
}

static void test_truncated(void **state)
{
    struct ctx *c = *state;
    size_t len;
    uint8_t *file = fixture_read_weights(c->dir, &len);
    FILE *fp = fopen(strcat(strcpy(c->err, c->dir), "/model.safetensors"), "wb");
    fwrite(file, 1, len / 2, fp);
    fclose(fp);
    /* As found on disk after an interrupted copy: the checksum catches it. */
    assert_refused(c, NULL, "model.safetensors", "sha256 is", NULL);
    /* Written short by a broken writer that checksummed what it wrote: the offsets catch it. */
    assert_int_equal(fixture_write_weights(c->dir, file, len / 2), 0);
    assert_refused(c, NULL, "model.safetensors", "tensor ", "past the", NULL);
    assert_int_equal(fixture_write_weights(c->dir, file, 5), 0);
    assert_refused(c, NULL, "model.safetensors", "truncated", NULL);
    free(file);
}

static void test_oversized(void **state)
{
    struct ctx *c = *state;
    size_t len;
    uint8_t *file = fixture_read_weights(c->dir, &len);
    /* A header that claims more than the file holds. */
    file[5] = 0x01; /* 2^40 bytes */
    assert_int_equal(fixture_write_weights(c->dir, file, len), 0);
    assert_refused(c, NULL, "model.safetensors", "the header claims", NULL);
    free(file);
    /* A file over the loader's limit (sparse: it costs no disk) is refused before reading. */
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", c->dir);
    assert_int_equal(truncate(path, (off_t)1 << 31), 0);
    assert_refused(c, NULL, "model.safetensors", "more than the", NULL);
}

static void test_nan_weight(void **state)
{
    struct ctx *c = *state;
    size_t len;
    uint8_t *file = fixture_read_weights(c->dir, &len);
    float nan = NAN;
    memcpy(file + tensor_offset(file, "lstm.weight_hh_l1") + 4 * 7, &nan, 4);
    assert_int_equal(fixture_write_weights(c->dir, file, len), 0);
    assert_refused(c, NULL, "model.safetensors", "lstm.weight_hh_l1", "non-finite value at index 7",
                   NULL);
    float inf = INFINITY;
    memcpy(file + tensor_offset(file, "lstm.weight_hh_l1") + 4 * 7, &inf, 4);
    assert_int_equal(fixture_write_weights(c->dir, file, len), 0);
    assert_refused(c, NULL, "lstm.weight_hh_l1", "non-finite", NULL);
    free(file);
}

static void test_mis_shaped(void **state)
{
    struct ctx *c = *state;
    json_t *m = fixture_read_manifest(c->dir);
    json_object_set_new(json_object_get(m, "architecture"), "hidden", json_integer(8));
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    assert_refused(c, NULL, "model.safetensors", "lstm.weight_ih_l0", "wrong shape", NULL);

    /* The manifest has one layer fewer than the file, then one more. */
    json_object_set_new(json_object_get(m, "architecture"), "hidden", json_integer(16));
    json_object_set_new(json_object_get(m, "architecture"), "layers", json_integer(1));
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    assert_refused(c, NULL, "model.safetensors", "unexpected tensor lstm.", NULL);
    json_object_set_new(json_object_get(m, "architecture"), "layers", json_integer(3));
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    assert_refused(c, NULL, "model.safetensors", "missing tensor lstm.weight_ih_l2", NULL);
    json_decref(m);
}

static void test_golden_must_reproduce(void **state)
{
    struct ctx *c = *state;
    json_t *m = fixture_read_manifest(c->dir);
    json_t *out = json_object_get(json_object_get(m, "golden"), "output");
    json_array_set_new(out, 1, json_real(json_real_value(json_array_get(out, 1)) + 0.01));
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    assert_refused(c, NULL, "manifest.json", "golden sample does not reproduce", "output 1", NULL);
    json_decref(m);
}

/* A stream model loads only when its golden steps reproduce, run as serving runs them (a
 * warm-up into a state table, then a step at a time); the step keys are a stream model's. */
static void test_stream_model(void **state)
{
    struct ctx *c = *state;
    struct fixture_model spec = base;
    spec.stream = true;
    assert_int_equal(fixture_write(c->dir, &spec), 0);
    struct ad_model *model = ad_model_load(c->dir, NULL, c->err, sizeof c->err);
    if (!model)
        fail_msg("%s", c->err);
    assert_int_equal(ad_model_mode(model), AD_MODEL_STREAM);
    json_t *d = json_object();
    ad_model_describe(model, d);
    assert_string_equal(json_string_value(json_object_get(d, "mode")), "stream");
    json_decref(d);
    ad_model_unref(model);

    json_t *m = fixture_read_manifest(c->dir);
    json_t *out = json_array_get(json_object_get(json_object_get(m, "golden"), "step_outputs"), 2);
    json_array_set_new(out, 0, json_real(json_real_value(json_array_get(out, 0)) + 0.01));
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    assert_refused(c, NULL, "golden sample does not reproduce", "step 2's output 0", NULL);
    json_object_del(json_object_get(m, "golden"), "step_outputs");
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    assert_refused(c, NULL, "a stream model's golden needs step_inputs and step_outputs", NULL);
    json_object_del(json_object_get(m, "architecture"), "rewarm_every");
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    assert_refused(c, NULL, "a stream model needs rewarm_every", NULL);
    json_object_set_new(json_object_get(m, "architecture"), "mode", json_string("streaming"));
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    assert_refused(c, NULL, "architecture: mode must be windowed or stream", NULL);
    json_decref(m);

    /* A windowed model with step keys is refused: it would never check them. */
    assert_int_equal(fixture_write(c->dir, &base), 0);
    m = fixture_read_manifest(c->dir);
    json_object_set_new(json_object_get(m, "golden"), "step_inputs", json_array());
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    assert_refused(c, NULL, "are for stream models", NULL);
    json_object_del(json_object_get(m, "golden"), "step_inputs");
    json_object_set_new(json_object_get(m, "architecture"), "mode", json_string("windowed"));
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    model = ad_model_load(c->dir, NULL, c->err, sizeof c->err);
    if (!model)
        fail_msg("%s", c->err);
    assert_int_equal(ad_model_mode(model), AD_MODEL_WINDOWED);
    ad_model_unref(model);
    json_decref(m);
}

static void test_manifest_errors(void **state)
{
    struct ctx *c = *state;
    set_manifest(c, "calibraton", json_object());
    assert_refused(c, NULL, "manifest.json", "unknown key \"calibraton\"", NULL);
    assert_int_equal(fixture_write(c->dir, &base), 0);

    set_manifest(c, "normalization",
                 json_pack("{s:[f,f,f], s:[f,f,f]}", "mean", 0.0, 0.0, 0.0, "std", 1.0, 0.0, 1.0));
    assert_refused(c, NULL, "manifest.json: normalization", "std above 0", NULL);
    assert_int_equal(fixture_write(c->dir, &base), 0);

    set_manifest(c, "weights_sha256", json_string("abc"));
    assert_refused(c, NULL, "weights_sha256 must be 64", NULL);
    assert_int_equal(fixture_write(c->dir, &base), 0);

    json_t *m = fixture_read_manifest(c->dir);
    json_object_del(m, "golden");
    assert_int_equal(fixture_write_manifest(c->dir, m), 0);
    json_decref(m);
    assert_refused(c, NULL, "missing key \"golden\"", NULL);

    char path[4200];
    snprintf(path, sizeof path, "%s/manifest.json", c->dir);
    FILE *fp = fopen(path, "w");
    fputs("{\n  \"format\": 1,\n  \"model\": oops\n}\n", fp);
    fclose(fp);
    assert_refused(c, NULL, "manifest.json:3:", NULL);
}

static void test_detector_mismatch(void **state)
{
    struct ctx *c = *state;
    struct ad_strlist other = {.items = (char *[]){"src.f0", "src.f2", "src.f1"}, .len = 3};
    struct ad_model_expect e = {.features = &other};
    assert_refused(c, &e, "features differ from the detector's", NULL);
    e = (struct ad_model_expect){.window = 16};
    assert_refused(c, &e, "window is 8 steps, the detector's 16", NULL);
    e = (struct ad_model_expect){.step_ms = 60000};
    assert_refused(c, &e, "step is 10000 ms, the detector's 60000 ms", NULL);
}

static void test_parse_from_memory(void **state)
{
    struct ctx *c = *state;
    size_t wlen, mlen;
    uint8_t *weights = fixture_read_weights(c->dir, &wlen);
    json_t *doc = fixture_read_manifest(c->dir);
    char *manifest = json_dumps(doc, 0);
    mlen = strlen(manifest);
    struct ad_model *m = ad_model_parse("http://store/fixture/v1", (const uint8_t *)manifest, mlen,
                                        weights, wlen, NULL, c->err, sizeof c->err);
    if (!m)
        fail_msg("%s", c->err);
    assert_string_equal(ad_model_dir(m), "http://store/fixture/v1");
    ad_model_unref(m);
    weights[wlen - 1] ^= 1;
    assert_null(ad_model_parse("http://store/fixture/v1", (const uint8_t *)manifest, mlen, weights,
                               wlen, NULL, c->err, sizeof c->err));
    assert_non_null(strstr(c->err, "http://store/fixture/v1/model.safetensors: sha256"));
    free(manifest);
    json_decref(doc);
    free(weights);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_precision_dtypes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_current, setup, teardown),
        cmocka_unit_test_setup_teardown(test_special_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nan_weight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mis_shaped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_golden_must_reproduce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detector_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_from_memory, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
