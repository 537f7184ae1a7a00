#include "detect/serving.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/grow.h"
#include "base/utf8.h"
#include "detect/alerts.h"
#include "detect/feedback.h"
#include "detect/judge.h"
#include "detect/maintenance.h"
#include "detect/replay_marks.h"
#include "detect/swap.h"
#include "gpu/model.h"
#include "stream/log_rules.h"
#include "windows/bucket.h"
#include "windows/window_store.h"

#define AD_LOG_MODULE "serving"
#include "base/log.h"

/* "Buckets up to bucket are done once `submitted` jobs have finished and every alert they
 * made (sequence numbers below `alerts`) has been acknowledged." */
#define ALERTS_UNKNOWN UINT64_MAX /* the jobs have not all finished yet */
struct mark {
    int64_t bucket;
    uint64_t submitted;
    uint64_t alerts;
};

/* An alert handed to the sinks and not yet acknowledged by all of them. */
struct unacked {
    uint64_t seq;
    uint32_t remaining;
    int64_t bucket_start; /* of the window it came from */
    double closed_at;     /* when its bucket began closing (ad_clock_mono_seconds); 0: unknown */
};

struct ad_serving {
    const struct ad_settings_detector *settings;
    void *user;
    struct ad_scorer *scorer;
    struct ad_metrics *metrics;
    struct ad_swap *swap; /* the serving model version, and the next one in shadow */
    struct ad_judge *judge;
    struct ad_alerts *alerts;
    struct ad_replay_marks *replayed;   /* NULL until replayed events mark an entity */
    struct ad_maintenance *maintenance; /* NULL: none */
    struct ad_feedback *feedback;
    struct ad_serving_outlet outlet;
    FILE *export;
    char *export_path;

    uint64_t submitted, finished;
    struct mark *marks; /* oldest first */
    size_t n_marks, cap_marks;
    int64_t done_through;
    uint64_t alert_seq;      /* the next alert's sequence number */
    struct unacked *unacked; /* oldest first, from unacked_head */
    size_t unacked_head, n_unacked, cap_unacked;
    int64_t last_bucket; /* the newest bucket with a finished batch */
    /* The batch being finished: the bucket and close time its alerts are delivered from. */
    int64_t finishing_bucket;
    double finishing_closed_at;
    double last_max_score;
    int64_t notified_at; /* INT64_MIN: the wall clock */

    unsigned long long scored, anomalous, unscored_no_model, unscored_no_data, unscored_failed;
    unsigned long long unscored_no_history;
    struct ad_counter *scored_total, *anomalous_total;
    struct ad_counter *unscored_no_model_total, *unscored_no_data_total, *unscored_failed_total;
    struct ad_counter *unscored_no_history_total;
    struct ad_counter *notified_firing_total, *notified_resolved_total, *held_back_total;
    struct ad_counter *untracked_total, *replayed_total, *unmarked_total;
    unsigned long long notified_before;
    unsigned long long maintained, kept_out; /* windows in maintenance; of false positives */
    struct ad_counter *maintained_total, *kept_out_total, *left_out_total;
    struct ad_counter *marks_fp_total, *marks_tp_total, *forgotten_total;
    struct ad_gauge *series_gauge;
    uint64_t left_out_counted;
    struct ad_gauge *pending_gauge, *firing_gauge, *flapping_gauge, *unacked_gauge;
    struct ad_histogram *delivery_seconds;
    struct ad_alerts_counts counted; /* what the counters above have been given */
};

/* ---- construction ---- */

static void register_alert_metrics(struct ad_serving *v, struct ad_metrics *metrics)
{
    const char *name = v->settings->name;
    static const char notified_help[] = "Alert notifications handed to the sinks, by state.";
    static const char active_help[] = "Entities whose alert is in this state.";
    v->notified_firing_total =
        ad_metrics_counter(metrics, "anomalyd_alert_notifications_total", notified_help, "detector",
                           name, "state", "firing", NULL);
    v->notified_resolved_total =
        ad_metrics_counter(metrics, "anomalyd_alert_notifications_total", notified_help, "detector",
                           name, "state", "resolved", NULL);
    v->held_back_total = ad_metrics_counter(metrics, "anomalyd_alert_notifications_held_back_total",
                                            "Notifications held back while an entity was flapping.",
                                            "detector", name, NULL);
    v->untracked_total = ad_metrics_counter(
        metrics, "anomalyd_alerts_untracked_total",
        "Anomalous windows of new entities that found the alert table full (no alert).", "detector",
        name, NULL);
    v->replayed_total = ad_metrics_counter(
        metrics, "anomalyd_alert_notifications_replayed_total",
        "Notifications not handed to the sinks again: made while windows were rebuilt after a "
        "restart, for windows whose alerts had been acknowledged before.",
        "detector", name, NULL);
    v->unmarked_total = ad_metrics_counter(
        metrics, "anomalyd_replay_marks_dropped_total",
        "Entities fed by replayed events that found the replay table full: their rebuilt "
        "notifications may be sent again.",
        "detector", name, NULL);
    v->pending_gauge = ad_metrics_gauge(metrics, "anomalyd_alerts", active_help, "detector", name,
                                        "state", "pending", NULL);
    v->firing_gauge = ad_metrics_gauge(metrics, "anomalyd_alerts", active_help, "detector", name,
                                       "state", "firing", NULL);
    v->flapping_gauge =
        ad_metrics_gauge(metrics, "anomalyd_alerts_flapping",
                         "Entities whose notifications are held back.", "detector", name, NULL);
    v->unacked_gauge = ad_metrics_gauge(
        metrics, "anomalyd_alerts_unacknowledged",
        "Alerts handed to the sinks and not yet acknowledged by every one of them.", "detector",
        name, NULL);
    v->delivery_seconds = ad_metrics_histogram(
        metrics, "anomalyd_alert_delivery_seconds",
        "From the close of an alert's bucket to its acknowledgement by the last sink.",
        ad_metrics_latency_buckets, ad_metrics_latency_buckets_len, "detector", name, NULL);
}

