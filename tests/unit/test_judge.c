/*
 * How unusual a window is for its entity (docs/scoring.md): the surprise of one stream, its
 * gate, the seasonal baseline, and the two streams together, against values worked out by
 * hand.
 */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "detect/judge.h"
#include "detect/recurrence.h"
#include "detect/seasonal.h"
#include "detect/surprise.h"
#include "gpu/score.h"
#include "gpu/model.h"
#include "model_fixture.h"

#define HOUR_MS 3600000LL
#define DAY_MS  (24 * HOUR_MS)

static void test_surprise_of_z(void **state)
{
    (void)state;
    /* −log10 Q(z): Q(0) = 1/2, Q(1) = 0.158655, Q(5) = 2.866516e-7. */
    assert_float_equal(ad_surprise_of_z(0), 0.301030, 1e-6);
    assert_float_equal(ad_surprise_of_z(1), 0.799546, 1e-6);
    assert_float_equal(ad_surprise_of_z(5), 6.542645, 1e-5);
    /* Where Q underflows the asymptote takes over, and the two agree where they meet. */
    assert_float_equal(ad_surprise_of_z(36.999) + 0.002 * 37 / M_LN10, ad_surprise_of_z(37.001),
                       1e-3);
    /* Far out it keeps ranking: no saturation at 1 as a likelihood has. */
    assert_true(ad_surprise_of_z(60) > ad_surprise_of_z(50));
    assert_true(isfinite(ad_surprise_of_z(1e6)) && ad_surprise_of_z(1e6) > 1e11);
    assert_float_equal(ad_surprise_likelihood(5), 0.99999, 1e-12);
}

static void test_surprise_first_windows(void **state)
{
    (void)state;
    struct ad_surprise s;
    ad_surprise_init(&s, 1.0, 0.25);
    double gated = -1;
    /* First window: short = 1.25, z = (1.25 − 1) / 0.25 = 1. */
    assert_float_equal(ad_surprise_update(&s, 1.25, &gated), 0.799546, 1e-6);
    assert_float_equal(gated, 0.799546, 1e-6); /* no gate before 50 windows */
    /* The long mean moved by 1/33 of the difference: 1 + 0.25/33; the variance to
     * (1 − 1/33) · (0.0625 + 0.0625/33 · ... ): z of the next short mean follows. */
    double w = 1.0 / 33, lm = 1 + w * 0.25, lv = (1 - w) * (0.0625 + w * 0.0625);
    /* Second window, score 2: short = 1.25 + (2 − 1.25) / 2 = 1.625. */
    double z = (1.625 - lm) / sqrt(lv);
    assert_float_equal(ad_surprise_update(&s, 2.0, NULL), ad_surprise_of_z(z), 1e-9);
    /* Below the usual: no surprise, never negative. */
    struct ad_surprise low;
    ad_surprise_init(&low, 1.0, 0.25);
    assert_true(ad_surprise_update(&low, 0.0, &gated) < 0.001 && gated >= 0);
}

/* A stream whose scores are often far above its mean (heavy tails) keeps a high bar: a
 * surprise that a quiet stream passes is gated to 0 in it. */
static void test_surprise_gate(void **state)
{
    (void)state;
    struct ad_surprise quiet, noisy;
    ad_surprise_init(&quiet, 1.0, 0.25);
    ad_surprise_init(&noisy, 1.0, 0.25);
    unsigned seed = 11;
    for (int i = 0; i < 3000; i++) {
        double u = (double)rand_r(&seed) / RAND_MAX;
        ad_surprise_update(&quiet, 1.0 + 0.1 * (u - 0.5), NULL);
        /* One window in 20 six times the usual. */
        ad_surprise_update(&noisy, i % 20 == 0 ? 6.0 : 1.0 + 0.1 * (u - 0.5), NULL);
    }
    double gated_quiet, gated_noisy;
    double raw_quiet = ad_surprise_update(&quiet, 3.0, &gated_quiet);
    double raw_noisy = ad_surprise_update(&noisy, 6.0, &gated_noisy);
    assert_true(raw_quiet > 5);
    assert_float_equal(gated_quiet, raw_quiet, 0);
    assert_true(raw_noisy > 0.5);
    assert_float_equal(gated_noisy, 0, 0);
}

