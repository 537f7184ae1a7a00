/* The alert state machine: scripted window sequences and the notifications they must make,
 * ids, the document, the entity bound and expiry. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "detect/alerts.h"

#define STEP    60000
#define T0      INT64_C(1795323600000) /* 2026-11-22T05:00:00Z */
#define NOW     INT64_C(1795400000123) /* 2026-11-23T02:13:20.123Z */
#define MAX_GOT 256

/* Key [service, instance] = [checkout, c-1]; the NUL is part of the key. */
static const char key1[] = "checkout\0c-1";
#define KEY1 key1, sizeof key1 - 1
static const char key2[] = "checkout\0c-2";
#define KEY2 key2, sizeof key2 - 1
static const char key3[] = "payments\0p-1";
#define KEY3 key3, sizeof key3 - 1

static char *label_names[] = {"service", "instance"};
static const struct ad_strlist labels = {label_names, 2};
static char *feature_names[] = {"app.errors", "app.latency", "app.count", "prom.cpu"};
static const struct ad_strlist features = {feature_names, 4};
static const float shares[] = {0.1f, 0.7f, 0.0f, 0.2f};

struct harness {
    struct ad_alerts *a;
    int64_t end; /* the next window's end */
    const char *version;
    struct ad_alert *got[MAX_GOT];
    size_t n_got;
    char seq[MAX_GOT];
};

static struct ad_settings_alert settings(int64_t for_windows, int64_t resolve_for,
                                         int64_t repeat_interval, int64_t flap_window,
                                         double flap_threshold)
{
    return (struct ad_settings_alert){.for_windows = for_windows,
                                      .resolve_for = resolve_for,
                                      .repeat_interval = repeat_interval,
                                      .flap_window = flap_window,
                                      .flap_threshold = flap_threshold};
}

/* flap_threshold 1 never flaps: the share of changes cannot exceed 1. */
static struct harness *harness_new(struct ad_settings_alert s, size_t max_entities)
{
    struct harness *h = calloc(1, sizeof *h);
    assert_non_null(h);
    h->a = ad_alerts_new("http", &s, &labels, &features, max_entities);
    assert_non_null(h->a);
    h->end = T0;
    h->version = "v1";
    return h;
}

static void harness_free(struct harness *h)
{
    for (size_t i = 0; i < h->n_got; i++)
        ad_alert_free(h->got[i]);
    ad_alerts_destroy(h->a);
    free(h);
}

static struct ad_alert_window window(const char *key, size_t len, int64_t end, bool anomalous,
                                     const char *version)
{
    return (struct ad_alert_window){.key = key,
                                    .key_len = len,
                                    .start_ms = end - 10 * STEP,
                                    .end_ms = end,
                                    .score = anomalous ? 7.2 : 0.8,
                                    .surprise = anomalous ? 6.0 : 0.3,
                                    .surprise_threshold = 5.0,
                                    .score_threshold = 4.0,
                                    .seasonal_score = 1.5,
                                    .stream = "lstm",
                                    .anomalous = anomalous,
                                    .shares = shares,
                                    .model = "http-model",
                                    .model_version = version,
                                    .now_ms = NOW};
}

static char observe(struct harness *h, const struct ad_alert_window *w)
{
    struct ad_alert *alert = (struct ad_alert *)1;
    int rc = ad_alerts_observe(h->a, w, &alert);
    assert_true(rc == 0 || rc == 1);
    assert_int_equal(rc == 1, alert != NULL);
    if (!alert)
        return '-';
    assert_true(h->n_got < MAX_GOT);
    h->got[h->n_got++] = alert;
    return strcmp(alert->state, "firing") == 0 ? 'F' : 'R';
}

/*
 * Feeds one window per flag ('A' anomalous, 'N' normal) of one entity, a step apart, and
 * returns the notifications they made: 'F' firing, 'R' resolved, '-' none.
 */
static const char *play(struct harness *h, const char *key, size_t len, const char *flags)
{
    size_t i;
    for (i = 0; flags[i]; i++) {
        struct ad_alert_window w = window(key, len, h->end, flags[i] == 'A', h->version);
        h->seq[i] = observe(h, &w);
        h->end += STEP;
    }
    h->seq[i] = '\0';
    return h->seq;
}