/* Brings the alert metrics up to the state machine's counts. */
static void update_alert_metrics(struct ad_serving *v)
{
    struct ad_alerts_counts c;
    ad_alerts_counts(v->alerts, &c);
    ad_counter_add(v->notified_firing_total,
                   (double)(c.notified_firing - v->counted.notified_firing));
    ad_counter_add(v->notified_resolved_total,
                   (double)(c.notified_resolved - v->counted.notified_resolved));
    ad_counter_add(v->held_back_total, (double)(c.held_back - v->counted.held_back));
    ad_counter_add(v->untracked_total, (double)(c.untracked - v->counted.untracked));
    ad_gauge_set(v->pending_gauge, (double)c.pending);
    ad_gauge_set(v->firing_gauge, (double)c.firing);
    ad_gauge_set(v->flapping_gauge, (double)c.flapping);
    ad_gauge_set(v->unacked_gauge, (double)v->n_unacked);
    v->counted = c;
}

struct ad_serving *ad_serving_new(const struct ad_settings *s, size_t d, struct ad_scorer *scorer,
                                  const struct ad_serving_outlet *outlet,
                                  struct ad_metrics *metrics, void *user, char *errstr,
                                  size_t errstr_size)
{
    const struct ad_settings_detector *det = &s->detectors[d];
    struct ad_serving *v = calloc(1, sizeof *v);
    if (!v) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    v->settings = det;
    v->user = user;
    v->scorer = scorer;
    v->metrics = metrics;
    v->done_through = INT64_MIN;
    v->last_bucket = INT64_MIN;
    v->notified_at = INT64_MIN;
    if (outlet)
        v->outlet = *outlet;
    /* An entity's judgement outlives its windows by one idle timeout, so an entity that comes
     * back soon keeps its history. */
    int64_t idle_buckets = 2 * (det->entity_idle_timeout / det->step + 1);
    v->swap = ad_swap_new(det, metrics);
    struct ad_feature_control controls[AD_WINDOW_MAX_FEATURES];
    for (size_t f = 0; f < det->features.len && f < AD_WINDOW_MAX_FEATURES; f++)
        controls[f] = det->refs[f].control;
    struct ad_judge_options judging = {.features = det->features.len,
                                       .step_ms = det->step,
                                       .max_entities = 2 * (size_t)det->max_entities,
                                       .idle_buckets = idle_buckets,
                                       .lstm = det->stream_lstm,
                                       .seasonal = det->stream_seasonal,
                                       .controls = controls,
                                       .max_held = (size_t)s->feedback.max_held,
                                       .hold_windows = (size_t)(s->feedback.history / det->step),
                                       .series_limit = (size_t)s->scoring.entity_metrics_limit};
    v->judge = ad_judge_new(&judging);
    v->alerts = ad_alerts_new(det->name, &det->alert, &det->keys, &det->features,
                              2 * (size_t)det->max_entities);
    if (!v->swap || !v->judge || !v->alerts) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto fail;
    }
    char err[512];
    struct ad_feedback_options fo = {
        .detector = det->name,
        .model = det->model,
        .keys = &det->keys,
        .folder = s->feedback.path ? s->feedback.path : s->model_store.path,
        .recent = (size_t)s->feedback.recent_alerts,
        .step_ms = det->step,
        .for_windows = det->alert.for_windows,
    };
    if (!(v->feedback = ad_feedback_new(&fo, err, sizeof err)) ||
        !(v->maintenance = ad_maintenance_new(s, d, err, sizeof err))) {
        ad_errstr_set(errstr, errstr_size, "detector %s: %s", det->name, err);
        goto fail;
    }
    if (det->export_path) {
        v->export_path = strdup(det->export_path);
        v->export = fopen(det->export_path, "a");
        if (!v->export || !v->export_path) {
            ad_errstr_set(errstr, errstr_size, "detector %s: cannot open %s: %s", det->name,
                          det->export_path, strerror(errno));
            goto fail;
        }
    }
    const char *name = det->name;
    static const char unscored_help[] = "Windows closed without a score, by reason.";
    v->scored_total = ad_metrics_counter(metrics, "anomalyd_windows_scored_total",
                                         "Windows scored.", "detector", name, NULL);
    v->anomalous_total =
        ad_metrics_counter(metrics, "anomalyd_windows_anomalous_total",
                           "Windows whose surprise (or score) reached the detector's threshold.",
                           "detector", name, NULL);
    v->unscored_no_model_total =
        ad_metrics_counter(metrics, "anomalyd_windows_unscored_total", unscored_help, "detector",
                           name, "reason", "no_model", NULL);
    v->unscored_no_data_total =
        ad_metrics_counter(metrics, "anomalyd_windows_unscored_total", unscored_help, "detector",
                           name, "reason", "no_data", NULL);
    v->unscored_no_history_total =
        ad_metrics_counter(metrics, "anomalyd_windows_unscored_total", unscored_help, "detector",
                           name, "reason", "no_history", NULL);
    v->unscored_failed_total =
        ad_metrics_counter(metrics, "anomalyd_windows_unscored_total", unscored_help, "detector",
                           name, "reason", "failed", NULL);
    register_alert_metrics(v, metrics);
    v->maintained_total = ad_metrics_counter(
        metrics, "anomalyd_windows_maintenance_total",
        "Windows of entities in a maintenance window: judged, not notified, kept out of the "
        "history.",
        "detector", name, NULL);
    v->kept_out_total = ad_metrics_counter(
        metrics, "anomalyd_windows_false_positive_total",
        "Anomalous windows kept out of the history because a false-positive mark covers them.",
        "detector", name, NULL);
    static const char marks_help[] = "Alerts marked by operators, by verdict.";
    v->marks_fp_total = ad_metrics_counter(metrics, "anomalyd_feedback_marks_total", marks_help,
                                           "detector", name, "verdict", "false_positive", NULL);
    v->marks_tp_total = ad_metrics_counter(metrics, "anomalyd_feedback_marks_total", marks_help,
                                           "detector", name, "verdict", "true_positive", NULL);
    v->forgotten_total = ad_metrics_counter(
        metrics, "anomalyd_feedback_windows_forgotten_total",
        "Anomalous windows taken out of an entity's history by false-positive marks.", "detector",
        name, NULL);
    v->left_out_total = ad_metrics_counter(
        metrics, "anomalyd_entity_metrics_left_out_total",
        "Entities that found entity_metrics_limit entities with series on /metrics/entities.",
        "detector", name, NULL);
    v->series_gauge =
        ad_metrics_gauge(metrics, "anomalyd_entity_metrics_entities",
                         "Entities with series on /metrics/entities.", "detector", name, NULL);
    ad_swap_load_first(v->swap, s->model_store.path);
    return v;