static void test_seasonal(void **state)
{
    (void)state;
    /* Hourly: 24 slots; 5-minute: 48, the most; a week's step: one. */
    assert_int_equal(ad_seasonal_slots(HOUR_MS), 24);
    assert_int_equal(ad_seasonal_slots(300000), AD_SEASONAL_SLOTS);
    assert_int_equal(ad_seasonal_slots(7 * DAY_MS), 1);
    size_t size = ad_seasonal_size(2, HOUR_MS);
    void *mem = malloc(size);
    ad_seasonal_init(mem, 2, HOUR_MS);
    uint8_t both[2] = {1, 1}, first[2] = {1, 0};
    float shares[2];
    /* Day one: every slot takes its first value; nothing to compare with. */
    for (int h = 0; h < 24; h++) {
        float x[2] = {10.0f + (float)h, 5.0f};
        assert_true(isnan(ad_seasonal_update(mem, 2, HOUR_MS, h * HOUR_MS, x, both, NULL, shares)));
    }
    /* Day two, 03:00: feature 0 is 13 + 4, feature 1 as before. Feature 0's first residual
     * is its scale: z = 1; feature 1's is 0 with scale 0: z = 0. score = sqrt((1 + 0) / 2). */
    float x[2] = {17.0f, 5.0f};
    assert_float_equal(
        ad_seasonal_update(mem, 2, HOUR_MS, DAY_MS + 3 * HOUR_MS, x, both, NULL, shares), sqrt(0.5),
        1e-6);
    assert_float_equal(shares[0], 1.0, 1e-6);
    assert_float_equal(shares[1], 0.0, 1e-6);
    /* Day three, 03:00: the slot moved 0.3 of the way (13 → 14.2); feature 0 = 18.2 is a
     * residual of 4 again against a scale still 4: z = 1. Feature 1 unobserved: left out. */
    float y[2] = {18.2f, 0.0f};
    assert_float_equal(
        ad_seasonal_update(mem, 2, HOUR_MS, 2 * DAY_MS + 3 * HOUR_MS, y, first, NULL, NULL), 1.0,
        1e-5);
    /* A feature that never moved, then moves: far (50). */
    float z[2] = {14.2f + 0.3f * 4.0f, 6.0f};
    ad_seasonal_update(mem, 2, HOUR_MS, 3 * DAY_MS + 3 * HOUR_MS, z, both, NULL, shares);
    assert_true(shares[1] > 0.99);
    free(mem);
}

/* A daily spike at about 03:10 (drifting) stops being news on its third day; an incident at
 * another time, or four times as large, is still news; a week without it forgets it. */
static void test_recurrence(void **state)
{
    (void)state;
    const int64_t step = 300000, min = 60000;
    struct ad_recurrence r;
    ad_recurrence_init(&r);
    int64_t at0310 = 3 * HOUR_MS + 10 * min;
    assert_false(ad_recurrence_seen(&r, step, at0310, 20));                        /* day 0 */
    assert_false(ad_recurrence_seen(&r, step, DAY_MS + at0310 + 15 * min, 22));    /* 1 day */
    assert_true(ad_recurrence_seen(&r, step, 2 * DAY_MS + at0310 - 5 * min, 21));  /* 2 days */
    assert_false(ad_recurrence_seen(&r, step, 2 * DAY_MS + 15 * HOUR_MS, 21));     /* other time */
    assert_false(ad_recurrence_seen(&r, step, 2 * DAY_MS + at0310, 90));           /* far larger */
    assert_true(ad_recurrence_seen(&r, step, 3 * DAY_MS + at0310 + 20 * min, 25)); /* 03:30 */
    /* Two hours off is another time of day. */
    assert_false(ad_recurrence_seen(&r, step, 4 * DAY_MS + at0310 + 2 * HOUR_MS, 25));
    /* After a week without it, it is news again. */
    assert_false(ad_recurrence_seen(&r, step, 11 * DAY_MS + at0310, 25));
}

