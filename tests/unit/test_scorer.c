/*
 * The scorer thread: jobs come back in order through the wake-up fd, scored exactly as the
 * plain functions score them; a job without a model comes back unscored; a job whose windows
 * do not fit the model comes back with an error; backend selection refuses a forced CUDA
 * without a device.
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
#include "gpu/device.h"
#include "gpu/lstm.h"
#include "gpu/model.h"
#include "gpu/score.h"
#include "gpu/scorer.h"
#include "gpu/stream_table.h"
#include "model_fixture.h"

static const struct fixture_model spec = {
    .layers = 2, .hidden = 32, .features = 4, .window = 16, .step_ms = 10000, .seed = 11};

struct ctx {
    char *dir;
    struct ad_model *model;
    struct ad_metrics *metrics;
};

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof *c);
    char err[512];
    c->dir = fixture_tempdir();
    assert_int_equal(fixture_write(c->dir, &spec), 0);
    c->model = ad_model_load(c->dir, NULL, err, sizeof err);
    assert_non_null(c->model);
    c->metrics = ad_metrics_new();
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    ad_model_unref(c->model);
    ad_metrics_destroy(c->metrics);
    fixture_remove(c->dir);
    free(c->dir);
    free(c);
    return 0;
}

/* Waits on the fd, as the loop does, for the next finished job. */
static struct ad_score_job *wait_job(struct ad_scorer *s)
{
    for (int tries = 0; tries < 600; tries++) {
        struct ad_score_job *job = ad_scorer_take(s);
        if (job)
            return job;
        struct pollfd p = {.fd = ad_scorer_fd(s), .events = POLLIN};
        poll(&p, 1, 100);
    }
    fail_msg("no job came back within a minute");
    abort(); /* fail_msg does not return; the compiler must not think a NULL job comes back */
}

/* The scores computed directly on the calling thread. */
static void expected_scores(const struct ad_model *m, const struct ad_window_batch *b,
                            float *scores, float *shares)
{
    size_t n = b->n_windows, F = b->n_features, steps = b->window_len - 1;
    float *x = malloc(n * steps * F * sizeof *x), *y = malloc(n * F * sizeof *y);
    char err[256];
    struct ad_lstm_backend *cpu = ad_lstm_backend_cpu_new(1, err, sizeof err);
    assert_non_null(cpu);
    ad_score_inputs(m, b, 0, n, x);
    assert_int_equal(
        ad_lstm_forward(cpu, ad_model_weights(m), x, n, steps, steps * F, y, err, sizeof err), 0);
    ad_score_windows(m, b, 0, n, y, NULL, scores, shares);
    ad_lstm_backend_destroy(cpu);
    free(x);
    free(y);
}

static void test_jobs_come_back_in_order(void **state)
{
    struct ctx *c = *state;
    struct ad_settings_scoring set = {
        .backend = AD_BACKEND_CPU, .max_batch = 1024, .queue_depth = 4, .cpu_threads = 2};
    char err[256];
    struct ad_scorer *s = ad_scorer_new(&set, c->metrics, err, sizeof err);
    if (!s)
        fail_msg("%s", err);
    assert_string_equal(ad_scorer_backend(s), "cpu");

    size_t sizes[3] = {700, 3, 41};
    int owners[3];
    for (size_t i = 0; i < 3; i++) {
        struct ad_window_batch *b = fixture_batch(sizes[i], 16, 4, (unsigned)i + 1);
        struct ad_model *m = i == 1 ? NULL : ad_model_ref(c->model);
        struct ad_score_job *job = ad_score_job_new(b, m, &owners[i]);
        assert_non_null(job);
        ad_scorer_submit(s, job);
    }
    for (size_t i = 0; i < 3; i++) {
        struct ad_score_job *job = wait_job(s);
        assert_ptr_equal(job->owner, &owners[i]);
        assert_int_equal(job->batch->n_windows, sizes[i]);
        assert_string_equal(job->error, "");
        if (i == 1) {
            assert_int_equal(job->scored, 0);
            for (size_t w = 0; w < sizes[i]; w++)
                assert_true(isnan(job->scores[w]));
        } else {
            assert_int_equal(job->scored, sizes[i]);
            float *want = malloc(sizes[i] * sizeof *want);
            float *want_shares = malloc(sizes[i] * 4 * sizeof *want_shares);
            expected_scores(c->model, job->batch, want, want_shares);
            for (size_t w = 0; w < sizes[i]; w++) {
                assert_true(isfinite(job->scores[w]));
                assert_float_equal(job->scores[w], want[w], 1e-5 * fmax(1.0, want[w]));
                assert_float_equal(job->shares[w * 4 + 3], want_shares[w * 4 + 3], 1e-5);
            }
            free(want);
            free(want_shares);
            assert_string_equal(job->backend, "cpu");
        }
        ad_score_job_free(job);
    }
    assert_int_equal(ad_scorer_pending(s), 0);
    assert_null(ad_scorer_take(s));

    json_t *status = json_object();
    ad_scorer_status(s, status);
    assert_string_equal(json_string_value(json_object_get(status, "backend")), "cpu");
    assert_int_equal(json_integer_value(json_object_get(status, "windows_scored")), 741);
    assert_int_equal(json_integer_value(json_object_get(status, "batches")), 3);
    json_decref(status);
    char *text = ad_metrics_render(c->metrics, NULL);
    assert_non_null(strstr(text, "anomalyd_scoring_backend_info{backend=\"cpu\""));
    assert_non_null(strstr(text, "anomalyd_scoring_batch_windows_count 2"));
    assert_non_null(strstr(text, "anomalyd_scoring_queue_depth 0"));
    free(text);
    ad_scorer_destroy(s);
}