fail:
    ad_serving_destroy(v);
    return NULL;
}

void ad_serving_destroy(struct ad_serving *v)
{
    if (!v)
        return;
    if (v->export)
        fclose(v->export);
    free(v->export_path);
    ad_judge_destroy(v->judge);
    ad_alerts_destroy(v->alerts);
    ad_maintenance_destroy(v->maintenance);
    ad_feedback_destroy(v->feedback);
    ad_replay_marks_destroy(v->replayed);
    ad_swap_destroy(v->swap);
    free(v->marks);
    free(v->unacked);
    free(v);
}

static void update_entity_metrics(struct ad_serving *v)
{
    uint64_t left_out = ad_judge_left_out(v->judge);
    ad_counter_add(v->left_out_total, (double)(left_out - v->left_out_counted));
    v->left_out_counted = left_out;
    ad_gauge_set(v->series_gauge, (double)ad_judge_series(v->judge));
}

/* ---- the flow ---- */

/* The per-feature direction and minimum deviation, when the detector sets any. */
static void set_controls(const struct ad_settings_detector *d, struct ad_score_job *job)
{
    job->has_controls = false;
    for (size_t f = 0; f < d->features.len && f < AD_SCORE_MAX_FEATURES; f++) {
        const struct ad_feature_control *c = &d->refs[f].control;
        job->controls[f] = *c;
        if (c->direction != AD_DIRECTION_BOTH || c->min_abs > 0 || c->min_rel > 0)
            job->has_controls = true;
    }
}

void ad_serving_submit(struct ad_serving *v, struct ad_window_batch *batch)
{
    struct ad_model *serving = ad_swap_serving(v->swap);
    struct ad_model *candidate = ad_swap_candidate(v->swap);
    struct ad_model *m = serving ? ad_model_ref(serving) : NULL;
    struct ad_score_job *job = ad_score_job_new(batch, m, v);
    if (!job) {
        AD_ERROR_KV("out of memory submitting windows; they are not scored",
                    AD_KV_STR("detector", v->settings->name));
        ad_counter_add(v->unscored_failed_total, (double)batch->n_windows);
        ad_window_batch_free(batch);
        ad_model_unref(m);
        return;
    }
    if (m && candidate)
        job->shadow = ad_model_ref(candidate);
    set_controls(v->settings, job);
    v->submitted++;
    /* Without a model, or without a window to score, the job may finish here, unless that
     * would overtake jobs in flight. */
    if (v->scorer && ((m && batch->n_windows) || v->finished + 1 < v->submitted))
        ad_scorer_submit(v->scorer, job);
    else
        ad_serving_finish(v, job);
}

/* Every alert with a sequence number below this one has been acknowledged. */
static uint64_t acked_below(const struct ad_serving *v)
{
    return v->n_unacked ? v->unacked[v->unacked_head].seq : v->alert_seq;
}

/* Moves done_through over the marks whose jobs have finished and whose alerts are safe. */
static void advance_done(struct ad_serving *v)
{
    size_t done = 0;
    uint64_t acked = acked_below(v);
    while (done < v->n_marks && v->marks[done].alerts != ALERTS_UNKNOWN &&
           v->marks[done].alerts <= acked) {
        if (v->marks[done].bucket > v->done_through)
            v->done_through = v->marks[done].bucket;
        done++;
    }
    if (done && done < v->n_marks)
        memmove(v->marks, v->marks + done, (v->n_marks - done) * sizeof *v->marks);
    v->n_marks -= done;
}

