/*
 * A detector's serving side and its shadow mode (docs/model-store.md): a new version offered
 * while another serves scores beside it for shadow.windows windows, is promoted when the two
 * agree often enough, and refused (the serving one stays) when they do not; a newer candidate
 * replaces one in shadow; without shadow mode a new version serves at once.
 */

#include <math.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/metrics.h"
#include "batch_fixture.h"
#include "config/config.h"
#include "detect/serving.h"
#include "gpu/model.h"
#include "gpu/scorer.h"
#include "model_fixture.h"

static const struct fixture_model spec = {
    .layers = 1, .hidden = 16, .features = 4, .window = 16, .step_ms = 10000, .seed = 3};

#define CONFIG                                                       \
    "kafka: {brokers: \"127.0.0.1:9\", group_id: g}\n"               \
    "sources:\n"                                                     \
    "  - name: src\n"                                                \
    "    kafka:\n"                                                   \
    "      topics: [t]\n"                                            \
    "      time: {path: ts, format: unix_ms}\n"                      \
    "      labels: {e: e}\n"                                         \
    "      features: {f0: count, f1: count, f2: count, f3: count}\n" \
    "detectors:\n"                                                   \
    "  - name: d\n"                                                  \
    "    keys: [e]\n"                                                \
    "    features: [src.f0, src.f1, src.f2, src.f3]\n"               \
    "    step: 10s\n"                                                \
    "    window: 160s\n"                                             \
    "    shadow: {windows: %d, max_disagreement: 0.5}\n"             \
    "model_store: {url: \"http://127.0.0.1:9/models\"}\n"            \
    "scoring: {backend: cpu, cpu_threads: 1}\n"

struct ctx {
    struct ad_config *config;
    struct ad_metrics *metrics;
    struct ad_scorer *scorer;
    struct ad_serving *serving;
    char *dirs[4];
};

/* Writes a fixture version under dirs[i]: seed, version name, and calibrated threshold. */
static struct ad_model *version(struct ctx *c, int i, unsigned seed, const char *name,
                                double threshold)
{
    struct fixture_model m = spec;
    char err[512];
    m.seed = seed;
    c->dirs[i] = fixture_tempdir();
    assert_int_equal(fixture_write(c->dirs[i], &m), 0);
    json_t *manifest = fixture_read_manifest(c->dirs[i]);
    json_object_set_new(manifest, "version", json_string(name));
    json_object_set_new(json_object_get(manifest, "calibration"), "threshold",
                        json_real(threshold));
    assert_int_equal(fixture_write_manifest(c->dirs[i], manifest), 0);
    json_decref(manifest);
    struct ad_model *model = ad_model_load(c->dirs[i], NULL, err, sizeof err);
    if (!model)
        fail_msg("%s", err);
    return model;
}

static void start(struct ctx *c, int shadow_windows)
{
    char yaml[2048], err[512];
    snprintf(yaml, sizeof yaml, CONFIG, shadow_windows);
    struct ad_diag *diag = ad_diag_new();
    c->config = ad_config_load_buffer("t.yaml", yaml, strlen(yaml), diag);
    if (!c->config)
        ad_diag_print(diag, stderr);
    ad_diag_destroy(diag);
    assert_non_null(c->config);
    const struct ad_settings *s = ad_config_settings(c->config);
    c->metrics = ad_metrics_new();
    c->scorer = ad_scorer_new(&s->scoring, c->metrics, err, sizeof err);
    assert_non_null(c->scorer);
    c->serving = ad_serving_new(s, 0, c->scorer, NULL, c->metrics, c, err, sizeof err);
    assert_non_null(c->serving);
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    ad_serving_destroy(c->serving);
    ad_scorer_destroy(c->scorer);
    ad_metrics_destroy(c->metrics);
    ad_config_unref(c->config);
    for (int i = 0; i < 4; i++) {
        if (c->dirs[i]) {
            fixture_remove(c->dirs[i]);
            free(c->dirs[i]);
        }
    }
    free(c);
    return 0;
}

static int setup(void **state)
{
    *state = calloc(1, sizeof(struct ctx));
    return 0;
}

/* Scores one batch of n windows of bucket b through the serving side, as the pipeline does. */
static void run_batch(struct ctx *c, size_t n, int64_t bucket)
{
    struct ad_window_batch *b = fixture_batch(n, 16, 4, (unsigned)bucket);
    b->bucket_start = bucket * 10000;
    b->step = 10000;
    b->last_of_bucket = true;
    ad_serving_submit(c->serving, b);
    ad_serving_closed(c->serving, bucket);
    for (int tries = 0; tries < 600; tries++) {
        struct ad_score_job *job = ad_scorer_take(c->scorer);
        if (job) {
            ad_serving_finish(ad_serving_of(job), job);
            return;
        }
        struct pollfd p = {.fd = ad_scorer_fd(c->scorer), .events = POLLIN};
        poll(&p, 1, 100);
    }
    fail_msg("no job came back within a minute");
}

static const char *serving_version(struct ctx *c)
{
    return ad_model_version(ad_serving_model(c->serving));
}