/* ---- stream models ---- */

#define SE 5  /* entities */
#define SK 7  /* buckets after the first */
#define ST 16 /* T */
#define SF 4  /* F */

struct series {
    float v[SE][ST + SK][SF];
    uint64_t born[SE][SK + 1];
    bool present[SE][SK + 1];
};

/* Values near the model fixture's normalization; every entity present at every bucket, born
 * born + e. */
static void fill_series(struct series *ser, unsigned seed, uint64_t born)
{
    for (size_t e = 0; e < SE; e++) {
        for (size_t t = 0; t < ST + SK; t++)
            for (size_t f = 0; f < SF; f++)
                ser->v[e][t][f] =
                    10.0f * (float)f + (1.0f + (float)f) * ((float)rand_r(&seed) / RAND_MAX - 0.5f);
        for (size_t j = 0; j <= SK; j++) {
            ser->born[e][j] = born + e;
            ser->present[e][j] = true;
        }
    }
}

/* Window of entity e for bucket j (0 .. SK): series rows j .. j + T - 1, the newest at
 * bucket 1000 + j. A batch with `rows` steps per window ending at bucket j, for the entities
 * listed (all when only is -1). */
static struct ad_window_batch *series_batch(const struct series *ser, size_t j, size_t rows,
                                            size_t first_row, int only)
{
    struct ad_window_batch *b = fixture_batch(SE, rows, SF, 1);
    b->bucket_start = (int64_t)(1000 + j) * b->step;
    b->slots = malloc(SE * sizeof *b->slots);
    b->born = malloc(SE * sizeof *b->born);
    size_t n = 0, used = 0;
    for (size_t e = 0; e < SE; e++) {
        if ((only >= 0 && (size_t)only != e) || (only < 0 && !ser->present[e][j]))
            continue;
        memcpy(b->values + n * rows * SF, ser->v[e][first_row], rows * SF * sizeof(float));
        b->slots[n] = (uint32_t)(3 * e + 1);
        b->born[n] = ser->born[e][j];
        used += (size_t)sprintf(b->keys + used, "e%zu", e);
        b->key_offsets[++n] = used;
    }
    b->n_windows = n;
    return b;
}

/* Model m's score for entity e at bucket j when its state started at bucket j0: the windowed
 * forward over every input read since, from the series. */
static float carried_score(const struct ad_model *m, const struct series *ser, size_t e, size_t j,
                           size_t j0)
{
    size_t rows = j - j0 + ST, steps = rows - 1;
    struct ad_window_batch *b = series_batch(ser, j, rows, j0, (int)e);
    float *x = malloc(steps * SF * sizeof *x), y[SF], score, shares[SF];
    char err[256];
    struct ad_lstm_backend *cpu = ad_lstm_backend_cpu_new(1, err, sizeof err);
    assert_non_null(cpu);
    ad_score_inputs(m, b, 0, 1, x);
    assert_int_equal(
        ad_lstm_forward(cpu, ad_model_weights(m), x, 1, steps, steps * SF, y, err, sizeof err), 0);
    ad_score_windows(m, b, 0, 1, y, NULL, &score, shares);
    ad_lstm_backend_destroy(cpu);
    ad_window_batch_free(b);
    free(x);
    return score;
}