/* Direction and minimum deviation (docs/scoring.md): which deviations count. */
static void test_controls(void **state)
{
    (void)state;
    struct ad_feature_control up = {.direction = AD_DIRECTION_UP};
    struct ad_feature_control down = {.direction = AD_DIRECTION_DOWN};
    struct ad_feature_control big = {.min_abs = 50, .min_rel = 0.2};
    assert_true(ad_score_counts(NULL, 1, 2));
    assert_true(ad_score_counts(&up, 12, 10) && !ad_score_counts(&up, 8, 10));
    assert_true(ad_score_counts(&down, 8, 10) && !ad_score_counts(&down, 12, 10));
    assert_false(ad_score_counts(&up, 10, 10)); /* no change is no rise */
    /* At least max(50, 20 % of 400 = 80). */
    assert_false(ad_score_counts(&big, 470, 400));
    assert_true(ad_score_counts(&big, 480, 400) && ad_score_counts(&big, 320, 400));
    assert_true(ad_score_counts(&big, 150, 100)); /* there 50 is the larger */

    /* In the seasonal baseline: a drop of a feature that only matters up scores 0. */
    struct ad_feature_control controls[2] = {up, {0}};
    void *mem = malloc(ad_seasonal_size(2, HOUR_MS));
    ad_seasonal_init(mem, 2, HOUR_MS);
    uint8_t both[2] = {1, 1};
    float day1[2] = {10, 10}, day2[2] = {12, 10}, day3[2] = {5, 10};
    float shares[2];
    ad_seasonal_update(mem, 2, HOUR_MS, 0, day1, both, controls, shares);
    /* A rise: z = 1 (the first residual is the scale). */
    assert_float_equal(ad_seasonal_update(mem, 2, HOUR_MS, DAY_MS, day2, both, controls, shares),
                       sqrt(0.5), 1e-6);
    /* A fall of the same feature: it does not count, whatever its size. */
    assert_float_equal(
        ad_seasonal_update(mem, 2, HOUR_MS, 2 * DAY_MS, day3, both, controls, shares), 0, 0);
    free(mem);
}

static const struct fixture_model spec = {
    .layers = 1, .hidden = 8, .features = 2, .window = 4, .step_ms = 3600000, .seed = 5};

/* A window of 4 steps of 2 features: every step observed, or the step before the newest not
 * (gap) for both features. */
static void judge(struct ad_judge *j, const char *key, int64_t bucket, int64_t bucket_ms,
                  const float *x, const uint8_t *seen, double score, const struct ad_model *m,
                  bool gap, struct ad_verdict *v)
{
    uint8_t steps[4 * 2];
    memset(steps, 1, sizeof steps);
    if (gap)
        steps[2 * 2] = steps[2 * 2 + 1] = 0;
    float shares[2] = {0.75f, 0.25f};
    struct ad_judge_input in = {.key = key,
                                .len = strlen(key),
                                .bucket = bucket,
                                .bucket_ms = bucket_ms,
                                .values = x,
                                .observed = seen,
                                .steps_mask = steps,
                                .steps = 4,
                                .lstm_score = score,
                                .lstm_shares = shares,
                                .model = m};
    ad_judge_window(j, &in, 5.0, v, NULL);
}

