/*
 * From scores to likelihoods (docs/scoring.md), against values worked out by hand.
 */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "detect/likelihood.h"
#include "gpu/model.h"
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

static void test_likelihood_at_the_prior(void **state)
{
    struct ctx *c = *state;
    struct ad_likelihood *l = ad_likelihood_new(10, 100);
    /* A new entity's first score equal to the calibrated mean: z = 0. */
    assert_float_equal(ad_likelihood_update(l, "a", 1, 1, 1.0, c->model), 0.5, 1e-12);
    /* One calibrated standard deviation above, for a new entity: Φ(1). */
    assert_float_equal(ad_likelihood_update(l, "b", 1, 1, 1.25, c->model), 0.841344746, 1e-6);
    assert_int_equal(ad_likelihood_entities(l), 2);
    ad_likelihood_destroy(l);
}

static void test_likelihood_learns_and_flags(void **state)
{
    struct ctx *c = *state;
    struct ad_likelihood *l = ad_likelihood_new(10, 100000);
    unsigned seed = 9;
    double sum = 0;
    int n = 0;
    /* An entity that is always harder to predict than the calibration says (scores near 2,
     * not 1): at first that looks anomalous, and after a while it no longer does. */
    double first = 0;
    for (int i = 0; i < 3000; i++) {
        double score = 2.0 + 0.3 * ((double)rand_r(&seed) / RAND_MAX - 0.5);
        double p = ad_likelihood_update(l, "hard", 4, i, score, c->model);
        if (i == 0)
            first = p;
        if (i >= 2000) {
            sum += p;
            n++;
        }
    }
    assert_true(first > 0.999);
    assert_true(sum / n > 0.2 && sum / n < 0.8);
    /* A sustained jump is flagged within a few windows. */
    double p = 0;
    for (int i = 0; i < 4; i++)
        p = ad_likelihood_update(l, "hard", 4, 3000 + i, 4.0, c->model);
    assert_true(p > 0.9999);
    ad_likelihood_destroy(l);
}

static void test_likelihood_restarts_with_a_new_model(void **state)
{
    struct ctx *c = *state;
    struct ad_likelihood *l = ad_likelihood_new(10, 100000);
    for (int i = 0; i < 500; i++)
        ad_likelihood_update(l, "e", 1, i, 3.0 + 0.1 * (i % 2), c->model);
    /* The old model has learnt that this entity scores about 3: 3 is not unusual. */
    assert_true(ad_likelihood_update(l, "e", 1, 500, 3.0, c->model) < 0.9);
    /* A new model's scores mean something else: the entity starts from its calibration
     * (mean 1, std 0.25), where 3 is eight standard deviations out. */
    assert_true(ad_likelihood_update(l, "e", 1, 501, 3.0, c->other) > 0.999999);
    assert_float_equal(ad_likelihood_update(l, "f", 1, 501, 1.0, c->other), 0.5, 1e-12);
    ad_likelihood_destroy(l);
}

static void test_likelihood_bounds_and_expiry(void **state)
{
    struct ctx *c = *state;
    struct ad_likelihood *l = ad_likelihood_new(2, 5);
    ad_likelihood_update(l, "a", 1, 10, 1.0, c->model);
    ad_likelihood_update(l, "b", 1, 12, 1.0, c->model);
    /* Full: a third entity gets a likelihood from the calibration and is not kept. */
    assert_float_equal(ad_likelihood_update(l, "c", 1, 12, 1.0, c->model), 0.5, 1e-12);
    assert_int_equal(ad_likelihood_entities(l), 2);
    assert_int_equal(ad_likelihood_untracked(l), 1);
    ad_likelihood_expire(l, 15); /* a's last score (10) is not older than 15 - 5 */
    assert_int_equal(ad_likelihood_entities(l), 2);
    ad_likelihood_expire(l, 16);
    assert_int_equal(ad_likelihood_entities(l), 1);
    /* The freed place is reused, and b kept its history. */
    ad_likelihood_update(l, "c", 1, 16, 1.0, c->model);
    assert_int_equal(ad_likelihood_entities(l), 2);
    assert_int_equal(ad_likelihood_untracked(l), 1);
    ad_likelihood_expire(l, 100);
    assert_int_equal(ad_likelihood_entities(l), 0);
    ad_likelihood_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_likelihood_at_the_prior),
        cmocka_unit_test(test_likelihood_learns_and_flags),
        cmocka_unit_test(test_likelihood_restarts_with_a_new_model),
        cmocka_unit_test(test_likelihood_bounds_and_expiry),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