static double metric(struct ad_metrics *metrics, const char *how)
{
    char *text = ad_metrics_render(metrics, NULL), line[128];
    snprintf(line, sizeof line, "anomalyd_scoring_stream_windows_total{how=\"%s\"} ", how);
    const char *at = strstr(text, line);
    double v = at ? atof(at + strlen(line)) : -1;
    free(text);
    return v;
}

/*
 * A stream model carries each entity's state from bucket to bucket: after a warm-up over its
 * first window, one step a bucket gives the score the windowed forward over every input since
 * would give. A bucket without the entity's window (a gap) and a slot taken over by a new
 * entity (another birth) warm up again; so does a batch scored with another model.
 */
static void test_stream_model_carries_state(void **state)
{
    struct ctx *c = *state;
    struct fixture_model stream_spec = spec;
    stream_spec.stream = true;
    char err[512], *dir = fixture_tempdir();
    assert_int_equal(fixture_write(dir, &stream_spec), 0);
    struct ad_model *m = ad_model_load(dir, NULL, err, sizeof err);
    if (!m)
        fail_msg("%s", err);
    assert_int_equal(ad_model_mode(m), AD_MODEL_STREAM);
    struct ad_metrics *metrics = ad_metrics_new();
    struct ad_settings_scoring set = {
        .backend = AD_BACKEND_CPU, .max_batch = 1024, .queue_depth = 4, .cpu_threads = 2};
    struct ad_scorer *s = ad_scorer_new(&set, metrics, err, sizeof err);
    if (!s)
        fail_msg("%s", err);

    static struct series ser;
    fill_series(&ser, 5, 100);
    ser.present[2][3] = false; /* a gap: entity 2 has no window at bucket 3 */
    for (size_t j = 2; j <= SK; j++)
        ser.born[4][j] = 999; /* entity 4's slot is taken over at bucket 2 */
    size_t started[SE] = {0};
    started[2] = 4;
    started[4] = 2;

    for (size_t j = 0; j <= SK; j++) {
        ad_scorer_submit(s,
                         ad_score_job_new(series_batch(&ser, j, ST, j, -1), ad_model_ref(m), NULL));
        struct ad_score_job *job = wait_job(s);
        assert_string_equal(job->error, "");
        for (size_t e = 0, w = 0; e < SE; e++) {
            if (!ser.present[e][j])
                continue;
            size_t j0 = j >= started[e] ? started[e] : 0;
            if (e == 2 && j < 3)
                j0 = 0;
            float want = carried_score(m, &ser, e, j, j0);
            assert_true(isfinite(want));
            assert_float_equal(job->scores[w], want, 1e-4 * fmax(1.0, want));
            w++;
        }
        ad_score_job_free(job);
    }
    /* Warm-ups: all five at bucket 0, the new entity 4 at 2, entity 2 after its gap at 4. */
    assert_true(metric(metrics, "warm_up") == 7);
    assert_true(metric(metrics, "step") == 5 * (SK + 1) - 7 - 1);

    /* Another model for the same detector (a hot swap) starts from warm-ups: its scores are
     * its windowed ones. */
    struct ad_window_batch *b = series_batch(&ser, SK, ST, SK, -1);
    float want[SE], want_shares[SE * SF];
    expected_scores(c->model, b, want, want_shares);
    ad_scorer_submit(s, ad_score_job_new(b, ad_model_ref(c->model), NULL));
    struct ad_score_job *job = wait_job(s);
    for (size_t w = 0; w < SE; w++)
        assert_float_equal(job->scores[w], want[w], 1e-5 * fmax(1.0, want[w]));
    ad_score_job_free(job);

    /* A batch without slots (made elsewhere): each window warms up alone. */
    b = fixture_batch(9, ST, SF, 3);
    float want9[9], shares9[9 * SF];
    expected_scores(m, b, want9, shares9);
    ad_scorer_submit(s, ad_score_job_new(b, ad_model_ref(m), NULL));
    job = wait_job(s);
    for (size_t w = 0; w < 9; w++)
        assert_float_equal(job->scores[w], want9[w], 1e-5 * fmax(1.0, want9[w]));
    ad_score_job_free(job);
    assert_true(metric(metrics, "warm_up") == 7);

    json_t *status = json_object();
    ad_scorer_status(s, status);
    json_t *stream = json_object_get(status, "stream");
    assert_int_equal(json_integer_value(json_object_get(stream, "warm_ups")), 7);
    assert_int_equal(json_integer_value(json_object_get(stream, "tables")), 1);
    assert_true(json_integer_value(json_object_get(stream, "state_bytes")) > 0);
    json_decref(status);

    ad_scorer_destroy(s);
    ad_metrics_destroy(metrics);
    ad_model_unref(m);
    fixture_remove(dir);
    free(dir);
}