static struct ad_alert *last(const struct harness *h)
{
    assert_true(h->n_got > 0);
    return h->got[h->n_got - 1];
}

static json_t *parse(const struct ad_alert *alert)
{
    json_error_t err;
    assert_int_equal(strlen(alert->json), alert->json_len);
    assert_null(strchr(alert->json, '\n'));
    json_t *doc = json_loadb(alert->json, alert->json_len, 0, &err);
    if (!doc)
        fail_msg("not JSON (%s): %s", err.text, alert->json);
    return doc;
}

static const char *str(json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);
    if (!json_is_string(v))
        fail_msg("%s is not a string", key);
    return json_string_value(v);
}

static struct ad_alerts_counts counts(const struct harness *h)
{
    struct ad_alerts_counts c;
    ad_alerts_counts(h->a, &c);
    return c;
}

/* ---- the state machine ---- */

static void test_fires_after_for_and_resolves_after_resolve_for(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(3, 5, 0, 20, 1.0), 100);
    assert_string_equal(play(h, KEY1, "NAA"), "---");
    assert_int_equal(counts(h).pending, 1);
    assert_int_equal(counts(h).firing, 0);
    assert_string_equal(play(h, KEY1, "A"), "F");
    assert_int_equal(counts(h).firing, 1);
    assert_int_equal(counts(h).pending, 0);
    /* An anomalous window while resolving starts the count of normal ones again. */
    assert_string_equal(play(h, KEY1, "NNNNANNNN"), "---------");
    assert_string_equal(play(h, KEY1, "N"), "R");
    assert_string_equal(play(h, KEY1, "NA"), "--");
    assert_int_equal(counts(h).pending, 1);
    assert_int_equal(counts(h).firing, 0);

    struct ad_alerts_counts c = counts(h);
    assert_int_equal(c.notified_firing, 1);
    assert_int_equal(c.notified_resolved, 1);
    assert_int_equal(c.outstanding, 0);
    assert_int_equal(h->n_got, 2);
    /* The firing alert is for the window that made the third anomalous one. */
    assert_int_equal(h->got[0]->end_ms, T0 + 3 * STEP);
    assert_int_equal(h->got[1]->end_ms, T0 + 13 * STEP);
    harness_free(h);
}

static void test_pending_interrupted(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(3, 5, 0, 20, 1.0), 100);
    assert_string_equal(play(h, KEY1, "AANAANAAN"), "---------");
    assert_int_equal(counts(h).notified_firing, 0);
    assert_int_equal(counts(h).pending, 0);
    assert_string_equal(play(h, KEY1, "AAA"), "--F");
    harness_free(h);
}

static void test_for_one_fires_at_once(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(1, 1, 0, 20, 1.0), 100);
    assert_string_equal(play(h, KEY1, "ANAAN"), "FRF-R");
    harness_free(h);
}

static void test_entities_are_independent(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(2, 1, 0, 20, 1.0), 100);
    int64_t end = T0;
    /* Interleaved: c-1 anomalous twice, c-2 once between them. */
    struct ad_alert_window w1 = window(KEY1, end, true, "v1");
    struct ad_alert_window w2 = window(KEY2, end, true, "v1");
    assert_int_equal(observe(h, &w1), '-');
    assert_int_equal(observe(h, &w2), '-');
    w1.end_ms = w2.end_ms = end + STEP;
    w2.anomalous = false;
    assert_int_equal(observe(h, &w1), 'F');
    assert_int_equal(observe(h, &w2), '-');
    assert_int_equal(counts(h).firing, 1);
    assert_int_equal(counts(h).pending, 0);
    json_t *doc = parse(last(h));
    assert_string_equal(str(doc, "entity"), "service=checkout,instance=c-1");
    json_decref(doc);
    harness_free(h);
}