void ad_serving_closed(struct ad_serving *v, int64_t bucket)
{
    bool finished = v->finished == v->submitted;
    if (finished && v->n_marks == 0 && acked_below(v) == v->alert_seq) {
        if (bucket > v->done_through)
            v->done_through = bucket;
        return;
    }
    if (v->n_marks && v->marks[v->n_marks - 1].submitted == v->submitted) {
        v->marks[v->n_marks - 1].bucket = bucket; /* no new batch since: move that mark on */
        return;
    }
    if (ad_grow(&v->marks, &v->cap_marks, v->n_marks + 1, sizeof *v->marks) < 0) {
        /* The bucket will count as done with a later one: offsets wait a little longer. */
        AD_WARN("out of memory tracking closed buckets");
        return;
    }
    v->marks[v->n_marks++] = (struct mark){.bucket = bucket,
                                           .submitted = v->submitted,
                                           .alerts = finished ? v->alert_seq : ALERTS_UNKNOWN};
}

struct ad_serving *ad_serving_of(const struct ad_score_job *job)
{
    return job->owner;
}

void *ad_serving_user(const struct ad_serving *v)
{
    return v->user;
}

int64_t ad_serving_done_through(const struct ad_serving *v)
{
    return v->done_through;
}

size_t ad_serving_in_flight(const struct ad_serving *v)
{
    return (size_t)(v->submitted - v->finished);
}

size_t ad_serving_unacked(const struct ad_serving *v)
{
    return v->n_unacked;
}

/* ---- alerts ---- */

static int track_unacked(struct ad_serving *v, const struct unacked *alert)
{
    if (v->unacked_head + v->n_unacked == v->cap_unacked) {
        if (v->unacked_head > 0) { /* reuse the room acknowledged alerts left at the front */
            memmove(v->unacked, v->unacked + v->unacked_head, v->n_unacked * sizeof *v->unacked);
            v->unacked_head = 0;
        }
        if (ad_grow(&v->unacked, &v->cap_unacked, v->n_unacked + 1, sizeof *v->unacked) < 0)
            return -1;
    }
    v->unacked[v->unacked_head + v->n_unacked++] = *alert;
    return 0;
}

void ad_serving_set_notified_at(struct ad_serving *v, int64_t ms)
{
    v->notified_at = ms;
}

static int64_t notify_time(const struct ad_serving *v)
{
    return v->notified_at != INT64_MIN ? v->notified_at : ad_clock_wall_ms();
}

/* Hands one alert to the sinks (or to the log alone, without sinks), and frees it. */
static void publish(struct ad_serving *v, struct ad_alert *alert)
{
    uint64_t seq = v->alert_seq++;
    AD_INFO_KV("alert", AD_KV_STR("detector", v->settings->name), AD_KV_STR("state", alert->state),
               AD_KV_STR("entity", alert->entity), AD_KV_STR("id", alert->id));
    ad_feedback_notified(v->feedback, alert, alert->key, alert->key_len);
    size_t acks = v->outlet.publish ? v->outlet.publish(v->outlet.arg, alert, seq) : 0;
    struct unacked tracked = {.seq = seq,
                              .remaining = (uint32_t)acks,
                              .bucket_start = v->finishing_bucket,
                              .closed_at = v->finishing_closed_at};
    if (acks && track_unacked(v, &tracked) < 0)
        /* The acknowledgements will find nothing to count down: its bucket does not wait. */
        AD_ERROR_KV("out of memory tracking an alert's delivery",
                    AD_KV_STR("detector", v->settings->name), AD_KV_STR("id", alert->id));
    ad_alert_free(alert);
}

static void on_expired(void *arg, struct ad_alert *alert)
{
    publish(arg, alert);
}

/* Every sink has the alert: how long that took from its bucket's close. */
static void delivered(struct ad_serving *v, const struct unacked *alert)
{
    if (alert->closed_at <= 0)
        return;
    double seconds = ad_clock_mono_seconds() - alert->closed_at;
    ad_histogram_observe(v->delivery_seconds, seconds);
    /* One record per alert, for exact percentiles where the histogram's buckets are too
     * coarse (bench/e2e.py reads them). */
    AD_DEBUG_KV("alert delivered", AD_KV_STR("detector", v->settings->name),
                AD_KV_INT("sequence", (long long)alert->seq),
                AD_KV_INT("bucket_start_ms", alert->bucket_start),
                AD_KV_DOUBLE("latency_ms", seconds * 1000.0));
}