/*
 * Every entity warms up again once every rewarm_every buckets, at a phase from its key, so a
 * score depends on the data alone: a scorer that starts later (a restart) gives the scores of
 * one that ran all along, to rounding, once each entity has passed its re-warm bucket.
 */
static void test_stream_scores_do_not_depend_on_the_start(void **state)
{
    (void)state;
    enum { N = 3 };
    struct fixture_model stream_spec = spec;
    stream_spec.stream = true;
    stream_spec.rewarm_every = N;
    char err[512], *dir = fixture_tempdir();
    assert_int_equal(fixture_write(dir, &stream_spec), 0);
    struct ad_model *m = ad_model_load(dir, NULL, err, sizeof err);
    if (!m)
        fail_msg("%s", err);
    assert_int_equal((int)ad_model_rewarm_every(m), N);
    struct ad_settings_scoring set = {
        .backend = AD_BACKEND_CPU, .max_batch = 1024, .queue_depth = 4, .cpu_threads = 1};
    struct ad_scorer *all_along = ad_scorer_new(&set, NULL, err, sizeof err);
    struct ad_scorer *later = ad_scorer_new(&set, NULL, err, sizeof err);
    assert_non_null(all_along);
    assert_non_null(later);
    static struct series ser;
    fill_series(&ser, 9, 7);
    const size_t start = 2; /* where the later scorer starts */
    size_t equal = 0, steps_compared = 0;
    for (size_t j = 0; j <= SK; j++) {
        ad_scorer_submit(all_along,
                         ad_score_job_new(series_batch(&ser, j, ST, j, -1), ad_model_ref(m), NULL));
        struct ad_score_job *a = wait_job(all_along);
        if (j >= start) {
            ad_scorer_submit(
                later, ad_score_job_new(series_batch(&ser, j, ST, j, -1), ad_model_ref(m), NULL));
            struct ad_score_job *b = wait_job(later);
            for (size_t e = 0; e < SE; e++) {
                char key[16];
                int len = snprintf(key, sizeof key, "e%zu", e);
                uint64_t phase = ad_stream_phase(key, (size_t)len, N);
                /* The first bucket at or after the start where the entity re-warms. */
                size_t first = start;
                while ((1000 + first + phase) % N != 0)
                    first++;
                if (j >= first) {
                    /* The same inputs and operations; only BLAS's blocking may differ with
                     * the batches' make-up (the last bits). */
                    assert_float_equal(a->scores[e], b->scores[e], 1e-6 * fmax(1.0, a->scores[e]));
                    equal++;
                    steps_compared += j > first;
                }
            }
            ad_score_job_free(b);
        }
        ad_score_job_free(a);
    }
    assert_true(equal > SE);
    assert_true(steps_compared > 0);
    ad_scorer_destroy(all_along);
    ad_scorer_destroy(later);
    ad_model_unref(m);
    fixture_remove(dir);
    free(dir);
}

static void test_misfit_batch_is_an_error(void **state)
{
    struct ctx *c = *state;
    struct ad_settings_scoring set = {.backend = AD_BACKEND_CPU, .cpu_threads = 1};
    char err[256];
    struct ad_scorer *s = ad_scorer_new(&set, NULL, err, sizeof err);
    assert_non_null(s);
    /* Windows of 8 steps for a model of 16. */
    ad_scorer_submit(s, ad_score_job_new(fixture_batch(5, 8, 4, 1), ad_model_ref(c->model), s));
    struct ad_score_job *job = wait_job(s);
    assert_non_null(strstr(job->error, "the batch has 8×4"));
    assert_int_equal(job->scored, 0);
    ad_score_job_free(job);
    ad_scorer_destroy(s);
}