static void test_repeat_interval_boundary(void **state)
{
    (void)state;
    /* Exactly 3 steps after the last notification repeats; one ms more does not yet. */
    struct harness *h = harness_new(settings(1, 1, 3 * STEP, 20, 1.0), 100);
    assert_string_equal(play(h, KEY1, "AAAAAAAA"), "F--F--F-");
    json_t *doc = parse(last(h));
    assert_string_equal(str(doc, "reason"), "repeat");
    /* A repeat keeps the alert's start. */
    assert_string_equal(str(doc, "starts_at"), "2026-11-22T05:00:00.000Z");
    json_decref(doc);
    assert_string_equal(play(h, KEY1, "N"), "R");
    harness_free(h);

    h = harness_new(settings(1, 1, 3 * STEP + 1, 20, 1.0), 100);
    assert_string_equal(play(h, KEY1, "AAAAAAAAA"), "F---F---F");
    harness_free(h);

    /* Windows whose ends are not a step apart: the interval is measured on their ends. */
    h = harness_new(settings(1, 1, 180000, 20, 1.0), 100);
    struct ad_alert_window w = window(KEY1, 1000, true, "v1");
    assert_int_equal(observe(h, &w), 'F');
    w.end_ms = 1000 + 179999;
    assert_int_equal(observe(h, &w), '-');
    w.end_ms = 1000 + 180000;
    assert_int_equal(observe(h, &w), 'F');
    harness_free(h);

    /* 0 never repeats. */
    h = harness_new(settings(1, 1, 0, 20, 1.0), 100);
    assert_string_equal(play(h, KEY1, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                        "F-----------------------------");
    harness_free(h);
}

/* ---- flapping ---- */

static void test_flapping_holds_and_releases_resolved(void **state)
{
    (void)state;
    /* 10 windows, threshold 0.3: flapping above 3 changes, settled at 2 or fewer. */
    struct harness *h = harness_new(settings(1, 1, 0, 10, 0.3), 100);
    assert_string_equal(play(h, KEY1, "ANA"), "FRF");
    /* The fourth change starts flapping: its resolution, the next firing and resolution are
     * held back. The changes leave the last 10 windows one by one; at 2 it settles, resolved,
     * while the last notification said firing. */
    assert_string_equal(play(h, KEY1, "NAN"), "---");
    assert_int_equal(counts(h).flapping, 1);
    assert_int_equal(counts(h).held_back, 3);
    assert_string_equal(play(h, KEY1, "NNNNNNN"), "-------");
    assert_int_equal(counts(h).flapping, 1);
    assert_string_equal(play(h, KEY1, "N"), "R");
    assert_int_equal(counts(h).flapping, 0);

    json_t *doc = parse(last(h));
    assert_string_equal(str(doc, "state"), "resolved");
    assert_string_equal(str(doc, "reason"), "settled");
    assert_true(json_is_true(json_object_get(doc, "flapping")));
    /* It resolves the alert that was notified: the one that started at window 3. */
    assert_string_equal(str(doc, "starts_at"), "2026-11-22T05:02:00.000Z");
    assert_string_equal(str(doc, "ends_at"), "2026-11-22T05:13:00.000Z");
    json_decref(doc);

    /* Once no change is left in the flap window the entity is forgotten. */
    assert_int_equal(counts(h).tracked, 1);
    assert_string_equal(play(h, KEY1, "NN"), "--");
    assert_int_equal(counts(h).tracked, 0);
    harness_free(h);
}

static void test_flapping_settles_in_the_notified_state(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(1, 1, 0, 10, 0.3), 100);
    /* Flapping from the fourth window; it settles (2 changes left) at window 15, firing, which
     * is what was last notified: nothing to send. */
    assert_string_equal(play(h, KEY1, "ANANANA"), "FRF----");
    assert_string_equal(play(h, KEY1, "AAAAAAAA"), "--------");
    assert_int_equal(counts(h).flapping, 0);
    assert_int_equal(counts(h).firing, 1);
    assert_int_equal(counts(h).outstanding, 1);
    /* Its resolution resolves the alert notified at window 3. */
    assert_string_equal(play(h, KEY1, "N"), "R");
    json_t *doc = parse(last(h));
    assert_string_equal(str(doc, "reason"), "normal");
    assert_true(json_is_false(json_object_get(doc, "flapping")));
    assert_string_equal(str(doc, "starts_at"), "2026-11-22T05:02:00.000Z");
    json_decref(doc);
    harness_free(h);
}