static void test_judge_streams(void **state)
{
    (void)state;
    char err[512];
    char *dir = fixture_tempdir();
    assert_int_equal(fixture_write(dir, &spec), 0);
    struct ad_model *model = ad_model_load(dir, NULL, err, sizeof err);
    assert_non_null(model);
    const struct ad_model_calibration *c = ad_model_calibration(model);

    struct ad_judge_options o = {.features = 2,
                                 .step_ms = HOUR_MS,
                                 .max_entities = 2,
                                 .idle_buckets = 10,
                                 .lstm = true,
                                 .seasonal = true};
    struct ad_judge *j = ad_judge_new(&o);
    uint8_t seen[2] = {1, 1};
    float x[2] = {1.0f, 2.0f};
    struct ad_verdict v;
    /* Without a model and before a day of profile: nothing to judge by. */
    judge(j, "a", 0, 0, x, seen, NAN, NULL, false, &v);
    assert_true(isnan(v.surprise) && v.decided == AD_JUDGE_NONE);
    /* The LSTM alone: its surprise as it is (one stream, nothing taken off). */
    double s = c->score_mean + c->score_std;
    judge(j, "b", 0, 0, x, seen, s, model, false, &v);
    assert_int_equal(v.decided, AD_JUDGE_LSTM);
    assert_float_equal(v.surprise, ad_surprise_of_z(1.0), 1e-9);
    assert_float_equal(v.lstm_surprise, v.surprise, 0);
    assert_true(isnan(v.seasonal_surprise));
    /* A day later both streams speak: the larger, less log10(2). */
    judge(j, "b", 24, DAY_MS, x, seen, s, model, false, &v);
    assert_true(isfinite(v.lstm_surprise) && isfinite(v.seasonal_surprise));
    assert_float_equal(v.surprise, fmax(fmax(v.lstm_surprise, v.seasonal_surprise) - log10(2), 0),
                       1e-9);
    /* The table holds two: a third entity is judged from priors and counted. */
    judge(j, "c", 24, DAY_MS, x, seen, s, model, false, &v);
    assert_int_equal(ad_judge_entities(j), 2);
    assert_int_equal(ad_judge_untracked(j), 1);
    assert_float_equal(v.surprise, ad_surprise_of_z(1.0), 1e-9);
    /* Entities idle for 10 buckets are forgotten: a at 0, b at 24. */
    ad_judge_expire(j, 11);
    assert_int_equal(ad_judge_entities(j), 1);
    ad_judge_expire(j, 35);
    assert_int_equal(ad_judge_entities(j), 0);
    ad_judge_destroy(j);

    /* Gaps (docs/scoring.md): a feature usually there and back from a gap sits out of the
     * LSTM's score; an entity whose data often has gaps keeps it. Shares 0.75 and 0.25 of a
     * score of 2 over 2 features: r² = 6 and 2. */
    o.max_entities = 10;
    j = ad_judge_new(&o);
    for (int i = 0; i < 100; i++) {
        judge(j, "regular", i, i * HOUR_MS, x, seen, 2.0, model, false, &v);
        judge(j, "irregular", i, i * HOUR_MS, x, seen, 2.0, model, i % 3 == 0, &v);
    }
    assert_float_equal(v.lstm_score, 2.0, 1e-12);
    assert_int_equal(v.gap_features, 0);
    judge(j, "regular", 100, 100 * HOUR_MS, x, seen, 2.0, model, true, &v);
    assert_true(isnan(v.lstm_score) && v.gap_features == 2);
    assert_true(isnan(v.lstm_surprise)); /* judged by the seasonal baseline alone */
    judge(j, "irregular", 100, 100 * HOUR_MS, x, seen, 2.0, model, true, &v);
    assert_float_equal(v.lstm_score, 2.0, 1e-12);
    /* Only the second feature back from a gap: sqrt(6 / 1) is what is left. */
    uint8_t steps[4 * 2];
    memset(steps, 1, sizeof steps);
    steps[2 * 2 + 1] = 0;
    float shares[2] = {0.75f, 0.25f};
    struct ad_judge_input in = {.key = "regular",
                                .len = 7,
                                .bucket = 101,
                                .bucket_ms = 101 * HOUR_MS,
                                .values = x,
                                .observed = seen,
                                .steps_mask = steps,
                                .steps = 4,
                                .lstm_score = 2.0,
                                .lstm_shares = shares,
                                .model = model};
    ad_judge_window(j, &in, 5.0, &v, NULL);
    assert_int_equal(v.gap_features, 1);
    assert_float_equal(v.lstm_score, sqrt(6.0), 1e-6);
    assert_float_equal(shares[0], 1.0, 1e-6); /* what is left is all feature 0's */
    assert_float_equal(shares[1], 0.0, 0);
    ad_judge_destroy(j);
    ad_model_unref(model);
    fixture_remove(dir);
    free(dir);
}