void ad_serving_ack(struct ad_serving *v, uint64_t seq)
{
    struct unacked *first = v->unacked + v->unacked_head;
    size_t lo = 0, hi = v->n_unacked;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (first[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == v->n_unacked || first[lo].seq != seq || first[lo].remaining == 0) {
        AD_WARN_KV("an acknowledgement for no alert", AD_KV_STR("detector", v->settings->name),
                   AD_KV_INT("sequence", (long long)seq));
        return;
    }
    if (--first[lo].remaining == 0)
        delivered(v, &first[lo]);
    while (v->n_unacked && v->unacked[v->unacked_head].remaining == 0) {
        v->unacked_head++;
        v->n_unacked--;
    }
    if (!v->n_unacked)
        v->unacked_head = 0;
    ad_gauge_set(v->unacked_gauge, (double)v->n_unacked);
    advance_done(v);
}

/* The window export (docs/windows.md): the window, and its score when it has one. */
static void export_window(struct ad_serving *v, const struct ad_score_job *job, size_t w,
                          const struct ad_verdict *verdict)
{
    const struct ad_settings_detector *d = v->settings;
    const struct ad_window_batch *b = job->batch;
    const char *values[AD_LOG_MAX_LABELS];
    size_t lens[AD_LOG_MAX_LABELS], len;
    const char *key = ad_window_batch_key(b, w, &len);
    size_t n = ad_entity_key_split(key, len, values, lens, AD_LOG_MAX_LABELS);
    FILE *f = v->export;

    fprintf(f, "{\"detector\":\"%s\",\"bucket_start_ms\":%lld,\"step_ms\":%lld,\"labels\":{",
            d->name, (long long)b->bucket_start, (long long)b->step);
    for (size_t k = 0; k < n && k < d->keys.len; k++) {
        json_t *value = json_stringn(values[k], lens[k]);
        char *text = value ? json_dumps(value, JSON_ENCODE_ANY) : NULL;
        fprintf(f, "%s\"%s\":%s", k ? "," : "", d->keys.items[k], text ? text : "null");
        free(text);
        json_decref(value);
    }
    fprintf(f, "},\"features\":[");
    for (size_t i = 0; i < d->features.len; i++)
        fprintf(f, "%s\"%s\"", i ? "," : "", d->features.items[i]);
    fprintf(f, "],\"values\":[");
    for (size_t t = 0; t < b->window_len; t++) {
        fprintf(f, "%s[", t ? "," : "");
        for (size_t i = 0; i < b->n_features; i++) {
            float x = b->values[(w * b->window_len + t) * b->n_features + i];
            if (isfinite(x))
                fprintf(f, "%s%.9g", i ? "," : "", (double)x);
            else
                fprintf(f, "%snull", i ? "," : "");
        }
        fprintf(f, "]");
    }
    fprintf(f, "],\"mask\":[");
    for (size_t t = 0; t < b->window_len; t++) {
        fprintf(f, "%s[", t ? "," : "");
        for (size_t i = 0; i < b->n_features; i++)
            fprintf(f, "%s%d", i ? "," : "", b->mask[(w * b->window_len + t) * b->n_features + i]);
        fprintf(f, "]");
    }
    fprintf(f, "]");
    float score = job->scores ? job->scores[w] : NAN;
    if (job->model && isfinite(score))
        fprintf(f, ",\"model_version\":\"%s\",\"score\":%.9g", ad_model_version(job->model),
                (double)score);
    if (isfinite(verdict->surprise))
        fprintf(f, ",\"surprise\":%.9g", verdict->surprise);
    fprintf(f, "}\n");
}

/* A window that reaches back before the entity's first data holds fill values in place of a
 * history the model was never shown that way, so its score says little, and it is not alerted
 * on (docs/alerts.md, "Warm-up"). A gap later in the entity's history is not a warm-up. */
static bool warming_up(const struct ad_window_batch *b, size_t w)
{
    return b->history && b->history[w] < b->window_len;
}

/* One judged window as the alert state machine and the scores outlet take it. */
static struct ad_alert_window window_of(struct ad_serving *v, const struct ad_score_job *job,
                                        size_t w, double score, const struct ad_verdict *verdict,
                                        const float *seasonal_shares, bool anomalous)
{
    const struct ad_settings_detector *d = v->settings;
    const struct ad_window_batch *b = job->batch;
    bool lstm = verdict->decided == AD_JUDGE_LSTM || !isfinite(verdict->surprise);
    struct ad_alert_window in = {
        .end_ms = b->bucket_start + b->step,
        .start_ms = b->bucket_start + b->step - d->window,
        .score = score,
        .surprise = verdict->surprise,
        .surprise_threshold = d->threshold_surprise,
        .score_threshold = d->threshold_score,
        .seasonal_score = verdict->seasonal_score,
        .stream = verdict->decided == AD_JUDGE_LSTM       ? "lstm"
                  : verdict->decided == AD_JUDGE_SEASONAL ? "seasonal"
                                                          : NULL,
        .recurring = verdict->recurring,
        .anomalous = anomalous,
        .shares = lstm ? (job->shares && isfinite(score) ? job->shares + w * b->n_features : NULL)
                       : seasonal_shares,
        .model = job->model ? ad_model_name(job->model) : NULL,
        .model_version = job->model ? ad_model_version(job->model) : NULL,
        .now_ms = notify_time(v),
    };
    in.key = ad_window_batch_key(b, w, &in.key_len);
    return in;
}

/* Feeds one scored window to the alert state machine, and publishes what it says. */
static void observe(struct ad_serving *v, const struct ad_alert_window *in)
{
    bool notified_before = ad_replay_marks_covers(v->replayed, in->key, in->key_len, in->end_ms);
    struct ad_alert *alert = NULL;
    if (ad_alerts_observe(v->alerts, in, &alert) <= 0)
        return;
    if (notified_before) {
        v->notified_before++;
        ad_counter_inc(v->replayed_total);
        AD_DEBUG_KV("alert rebuilt, not sent again", AD_KV_STR("detector", v->settings->name),
                    AD_KV_STR("state", alert->state), AD_KV_STR("entity", alert->entity),
                    AD_KV_STR("id", alert->id));
        /* Marks may name it: it was sent before the restart. */
        ad_feedback_notified(v->feedback, alert, alert->key, alert->key_len);
        if (v->outlet.rebuilt)
            v->outlet.rebuilt(v->outlet.arg, alert);
        ad_alert_free(alert);
        return;
    }
    publish(v, alert);
}

void ad_serving_mark_replayed(struct ad_serving *v, const char *key, size_t len,
                              int64_t notified_through_ms)
{
    if (!v->replayed) {
        v->replayed = ad_replay_marks_new(2 * (size_t)v->settings->max_entities);
        if (!v->replayed) {
            ad_counter_inc(v->unmarked_total);
            return;
        }
    }
    if (ad_replay_marks_raise(v->replayed, key, len, notified_through_ms) < 0)
        ad_counter_inc(v->unmarked_total);
}

void ad_serving_finish(struct ad_serving *v, struct ad_score_job *job)
{
    const struct ad_window_batch *b = job->batch;
    int64_t bucket = ad_bucket_index(b->bucket_start, b->step);
    size_t no_data = 0;
    double max_score = -INFINITY;
    const struct ad_settings_detector *d = v->settings;
    size_t T = b->window_len, F = b->n_features;
    bool scored_ok = job->model && !job->error[0] && job->scores;
    v->finishing_bucket = b->bucket_start;
    v->finishing_closed_at = b->closed_at;

    /* The windows the store left out (no data in their newest bucket) count as they would
     * have had they been scored: no score, for the batch's reason. */
    size_t all = b->n_windows + b->skipped_no_data;
    if (!job->model)
        ad_counter_add(v->unscored_no_model_total, (double)all);
    else if (job->error[0] || (!job->scores && b->n_windows))
        ad_counter_add(v->unscored_failed_total, (double)all);
    else
        no_data = b->skipped_no_data;
    size_t no_history = 0;
    for (size_t w = 0; w < b->n_windows; w++) {
        double score = scored_ok ? job->scores[w] : NAN;
        const float *newest = b->values + (w * T + T - 1) * F;
        const uint8_t *seen = b->mask + (w * T + T - 1) * F;
        struct ad_verdict verdict = {.surprise = NAN, .seasonal_score = NAN, .lstm_score = score};
        float seasonal_shares[AD_WINDOW_MAX_FEATURES];
        if (memchr(seen, 1, F)) {
            struct ad_judge_input in = {
                .bucket = bucket,
                .bucket_ms = b->bucket_start,
                .values = newest,
                .observed = seen,
                .steps_mask = b->mask + w * T * F,
                .steps = T,
                .lstm_score = score,
                .lstm_shares = scored_ok ? job->shares + w * F : NULL,
                .model = scored_ok ? job->model : NULL,
            };
            in.key = ad_window_batch_key(b, w, &in.len);
            ad_judge_window(v->judge, &in, d->threshold_surprise, &verdict, seasonal_shares);
        }
        /* The score judged: the LSTM's, less the features back from a gap (docs/scoring.md). */
        if (scored_ok && isnan(score))
            no_data++;
        else if (scored_ok && isnan(verdict.lstm_score))
            no_history++;
        score = verdict.lstm_score;
        if (isfinite(score) || isfinite(verdict.surprise)) {
            bool anomalous = verdict.surprise >= d->threshold_surprise ||
                             (isfinite(score) && score >= d->threshold_score);
            if (anomalous) {
                v->anomalous++;
                ad_counter_inc(v->anomalous_total);
            }
            struct ad_alert_window in =
                window_of(v, job, w, score, &verdict, seasonal_shares, anomalous);
            /* A maintenance window: judged and shown, but neither notified nor part of the
             * entity's history (docs/maintenance.md). A window a false positive covers
             * leaves the history too (docs/feedback.md); its alert goes on as it was. */
            in.maintenance = ad_maintenance_covering(v->maintenance, in.key, in.key_len, in.end_ms);
            if (in.maintenance) {
                ad_judge_undo(v->judge, verdict.entity);
                v->maintained++;
                ad_counter_inc(v->maintained_total);
            } else if (anomalous &&
                       ad_feedback_false_positive(v->feedback, in.key, in.key_len, in.end_ms)) {
                ad_judge_undo(v->judge, verdict.entity);
                v->kept_out++;
                ad_counter_inc(v->kept_out_total);
            } else if (anomalous) {
                ad_judge_hold(v->judge, verdict.entity);
            }
            ad_judge_show(v->judge, verdict.entity, score, verdict.surprise, anomalous);
            bool warming = warming_up(b, w);
            if (v->outlet.scored) {
                size_t json_len;
                char *json = ad_alerts_window_json(v->alerts, &in, warming, &json_len);
                if (json)
                    v->outlet.scored(v->outlet.arg, json, json_len);
                free(json);
            }
            if (!warming && !in.maintenance)
                observe(v, &in);
            if (isfinite(score))
                max_score = score > max_score ? score : max_score;
        } else if (verdict.entity) {
            /* Judged without a surprise yet (the first day of the baseline, no model): a
             * maintenance window keeps it out of the history all the same. */
            size_t key_len;
            const char *key = ad_window_batch_key(b, w, &key_len);
            if (ad_maintenance_covering(v->maintenance, key, key_len, b->bucket_start + b->step))
                ad_judge_undo(v->judge, verdict.entity);
            ad_judge_show(v->judge, verdict.entity, score, verdict.surprise, false);
        }
        if (v->export)
            export_window(v, job, w, &verdict);
    }
    if (v->export && b->last_of_bucket && fflush(v->export) != 0)
        AD_ERROR_KV("cannot write the window export", AD_KV_STR("path", v->export_path),
                    AD_KV_STR("error", strerror(errno)));
    if (b->last_of_bucket) {
        ad_replay_marks_expire(v->replayed, b->bucket_start + b->step);
        ad_judge_expire(v->judge, bucket);
        /* An entity gone quiet for its idle timeout resolves, as its windows stop. */
        ad_alerts_expire(v->alerts, b->bucket_start + b->step - v->settings->entity_idle_timeout,
                         notify_time(v), on_expired, v);
    }
    update_alert_metrics(v);
    update_entity_metrics(v);
    if (job->model && job->shadow && !job->error[0] && job->scores)
        ad_swap_compare(v->swap, job->shadow, job->scores, job->shadow_scores, b->n_windows,
                        job->shadow_scores ? NULL : job->shadow_error);

    size_t scored = job->model && !job->error[0] ? job->scored - no_history : 0;
    v->scored += scored;
    ad_counter_add(v->scored_total, (double)scored);
    ad_counter_add(v->unscored_no_data_total, (double)no_data);
    v->unscored_no_data += no_data;
    ad_counter_add(v->unscored_no_history_total, (double)no_history);
    v->unscored_no_history += no_history;
    if (!job->model)
        v->unscored_no_model += all;
    else if (job->error[0])
        v->unscored_failed += all;
    if (b->bucket_start != v->last_bucket) {
        v->last_bucket = b->bucket_start;
        v->last_max_score = max_score;
    } else if (max_score > v->last_max_score) {
        v->last_max_score = max_score;
    }

    v->finished++;
    /* Jobs finish in the order they were submitted, so every alert of the buckets whose jobs
     * have now all finished has a sequence number below alert_seq. */
    for (size_t i = 0; i < v->n_marks && v->marks[i].submitted <= v->finished; i++)
        if (v->marks[i].alerts == ALERTS_UNKNOWN)
            v->marks[i].alerts = v->alert_seq;
    advance_done(v);
    ad_score_job_free(job);
}

void ad_serving_status(const struct ad_serving *v, json_t *out)
{
    json_t *model = json_object();
    ad_swap_status(v->swap, model);
    json_object_set_new(out, "model", model);
    json_t *scoring = json_object();
    json_object_set_new(scoring, "windows_scored", json_integer((json_int_t)v->scored));
    json_object_set_new(scoring, "windows_anomalous", json_integer((json_int_t)v->anomalous));
    json_t *unscored = json_object();
    json_object_set_new(unscored, "no_model", json_integer((json_int_t)v->unscored_no_model));
    json_object_set_new(unscored, "no_data", json_integer((json_int_t)v->unscored_no_data));
    json_object_set_new(unscored, "no_history", json_integer((json_int_t)v->unscored_no_history));
    json_object_set_new(unscored, "failed", json_integer((json_int_t)v->unscored_failed));
    json_object_set_new(scoring, "windows_unscored", unscored);
    json_object_set_new(scoring, "in_flight", json_integer((json_int_t)ad_serving_in_flight(v)));
    json_object_set_new(scoring, "entities_tracked",
                        json_integer((json_int_t)ad_judge_entities(v->judge)));
    json_object_set_new(scoring, "entities_untracked",
                        json_integer((json_int_t)ad_judge_untracked(v->judge)));
    json_object_set_new(scoring, "entities_with_series",
                        json_integer((json_int_t)ad_judge_series(v->judge)));
    json_object_set_new(scoring, "entities_left_out",
                        json_integer((json_int_t)ad_judge_left_out(v->judge)));
    json_object_set_new(scoring, "windows_in_maintenance", json_integer((json_int_t)v->maintained));
    json_object_set_new(scoring, "windows_kept_out_as_false_positives",
                        json_integer((json_int_t)v->kept_out));
    if (v->last_bucket != INT64_MIN) {
        json_object_set_new(scoring, "last_bucket_start_ms",
                            json_integer((json_int_t)(v->last_bucket)));
        if (isfinite(v->last_max_score))
            json_object_set_new(scoring, "last_bucket_max_score", json_real(v->last_max_score));
    }
    json_object_set_new(out, "scoring", scoring);
    json_t *alerts = json_object();
    ad_alerts_status(v->alerts, alerts);
    json_object_set_new(alerts, "unacknowledged", json_integer((json_int_t)v->n_unacked));
    json_object_set_new(alerts, "rebuilt_not_sent", json_integer((json_int_t)v->notified_before));
    json_object_set_new(alerts, "replay_marks",
                        json_integer((json_int_t)ad_replay_marks_size(v->replayed)));
    json_object_set_new(out, "alerts", alerts);
    json_t *feedback = json_object();
    ad_feedback_status(v->feedback, feedback);
    json_object_set_new(feedback, "entities_held",
                        json_integer((json_int_t)ad_judge_held(v->judge)));
    json_object_set_new(feedback, "anomalous_windows_not_held",
                        json_integer((json_int_t)ad_judge_unheld(v->judge)));
    json_object_set_new(out, "feedback", feedback);
}

const struct ad_model *ad_serving_model(const struct ad_serving *v)
{
    return ad_swap_serving(v->swap);
}

void ad_serving_offer_model(struct ad_serving *v, struct ad_model *m)
{
    ad_swap_offer(v->swap, m);
}

void ad_serving_refuse_model(struct ad_serving *v, const char *error)
{
    ad_swap_refuse(v->swap, error);
}

/* ---- maintenance, entity metrics, feedback ---- */

void ad_serving_set_maintenance(struct ad_serving *v, struct ad_maintenance *m)
{
    ad_maintenance_destroy(v->maintenance);
    v->maintenance = m;
}

void ad_serving_set_series_limit(struct ad_serving *v, size_t limit)
{
    ad_judge_set_series_limit(v->judge, limit);
    update_entity_metrics(v);
}

static const char *const family_names[AD_ENTITY_FAMILIES] = {
    "anomalyd_entity_score", "anomalyd_entity_surprise", "anomalyd_entity_anomalous"};
static const char *const family_helps[AD_ENTITY_FAMILIES] = {
    "The LSTM's score of the entity's latest window (docs/scoring.md).",
    "How unusual the entity's latest window was for it: -log10 of a chance; anomalous from "
    "threshold.surprise (default 5).",
    "1 when the entity's latest window was anomalous."};

const char *ad_serving_family_name(enum ad_serving_family f)
{
    return family_names[f];
}

const char *ad_serving_family_help(enum ad_serving_family f)
{
    return family_helps[f];
}

/* A label name as Prometheus spells them; a key that would clash with `detector` keeps its
 * value under entity_detector. */
static void write_label_name(FILE *out, const char *name)
{
    if (strcmp(name, "detector") == 0) {
        fputs("entity_detector", out);
        return;
    }
    if (!*name || (*name >= '0' && *name <= '9'))
        fputc('_', out);
    for (const char *c = name; *c; c++)
        fputc((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')
                  ? *c
                  : '_',
              out);
}

/* A label value in the text format: \, " and line feeds escaped; bytes that are not UTF-8
 * become U+FFFD. */
static void write_label_value(FILE *out, const char *v, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)v[i];
        if (c == '\\' || c == '"') {
            fputc('\\', out);
            fputc(c, out);
            i++;
        } else if (c == '\n') {
            fputs("\\n", out);
            i++;
        } else if (c < 0x80) {
            fputc(c, out);
            i++;
        } else {
            size_t n = ad_utf8_sequence(v + i, len - i);
            if (n) {
                fwrite(v + i, 1, n, out);
                i += n;
            } else {
                fputs("\xef\xbf\xbd", out);
                i++;
            }
        }
    }
}