static void test_flapping_releases_firing(void **state)
{
    (void)state;
    /* Threshold 0.4: flapping above 4 changes, settled at 3 or fewer. The fifth change (an
     * anomalous window) is held back while the last notification said resolved. */
    struct harness *h = harness_new(settings(1, 1, 0, 10, 0.4), 100);
    assert_string_equal(play(h, KEY1, "ANAN"), "FRFR");
    assert_string_equal(play(h, KEY1, "ANA"), "---");
    assert_int_equal(counts(h).flapping, 1);
    assert_string_equal(play(h, KEY1, "AAAAAA"), "------");
    assert_string_equal(play(h, KEY1, "A"), "F");
    json_t *doc = parse(last(h));
    assert_string_equal(str(doc, "state"), "firing");
    assert_string_equal(str(doc, "reason"), "settled");
    assert_true(json_is_true(json_object_get(doc, "flapping")));
    /* The state began at window 7, when it last went firing. */
    assert_string_equal(str(doc, "starts_at"), "2026-11-22T05:06:00.000Z");
    assert_null(json_object_get(doc, "ends_at"));
    json_decref(doc);
    harness_free(h);
}

static void test_flap_threshold_zero_waits_for_a_steady_state(void **state)
{
    (void)state;
    /* Any change flaps: only a state that held for the whole flap window is notified. */
    struct harness *h = harness_new(settings(1, 1, 0, 3, 0.0), 100);
    assert_string_equal(play(h, KEY1, "AAAA"), "---F");
    assert_string_equal(play(h, KEY1, "NNNN"), "---R");
    harness_free(h);
}

/* ---- reload ---- */

static void test_configure_keeps_state(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(5, 5, 0, 20, 1.0), 100);
    assert_string_equal(play(h, KEY1, "AAA"), "---");
    /* Three anomalous windows are already past the new for: the next one fires. */
    struct ad_settings_alert s = settings(2, 2, 0, 20, 1.0);
    ad_alerts_configure(h->a, &s);
    assert_int_equal(counts(h).pending, 1);
    assert_string_equal(play(h, KEY1, "A"), "F");
    assert_string_equal(play(h, KEY1, "N"), "-");
    /* A longer flap window keeps the history; the repeat interval counts from the last
     * notification (window 4), also on normal windows while the alert still fires. */
    s = settings(2, 3, 2 * STEP, 200, 0.5);
    ad_alerts_configure(h->a, &s);
    assert_string_equal(play(h, KEY1, "NA"), "F-");
    assert_string_equal(play(h, KEY1, "NNN"), "F-R");
    /* A shorter one drops the changes that fall out of it. */
    s = settings(1, 1, 0, 2, 0.5);
    ad_alerts_configure(h->a, &s);
    assert_string_equal(play(h, KEY1, "NN"), "--");
    assert_int_equal(counts(h).tracked, 0);
    harness_free(h);
}

static void test_configure_flapping(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(1, 1, 0, 10, 0.3), 100);
    assert_string_equal(play(h, KEY1, "ANANA"), "FRF--");
    assert_int_equal(counts(h).flapping, 1);
    /* A threshold of 0.9 settles it at once (5 changes ≤ 0.75 · 0.9 · 10): the firing state
     * it is in was notified, nothing to send; the next resolution is sent. */
    struct ad_settings_alert s = settings(1, 1, 0, 10, 0.9);
    ad_alerts_configure(h->a, &s);
    assert_string_equal(play(h, KEY1, "AN"), "-R");
    assert_int_equal(counts(h).flapping, 0);
    harness_free(h);
}

/* ---- ids ---- */

static void test_id_determinism_and_distinctness(void **state)
{
    (void)state;
    char id[AD_ALERT_ID_LEN + 1], other[AD_ALERT_ID_LEN + 1];
    ad_alert_id("http", KEY1, T0, "v1", id);
    assert_int_equal(strlen(id), 32);
    assert_int_equal(strspn(id, "0123456789abcdef"), 32);
    ad_alert_id("http", KEY1, T0, "v1", other);
    assert_string_equal(id, other);

    ad_alert_id("https", KEY1, T0, "v1", other);
    assert_string_not_equal(id, other);
    ad_alert_id("http", KEY2, T0, "v1", other);
    assert_string_not_equal(id, other);
    ad_alert_id("http", KEY1, T0 + 1, "v1", other);
    assert_string_not_equal(id, other);
    ad_alert_id("http", KEY1, T0, "v2", other);
    assert_string_not_equal(id, other);
    /* Fields do not run into each other. */
    ad_alert_id("ab", "c", 1, T0, "v1", id);
    ad_alert_id("a", "bc", 2, T0, "v1", other);
    assert_string_not_equal(id, other);
    ad_alert_id("a", "b\0c", 3, T0, "v1", id);
    ad_alert_id("a", "b", 1, T0, "\0c", other);
    assert_string_not_equal(id, other);
    ad_alert_id("a", "b", 1, T0, NULL, id);
    ad_alert_id("a", "b", 1, T0, "", other);
    assert_string_equal(id, other);
}