static void test_destroy_with_jobs_queued(void **state)
{
    struct ctx *c = *state;
    struct ad_settings_scoring set = {.backend = AD_BACKEND_CPU, .cpu_threads = 1};
    char err[256];
    struct ad_scorer *s = ad_scorer_new(&set, NULL, err, sizeof err);
    assert_non_null(s);
    for (int i = 0; i < 5; i++)
        ad_scorer_submit(
            s, ad_score_job_new(fixture_batch(2000, 16, 4, 1), ad_model_ref(c->model), NULL));
    /* Whatever is queued or done is freed (the sanitizer build checks for leaks). */
    ad_scorer_destroy(s);
}

static void test_backend_choice_without_a_device(void **state)
{
    (void)state;
    struct ad_gpu_info info;
    ad_gpu_probe(0, &info);
    if (info.device_count > 0)
        skip(); /* this machine has a GPU: gpu-labelled tests cover it */
    char err[256];
    struct ad_settings_scoring set = {.backend = AD_BACKEND_CUDA, .cpu_threads = 1};
    assert_null(ad_scorer_new(&set, NULL, err, sizeof err));
    assert_non_null(strstr(err, "scoring.backend is cuda, but CUDA is not usable"));
    set.backend = AD_BACKEND_AUTO;
    struct ad_scorer *s = ad_scorer_new(&set, NULL, err, sizeof err);
    assert_non_null(s);
    assert_string_equal(ad_scorer_backend(s), "cpu");
    ad_scorer_destroy(s);
}

/* A candidate model scores the same batch beside the job's model; a candidate that does not
 * fit the batch fails alone. */
static void test_shadow_scores_beside_the_model(void **state)
{
    struct ctx *c = *state;
    struct ad_settings_scoring set = {
        .backend = AD_BACKEND_CPU, .max_batch = 1024, .queue_depth = 4, .cpu_threads = 1};
    struct fixture_model other = spec, misfit = spec;
    other.seed = 99;
    misfit.window = 8;
    char err[256], *dirs[2] = {fixture_tempdir(), fixture_tempdir()};
    assert_int_equal(fixture_write(dirs[0], &other), 0);
    assert_int_equal(fixture_write(dirs[1], &misfit), 0);
    struct ad_model *shadows[2];
    for (int i = 0; i < 2; i++) {
        shadows[i] = ad_model_load(dirs[i], NULL, err, sizeof err);
        assert_non_null(shadows[i]);
    }
    struct ad_scorer *s = ad_scorer_new(&set, c->metrics, err, sizeof err);
    assert_non_null(s);
    for (int i = 0; i < 2; i++) {
        struct ad_score_job *job =
            ad_score_job_new(fixture_batch(37, 16, 4, 5), ad_model_ref(c->model), NULL);
        job->shadow = ad_model_ref(shadows[i]);
        ad_scorer_submit(s, job);
    }
    float want[37], want_shares[37 * 4];
    struct ad_score_job *job = wait_job(s);
    assert_string_equal(job->error, "");
    assert_string_equal(job->shadow_error, "");
    assert_int_equal(job->scored, 37);
    assert_non_null(job->shadow_scores);
    expected_scores(shadows[0], job->batch, want, want_shares);
    for (size_t w = 0; w < 37; w++)
        assert_float_equal(job->shadow_scores[w], want[w], 1e-5 * fmax(1.0, want[w]));
    expected_scores(c->model, job->batch, want, want_shares);
    for (size_t w = 0; w < 37; w++)
        assert_float_equal(job->scores[w], want[w], 1e-5 * fmax(1.0, want[w]));
    ad_score_job_free(job);

    job = wait_job(s);
    assert_string_equal(job->error, "");
    assert_int_equal(job->scored, 37);
    assert_null(job->shadow_scores);
    assert_non_null(strstr(job->shadow_error, "is for windows of 8"));
    ad_score_job_free(job);

    ad_scorer_destroy(s);
    for (int i = 0; i < 2; i++) {
        ad_model_unref(shadows[i]);
        fixture_remove(dirs[i]);
        free(dirs[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_come_back_in_order),
        cmocka_unit_test(test_misfit_batch_is_an_error),
        cmocka_unit_test(test_stream_model_carries_state),
        cmocka_unit_test(test_stream_scores_do_not_depend_on_the_start),
        cmocka_unit_test(test_shadow_scores_beside_the_model),
        cmocka_unit_test(test_destroy_with_jobs_queued),
        cmocka_unit_test(test_backend_choice_without_a_device),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
