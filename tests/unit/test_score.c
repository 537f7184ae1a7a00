/*
 * From predictions to scores (docs/models.md), against values worked out by hand.
 */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "batch_fixture.h"
#include "gpu/model.h"
#include "gpu/score.h"
#include "model_fixture.h"

/* Features 3, mean 10 f, std 1 + f, error_std 0.5, score_mean 1, score_std 0.25. */
static const struct fixture_model spec = {
    .layers = 1, .hidden = 8, .features = 3, .window = 4, .step_ms = 10000, .seed = 5};

struct ctx {
    char *dir;
    struct ad_model *model, *other;
};

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof *c);
    char err[512];
    c->dir = fixture_tempdir();
    assert_int_equal(fixture_write(c->dir, &spec), 0);
    c->model = ad_model_load(c->dir, NULL, err, sizeof err);
    c->other = ad_model_load(c->dir, NULL, err, sizeof err);
    assert_non_null(c->model);
    assert_non_null(c->other);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    ad_model_unref(c->model);
    ad_model_unref(c->other);
    fixture_remove(c->dir);
    free(c->dir);
    free(c);
    return 0;
}

static void test_inputs_are_normalized(void **state)
{
    struct ctx *c = *state;
    struct ad_window_batch *b = fixture_batch(2, 4, 3, 1);
    float x[2 * 3 * 3];
    b->values[(1 * 4 + 0) * 3 + 2] = NAN; /* window 1, step 0, feature 2: missing */
    ad_score_inputs(c->model, b, 0, 2, x);
    for (size_t w = 0; w < 2; w++)
        for (size_t t = 0; t < 3; t++)
            for (size_t f = 0; f < 3; f++) {
                float v = b->values[(w * 4 + t) * 3 + f];
                float want = isnan(v) ? 0.0f : (v - 10.0f * (float)f) / (1.0f + (float)f);
                assert_float_equal(x[(w * 3 + t) * 3 + f], want, 1e-6);
            }
    /* A sub-range starts at its first window. */
    ad_score_inputs(c->model, b, 1, 1, x);
    assert_float_equal(x[0], (b->values[4 * 3] - 0.0f) / 1.0f, 1e-6);
    ad_window_batch_free(b);
}

static void test_scores_and_shares(void **state)
{
    struct ctx *c = *state;
    struct ad_window_batch *b = fixture_batch(3, 4, 3, 1);
    float *newest0 = b->values + 3 * 3, *newest1 = b->values + (4 + 3) * 3;
    /* Window 0: normalized actuals (1, 0, -2); predictions (0, 0, 0) -> r = (2, 0, -4). */
    newest0[0] = 1.0f, newest0[1] = 10.0f, newest0[2] = 20.0f - 6.0f;
    /* Window 1: feature 1 unobserved in the newest step; r = (2, ·, 0). */
    newest1[0] = 1.0f, newest1[2] = 20.0f;
    b->mask[(4 + 3) * 3 + 1] = 0;
    /* Window 2: nothing observed in the newest step. */
    memset(b->mask + (8 + 3) * 3, 0, 3);
    float predictions[9] = {0}, scores[3], shares[9];
    size_t scored = ad_score_windows(c->model, b, 0, 3, predictions, NULL, scores, shares);
    assert_int_equal(scored, 2);
    assert_float_equal(scores[0], sqrt((4.0 + 0.0 + 16.0) / 3.0), 1e-6);
    assert_float_equal(shares[0], 0.2, 1e-6);
    assert_float_equal(shares[1], 0.0, 1e-6);
    assert_float_equal(shares[2], 0.8, 1e-6);
    assert_float_equal(scores[1], sqrt(4.0 / 2.0), 1e-6);
    assert_float_equal(shares[3], 1.0, 1e-6);
    assert_float_equal(shares[4], 0.0, 1e-6);
    assert_true(isnan(scores[2]));
    /* The prediction counts: predicting the actual values gives 0. */
    float exact[3] = {1.0f, 0.0f, -2.0f};
    scored = ad_score_windows(c->model, b, 0, 1, exact, NULL, scores, shares);
    assert_int_equal(scored, 1);
    assert_float_equal(scores[0], 0.0, 1e-6);
    assert_float_equal(shares[0] + shares[1] + shares[2], 0.0, 1e-9);

    /* Window 0 again, with feature 2 counting only when it rises (it fell: r = -4, dropped)
     * and feature 0 only beyond 5 units of its own (it is 1 above the prediction of 0:
     * dropped). What is left is feature 1's 0: a score of 0 over the three observed. */
    struct ad_feature_control controls[3] = {{.min_abs = 5}, {0}, {.direction = AD_DIRECTION_UP}};
    scored = ad_score_windows(c->model, b, 0, 1, predictions, controls, scores, shares);
    assert_int_equal(scored, 1);
    assert_float_equal(scores[0], 0.0, 1e-9);
    /* Only the fall of feature 2 dropped: sqrt((4 + 0 + 0) / 3). */
    controls[0].min_abs = 0;
    ad_score_windows(c->model, b, 0, 1, predictions, controls, scores, shares);
    assert_float_equal(scores[0], sqrt(4.0 / 3.0), 1e-6);
    ad_window_batch_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inputs_are_normalized),
        cmocka_unit_test(test_scores_and_shares),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