/* Two instances fed the same windows (a replay, a restart) send the same documents. */
static void test_replay_gives_the_same_alerts(void **state)
{
    (void)state;
    const char *flags = "NAAAAAANNNNNAANAAAAANNNNN";
    struct harness *h[2];
    for (int i = 0; i < 2; i++) {
        h[i] = harness_new(settings(3, 5, 2 * STEP, 20, 0.5), 100);
        play(h[i], KEY1, flags);
        h[i]->end = T0;
        play(h[i], KEY3, flags);
    }
    assert_true(h[0]->n_got >= 6);
    assert_int_equal(h[0]->n_got, h[1]->n_got);
    for (size_t k = 0; k < h[0]->n_got; k++) {
        assert_string_equal(h[0]->got[k]->id, h[1]->got[k]->id);
        assert_string_equal(h[0]->got[k]->json, h[1]->got[k]->json);
        char id[AD_ALERT_ID_LEN + 1];
        const char *key = k < h[0]->n_got / 2 ? key1 : key3;
        ad_alert_id("http", key, sizeof key1 - 1, h[0]->got[k]->end_ms, "v1", id);
        assert_string_equal(h[0]->got[k]->id, id);
        for (size_t j = 0; j < k; j++)
            assert_string_not_equal(h[0]->got[j]->id, h[0]->got[k]->id);
    }
    harness_free(h[0]);
    harness_free(h[1]);
}

/* ---- the document ---- */