void ad_serving_write_entities(const struct ad_serving *v, enum ad_serving_family family, FILE *out)
{
    const struct ad_settings_detector *d = v->settings;
    const char *key;
    size_t len;
    struct ad_judge_shown shown;
    for (uint32_t id = 0; (id = ad_judge_next(v->judge, id, &key, &len, &shown));) {
        double value = family == AD_ENTITY_SCORE      ? shown.score
                       : family == AD_ENTITY_SURPRISE ? shown.surprise
                                                      : (double)shown.anomalous;
        if (!shown.series || !isfinite(value))
            continue;
        const char *values[AD_LOG_MAX_LABELS];
        size_t lens[AD_LOG_MAX_LABELS];
        size_t n = ad_entity_key_split(key, len, values, lens, AD_LOG_MAX_LABELS);
        fprintf(out, "%s{detector=\"", family_names[family]);
        write_label_value(out, d->name, strlen(d->name));
        fputc('"', out);
        for (size_t k = 0; k < n && k < d->keys.len && k < AD_LOG_MAX_LABELS; k++) {
            fputc(',', out);
            write_label_name(out, d->keys.items[k]);
            fputs("=\"", out);
            write_label_value(out, values[k], lens[k]);
            fputc('"', out);
        }
        fprintf(out, "} %.9g\n", value);
    }
}