/* Feeds one window of entity key with value x (both features) and a score; returns the
 * verdict. A fixed model calibration, so that two judges fed alike agree to the bit. */
static struct ad_verdict feed(struct ad_judge *j, const char *key, int64_t bucket, double x,
                              double score, const struct ad_model *model)
{
    uint8_t seen[2] = {1, 1};
    float v[2] = {(float)x, (float)(x / 2)};
    struct ad_verdict out;
    judge(j, key, bucket, bucket * HOUR_MS, v, seen, score, model, false, &out);
    return out;
}

/* The normal value of bucket b: a daily shape, and a little noise. */
static double normal_value(int64_t b)
{
    return 100 + 20 * sin(2 * M_PI * (double)(b % 24) / 24) + (double)((b * 7919) % 5);
}

static double normal_score(int64_t b)
{
    return 1.0 + 0.05 * (double)((b * 104729) % 7);
}

static struct ad_judge *holding_judge(size_t max_held, size_t hold_windows)
{
    struct ad_judge_options o = {.features = 2,
                                 .step_ms = HOUR_MS,
                                 .max_entities = 8,
                                 .idle_buckets = 1000,
                                 .lstm = true,
                                 .seasonal = true,
                                 .max_held = max_held,
                                 .hold_windows = hold_windows,
                                 .series_limit = 2};
    return ad_judge_new(&o);
}

static bool same_history(struct ad_judge *a, struct ad_judge *b, const char *key)
{
    size_t na, nb;
    const void *ha = ad_judge_history(a, key, strlen(key), &na);
    const void *hb = ad_judge_history(b, key, strlen(key), &nb);
    return ha && hb && na == nb && memcmp(ha, hb, na) == 0;
}

/* A window undone leaves the history as it was: what a maintenance window does. */
static void test_undo(void **state)
{
    (void)state;
    char err[512];
    char *dir = fixture_tempdir();
    assert_int_equal(fixture_write(dir, &spec), 0);
    struct ad_model *model = ad_model_load(dir, NULL, err, sizeof err);
    struct ad_judge *with = holding_judge(0, 0), *without = holding_judge(0, 0);
    for (int64_t b = 0; b < 80; b++) {
        feed(with, "e", b, normal_value(b), normal_score(b), model);
        feed(without, "e", b, normal_value(b), normal_score(b), model);
    }
    assert_true(same_history(with, without, "e"));
    /* An incident in maintenance: judged (it is surprising), then undone. */
    for (int64_t b = 80; b < 84; b++) {
        struct ad_verdict v = feed(with, "e", b, 10 * normal_value(b), 40.0, model);
        assert_true(v.surprise >= 5.0);
        assert_false(same_history(with, without, "e"));
        ad_judge_undo(with, v.entity);
        assert_true(same_history(with, without, "e"));
    }
    /* Later windows are judged exactly as if the incident had never come. */
    for (int64_t b = 84; b < 100; b++) {
        struct ad_verdict a = feed(with, "e", b, normal_value(b), normal_score(b), model);
        struct ad_verdict c = feed(without, "e", b, normal_value(b), normal_score(b), model);
        assert_memory_equal(&a.surprise, &c.surprise, sizeof a.surprise);
    }
    ad_judge_destroy(with);
    ad_judge_destroy(without);
    ad_model_unref(model);
    fixture_remove(dir);
    free(dir);
}

/* A false positive's anomalous windows leave the history: restored from the hold and judged
 * again without them, the entity's state is that of a run that never saw them. */