static void test_document_fields(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(2, 1, 0, 20, 1.0), 100);
    assert_string_equal(play(h, KEY1, "AA"), "-F");
    struct ad_alert *alert = last(h);
    assert_string_equal(alert->state, "firing");
    assert_string_equal(alert->entity, "service=checkout,instance=c-1");
    json_t *doc = parse(alert);

    assert_string_equal(str(doc, "id"), alert->id);
    assert_int_equal(strlen(str(doc, "fingerprint")), 16);
    assert_string_equal(str(doc, "detector"), "http");
    assert_string_equal(str(doc, "entity"), "service=checkout,instance=c-1");
    json_t *lab = json_object_get(doc, "labels");
    assert_int_equal(json_object_size(lab), 2);
    assert_string_equal(str(lab, "service"), "checkout");
    assert_string_equal(str(lab, "instance"), "c-1");
    /* Labels keep the key's order. */
    assert_string_equal(json_object_iter_key(json_object_iter(lab)), "service");
    assert_string_equal(str(doc, "state"), "firing");
    assert_string_equal(str(doc, "reason"), "anomalous");
    assert_true(json_is_false(json_object_get(doc, "flapping")));
    assert_string_equal(str(doc, "starts_at"), "2026-11-22T05:01:00.000Z");
    assert_null(json_object_get(doc, "ends_at"));
    assert_string_equal(str(doc, "window_start"), "2026-11-22T04:51:00.000Z");
    assert_string_equal(str(doc, "window_end"), "2026-11-22T05:01:00.000Z");
    assert_true(json_is_real(json_object_get(doc, "score")));
    assert_true(json_real_value(json_object_get(doc, "score")) == 7.2);
    assert_true(json_real_value(json_object_get(doc, "surprise")) == 6.0);
    assert_true(json_real_value(json_object_get(doc, "surprise_threshold")) == 5.0);
    /* The likelihood of earlier versions, 1 − 10^−surprise. */
    assert_float_equal(json_real_value(json_object_get(doc, "likelihood")), 0.999999, 1e-12);
    assert_float_equal(json_real_value(json_object_get(doc, "likelihood_threshold")), 0.99999,
                       1e-12);
    assert_true(json_real_value(json_object_get(doc, "score_threshold")) == 4.0);
    assert_true(json_real_value(json_object_get(doc, "seasonal_score")) == 1.5);
    assert_string_equal(str(doc, "stream"), "lstm");
    assert_true(json_is_true(json_object_get(doc, "anomalous")));
    assert_string_equal(str(doc, "model"), "http-model");
    assert_string_equal(str(doc, "model_version"), "v1");
    assert_string_equal(str(doc, "notified_at"), "2026-11-23T02:13:20.123Z");
    assert_non_null(strstr(str(doc, "summary"), "service=checkout,instance=c-1"));

    /* The three largest shares, largest first; a share of 0 is no contribution. */
    json_t *top = json_object_get(doc, "top_features");
    assert_int_equal(json_array_size(top), 3);
    const char *want[] = {"app.latency", "prom.cpu", "app.errors"};
    const double want_share[] = {0.7, 0.2, 0.1};
    for (size_t i = 0; i < 3; i++) {
        json_t *item = json_array_get(top, i);
        assert_string_equal(str(item, "feature"), want[i]);
        assert_true(json_real_value(json_object_get(item, "share")) == want_share[i]);
    }
    /* Every field is one of these. */
    const char *known[] = {"id",
                           "fingerprint",
                           "detector",
                           "entity",
                           "labels",
                           "state",
                           "reason",
                           "flapping",
                           "starts_at",
                           "window_start",
                           "window_end",
                           "score",
                           "surprise",
                           "stream",
                           "seasonal_score",
                           "recurring",
                           "likelihood",
                           "surprise_threshold",
                           "score_threshold",
                           "likelihood_threshold",
                           "anomalous",
                           "model",
                           "model_version",
                           "top_features",
                           "summary",
                           "notified_at"};
    assert_int_equal(json_object_size(doc), sizeof known / sizeof known[0]);
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        assert_non_null(json_object_get(doc, known[i]));
    json_decref(doc);

    assert_string_equal(play(h, KEY1, "N"), "R");
    doc = parse(last(h));
    assert_string_equal(str(doc, "state"), "resolved");
    assert_string_equal(str(doc, "reason"), "normal");
    assert_string_equal(str(doc, "starts_at"), "2026-11-22T05:01:00.000Z");
    assert_string_equal(str(doc, "ends_at"), "2026-11-22T05:02:00.000Z");
    assert_true(json_is_false(json_object_get(doc, "anomalous")));
    assert_string_equal(str(doc, "id"), last(h)->id);
    assert_string_equal(last(h)->state, "resolved");
    json_decref(doc);
    harness_free(h);
}

static void test_non_finite_numbers_are_null(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(1, 1, 0, 20, 1.0), 100);
    static const float odd_shares[] = {NAN, 0.25f, INFINITY, -0.5f};
    struct ad_alert_window w = window(KEY1, T0, true, "v1");
    w.score = NAN;
    w.surprise = INFINITY;
    w.score_threshold = -INFINITY;
    w.shares = odd_shares;
    assert_int_equal(observe(h, &w), 'F');
    json_t *doc = parse(last(h));
    assert_true(json_is_null(json_object_get(doc, "score")));
    assert_true(json_is_null(json_object_get(doc, "surprise")));
    assert_true(json_real_value(json_object_get(doc, "likelihood")) == 1.0);
    assert_true(json_is_null(json_object_get(doc, "score_threshold")));
    assert_true(json_real_value(json_object_get(doc, "surprise_threshold")) == 5.0);
    json_t *top = json_object_get(doc, "top_features");
    assert_int_equal(json_array_size(top), 1);
    assert_string_equal(str(json_array_get(top, 0), "feature"), "app.latency");
    assert_null(strstr(last(h)->json, "nan"));
    assert_null(strstr(last(h)->json, "inf"));
    json_decref(doc);

    /* No shares at all: an empty list. */
    w.end_ms += STEP;
    w.anomalous = false;
    w.shares = NULL;
    assert_int_equal(observe(h, &w), 'R');
    doc = parse(last(h));
    assert_int_equal(json_array_size(json_object_get(doc, "top_features")), 0);
    json_decref(doc);
    harness_free(h);
}

