#include "detect/swap.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/errstr.h"
#include "base/file.h"

#define AD_LOG_MODULE "serving"
#include "base/log.h"

/* A candidate version scoring beside the serving one (docs/model-store.md, "Shadow mode"). */
struct shadow {
    struct ad_model *candidate; /* NULL: none */
    uint64_t windows;           /* scored by both versions */
    uint64_t disagreements; /* of those, windows one version calls anomalous and not the other */
    double sum_difference, max_difference; /* |candidate score - serving score| */
};

struct ad_swap {
    const struct ad_settings_detector *settings;
    struct ad_metrics *metrics;
    struct ad_model *model; /* NULL: windows are not scored */
    struct shadow shadow;
    json_t *last_shadow;    /* the outcome of the last shadow run, for /status; NULL: none */
    char model_error[4608]; /* why there is no model, or why the last version was refused */
    struct ad_gauge *model_info;
    struct ad_counter *load_failures_total;
    struct ad_counter *shadow_windows_total, *shadow_promoted_total, *shadow_refused_total;
    struct ad_gauge *shadow_disagreement, *shadow_difference;
};

struct ad_swap *ad_swap_new(const struct ad_settings_detector *d, struct ad_metrics *metrics)
{
    struct ad_swap *sw = calloc(1, sizeof *sw);
    if (!sw)
        return NULL;
    sw->settings = d;
    sw->metrics = metrics;
    const char *name = d->name;
    sw->load_failures_total = ad_metrics_counter(metrics, "anomalyd_model_load_failures_total",
                                                 "Model versions that failed to load or validate.",
                                                 "detector", name, NULL);
    static const char verdict_help[] = "Shadow runs by outcome: the candidate promoted or refused.";
    sw->shadow_windows_total = ad_metrics_counter(
        metrics, "anomalyd_model_shadow_windows_total",
        "Windows a candidate model version scored in shadow.", "detector", name, NULL);
    sw->shadow_promoted_total =
        ad_metrics_counter(metrics, "anomalyd_model_shadow_runs_total", verdict_help, "detector",
                           name, "outcome", "promoted", NULL);
    sw->shadow_refused_total =
        ad_metrics_counter(metrics, "anomalyd_model_shadow_runs_total", verdict_help, "detector",
                           name, "outcome", "refused", NULL);
    sw->shadow_disagreement = ad_metrics_gauge(
        metrics, "anomalyd_model_shadow_disagreement",
        "Share of windows of the current (or last) shadow run on which the candidate and the "
        "serving version disagree on anomalous.",
        "detector", name, NULL);
    sw->shadow_difference = ad_metrics_gauge(
        metrics, "anomalyd_model_shadow_score_difference",
        "Mean absolute difference between the candidate's and the serving version's scores in "
        "the current (or last) shadow run.",
        "detector", name, NULL);
    return sw;
}

static void drop_candidate(struct ad_swap *sw)
{
    ad_model_unref(sw->shadow.candidate);
    sw->shadow = (struct shadow){0};
}

void ad_swap_destroy(struct ad_swap *sw)
{
    if (!sw)
        return;
    drop_candidate(sw);
    json_decref(sw->last_shadow);
    ad_model_unref(sw->model);
    free(sw);
}

struct ad_model *ad_swap_serving(const struct ad_swap *sw)
{
    return sw->model;
}

struct ad_model *ad_swap_candidate(const struct ad_swap *sw)
{
    return sw->shadow.candidate;
}

double ad_swap_score_threshold(const struct ad_swap *sw, const struct ad_model *m)
{
    const struct ad_settings_detector *d = sw->settings;
    return isnan(d->threshold_score) ? ad_model_calibration(m)->threshold : d->threshold_score;
}

/* ---- serve, offer, refuse ---- */