bool ad_serving_knows_alert(const struct ad_serving *v, const char *id)
{
    return ad_feedback_knows(v->feedback, id);
}

json_t *ad_serving_mark_of(const struct ad_serving *v, const char *id)
{
    return ad_feedback_get(v->feedback, id);
}

int ad_serving_mark(struct ad_serving *v, const char *id, const char *verdict, const char *comment,
                    const char *by, json_t *reply)
{
    int parsed = ad_feedback_verdict_parse(verdict);
    json_t *record = NULL;
    struct ad_feedback_span span;
    char err[512];
    if (parsed < 0) {
        json_object_set_new(reply, "error",
                            json_string("verdict must be false_positive or true_positive"));
        return 400;
    }
    enum ad_feedback_error e =
        ad_feedback_mark(v->feedback, id, (enum ad_feedback_verdict)parsed, comment, by,
                         ad_clock_wall_ms(), &record, &span, err, sizeof err);
    if (e == AD_FEEDBACK_UNKNOWN) {
        json_object_set_new(reply, "error", json_string("no alert of this detector has this id"));
        return 404;
    }
    if (e != AD_FEEDBACK_OK) {
        json_object_set_new(reply, "error", json_string(err));
        return 503;
    }
    ad_counter_inc(parsed == AD_FEEDBACK_FALSE_POSITIVE ? v->marks_fp_total : v->marks_tp_total);
    json_object_set_new(reply, "mark", record);
    json_t *history = json_object();
    if (parsed == AD_FEEDBACK_TRUE_POSITIVE) {
        /* An incident belongs in the history; only the trainer acts on it. */
        json_object_set_new(history, "changed", json_false());
    } else if (!span.key) {
        json_object_set_new(history, "changed", json_false());
        json_object_set_new(history, "why", json_string("the mark's labels are not an entity"));
    } else {
        struct ad_judge_forgotten out;
        if (ad_judge_forget(v->judge, span.key, span.key_len, span.from_ms, span.through_ms, &out) <
            0) {
            json_object_set_new(history, "changed", json_false());
            json_object_set_new(
                history, "why",
                json_string("the alert's windows are no longer held (feedback.history, "
                            "feedback.max_held) or the entity was forgotten"));
        } else {
            ad_counter_add(v->forgotten_total, (double)out.windows);
            json_object_set_new(history, "changed", json_boolean(out.windows > 0));
            json_object_set_new(history, "windows_removed", json_integer((json_int_t)out.windows));
            json_object_set_new(history, "windows_replayed",
                                json_integer((json_int_t)out.replayed));
            json_object_set_new(history, "partial", json_boolean(out.partial));
        }
    }
    json_object_set_new(reply, "history", history);
    return 200;
}