static json_t *model_status(struct ctx *c)
{
    json_t *out = json_object();
    ad_serving_status(c->serving, out);
    json_t *model = json_incref(json_object_get(out, "model"));
    json_decref(out);
    return model;
}

static double metric(struct ctx *c, const char *series)
{
    size_t len;
    char *text = ad_metrics_render(c->metrics, &len);
    const char *at = strstr(text, series);
    double v = at ? strtod(at + strlen(series), NULL) : NAN;
    free(text);
    return v;
}

static void test_identical_candidate_is_promoted_after_its_windows(void **state)
{
    struct ctx *c = *state;
    start(c, 20);
    ad_serving_offer_model(c->serving, version(c, 0, 3, "v1", 3.0));
    assert_string_equal(serving_version(c), "v1");
    run_batch(c, 8, 100);
    /* The same weights under another version: no difference at all. */
    ad_serving_offer_model(c->serving, version(c, 1, 3, "v2", 3.0));
    assert_string_equal(serving_version(c), "v1");
    json_t *model = model_status(c);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(model, "shadow"), "candidate")), "v2");
    json_decref(model);
    run_batch(c, 8, 101);
    run_batch(c, 8, 102);
    assert_string_equal(serving_version(c), "v1"); /* 16 of 20 windows */
    run_batch(c, 8, 103);
    assert_string_equal(serving_version(c), "v2");
    model = model_status(c);
    json_t *run = json_object_get(model, "last_shadow_run");
    assert_string_equal(json_string_value(json_object_get(run, "outcome")), "promoted");
    assert_int_equal(json_integer_value(json_object_get(run, "windows")), 24);
    assert_true(json_real_value(json_object_get(run, "max_score_difference")) == 0.0);
    assert_true(json_real_value(json_object_get(run, "disagreement")) == 0.0);
    assert_null(json_object_get(model, "shadow"));
    json_decref(model);
    assert_true(metric(c, "anomalyd_model_shadow_windows_total{detector=\"d\"} ") == 24);
    assert_true(
        metric(c, "anomalyd_model_shadow_runs_total{detector=\"d\",outcome=\"promoted\"} ") == 1);
}

static void test_disagreeing_candidate_is_refused(void **state)
{
    struct ctx *c = *state;
    start(c, 10);
    /* v1 calls nothing anomalous, v2 everything: they disagree on every window. */
    ad_serving_offer_model(c->serving, version(c, 0, 3, "v1", 1e9));
    ad_serving_offer_model(c->serving, version(c, 1, 4, "v2", 0.0));
    run_batch(c, 12, 200);
    assert_string_equal(serving_version(c), "v1");
    json_t *model = model_status(c);
    json_t *run = json_object_get(model, "last_shadow_run");
    assert_string_equal(json_string_value(json_object_get(run, "outcome")), "refused");
    assert_true(json_real_value(json_object_get(run, "disagreement")) == 1.0);
    assert_true(json_real_value(json_object_get(run, "mean_score_difference")) > 0.0);
    assert_non_null(strstr(json_string_value(json_object_get(model, "error")),
                           "version v2 disagreed with v1 on 100.0% of 12 shadowed windows"));
    json_decref(model);
    assert_true(metric(c, "anomalyd_model_load_failures_total{detector=\"d\"} ") == 1);
    assert_true(
        metric(c, "anomalyd_model_shadow_runs_total{detector=\"d\",outcome=\"refused\"} ") == 1);
    /* The serving version goes on scoring alone. */
    run_batch(c, 12, 201);
    assert_true(metric(c, "anomalyd_model_shadow_windows_total{detector=\"d\"} ") == 12);
    assert_true(metric(c, "anomalyd_windows_scored_total{detector=\"d\"} ") == 24);
}

static void test_newer_candidate_replaces_and_no_shadow_swaps_at_once(void **state)
{
    struct ctx *c = *state;
    start(c, 10);
    ad_serving_offer_model(c->serving, version(c, 0, 3, "v1", 3.0));
    ad_serving_offer_model(c->serving, version(c, 1, 4, "v2", 3.0));
    run_batch(c, 6, 300);
    ad_serving_offer_model(c->serving, version(c, 2, 5, "v3", 3.0));
    json_t *model = model_status(c);
    json_t *shadow = json_object_get(model, "shadow");
    assert_string_equal(json_string_value(json_object_get(shadow, "candidate")), "v3");
    assert_int_equal(json_integer_value(json_object_get(shadow, "windows")), 0);
    json_decref(model);
    run_batch(c, 10, 301);
    assert_string_equal(serving_version(c), "v3");

    /* Shadow mode off: a new version serves from the next batch on. */
    struct ctx *plain = calloc(1, sizeof *plain);
    start(plain, 0);
    ad_serving_offer_model(plain->serving, version(plain, 0, 3, "v1", 3.0));
    ad_serving_offer_model(plain->serving, version(plain, 1, 4, "v2", 3.0));
    assert_string_equal(serving_version(plain), "v2");
    void *p = plain;
    teardown(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_identical_candidate_is_promoted_after_its_windows,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_disagreeing_candidate_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_candidate_replaces_and_no_shadow_swaps_at_once,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