static void serve(struct ad_swap *sw, struct ad_model *m)
{
    ad_gauge_set(sw->model_info, 0);
    ad_model_unref(sw->model);
    sw->model = m;
    sw->model_info = ad_metrics_gauge(sw->metrics, "anomalyd_model_info",
                                      "The model version a detector scores with (value 1).",
                                      "detector", sw->settings->name, "model", ad_model_name(m),
                                      "version", ad_model_version(m), NULL);
    ad_gauge_set(sw->model_info, 1);
    AD_INFO_KV("serving a model", AD_KV_STR("detector", sw->settings->name),
               AD_KV_STR("model", ad_model_name(m)), AD_KV_STR("version", ad_model_version(m)));
}

/* A version that fails here is only noted: the store's watcher, whose first check follows at
 * once, reports it (logged and counted once, ad_swap_refuse). */
void ad_swap_load_first(struct ad_swap *sw, const char *store_path)
{
    const struct ad_settings_detector *d = sw->settings;
    struct ad_model_expect expect = {
        .features = &d->features, .window = d->window_len, .step_ms = d->step};
    char err[sizeof sw->model_error];
    if (!store_path) {
        snprintf(sw->model_error, sizeof sw->model_error, "no model yet: waiting for the store");
        return;
    }
    char current[4096];
    snprintf(current, sizeof current, "%s/%s/CURRENT", store_path, d->model);
    if (access(current, F_OK) < 0 && errno == ENOENT) {
        /* Nothing published yet: the normal state of a new detector, not a failure. */
        snprintf(sw->model_error, sizeof sw->model_error, "no model yet: %s does not exist",
                 current);
        AD_WARN_KV("no model yet: windows are exported but not scored",
                   AD_KV_STR("detector", d->name), AD_KV_STR("waiting_for", current));
        return;
    }
    struct ad_model *m = ad_model_load_current(store_path, d->model, &expect, err, sizeof err);
    if (!m) {
        snprintf(sw->model_error, sizeof sw->model_error, "%s", err);
        AD_DEBUG_KV("the published model does not load; the store's watcher reports it",
                    AD_KV_STR("detector", d->name), AD_KV_STR("error", err));
        return;
    }
    ad_swap_offer(sw, m);
}

void ad_swap_refuse(struct ad_swap *sw, const char *error)
{
    snprintf(sw->model_error, sizeof sw->model_error, "%s", error);
    ad_counter_inc(sw->load_failures_total);
    if (sw->model)
        AD_ERROR_KV("a model version was refused; the serving one stays",
                    AD_KV_STR("detector", sw->settings->name),
                    AD_KV_STR("serving", ad_model_version(sw->model)), AD_KV_STR("error", error));
    else
        AD_WARN_KV("no model: windows are exported but not scored",
                   AD_KV_STR("detector", sw->settings->name), AD_KV_STR("reason", error));
}

static const char *version_of(const struct ad_model *m)
{
    return m ? ad_model_version(m) : "";
}

/* ---- shadow ---- */

/* The share of shadowed windows with different verdicts, and the mean score difference. */
static double disagreement_of(const struct shadow *sh)
{
    return sh->windows ? (double)sh->disagreements / (double)sh->windows : 0.0;
}

static double mean_difference_of(const struct shadow *sh)
{
    return sh->windows ? sh->sum_difference / (double)sh->windows : 0.0;
}

/* A new version scores beside the serving one before it serves. */
static void start_shadow(struct ad_swap *sw, struct ad_model *m)
{
    if (sw->shadow.candidate)
        AD_INFO_KV("a newer version replaces the candidate in shadow",
                   AD_KV_STR("detector", sw->settings->name),
                   AD_KV_STR("candidate", version_of(sw->shadow.candidate)),
                   AD_KV_STR("newer", ad_model_version(m)));
    drop_candidate(sw);
    sw->shadow.candidate = m;
    ad_gauge_set(sw->shadow_disagreement, 0);
    ad_gauge_set(sw->shadow_difference, 0);
    AD_INFO_KV("a new model version scores in shadow before it serves",
               AD_KV_STR("detector", sw->settings->name),
               AD_KV_STR("serving", ad_model_version(sw->model)),
               AD_KV_STR("candidate", ad_model_version(m)),
               AD_KV_INT("windows", (long long)sw->settings->shadow.windows));
}