static void test_hold_and_forget(void **state)
{
    (void)state;
    char err[512];
    char *dir = fixture_tempdir();
    assert_int_equal(fixture_write(dir, &spec), 0);
    struct ad_model *model = ad_model_load(dir, NULL, err, sizeof err);
    struct ad_judge *marked = holding_judge(4, 50), *never = holding_judge(4, 50);
    struct ad_judge *unmarked = holding_judge(4, 50);
    for (int64_t b = 0; b < 80; b++) {
        feed(marked, "e", b, normal_value(b), normal_score(b), model);
        feed(unmarked, "e", b, normal_value(b), normal_score(b), model);
        feed(never, "e", b, normal_value(b), normal_score(b), model);
    }
    /* The incident: anomalous windows, held from the first. */
    for (int64_t b = 80; b < 83; b++) {
        struct ad_verdict v = feed(marked, "e", b, 10 * normal_value(b), 40.0, model);
        assert_true(v.surprise >= 5.0);
        assert_int_equal(ad_judge_hold(marked, v.entity), 0);
        v = feed(unmarked, "e", b, 10 * normal_value(b), 40.0, model);
        assert_int_equal(ad_judge_hold(unmarked, v.entity), 0);
    }
    assert_int_equal(ad_judge_held(marked), 1);
    for (int64_t b = 83; b < 95; b++) {
        feed(marked, "e", b, normal_value(b), normal_score(b), model);
        feed(unmarked, "e", b, normal_value(b), normal_score(b), model);
        feed(never, "e", b, normal_value(b), normal_score(b), model);
    }
    assert_false(same_history(marked, never, "e"));

    struct ad_judge_forgotten out;
    assert_int_equal(ad_judge_forget(marked, "e", 1, 81 * HOUR_MS, 83 * HOUR_MS, &out), 0);
    assert_int_equal(out.windows, 3);
    assert_int_equal(out.replayed, 12);
    assert_false(out.partial);
    assert_true(same_history(marked, never, "e"));
    assert_false(same_history(marked, unmarked, "e"));
    assert_int_equal(ad_judge_held(marked), 0); /* nothing anomalous is left to hold */
    /* The next windows: as in the run that never saw the incident, not as without the mark. */
    for (int64_t b = 95; b < 100; b++) {
        struct ad_verdict a = feed(marked, "e", b, normal_value(b), normal_score(b), model);
        struct ad_verdict c = feed(never, "e", b, normal_value(b), normal_score(b), model);
        struct ad_verdict u = feed(unmarked, "e", b, normal_value(b), normal_score(b), model);
        assert_memory_equal(&a.surprise, &c.surprise, sizeof a.surprise);
        assert_memory_equal(&a.lstm_surprise, &c.lstm_surprise, sizeof a.lstm_surprise);
        assert_true(a.lstm_surprise != u.lstm_surprise);
    }
    /* Nothing held any more: a second mark finds nothing. */
    assert_int_equal(ad_judge_forget(marked, "e", 1, 81 * HOUR_MS, 83 * HOUR_MS, &out), -1);
    assert_int_equal(ad_judge_forget(marked, "nobody", 6, 0, INT64_MAX, &out), -1);
    ad_judge_destroy(marked);
    ad_judge_destroy(unmarked);
    ad_judge_destroy(never);
    ad_model_unref(model);
    fixture_remove(dir);
    free(dir);
}

/* Holds are bounded: max_held entities, and hold_windows windows after the newest anomalous
 * one; a span older than what is held is partial. */