static void test_entity_strings_are_unambiguous(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(1, 1, 0, 20, 1.0), 100);
    /* Unescaped, both would read "service=a,instance=b,instance=c". */
    static const char k1[] = "a,instance=b\0c", k2[] = "a\0b,instance=c";
    struct ad_alert_window w1 = window(k1, sizeof k1 - 1, T0, true, "v1");
    struct ad_alert_window w2 = window(k2, sizeof k2 - 1, T0, true, "v1");
    assert_int_equal(observe(h, &w1), 'F');
    assert_int_equal(observe(h, &w2), 'F');
    assert_string_equal(h->got[0]->entity, "service=a\\,instance\\=b,instance=c");
    assert_string_equal(h->got[1]->entity, "service=a,instance=b\\,instance\\=c");
    json_t *doc = parse(h->got[0]);
    assert_string_equal(str(json_object_get(doc, "labels"), "service"), "a,instance=b");
    json_decref(doc);

    /* A value that is not UTF-8 keeps its valid part; the document stays JSON. */
    static const char k3[] = "caf\xc3\xa9\0x\xff";
    struct ad_alert_window w3 = window(k3, sizeof k3 - 1, T0, true, "v1");
    assert_int_equal(observe(h, &w3), 'F');
    doc = parse(last(h));
    assert_string_equal(str(json_object_get(doc, "labels"), "service"), "caf\xc3\xa9");
    assert_string_equal(str(json_object_get(doc, "labels"), "instance"), "x\xef\xbf\xbd");
    json_decref(doc);
    harness_free(h);
}

/* ---- bounds, stale windows, expiry ---- */

static void test_entity_bound(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(1, 1, 0, 2, 1.0), 2);
    struct ad_alert_window w = window(KEY1, T0, true, "v1");
    assert_int_equal(observe(h, &w), 'F');
    w = window(KEY2, T0, true, "v1");
    assert_int_equal(observe(h, &w), 'F');
    /* The table is full: the third entity's anomalous windows make nothing and are counted;
     * its normal windows are not (there is nothing to track). */
    w = window(KEY3, T0, true, "v1");
    assert_int_equal(observe(h, &w), '-');
    w.end_ms += STEP;
    assert_int_equal(observe(h, &w), '-');
    w.end_ms += STEP;
    w.anomalous = false;
    assert_int_equal(observe(h, &w), '-');
    struct ad_alerts_counts c = counts(h);
    assert_int_equal(c.tracked, 2);
    assert_int_equal(c.untracked, 2);

    /* c-1 resolves and goes quiet (its two changes leave the 2-window flap register), which
     * frees its place. */
    w = window(KEY1, T0 + STEP, false, "v1");
    assert_int_equal(observe(h, &w), 'R');
    w.end_ms += STEP;
    assert_int_equal(observe(h, &w), '-');
    w.end_ms += STEP;
    assert_int_equal(observe(h, &w), '-');
    assert_int_equal(counts(h).tracked, 1);
    w = window(KEY3, T0 + 5 * STEP, true, "v1");
    assert_int_equal(observe(h, &w), 'F');
    assert_int_equal(counts(h).untracked, 2);

    json_t *status = json_object();
    ad_alerts_status(h->a, status);
    assert_int_equal(json_integer_value(json_object_get(status, "tracked")), 2);
    assert_int_equal(json_integer_value(json_object_get(status, "firing")), 2);
    assert_int_equal(json_integer_value(json_object_get(status, "untracked")), 2);
    assert_int_equal(json_integer_value(json_object_get(status, "max_entities")), 2);
    assert_int_equal(json_integer_value(json_object_get(status, "notified_firing")), 3);
    json_decref(status);
    harness_free(h);
}

static void test_stale_windows_are_ignored(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(2, 1, 0, 20, 1.0), 100);
    struct ad_alert_window w = window(KEY1, T0, true, "v1");
    assert_int_equal(observe(h, &w), '-');
    /* The same window again (a replayed batch) does not count as the second one. */
    assert_int_equal(observe(h, &w), '-');
    w.end_ms -= STEP;
    assert_int_equal(observe(h, &w), '-');
    assert_int_equal(counts(h).stale, 2);
    w.end_ms = T0 + STEP;
    assert_int_equal(observe(h, &w), 'F');
    harness_free(h);
}