void ad_swap_offer(struct ad_swap *sw, struct ad_model *m)
{
    const struct ad_settings_detector *d = sw->settings;
    struct ad_model_expect expect = {
        .features = &d->features, .window = d->window_len, .step_ms = d->step};
    char err[sizeof sw->model_error];
    if (ad_model_fits(m, &expect, err, sizeof err) < 0) {
        ad_swap_refuse(sw, err);
        ad_model_unref(m);
        return;
    }
    sw->model_error[0] = '\0';
    if ((sw->model && strcmp(ad_model_dir(sw->model), ad_model_dir(m)) == 0) ||
        (sw->shadow.candidate &&
         strcmp(ad_model_dir(sw->shadow.candidate), ad_model_dir(m)) == 0)) {
        ad_model_unref(m);
        return;
    }
    if (sw->model && d->shadow.windows > 0) {
        start_shadow(sw, m);
        return;
    }
    drop_candidate(sw);
    serve(sw, m);
}

/* Ends a shadow run once the candidate has scored enough windows: promotes it, or refuses it
 * when the two versions disagreed too often. */
static void conclude_shadow(struct ad_swap *sw)
{
    const struct ad_settings_shadow *cfg = &sw->settings->shadow;
    struct shadow *sh = &sw->shadow;
    unsigned long long windows = sh->windows;
    double disagreement = disagreement_of(sh), mean = mean_difference_of(sh);
    bool promote = disagreement <= cfg->max_disagreement;
    json_decref(sw->last_shadow);
    sw->last_shadow = json_pack(
        "{s:s, s:s, s:s, s:I, s:f, s:f, s:f}", "candidate", ad_model_version(sh->candidate),
        "serving", ad_model_version(sw->model), "outcome", promote ? "promoted" : "refused",
        "windows", (json_int_t)sh->windows, "disagreement", disagreement, "mean_score_difference",
        mean, "max_score_difference", sh->max_difference);
    AD_INFO_KV("shadow run finished", AD_KV_STR("detector", sw->settings->name),
               AD_KV_STR("serving", ad_model_version(sw->model)),
               AD_KV_STR("candidate", ad_model_version(sh->candidate)),
               AD_KV_INT("windows", (long long)sh->windows),
               AD_KV_DOUBLE("disagreement", disagreement),
               AD_KV_DOUBLE("mean_score_difference", mean),
               AD_KV_DOUBLE("max_score_difference", sh->max_difference),
               AD_KV_STR("outcome", promote ? "promoted" : "refused"));
    struct ad_model *m = sh->candidate; /* the reference moves to m */
    sw->shadow = (struct shadow){0};
    if (promote) {
        ad_counter_inc(sw->shadow_promoted_total);
        serve(sw, m);
        return;
    }
    char why[256];
    snprintf(why, sizeof why,
             "version %s disagreed with %s on %.1f%% of %llu shadowed windows (at most %.1f%% "
             "allowed)",
             ad_model_version(m), ad_model_version(sw->model), 100 * disagreement, windows,
             100 * cfg->max_disagreement);
    ad_counter_inc(sw->shadow_refused_total);
    ad_swap_refuse(sw, why);
    ad_model_unref(m);
}

void ad_swap_compare(struct ad_swap *sw, const struct ad_model *candidate, const float *serving,
                     const float *shadow, size_t n, const char *error)
{
    struct shadow *sh = &sw->shadow;
    if (!candidate || candidate != sh->candidate || !sw->model)
        return; /* no shadow, or one a newer candidate or a promotion has replaced */
    if (error) {
        char why[512];
        snprintf(why, sizeof why, "version %s failed in shadow: %s",
                 ad_model_version(sh->candidate), error);
        drop_candidate(sw);
        ad_counter_inc(sw->shadow_refused_total);
        ad_swap_refuse(sw, why);
        return;
    }
    double threshold = ad_swap_score_threshold(sw, sw->model);
    double candidate_threshold = ad_swap_score_threshold(sw, sh->candidate);
    uint64_t before = sh->windows;
    for (size_t w = 0; w < n; w++) {
        double a = serving[w], c = shadow[w];
        if (!isfinite(a) || !isfinite(c))
            continue;
        double diff = fabs(c - a);
        sh->windows++;
        sh->sum_difference += diff;
        sh->max_difference = diff > sh->max_difference ? diff : sh->max_difference;
        sh->disagreements += (a >= threshold) != (c >= candidate_threshold);
    }
    ad_counter_add(sw->shadow_windows_total, (double)(sh->windows - before));
    ad_gauge_set(sw->shadow_disagreement, disagreement_of(sh));
    ad_gauge_set(sw->shadow_difference, mean_difference_of(sh));
    if (sh->windows >= (uint64_t)sw->settings->shadow.windows)
        conclude_shadow(sw);
}