static void test_hold_bounds(void **state)
{
    (void)state;
    struct ad_judge *j = holding_judge(1, 5);
    struct ad_verdict v = feed(j, "a", 0, 1, NAN, NULL);
    assert_int_equal(ad_judge_hold(j, v.entity), 0);
    v = feed(j, "b", 0, 1, NAN, NULL);
    assert_int_equal(ad_judge_hold(j, v.entity), -1); /* max_held */
    assert_int_equal(ad_judge_unheld(j), 1);
    for (int64_t b = 1; b <= 4; b++)
        feed(j, "a", b, 1, NAN, NULL);
    assert_int_equal(ad_judge_held(j), 1);
    feed(j, "a", 5, 1, NAN, NULL); /* the anomalous window leaves the hold */
    assert_int_equal(ad_judge_held(j), 0);
    v = feed(j, "a", 6, 1, NAN, NULL);
    assert_int_equal(ad_judge_hold(j, v.entity), 0);
    struct ad_judge_forgotten out;
    assert_int_equal(ad_judge_forget(j, "a", 1, 0, 7 * HOUR_MS, &out), 0);
    assert_true(out.partial);
    assert_int_equal(out.windows, 1);
    /* A window undone after a hold leaves the hold as it was. */
    v = feed(j, "a", 7, 1, NAN, NULL);
    assert_int_equal(ad_judge_hold(j, v.entity), 0);
    v = feed(j, "a", 8, 1, NAN, NULL);
    ad_judge_undo(j, v.entity);
    assert_int_equal(ad_judge_forget(j, "a", 1, 8 * HOUR_MS, 8 * HOUR_MS, &out), 0);
    assert_int_equal(out.windows, 1);
    assert_int_equal(out.replayed, 0);
    ad_judge_destroy(j);
}

/* What entities show, at most series_limit of them; the rest counted once each. */
static void test_shown(void **state)
{
    (void)state;
    struct ad_judge *j = holding_judge(0, 0);
    const char *keys[] = {"a", "b", "c"};
    for (int round = 0; round < 2; round++)
        for (int k = 0; k < 3; k++) {
            struct ad_verdict v = feed(j, keys[k], round, 1, NAN, NULL);
            ad_judge_show(j, v.entity, 1.5 + k, 2.5 + k, k == 1);
        }
    assert_int_equal(ad_judge_series(j), 2);
    assert_int_equal(ad_judge_left_out(j), 1);
    const char *key;
    size_t len, n = 0, with_series = 0;
    struct ad_judge_shown shown;
    for (uint32_t id = 0; (id = ad_judge_next(j, id, &key, &len, &shown));) {
        n++;
        with_series += shown.series;
        int k = key[0] - 'a';
        assert_float_equal(shown.score, 1.5 + k, 0);
        assert_float_equal(shown.surprise, 2.5 + k, 0);
        assert_int_equal(shown.anomalous, k == 1);
        assert_int_equal(shown.series, k < 2);
    }
    assert_int_equal(n, 3);
    assert_int_equal(with_series, 2);
    /* A lower limit takes series away (and counts them); a forgotten entity frees its own. */
    ad_judge_set_series_limit(j, 1);
    assert_int_equal(ad_judge_series(j), 1);
    assert_int_equal(ad_judge_left_out(j), 2);
    ad_judge_set_series_limit(j, 2);
    struct ad_verdict v = feed(j, "a", 2000, 1, NAN, NULL);
    ad_judge_expire(j, 2000); /* b and c were last seen at 1 */
    assert_int_equal(ad_judge_entities(j), 1);
    assert_int_equal(ad_judge_series(j), 0);
    ad_judge_show(j, v.entity, 1, 1, false); /* room again: a gets its series back */
    v = feed(j, "d", 2000, 1, NAN, NULL);
    ad_judge_show(j, v.entity, 1, 1, false);
    assert_int_equal(ad_judge_series(j), 2);
    assert_int_equal(ad_judge_left_out(j), 2);
    ad_judge_destroy(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_surprise_of_z),   cmocka_unit_test(test_surprise_first_windows),
        cmocka_unit_test(test_surprise_gate),   cmocka_unit_test(test_seasonal),
        cmocka_unit_test(test_recurrence),      cmocka_unit_test(test_controls),
        cmocka_unit_test(test_judge_streams),   cmocka_unit_test(test_undo),
        cmocka_unit_test(test_hold_and_forget), cmocka_unit_test(test_hold_bounds),
        cmocka_unit_test(test_shown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