static void collect(void *arg, struct ad_alert *alert)
{
    struct harness *h = arg;
    assert_true(h->n_got < MAX_GOT);
    h->got[h->n_got++] = alert;
}

static void test_expiry(void **state)
{
    (void)state;
    struct harness *h = harness_new(settings(2, 1, 0, 20, 1.0), 100);
    assert_string_equal(play(h, KEY1, "AA"), "-F"); /* firing, last window ends T0 + STEP */
    h->end = T0 + 4 * STEP;
    h->version = "v2";
    assert_string_equal(play(h, KEY2, "A"), "-"); /* pending, ends T0 + 4 steps */
    h->end = T0 + 10 * STEP;
    assert_string_equal(play(h, KEY3, "AA"), "-F"); /* firing, ends T0 + 11 steps */
    size_t before = h->n_got;

    /* Nothing ended before T0 + STEP. */
    assert_int_equal(ad_alerts_expire(h->a, T0 + STEP, NOW, collect, h), 0);
    assert_int_equal(h->n_got, before);

    /* c-1 and c-2 go: c-1 with a resolution, c-2 (pending) silently. */
    int64_t oldest = T0 + 5 * STEP;
    assert_int_equal(ad_alerts_expire(h->a, oldest, NOW, collect, h), 2);
    assert_int_equal(h->n_got, before + 1);
    struct ad_alert *alert = last(h);
    assert_string_equal(alert->state, "resolved");
    assert_string_equal(alert->entity, "service=checkout,instance=c-1");
    assert_int_equal(alert->end_ms, oldest);
    /* Its id is for the expiry's time and the detector's newest model version. */
    char id[AD_ALERT_ID_LEN + 1];
    ad_alert_id("http", KEY1, oldest, "v2", id);
    assert_string_equal(alert->id, id);
    json_t *doc = parse(alert);
    assert_string_equal(str(doc, "reason"), "expired");
    assert_string_equal(str(doc, "starts_at"), "2026-11-22T05:01:00.000Z");
    assert_string_equal(str(doc, "ends_at"), "2026-11-22T05:05:00.000Z");
    assert_string_equal(str(doc, "window_end"), "2026-11-22T05:01:00.000Z");
    assert_string_equal(str(doc, "model_version"), "v2");
    assert_true(json_is_null(json_object_get(doc, "score")));
    assert_true(json_is_null(json_object_get(doc, "anomalous")));
    assert_int_equal(json_array_size(json_object_get(doc, "top_features")), 0);
    json_decref(doc);

    struct ad_alerts_counts c = counts(h);
    assert_int_equal(c.tracked, 1);
    assert_int_equal(c.firing, 1);
    assert_int_equal(c.pending, 0);
    assert_int_equal(c.outstanding, 1);
    assert_int_equal(c.notified_resolved, 1);

    /* A forgotten entity starts afresh. */
    h->end = T0 + 20 * STEP;
    assert_string_equal(play(h, KEY1, "AN"), "--");
    harness_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_after_for_and_resolves_after_resolve_for),
        cmocka_unit_test(test_pending_interrupted),
        cmocka_unit_test(test_for_one_fires_at_once),
        cmocka_unit_test(test_entities_are_independent),
        cmocka_unit_test(test_repeat_interval_boundary),
        cmocka_unit_test(test_flapping_holds_and_releases_resolved),
        cmocka_unit_test(test_flapping_settles_in_the_notified_state),
        cmocka_unit_test(test_flapping_releases_firing),
        cmocka_unit_test(test_flap_threshold_zero_waits_for_a_steady_state),
        cmocka_unit_test(test_configure_keeps_state),
        cmocka_unit_test(test_configure_flapping),
        cmocka_unit_test(test_id_determinism_and_distinctness),
        cmocka_unit_test(test_replay_gives_the_same_alerts),
        cmocka_unit_test(test_document_fields),
        cmocka_unit_test(test_non_finite_numbers_are_null),
        cmocka_unit_test(test_entity_strings_are_unambiguous),
        cmocka_unit_test(test_entity_bound),
        cmocka_unit_test(test_stale_windows_are_ignored),
        cmocka_unit_test(test_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