void ad_swap_status(const struct ad_swap *sw, json_t *model)
{
    if (sw->model)
        ad_model_describe(sw->model, model);
    if (sw->model_error[0])
        json_object_set_new(model, "error", json_string(sw->model_error));
    const struct shadow *sh = &sw->shadow;
    if (sh->candidate)
        json_object_set_new(
            model, "shadow",
            json_pack("{s:s, s:I, s:I, s:f, s:f, s:f}", "candidate",
                      ad_model_version(sh->candidate), "windows", (json_int_t)sh->windows,
                      "windows_needed", (json_int_t)sw->settings->shadow.windows, "disagreement",
                      disagreement_of(sh), "mean_score_difference", mean_difference_of(sh),
                      "max_score_difference", sh->max_difference));
    if (sw->last_shadow)
        json_object_set(model, "last_shadow_run", sw->last_shadow);
}

/* ---- configs against the store ---- */

/* The published manifest of detector d, parsed (a reference the caller drops), or NULL. */
static json_t *published_manifest(const char *store, const struct ad_settings_detector *d)
{
    char path[4096], why[256], *current, *version;
    size_t len;
    snprintf(path, sizeof path, "%s/%s/CURRENT", store, d->model);
    if (!(current = ad_file_read(path, 4096, &len, NULL, why, sizeof why)))
        return NULL;
    version = strtok(current, " \t\r\n");
    json_t *doc = NULL;
    if (version) {
        snprintf(path, sizeof path, "%s/%s/%s/manifest.json", store, d->model, version);
        char *text = ad_file_read(path, 16 << 20, &len, NULL, why, sizeof why);
        doc = text ? json_loadb(text, len, 0, NULL) : NULL;
        free(text);
    }
    free(current);
    return doc;
}

int ad_swap_check_store(const struct ad_settings *s, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; s->model_store.path && i < s->n_detectors; i++) {
        const struct ad_settings_detector *d = &s->detectors[i];
        json_t *doc = published_manifest(s->model_store.path, d);
        if (!doc)
            continue;
        json_t *features = json_object_get(doc, "features");
        json_int_t window = json_integer_value(json_object_get(doc, "window"));
        json_int_t step = json_integer_value(json_object_get(doc, "step_ms"));
        bool same = json_is_array(features) && json_array_size(features) == d->features.len;
        for (size_t f = 0; same && f < d->features.len; f++)
            same =
                json_is_string(json_array_get(features, f)) &&
                strcmp(json_string_value(json_array_get(features, f)), d->features.items[f]) == 0;
        int rc = 0;
        if (!same || window != (json_int_t)d->window_len || step != d->step)
            rc = ad_errstr_set(
                errstr, errstr_size,
                "detector %s: the version its model store serves (%s/%s: %lld steps of %lld ms, "
                "%zu features) does not fit %zu steps of %lld ms of %s; publish a model for the "
                "new shape first, or keep the detector's window, step and features",
                d->name, d->model,
                json_string_value(json_object_get(doc, "version"))
                    ? json_string_value(json_object_get(doc, "version"))
                    : "?",
                (long long)window, (long long)step, json_array_size(features), d->window_len,
                (long long)d->step, same ? "the same features" : "these features");
        json_decref(doc);
        if (rc < 0)
            return -1;
    }
    return 0;
}
