#include "detect/pipeline.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/grow.h"
#include "detect/maintenance.h"
#include "detect/model_watch.h"
#include "detect/outbox.h"
#include "detect/routing.h"
#include "detect/serving.h"
#include "detect/swap.h"
#include "gpu/scorer.h"
#include "stream/kafka_source.h"
#include "stream/prom_source.h"
#include "stream/redis_sub.h"
#include "windows/bucket.h"
#include "windows/grid.h"
#include "windows/watermark.h"
#include "windows/window_store.h"

#define AD_LOG_MODULE "pipeline"
#include "base/log.h"

/* How often the grids move to their watermarks. */
#define TICK_MS 200

struct parked_watermark {
    ad_kafka_input input;
    int64_t watermark;
};

struct source_rt {
    struct pipeline *owner;
    /* Kafka partitions paused for running too far ahead (watermark alignment). */
    ad_kafka_input *ahead;
    size_t n_ahead, cap_ahead;
    /* The watermarks of Kafka partitions revoked from this consumer, kept should they come
     * back: an eager rebalance revokes every partition, and the source then reads on where it
     * left them, so their watermarks hold too (a new input would wait for its first event). */
    struct parked_watermark *parked;
    size_t n_parked, cap_parked;
    const struct ad_settings_source *settings;
    struct ad_kafka_source *kafka;
    struct ad_prom_source *prom;
    struct ad_watermark *watermark;
    int64_t step;
    int64_t span; /* the longest window of the detectors it feeds */
    struct ad_route *routes;
    size_t n_routes;
    struct ad_counter *key_too_long, *missing_label, *nan_values, *inf_values;
    struct ad_counter *replayed_late, *replayed_too_far; /* Kafka sources only */
};

struct detector_rt {
    struct pipeline *owner;
    const struct ad_settings_detector *settings;
    struct ad_window_store *store;
    struct ad_grid *grid;
    struct ad_serving *serving;
    int64_t released_through;
    int64_t newest_bucket; /* of the events seen */
    /* The newest "done" time of the replayed events seen while windows are rebuilt
     * (INT64_MIN: no rebuild going on): entities that only Prometheus feeds are marked with it
     * too, so that their rebuilt windows notify nothing a second time. */
    int64_t replay_done;
    struct ad_log_ratelimit refused_log;
};

struct pipeline {
    struct ad_pipeline *holder;
    struct ad_config *config; /* a reference: the settings below point into it */
    struct source_rt *sources;
    size_t n_sources;
    struct detector_rt *detectors;
    size_t n_detectors;
    struct ad_kafka_source_detector *rebuild; /* what the Kafka sources need of each detector */
    struct ad_outbox *outbox;
    /* The config last applied without a rebuild (NULL: config), which later reloads compare
     * with. */
    struct ad_config *applied;
    struct event *tick;
    size_t stops_pending;
    /* Kafka sources not yet closed while stopping: once none is, this pipeline has left the
     * group, and a rebuilt one may join it. */
    size_t kafka_open;
    struct event *stop_timer; /* bounds a retired pipeline's wait for scoring and sinks */
    void (*stopped)(struct pipeline *p);
    bool stopping, sources_stopping, left_group;
    bool deferred; /* its Kafka sources wait for the previous pipeline to leave the group */
    struct pipeline *next_retired;
};

struct ad_pipeline {
    struct event_base *base;
    struct ad_metrics *metrics;
    struct ad_scorer *scorer;
    struct event *results;
    size_t queue_depth; /* scoring.queue_depth in force */
    struct pipeline *current;
    struct pipeline *retired;           /* stopping in the background after a reload */
    struct ad_model_watch *watch;       /* NULL: no model store */
    struct ad_redis_sub *announcements; /* NULL: no model_store.redis_channel */
    struct ad_redis_sub *marks;         /* NULL: no feedback.redis_channel */
    struct ad_maintenance *maintenance; /* every window, for /status */
    ad_component_done_fn done;
    void *done_arg;
};

/* What the data path is built from: a change rebuilds it (docs/config.md, "Reloading"). The
 * Kafka and Redis sinks are swapped on their own (swap_sinks); the Alertmanager sink keeps the
 * alerts it repeats, which the pipeline restores when it is built. */
static const char *const pipeline_sections[] = {
    "kafka", "sources", "detectors", "sinks.alertmanager", "feedback", NULL};

static void advance_detector(struct pipeline *p, size_t d);
static bool scorer_full(const struct pipeline *p);
static void on_mark_message(void *arg, const char *payload, size_t len);
static void relimit(struct pipeline *p);

/* An event or sample the window store refused: its bucket had closed (late), or its entity
 * held as many open buckets as it may (too far). Counted by the store; logged here, at most
 * once per 10 s per detector, so that a refusal is never silent. */
static void refused(struct detector_rt *det, enum ad_window_add result, const char *source,
                    bool replayed, int64_t t)
{
    uint64_t held;
    if (!ad_log_ratelimit_allow(&det->refused_log, ad_clock_mono_ms(), &held))
        return;
    char when[40];
    ad_clock_format(t, when, sizeof when);
    AD_WARN_KV(result == AD_WINDOW_LATE ? "event refused: its bucket has closed"
                                        : "event refused: its entity holds too many open buckets",
               AD_KV_STR("detector", det->settings->name), AD_KV_STR("source", source),
               AD_KV_STR("reason", result == AD_WINDOW_LATE ? "late" : "too_far"),
               AD_KV_INT("replayed", replayed), AD_KV_STR("event_time", when),
               AD_KV_INT("suppressed", held));
}

/* ---- routing ---- */

/* Whether a partition whose watermark moved from before to t may have let a bucket of det
 * close: it crossed a bucket's end plus the lateness. Checked per event, so that a bucket
 * closes as soon as its slowest partition passes it rather than at the next tick; it holds
 * once per partition and bucket, and the grid's minimum over the partitions decides. */
static bool may_close(const struct detector_rt *det, int64_t before, int64_t t)
{
    int64_t step = det->settings->step, lateness = det->settings->allowed_lateness;
    return before == AD_WATERMARK_NONE ||
           (t > before &&
            ad_bucket_index(t - lateness, step) > ad_bucket_index(before - lateness, step));
}

/* Watermark alignment (docs/windows.md, "Partitions far ahead"): a partition whose events run
 * so far ahead of the oldest open bucket that an entity could need more open buckets than it
 * may hold is paused until the others catch up, instead of having its events refused as too
 * far. ALIGN_MARGIN buckets are left for events that arrive out of order. */
#define ALIGN_MARGIN 4

/* How many buckets input's events run ahead of det's oldest open bucket (0: none open). */
static int64_t buckets_ahead(const struct detector_rt *det, int64_t watermark)
{
    int64_t oldest = ad_window_store_oldest_open(det->store);
    if (oldest == INT64_MAX || watermark == AD_WATERMARK_NONE)
        return 0;
    return ad_bucket_index(watermark, det->settings->step) - oldest;
}

static void pause_ahead(struct source_rt *src, ad_kafka_input input)
{
    if (ad_grow(&src->ahead, &src->cap_ahead, src->n_ahead + 1, sizeof *src->ahead) < 0)
        return; /* not paused: at worst, events are refused as too far and counted */
    src->ahead[src->n_ahead++] = input;
    ad_kafka_source_pause_partition(src->kafka, input, true);
}

static void forget_ahead(struct source_rt *src, size_t i)
{
    ad_kafka_source_pause_partition(src->kafka, src->ahead[i], false);
    src->ahead[i] = src->ahead[--src->n_ahead];
}

/* Resumes the paused partitions that are within half the open-bucket bound again. */
static void realign(struct pipeline *p)
{
    for (size_t s = 0; s < p->n_sources; s++) {
        struct source_rt *src = &p->sources[s];
        for (size_t i = 0; i < src->n_ahead;) {
            int64_t wm = ad_watermark_input(src->watermark, src->ahead[i]);
            bool close_enough = true;
            for (size_t r = 0; r < src->n_routes && close_enough; r++) {
                const struct detector_rt *det = &p->detectors[src->routes[r].detector];
                close_enough =
                    buckets_ahead(det, wm) < (int64_t)ad_window_store_max_open(det->store) / 2;
            }
            if (close_enough)
                forget_ahead(src, i);
            else
                i++;
        }
    }
}

/* After an event moved input's watermark into a new bucket: pauses the partition when it is
 * too far ahead for one of its detectors. */
static void check_ahead(struct source_rt *src, ad_kafka_input input, int64_t watermark)
{
    for (size_t i = 0; i < src->n_ahead; i++)
        if (src->ahead[i] == input)
            return;
    for (size_t r = 0; r < src->n_routes; r++) {
        const struct detector_rt *det = &src->owner->detectors[src->routes[r].detector];
        if (buckets_ahead(det, watermark) >=
            (int64_t)ad_window_store_max_open(det->store) - ALIGN_MARGIN) {
            pause_ahead(src, input);
            return;
        }
    }
}

static void on_log_event(void *arg, ad_kafka_input input, int64_t offset,
                         const struct ad_log_event *ev, const int64_t *replayed)
{
    struct source_rt *src = arg;
    struct pipeline *p = src->owner;
    char key[AD_ROUTING_MAX_KEY];
    double values[AD_WINDOW_MAX_FEATURES];

    int64_t before = ad_watermark_update(src->watermark, input, ev->time, ad_clock_wall_ms());
    for (size_t r = 0; r < src->n_routes; r++) {
        const struct ad_route *route = &src->routes[r];
        struct detector_rt *det = &p->detectors[route->detector];
        size_t len;
        uint64_t present;
        enum ad_routing_result routed =
            ad_routing_log_event(route, det->settings, ev, key, &len, values, &present);
        if (routed == AD_ROUTING_KEY_TOO_LONG)
            ad_counter_inc(src->key_too_long);
        if (routed != AD_ROUTING_OK)
            continue;
        if (replayed && replayed[route->detector] != INT64_MIN) {
            ad_serving_mark_replayed(det->serving, key, len, replayed[route->detector]);
            if (replayed[route->detector] > det->replay_done)
                det->replay_done = replayed[route->detector];
        }
        int64_t bucket = ad_bucket_index(ev->time, det->settings->step);
        if (bucket > det->newest_bucket) {
            /* Reading a backlog, event time runs far ahead of the timer that closes buckets:
             * close what the watermark allows each time a new bucket starts, so that an
             * entity never holds more open buckets than the lateness needs. */
            det->newest_bucket = bucket;
            advance_detector(p, route->detector);
        } else if (may_close(det, before, ev->time) && !scorer_full(p)) {
            advance_detector(p, route->detector);
        }
        enum ad_window_add added =
            ad_window_store_add(det->store, key, len, ev->time, values, present);
        if (added == AD_WINDOW_ADDED) {
            ad_kafka_source_hold(src->kafka, input, offset, route->detector, bucket);
        } else if (added == AD_WINDOW_LATE || added == AD_WINDOW_TOO_FAR) {
            if (replayed)
                ad_counter_inc(added == AD_WINDOW_LATE ? src->replayed_late
                                                       : src->replayed_too_far);
            refused(det, added, src->settings->name, replayed != NULL, ev->time);
        }
    }
    /* The step of a Kafka source is its detectors' (validated equal). Replayed events are
     * aligned too: a rebuild reads many buckets at once, while another partition, or a
     * Prometheus query, may still hold the grid. */
    if (before == AD_WATERMARK_NONE ||
        ad_bucket_index(ev->time, src->step) > ad_bucket_index(before, src->step))
        check_ahead(src, input, ev->time);
    /* An input's first event: inputs that waited for it may go on. */
    if (before == AD_WATERMARK_NONE)
        relimit(p);
}

static void on_assign(void *arg, ad_kafka_input input)
{
    struct source_rt *src = arg;
    int64_t now = ad_clock_wall_ms();
    ad_watermark_add_input(src->watermark, input, true, now);
    for (size_t i = 0; i < src->n_parked; i++) {
        if (src->parked[i].input == input) {
            ad_watermark_update(src->watermark, input, src->parked[i].watermark, now);
            src->parked[i] = src->parked[--src->n_parked];
            break;
        }
    }
    relimit(src->owner);
}

static void on_revoke(void *arg, ad_kafka_input input)
{
    struct source_rt *src = arg;
    int64_t watermark = ad_watermark_input(src->watermark, input);
    size_t at = 0;
    while (at < src->n_parked && src->parked[at].input != input)
        at++;
    if (watermark != AD_WATERMARK_NONE &&
        (at < src->n_parked ||
         ad_grow(&src->parked, &src->cap_parked, src->n_parked + 1, sizeof *src->parked) == 0)) {
        if (at == src->n_parked)
            src->n_parked++;
        src->parked[at] = (struct parked_watermark){input, watermark};
    }
    ad_watermark_remove_input(src->watermark, input);
    /* The source has ended its pause with the assignment. */
    for (size_t i = 0; i < src->n_ahead; i++) {
        if (src->ahead[i] == input) {
            src->ahead[i] = src->ahead[--src->n_ahead];
            break;
        }
    }
    relimit(src->owner);
}

static const char *series_label(const struct ad_prom_series *s, const char *name)
{
    for (size_t i = 0; i < s->n_labels; i++)
        if (strcmp(s->label_names[i], name) == 0)
            return s->label_values[i];
    return NULL;
}

static void on_range(void *arg, size_t query, const struct ad_prom_matrix *m, int64_t start_ms,
                     int64_t end_ms)
{
    struct source_rt *src = arg;
    struct pipeline *p = src->owner;
    char key[AD_ROUTING_MAX_KEY];
    double values[AD_WINDOW_MAX_FEATURES];
    (void)start_ms;

    for (size_t r = 0; r < src->n_routes; r++) {
        const struct ad_route *route = &src->routes[r];
        struct detector_rt *det = &p->detectors[route->detector];
        size_t df = SIZE_MAX;
        for (size_t f = 0; f < route->n_features; f++)
            if (route->source_feature[f] == query)
                df = route->detector_feature[f];
        if (df == SIZE_MAX)
            continue;
        for (size_t si = 0; si < m->n_series; si++) {
            const struct ad_prom_series *series = &m->series[si];
            size_t len = 0;
            bool ok = true;
            for (size_t k = 0; k < det->settings->keys.len && ok; k++) {
                const char *v = series_label(series, route->series_label[k]);
                if (!v) {
                    ad_counter_inc(src->missing_label);
                    ok = false;
                    break;
                }
                size_t n = strlen(v);
                len = ad_routing_key_append(key, len, k, v, n);
                if (len == SIZE_MAX) {
                    ad_counter_inc(src->key_too_long);
                    ok = false;
                }
            }
            if (!ok)
                continue;
            /* An entity that only Prometheus feeds is rebuilt with the others: what its
             * rebuilt windows notify was notified before the restart too. */
            if (det->replay_done != INT64_MIN && series->n_samples)
                ad_serving_mark_replayed(det->serving, key, len, det->replay_done);
            for (size_t i = 0; i < series->n_samples; i++) {
                double v = series->values[i];
                if (!isfinite(v)) {
                    ad_counter_inc(isnan(v) ? src->nan_values : src->inf_values);
                    continue;
                }
                values[df] = v;
                int64_t t = ad_grid_sample_time(series->times_ms[i], src->step);
                enum ad_window_add added =
                    ad_window_store_add(det->store, key, len, t, values, 1ULL << df);
                if (added == AD_WINDOW_LATE || added == AD_WINDOW_TOO_FAR)
                    refused(det, added, src->settings->name, false, t);
            }
        }
    }
    ad_watermark_update(src->watermark, (int32_t)query, end_ms, ad_clock_wall_ms());
}

/* ---- windows handed on ---- */

static void on_batch(void *arg, struct ad_window_batch *b)
{
    struct detector_rt *det = arg;
    ad_serving_submit(det->serving, b);
}

/* Releases the Kafka offsets of the buckets detector d is done with. */
static void release_done(struct pipeline *p, size_t d)
{
    struct detector_rt *det = &p->detectors[d];
    int64_t done = ad_serving_done_through(det->serving);
    if (done == INT64_MIN || done == det->released_through)
        return;
    det->released_through = done;
    for (size_t s = 0; s < p->n_sources; s++) {
        struct source_rt *src = &p->sources[s];
        if (!src->kafka)
            continue;
        for (size_t r = 0; r < src->n_routes; r++)
            if (src->routes[r].detector == d)
                ad_kafka_source_release(src->kafka, d, done);
    }
}

static bool scorer_full(const struct pipeline *p)
{
    const struct ad_pipeline *h = p->holder;
    return h->scorer && ad_scorer_pending(h->scorer) >= h->queue_depth;
}

/* While the scorer's queue or a sink is full the Kafka sources stop fetching, so that a
 * backlog waits in Kafka rather than in memory, and no alert is dropped. A stopping pipeline
 * fetches nothing more either: what it reads now could not be committed. */
static void apply_backpressure(struct pipeline *p)
{
    bool full = p->stopping || scorer_full(p) || (p->outbox && ad_outbox_full(p->outbox));
    for (size_t s = 0; s < p->n_sources; s++)
        ad_kafka_source_pause(p->sources[s].kafka, full);
}

static void advance_detector(struct pipeline *p, size_t d)
{
    struct detector_rt *det = &p->detectors[d];
    int64_t before = ad_window_store_closed_through(det->store);
    int64_t closed = ad_grid_advance(det->grid, ad_clock_wall_ms());
    if (closed != INT64_MIN) {
        ad_serving_closed(det->serving, closed);
        release_done(p, d);
        realign(p);
        /* Past the newest done time, the rebuild is over. */
        if (det->replay_done != INT64_MIN && (closed + 1) * det->settings->step > det->replay_done)
            det->replay_done = INT64_MIN;
        if (closed != before)
            relimit(p);
    }
    apply_backpressure(p);
}

/* Moves every grid, unless the scorer's queue is full: then closed buckets wait in the window
 * stores until it drains. */
static void advance_all(struct pipeline *p)
{
    for (size_t d = 0; d < p->n_detectors && !scorer_full(p); d++)
        advance_detector(p, d);
}

static bool feeds(const struct source_rt *src, size_t detector)
{
    for (size_t r = 0; r < src->n_routes; r++)
        if (src->routes[r].detector == detector)
            return true;
    return false;
}

/*
 * Lines the inputs that can wait up with the grids (docs/windows.md, "Partitions far ahead"):
 *
 * - A Kafka source that expects partitions (joining its group after a start or a reload,
 *   or between a revocation and the next assignment) holds the grids it feeds, past the idle
 *   timeout, for as long as a join may take: the partitions it will rebuild from hold events
 *   older than anything open, which would otherwise find their buckets closed.
 * - A Prometheus query fetches nothing while another source of its detectors holds the grid
 *   without having delivered (that source's data may be older than any open bucket), and then
 *   no further than half the open buckets an entity may hold past the oldest open bucket, so
 *   that its samples never crowd out the Kafka events of the same entities. Its backfill
 *   starts at the oldest open bucket (the start of a rebuild, so that rebuilt windows have the
 *   Prometheus features an uninterrupted run had), a window before now at the latest.
 */
static void relimit(struct pipeline *p)
{
    if (p->stopping)
        return;
    int64_t now = ad_clock_wall_ms();
    for (size_t i = 0; i < p->n_sources; i++)
        if (p->sources[i].kafka)
            ad_watermark_hold(p->sources[i].watermark,
                              ad_kafka_source_joining_until(p->sources[i].kafka));
    for (size_t i = 0; i < p->n_sources; i++) {
        struct source_rt *src = &p->sources[i];
        if (!src->prom)
            continue;
        int64_t until = INT64_MAX, from = INT64_MAX;
        bool waiting = false;
        for (size_t r = 0; r < src->n_routes; r++) {
            size_t d = src->routes[r].detector;
            const struct detector_rt *det = &p->detectors[d];
            for (size_t o = 0; o < p->n_sources && !waiting; o++)
                waiting = o != i && feeds(&p->sources[o], d) &&
                          ad_watermark_waiting(p->sources[o].watermark, now,
                                               det->settings->source_idle_timeout);
            int64_t anchor = ad_window_store_oldest_open(det->store);
            if (anchor == INT64_MAX) {
                int64_t closed = ad_window_store_closed_through(det->store);
                if (closed == INT64_MIN)
                    continue; /* nothing yet: the first request is short anyway */
                anchor = closed + 1;
            }
            int64_t ahead = (int64_t)ad_window_store_max_open(det->store) / 2;
            int64_t step = det->settings->step;
            /* The sample that fills bucket b is the one at its end. */
            if ((anchor + ahead + 1) * step < until)
                until = (anchor + ahead + 1) * step;
            if (anchor * step < from)
                from = anchor * step;
        }
        int64_t latest_from = now - src->settings->prometheus.delay - src->span;
        ad_prom_source_limit(src->prom, from < latest_from ? from : latest_from,
                             waiting ? INT64_MIN : until);
        /* What the query will not fetch (before its backfill) holds no bucket open. */
        for (size_t q = 0; q < src->settings->n_features; q++)
            ad_watermark_update(src->watermark, (int32_t)q, ad_prom_source_watermark(src->prom, q),
                                now);
    }
}

/* Batches being scored and alerts not yet acknowledged: what a stop waits for. */
static size_t in_flight(const struct pipeline *p)
{
    size_t n = 0;
    for (size_t d = 0; d < p->n_detectors; d++) {
        const struct ad_serving *v = p->detectors[d].serving;
        n += v ? ad_serving_in_flight(v) + ad_serving_unacked(v) : 0;
    }
    return n;
}

static void stop_sources(struct pipeline *p);

/* Tokens of alerts in the sinks: the detector's index above, its alert sequence below. */
#define TOKEN_SEQ_BITS 48
#define TOKEN_SEQ_MASK ((UINT64_C(1) << TOKEN_SEQ_BITS) - 1)

static size_t publish_alert(void *arg, const struct ad_alert *alert, uint64_t seq)
{
    struct detector_rt *det = arg;
    struct pipeline *p = det->owner;
    if (!p->outbox)
        return 0;
    uint64_t token = (uint64_t)(det - p->detectors) << TOKEN_SEQ_BITS | (seq & TOKEN_SEQ_MASK);
    return ad_outbox_publish(p->outbox, det->settings->name, alert, token);
}

static void restore_alert(void *arg, const struct ad_alert *alert)
{
    struct detector_rt *det = arg;
    if (det->owner->outbox)
        ad_outbox_restore(det->owner->outbox, det->settings->name, alert);
}

/* After a detector made progress (a batch back, an alert acknowledged): release what is done,
 * lift or keep the backpressure, and go on with a stop that waited for it. */
static void progressed(struct pipeline *p, size_t d)
{
    release_done(p, d);
    apply_backpressure(p);
    if (p->stopping && !p->sources_stopping && in_flight(p) == 0)
        stop_sources(p);
}

static void on_alert_acked(void *arg, uint64_t token)
{
    struct pipeline *p = arg;
    size_t d = (size_t)(token >> TOKEN_SEQ_BITS);
    if (d >= p->n_detectors)
        return;
    ad_serving_ack(p->detectors[d].serving, token & TOKEN_SEQ_MASK);
    progressed(p, d);
}

static void on_results(evutil_socket_t fd, short what, void *arg)
{
    struct ad_pipeline *h = arg;
    struct ad_score_job *job;
    (void)fd;
    (void)what;
    while ((job = ad_scorer_take(h->scorer))) {
        struct ad_serving *v = ad_serving_of(job);
        struct detector_rt *det = ad_serving_user(v);
        struct pipeline *p = det->owner;
        ad_serving_finish(v, job);
        progressed(p, (size_t)(det - p->detectors));
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    /* Joins end, inputs go idle: what may wait is looked at again. */
    relimit(arg);
    advance_all(arg);
}

/* ---- building ---- */

static int build_routes(struct pipeline *p, const struct ad_settings *s, char *errstr,
                        size_t errstr_size)
{
    for (size_t si = 0; si < s->n_sources; si++) {
        struct source_rt *src = &p->sources[si];
        src->routes = calloc(s->n_detectors ? s->n_detectors : 1, sizeof *src->routes);
        if (!src->routes) {
            ad_errstr_set(errstr, errstr_size, "out of memory");
            return -1;
        }
        src->n_routes = ad_routing_build(s, si, src->routes);
    }
    return 0;
}

static int build_detectors(struct pipeline *p, const struct ad_settings *s,
                           struct ad_metrics *metrics, char *errstr, size_t errstr_size)
{
    for (size_t di = 0; di < s->n_detectors; di++) {
        const struct ad_settings_detector *d = &s->detectors[di];
        struct detector_rt *det = &p->detectors[di];
        enum ad_agg aggs[AD_WINDOW_MAX_FEATURES];
        enum ad_fill_policy fills[AD_WINDOW_MAX_FEATURES];
        struct ad_window_spec spec;
        ad_routing_window_spec(s, di, (size_t)s->scoring.max_batch, &spec, aggs, fills);
        det->owner = p;
        det->settings = d;
        det->released_through = INT64_MIN;
        det->newest_bucket = INT64_MIN;
        det->replay_done = INT64_MIN;
        det->refused_log.interval_ms = 10000;
        det->store = ad_window_store_new(&spec, metrics, on_batch, det, errstr, errstr_size);
        if (!det->store)
            return -1;
        det->grid = ad_grid_new(det->store, d->source_idle_timeout);
        if (!det->grid) {
            ad_errstr_set(errstr, errstr_size, "out of memory");
            return -1;
        }
        struct ad_serving_outlet outlet = {
            .publish = publish_alert, .rebuilt = restore_alert, .arg = det};
        det->serving =
            ad_serving_new(s, di, p->holder->scorer, &outlet, metrics, det, errstr, errstr_size);
        if (!det->serving)
            return -1;
    }
    return 0;
}

/* The step of a source: its own, or that of the detectors that use it (validated equal). */
static int64_t source_step(const struct ad_settings *s, size_t si, int64_t *span)
{
    int64_t step = s->sources[si].type == AD_SOURCE_PROMETHEUS ? s->sources[si].prometheus.step : 0;
    *span = 0;
    for (size_t di = 0; di < s->n_detectors; di++) {
        const struct ad_settings_detector *d = &s->detectors[di];
        for (size_t f = 0; f < d->features.len; f++) {
            if (d->refs[f].source != si)
                continue;
            if (!step)
                step = d->step;
            if (d->window > *span)
                *span = d->window;
        }
    }
    return step;
}

static int build_sources(struct pipeline *p, struct ad_pipeline *holder,
                         const struct ad_settings *s, char *errstr, size_t errstr_size)
{
    for (size_t si = 0; si < s->n_sources; si++) {
        struct source_rt *src = &p->sources[si];
        const char *name = s->sources[si].name;
        src->owner = p;
        src->settings = &s->sources[si];
        src->watermark = ad_watermark_new(ad_clock_wall_ms());
        if (!src->watermark) {
            ad_errstr_set(errstr, errstr_size, "out of memory");
            return -1;
        }
        if (src->settings->type == AD_SOURCE_KAFKA) {
            static const char replayed_help[] =
                "Events read again to rebuild windows that the window store refused, by reason "
                "(late: their bucket had closed; too_far: their entity held too many open "
                "buckets).";
            src->replayed_late =
                ad_metrics_counter(holder->metrics, "anomalyd_kafka_replayed_refused_total",
                                   replayed_help, "source", name, "reason", "late", NULL);
            src->replayed_too_far =
                ad_metrics_counter(holder->metrics, "anomalyd_kafka_replayed_refused_total",
                                   replayed_help, "source", name, "reason", "too_far", NULL);
        }
        static const char refused_help[] = "Series or values a source could not use.";
        src->key_too_long =
            ad_metrics_counter(holder->metrics, "anomalyd_source_values_skipped_total",
                               refused_help, "source", name, "reason", "key_too_long", NULL);
        src->missing_label =
            ad_metrics_counter(holder->metrics, "anomalyd_source_values_skipped_total",
                               refused_help, "source", name, "reason", "missing_label", NULL);
        src->nan_values =
            ad_metrics_counter(holder->metrics, "anomalyd_source_values_skipped_total",
                               refused_help, "source", name, "reason", "nan", NULL);
        src->inf_values =
            ad_metrics_counter(holder->metrics, "anomalyd_source_values_skipped_total",
                               refused_help, "source", name, "reason", "inf", NULL);
    }
    if (build_routes(p, s, errstr, errstr_size) < 0)
        return -1;
    for (size_t si = 0; si < s->n_sources; si++) {
        struct source_rt *src = &p->sources[si];
        if (src->n_routes == 0) {
            AD_WARN_KV("no detector uses this source; it is not read",
                       AD_KV_STR("source", src->settings->name));
            continue;
        }
        for (size_t r = 0; r < src->n_routes; r++)
            if (ad_grid_add_source(p->detectors[src->routes[r].detector].grid, src->settings->name,
                                   src->watermark) < 0) {
                ad_errstr_set(errstr, errstr_size, "detector uses too many sources");
                return -1;
            }
        int64_t span;
        src->step = source_step(s, si, &span);
        src->span = span;
        if (src->settings->type == AD_SOURCE_KAFKA) {
            struct ad_kafka_source_options o = {
                .base = holder->base,
                .kafka = &s->kafka,
                .settings = src->settings,
                .n_detectors = s->n_detectors,
                .detectors = p->rebuild,
                .deferred = p->deferred,
                .engine = AD_EXTRACT_SIMDJSON,
                .metrics = holder->metrics,
                .handler = {.on_event = on_log_event,
                            .on_assign = on_assign,
                            .on_revoke = on_revoke,
                            .arg = src},
            };
            src->kafka = ad_kafka_source_new(&o, errstr, errstr_size);
            if (!src->kafka)
                return -1;
        } else {
            for (size_t q = 0; q < src->settings->n_features; q++)
                ad_watermark_add_input(src->watermark, (int32_t)q, false, ad_clock_wall_ms());
            /* A window's backfill, or as far back as the Kafka events lined up with it may be
             * (their max_past): relimit starts it at the oldest open bucket. Each request
             * stays within the open buckets an entity may hold. */
            int64_t backfill = span;
            size_t max_points = SIZE_MAX;
            for (size_t r = 0; r < src->n_routes; r++) {
                size_t d = src->routes[r].detector;
                size_t half = ad_window_store_max_open(p->detectors[d].store) / 2;
                if (half < max_points)
                    max_points = half ? half : 1;
                for (size_t o = 0; o < s->n_sources; o++) {
                    const struct ad_settings_source *other = &s->sources[o];
                    if (other->type == AD_SOURCE_KAFKA && feeds(&p->sources[o], d) &&
                        other->kafka.time.max_past + span > backfill)
                        backfill = other->kafka.time.max_past + span;
                }
            }
            struct ad_prom_source_options o = {
                .base = holder->base,
                .settings = src->settings,
                .step_ms = src->step,
                .backfill_ms = backfill,
                .limited = true,
                .max_points = max_points,
                .metrics = holder->metrics,
                .handler = {.on_range = on_range, .arg = src},
            };
            src->prom = ad_prom_source_new(&o, errstr, errstr_size);
            if (!src->prom)
                return -1;
        }
    }
    return 0;
}

static void pipeline_free(struct pipeline *p)
{
    if (!p)
        return;
    if (p->tick)
        event_free(p->tick);
    if (p->stop_timer)
        event_free(p->stop_timer);
    for (size_t i = 0; i < p->n_sources; i++) {
        ad_kafka_source_destroy(p->sources[i].kafka);
        ad_prom_source_destroy(p->sources[i].prom);
        ad_watermark_destroy(p->sources[i].watermark);
        free(p->sources[i].routes);
        free(p->sources[i].ahead);
        free(p->sources[i].parked);
    }
    for (size_t i = 0; i < p->n_detectors; i++) {
        ad_grid_destroy(p->detectors[i].grid);
        ad_window_store_destroy(p->detectors[i].store);
        ad_serving_destroy(p->detectors[i].serving);
    }
    ad_outbox_destroy(p->outbox);
    free(p->sources);
    free(p->detectors);
    free(p->rebuild);
    ad_config_unref(p->config);
    ad_config_unref(p->applied);
    free(p);
}

static struct pipeline *pipeline_build(struct ad_pipeline *holder, const struct ad_config *config,
                                       char *errstr, size_t errstr_size)
{
    const struct ad_settings *s = ad_config_settings(config);
    struct pipeline *p = calloc(1, sizeof *p);
    if (!p) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    p->holder = holder;
    p->config = ad_config_ref((struct ad_config *)config);
    /* A reload's pipeline joins the group once the previous one has left it. */
    p->deferred = holder->current != NULL;
    p->n_sources = s->n_sources;
    p->n_detectors = s->n_detectors;
    p->sources = calloc(s->n_sources ? s->n_sources : 1, sizeof *p->sources);
    p->detectors = calloc(s->n_detectors ? s->n_detectors : 1, sizeof *p->detectors);
    p->rebuild = calloc(s->n_detectors ? s->n_detectors : 1, sizeof *p->rebuild);
    if (!p->sources || !p->detectors || !p->rebuild) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto err;
    }
    for (size_t d = 0; d < s->n_detectors; d++) {
        const struct ad_settings_detector *det = &s->detectors[d];
        p->rebuild[d] = (struct ad_kafka_source_detector){
            .name = det->name,
            .step = det->step,
            .history_buckets = (det->rebuild_history + det->step - 1) / det->step};
    }
    p->outbox =
        ad_outbox_new(holder->base, s, holder->metrics, on_alert_acked, p, errstr, errstr_size);
    if (!p->outbox || build_detectors(p, s, holder->metrics, errstr, errstr_size) < 0 ||
        build_sources(p, holder, s, errstr, errstr_size) < 0)
        goto err;
    p->tick = event_new(holder->base, -1, EV_PERSIST, on_tick, p);
    struct timeval tv = {0, TICK_MS * 1000};
    if (!p->tick || event_add(p->tick, &tv) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot register the tick");
        goto err;
    }
    relimit(p);
    AD_INFO_KV("pipeline built", AD_KV_INT("sources", s->n_sources),
               AD_KV_INT("detectors", s->n_detectors));
    return p;
err:
    pipeline_free(p);
    return NULL;
}

/* ---- stopping ---- */

static void source_stopped(void *arg)
{
    struct pipeline *p = arg;
    if (p->stops_pending > 0 && --p->stops_pending == 0 && p->stopped)
        p->stopped(p);
}

static void outbox_stopped(void *arg, bool flushed)
{
    struct pipeline *p = arg;
    if (!flushed)
        AD_WARN("the sinks were stopped with alerts unacknowledged; they are sent again after "
                "the restart, from the uncommitted offsets");
    source_stopped(p);
}

static void start_deferred(struct ad_pipeline *h);

/* A Kafka source of a stopping pipeline has closed: once all have, it has left the group. */
static void kafka_stopped(void *arg)
{
    struct pipeline *p = arg;
    if (p->kafka_open > 0 && --p->kafka_open == 0) {
        p->left_group = true;
        start_deferred(p->holder);
    }
    source_stopped(p);
}

/* Once every batch is scored and every alert acknowledged: the sources commit and leave, and
 * the sinks close. */
static void stop_sources(struct pipeline *p)
{
    const struct ad_settings *s = ad_config_settings(p->config);
    p->sources_stopping = true;
    if (p->stop_timer)
        event_del(p->stop_timer);
    /* Count first: a source may finish before its stop returns. */
    for (size_t i = 0; i < p->n_sources; i++)
        if (p->sources[i].kafka) {
            p->stops_pending++;
            p->kafka_open++;
        }
    if (p->kafka_open == 0)
        p->left_group = true;
    p->stops_pending++; /* the outbox */
    ad_outbox_stop(p->outbox, ad_clock_mono_ms() + s->daemon.shutdown_timeout, outbox_stopped, p);
    for (size_t i = 0; i < p->n_sources; i++) {
        if (p->sources[i].kafka)
            ad_kafka_source_stop(p->sources[i].kafka, kafka_stopped, p);
        /* Prometheus holds nothing to hand back: its transfers end with it. */
        ad_prom_source_destroy(p->sources[i].prom);
        p->sources[i].prom = NULL;
    }
    if (p->left_group)
        start_deferred(p->holder);
    source_stopped(p);
}

/* A retired pipeline waits for scoring and the sinks at most shutdown_timeout: its successor
 * joins the group only once it has left it. What it could not have acknowledged by then is
 * not committed, and the successor reads it again. */
static void on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct pipeline *p = arg;
    (void)fd;
    (void)what;
    if (p->sources_stopping)
        return;
    AD_WARN_KV("the previous pipeline's alerts are not all acknowledged; it leaves the group "
               "without committing them",
               AD_KV_INT("in_flight", in_flight(p)));
    stop_sources(p);
}

/* Scoring finishes first, so that the sources commit the offsets of every scored bucket. */
static void pipeline_stop(struct pipeline *p, void (*stopped)(struct pipeline *), bool bounded)
{
    p->stopping = true;
    p->stopped = stopped;
    if (p->tick)
        event_del(p->tick);
    p->stops_pending = 1; /* stop_sources' own */
    apply_backpressure(p);
    if (in_flight(p) == 0) {
        stop_sources(p);
        return;
    }
    /* The daemon bounds its own stop; a retired pipeline's is bounded here. */
    if (bounded) {
        const struct ad_settings *s = ad_config_settings(p->config);
        struct timeval tv = {(time_t)(s->daemon.shutdown_timeout / 1000),
                             (suseconds_t)(s->daemon.shutdown_timeout % 1000) * 1000};
        p->stop_timer = evtimer_new(p->holder->base, on_stop_timeout, p);
        if (p->stop_timer)
            evtimer_add(p->stop_timer, &tv);
    }
}

/* The Kafka sources of a rebuilt pipeline join the group once every previous pipeline has left
 * it: their commit lookups then find the last commit, and the group does not wait for a
 * member that is leaving. */
static void start_deferred(struct ad_pipeline *h)
{
    struct pipeline *p = h->current;
    if (!p || !p->deferred || p->stopping)
        return;
    for (const struct pipeline *r = h->retired; r; r = r->next_retired)
        if (!r->left_group)
            return;
    p->deferred = false;
    for (size_t i = 0; i < p->n_sources; i++) {
        char err[256];
        if (p->sources[i].kafka && ad_kafka_source_start(p->sources[i].kafka, err, sizeof err) < 0)
            AD_ERROR_KV("cannot join the consumer group",
                        AD_KV_STR("source", p->sources[i].settings->name), AD_KV_STR("error", err));
    }
    relimit(p);
}

static void maybe_done(struct ad_pipeline *h)
{
    if (h->done && !h->retired &&
        (!h->current || !h->current->stopping || h->current->stops_pending == 0)) {
        ad_component_done_fn done = h->done;
        h->done = NULL;
        done(h->done_arg);
    }
}

static void retired_stopped(struct pipeline *p)
{
    struct ad_pipeline *h = p->holder;
    for (struct pipeline **link = &h->retired; *link; link = &(*link)->next_retired) {
        if (*link == p) {
            *link = p->next_retired;
            break;
        }
    }
    AD_INFO("the previous pipeline has stopped");
    pipeline_free(p);
    maybe_done(h);
}

static void current_stopped(struct pipeline *p)
{
    maybe_done(p->holder);
}

/* ---- the model store ---- */

static void on_model(void *arg, const char *model, struct ad_model *m)
{
    struct ad_pipeline *h = arg;
    struct pipeline *p = h->current;
    for (size_t d = 0; p && d < p->n_detectors; d++)
        if (strcmp(p->detectors[d].settings->model, model) == 0)
            ad_serving_offer_model(p->detectors[d].serving, ad_model_ref(m));
    ad_model_watch_set_serving(h->watch, model, ad_model_version(m));
    ad_model_unref(m);
}

static void on_refused(void *arg, const char *model, const char *version, const char *error)
{
    struct ad_pipeline *h = arg;
    struct pipeline *p = h->current;
    (void)version;
    for (size_t d = 0; p && d < p->n_detectors; d++)
        if (strcmp(p->detectors[d].settings->model, model) == 0)
            ad_serving_refuse_model(p->detectors[d].serving, error);
}

static void on_announcement(void *arg, const char *payload, size_t len)
{
    struct ad_pipeline *h = arg;
    if (h->watch)
        ad_model_watch_announce(h->watch, payload, len);
}

static void on_subscribed(void *arg)
{
    struct ad_pipeline *h = arg;
    /* Announcements made while the subscription was down are lost: look for ourselves. */
    if (h->watch)
        ad_model_watch_check(h->watch);
}

static void unwatch(struct ad_pipeline *h)
{
    ad_redis_sub_destroy(h->marks);
    h->marks = NULL;
    ad_redis_sub_destroy(h->announcements);
    h->announcements = NULL;
    ad_model_watch_destroy(h->watch);
    h->watch = NULL;
}

/* Watches the store for the models of the current pipeline's detectors, each checked against
 * the first detector that uses it (the others check again when it is offered). */
static int watch(struct ad_pipeline *h, const struct ad_settings *s, char *errstr,
                 size_t errstr_size)
{
    if (s->feedback.redis_channel && s->sinks.redis.url) {
        struct ad_redis_sub_handler handler = {.on_message = on_mark_message, .arg = h};
        h->marks = ad_redis_sub_new(h->base, &s->sinks.redis, s->feedback.redis_channel, h->metrics,
                                    &handler, errstr, errstr_size);
        if (!h->marks)
            return -1;
    }
    if (!s->model_store.path && !s->model_store.url)
        return 0;
    const char **models = calloc(s->n_detectors + 1, sizeof *models);
    struct ad_model_expect *expect = calloc(s->n_detectors + 1, sizeof *expect);
    size_t n = 0;
    int rc = -1;
    if (!models || !expect) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto out;
    }
    for (size_t d = 0; d < s->n_detectors; d++) {
        const struct ad_settings_detector *det = &s->detectors[d];
        bool seen = false;
        for (size_t i = 0; i < n && !seen; i++)
            seen = strcmp(models[i], det->model) == 0;
        if (seen)
            continue;
        expect[n] = (struct ad_model_expect){
            .features = &det->features, .window = det->window_len, .step_ms = det->step};
        models[n++] = det->model;
    }
    if (n == 0) {
        rc = 0;
        goto out;
    }
    struct ad_model_watch_options opts = {
        .base = h->base,
        .store = &s->model_store,
        .models = models,
        .n_models = n,
        .expect = expect,
        .handler = {.on_model = on_model, .on_refused = on_refused, .arg = h},
        .metrics = h->metrics,
    };
    h->watch = ad_model_watch_new_with(&opts, errstr, errstr_size);
    if (!h->watch)
        goto out;
    /* What the detectors loaded as they were built is not news. */
    for (size_t d = 0; h->current && d < h->current->n_detectors; d++) {
        const struct ad_model *m = ad_serving_model(h->current->detectors[d].serving);
        if (m)
            ad_model_watch_set_serving(h->watch, ad_model_name(m), ad_model_version(m));
    }
    if (s->model_store.redis_channel && s->sinks.redis.url) {
        struct ad_redis_sub_handler handler = {
            .on_message = on_announcement, .on_subscribed = on_subscribed, .arg = h};
        h->announcements = ad_redis_sub_new(h->base, &s->sinks.redis, s->model_store.redis_channel,
                                            h->metrics, &handler, errstr, errstr_size);
        if (!h->announcements)
            goto out;
    }
    rc = 0;
out:
    free(models);
    free(expect);
    return rc;
}

/* ---- maintenance windows ---- */

/* The windows of s, for /status (*all) and for each detector of p (*each, its own array);
 * nothing is made when one fails. */
static int prepare_maintenance(struct pipeline *p, const struct ad_settings *s,
                               struct ad_maintenance **all, struct ad_maintenance ***each,
                               char *errstr, size_t errstr_size)
{
    *each = calloc(p->n_detectors ? p->n_detectors : 1, sizeof **each);
    *all = ad_maintenance_new(s, SIZE_MAX, errstr, errstr_size);
    size_t d = 0;
    if (!*each || !*all)
        goto fail;
    for (; d < p->n_detectors; d++)
        if (!((*each)[d] = ad_maintenance_new(s, d, errstr, errstr_size)))
            goto fail;
    return 0;
fail:
    if (!*each)
        ad_errstr_set(errstr, errstr_size, "out of memory");
    for (size_t i = 0; *each && i < d; i++)
        ad_maintenance_destroy((*each)[i]);
    free(*each);
    ad_maintenance_destroy(*all);
    *each = NULL;
    *all = NULL;
    return -1;
}

/* ---- feedback ---- */

/* Marks the alert of id in whichever detector knows it; the reply's status. */
static int mark_alert(struct ad_pipeline *h, const char *id, const char *verdict,
                      const char *comment, const char *by, json_t *reply)
{
    struct pipeline *p = h->current;
    for (size_t d = 0; p && d < p->n_detectors; d++) {
        struct detector_rt *det = &p->detectors[d];
        if (ad_serving_knows_alert(det->serving, id)) {
            json_object_set_new(reply, "detector", json_string(det->settings->name));
            return ad_serving_mark(det->serving, id, verdict, comment, by, reply);
        }
    }
    json_object_set_new(reply, "error", json_string("no detector knows an alert with this id"));
    return 404;
}

/* A mark published on feedback.redis_channel: {"id": ..., "verdict": ..., "comment": ...,
 * "by": ...}. Logged, since pub/sub has no one to answer. */
static void on_mark_message(void *arg, const char *payload, size_t len)
{
    struct ad_pipeline *h = arg;
    json_error_t error;
    json_t *msg = json_loadb(payload, len, 0, &error), *reply = json_object();
    const char *id = json_string_value(json_object_get(msg, "id"));
    const char *verdict = json_string_value(json_object_get(msg, "verdict"));
    const char *comment = json_string_value(json_object_get(msg, "comment"));
    const char *who = json_string_value(json_object_get(msg, "by"));
    char by[160];
    snprintf(by, sizeof by, "redis%s%s", who ? " " : "", who ? who : "");
    if (!id || !verdict) {
        AD_WARN_KV("a message on the feedback channel is not a mark; expected {\"id\", "
                   "\"verdict\"}",
                   AD_KV_STR("error", msg ? "" : error.text));
    } else {
        int status = mark_alert(h, id, verdict, comment, by, reply);
        if (status != 200)
            AD_WARN_KV("a mark from the feedback channel was refused", AD_KV_STR("id", id),
                       AD_KV_INT("status", status),
                       AD_KV_STR("error", json_string_value(json_object_get(reply, "error"))
                                              ? json_string_value(json_object_get(reply, "error"))
                                              : ""));
    }
    json_decref(reply);
    json_decref(msg);
}

/* ---- the admin endpoint's paths ---- */

static int reply_json(struct ad_component_reply *out, int status, json_t *doc)
{
    out->status = status;
    out->content_type = "application/json";
    out->body = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    out->body_len = out->body ? strlen(out->body) : 0;
    json_decref(doc);
    return 0;
}

static int serve_entities(struct ad_pipeline *h, struct ad_component_reply *out)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return -1;
    struct pipeline *p = h->current;
    for (int fam = 0; fam < AD_ENTITY_FAMILIES; fam++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", ad_serving_family_name(fam),
                ad_serving_family_help(fam), ad_serving_family_name(fam));
        for (size_t d = 0; p && d < p->n_detectors; d++)
            ad_serving_write_entities(p->detectors[d].serving, fam, f);
    }
    if (fclose(f) != 0) {
        free(text);
        return -1;
    }
    out->status = 200;
    out->content_type = "text/plain; version=0.0.4; charset=utf-8";
    out->body = text;
    out->body_len = len;
    return 0;
}

static int serve(void *ctx, const struct ad_component_request *req, struct ad_component_reply *out)
{
    struct ad_pipeline *h = ctx;
    if (strcmp(req->path, "/metrics/entities") == 0)
        return serve_entities(h, out);
    /* /alerts/<id>/feedback (the endpoint checked the shape) */
    if (strncmp(req->path, "/alerts/", 8) != 0)
        return -1;
    char id[AD_ALERT_ID_LEN * 2];
    size_t n = strcspn(req->path + 8, "/");
    if (n >= sizeof id)
        return reply_json(out, 404, json_pack("{s:s}", "error", "no alert has this id"));
    memcpy(id, req->path + 8, n);
    id[n] = '\0';
    json_t *reply = json_object();
    if (strcmp(req->method, "POST") != 0) {
        struct pipeline *p = h->current;
        for (size_t d = 0; p && d < p->n_detectors; d++) {
            json_t *mark = ad_serving_mark_of(p->detectors[d].serving, id);
            if (mark) {
                json_object_set_new(reply, "mark", mark);
                return reply_json(out, 200, reply);
            }
        }
        json_object_set_new(reply, "error", json_string("this alert has no mark"));
        return reply_json(out, 404, reply);
    }
    json_error_t error;
    json_t *body = json_loadb(req->body, req->body_len, 0, &error);
    json_t *comment = json_object_get(body, "comment");
    const char *verdict = json_string_value(json_object_get(body, "verdict"));
    if (!json_is_object(body) || !verdict ||
        (comment && !json_is_string(comment) && !json_is_null(comment))) {
        json_object_set_new(reply, "error",
                            json_string("expected {\"verdict\": \"false_positive\" or "
                                        "\"true_positive\", \"comment\": \"...\"}"));
        json_decref(body);
        return reply_json(out, 400, reply);
    }
    int status = mark_alert(h, id, verdict, json_string_value(comment), req->by, reply);
    json_decref(body);
    return reply_json(out, status, reply);
}

/* ---- the component ---- */

/* The keys a reload changed under some sections, as one string for the log. */
struct changed_keys {
    const char *const *sections; /* NULL-terminated top-level names; NULL: all */
    char text[1024];
    size_t len, n;
};

static void note_change(const char *key, void *arg)
{
    struct changed_keys *c = arg;
    bool ours = !c->sections;
    for (const char *const *sec = c->sections; sec && *sec && !ours; sec++) {
        size_t n = strlen(*sec);
        ours = strncmp(key, *sec, n) == 0 && (key[n] == '\0' || key[n] == '.' || key[n] == '[');
    }
    if (!ours)
        return;
    c->n++;
    if (c->len + strlen(key) + 8 >= sizeof c->text) {
        if (c->len + 4 < sizeof c->text && !strstr(c->text, "..."))
            c->len += (size_t)snprintf(c->text + c->len, sizeof c->text - c->len, ", ...");
        return;
    }
    c->len += (size_t)snprintf(c->text + c->len, sizeof c->text - c->len, "%s%s",
                               c->len ? ", " : "", key);
}

static void changed_keys(const struct ad_config *old, const struct ad_config *next,
                         const char *const *sections, struct changed_keys *out)
{
    *out = (struct changed_keys){.sections = sections};
    ad_config_changes(old, next, note_change, out);
}

/* A reload that changed only sinks: each changed sink is replaced, the data path stays. */
static int swap_sinks(struct ad_pipeline *h, const struct ad_config *next, char *errstr,
                      size_t errstr_size)
{
    struct pipeline *p = h->current;
    const struct ad_config *in_force = p->applied ? p->applied : p->config;
    static const char *const kafka_sink[] = {"sinks.kafka", NULL};
    static const char *const redis_sink[] = {"sinks.redis", NULL};
    static const char *const sinks[] = {"sinks", NULL};
    bool kafka = !ad_config_sections_equal(in_force, next, kafka_sink);
    bool redis = !ad_config_sections_equal(in_force, next, redis_sink);
    if (!kafka && !redis)
        return 0;
    struct changed_keys changed;
    changed_keys(in_force, next, sinks, &changed);
    if (ad_outbox_replace(p->outbox, h->base, (struct ad_config *)next, h->metrics, kafka, redis,
                          errstr, errstr_size) < 0)
        return -1;
    AD_WARN_KV("sinks changed: only the changed sinks were replaced; sources, windows, detectors "
               "and alert states go on as they were",
               AD_KV_STR("changed", changed.text));
    return 0;
}

static int apply(void *ctx, const struct ad_config *next, char *errstr, size_t errstr_size)
{
    struct ad_pipeline *h = ctx;
    const struct ad_settings *s = ad_config_settings(next);
    static const char *const store_sections[] = {"model_store", "sinks", NULL};
    if (h->current && ad_config_sections_equal(h->current->config, next, pipeline_sections)) {
        /* Everything that can fail first, so that a refusal changes nothing. */
        struct pipeline *p = h->current;
        struct ad_maintenance *all = NULL, **each = NULL;
        if (prepare_maintenance(p, s, &all, &each, errstr, errstr_size) < 0)
            return -1;
        bool store_changed =
            !ad_config_sections_equal(p->applied ? p->applied : p->config, next, store_sections);
        if (swap_sinks(h, next, errstr, errstr_size) < 0) {
            for (size_t d = 0; d < p->n_detectors; d++)
                ad_maintenance_destroy(each[d]);
            free(each);
            ad_maintenance_destroy(all);
            return -1;
        }
        ad_config_unref(p->applied);
        p->applied = ad_config_ref((struct ad_config *)next);
        h->queue_depth = (size_t)s->scoring.queue_depth;
        for (size_t d = 0; d < h->current->n_detectors; d++) {
            struct detector_rt *det = &h->current->detectors[d];
            ad_window_store_set_max_batch(det->store, (size_t)s->scoring.max_batch);
            ad_serving_set_series_limit(det->serving, (size_t)s->scoring.entity_metrics_limit);
            ad_serving_set_maintenance(det->serving, each[d]);
        }
        free(each);
        ad_maintenance_destroy(h->maintenance);
        h->maintenance = all;
        if (store_changed) {
            unwatch(h);
            if (watch(h, s, errstr, errstr_size) < 0)
                return -1;
        }
        /* SIGHUP looks at the store at once, whatever inotify or the poll have seen. */
        if (h->watch)
            ad_model_watch_check(h->watch);
        return 0;
    }
    /* On a reload, a detector whose new shape no longer fits the model it serves would stop
     * scoring: refused. (At start it runs without a model, and says so.) */
    if (h->current && ad_swap_check_store(s, errstr, errstr_size) < 0)
        return -1;
    struct ad_maintenance *all = ad_maintenance_new(s, SIZE_MAX, errstr, errstr_size);
    if (!all)
        return -1;
    struct pipeline *fresh = pipeline_build(h, next, errstr, errstr_size);
    if (!fresh) {
        ad_maintenance_destroy(all);
        return -1;
    }
    ad_maintenance_destroy(h->maintenance);
    h->maintenance = all;
    struct pipeline *old = h->current;
    h->current = fresh;
    h->queue_depth = (size_t)s->scoring.queue_depth;
    unwatch(h);
    if (watch(h, s, errstr, errstr_size) < 0)
        AD_ERROR_KV("cannot watch the model store; new versions wait for a restart",
                    AD_KV_STR("error", errstr));
    if (old) {
        struct changed_keys changed;
        changed_keys(old->config, next, pipeline_sections, &changed);
        AD_WARN_KV("the data path changed: the pipeline is rebuilt; the new "
                   "consumers join the group once the old ones have left it, and windows are "
                   "rebuilt from the last commit's rebuild point",
                   AD_KV_STR("changed", changed.text));
        old->next_retired = h->retired;
        h->retired = old;
        pipeline_stop(old, retired_stopped, true);
    }
    return 0;
}

static void stop(void *ctx, ad_component_done_fn done, void *done_arg)
{
    struct ad_pipeline *h = ctx;
    h->done = done;
    h->done_arg = done_arg;
    if (h->current && !h->current->stopping)
        pipeline_stop(h->current, current_stopped, false);
    else
        maybe_done(h);
}

static void status(void *ctx, json_t *out)
{
    struct ad_pipeline *h = ctx;
    struct pipeline *p = h->current;
    int64_t now = ad_clock_wall_ms();
    if (!p)
        return;
    json_t *sources = json_object();
    for (size_t i = 0; i < p->n_sources; i++) {
        const struct source_rt *src = &p->sources[i];
        json_t *part = json_object();
        json_object_set_new(
            part, "type",
            json_string(src->settings->type == AD_SOURCE_KAFKA ? "kafka" : "prometheus"));
        if (src->kafka)
            ad_kafka_source_status(src->kafka, part);
        else if (src->prom)
            ad_prom_source_status(src->prom, part);
        else
            json_object_set_new(part, "state", json_string("unused"));
        json_object_set_new(sources, src->settings->name, part);
    }
    json_object_set_new(out, "sources", sources);
    json_t *detectors = json_object();
    for (size_t i = 0; i < p->n_detectors; i++) {
        const struct detector_rt *det = &p->detectors[i];
        json_t *part = json_object();
        ad_grid_status(det->grid, now, part);
        ad_window_store_status(det->store, part);
        ad_serving_status(det->serving, part);
        json_object_set_new(detectors, det->settings->name, part);
    }
    json_object_set_new(out, "detectors", detectors);
    json_t *maintenance = json_array();
    ad_maintenance_status(h->maintenance, now, maintenance);
    json_object_set_new(out, "maintenance", maintenance);
    json_t *sinks = json_object();
    ad_outbox_status(p->outbox, sinks);
    json_object_set_new(out, "sinks", sinks);
    if (h->watch) {
        json_t *store = json_object();
        ad_model_watch_status(h->watch, store);
        if (h->announcements) {
            json_t *sub = json_object();
            ad_redis_sub_status(h->announcements, sub);
            json_object_set_new(store, "announcements", sub);
        }
        json_object_set_new(out, "model_store", store);
    }
    if (h->marks) {
        json_t *sub = json_object();
        ad_redis_sub_status(h->marks, sub);
        json_object_set_new(out, "feedback_channel", sub);
    }
}

struct ad_component ad_pipeline_component(struct ad_pipeline *p)
{
    return (struct ad_component){.name = "pipeline",
                                 .ctx = p,
                                 .apply = apply,
                                 .stop = stop,
                                 .status = status,
                                 .serve = serve};
}

struct ad_pipeline *ad_pipeline_new(struct event_base *base, struct ad_metrics *metrics,
                                    const struct ad_config *config, struct ad_scorer *scorer,
                                    char *errstr, size_t errstr_size)
{
    struct ad_pipeline *h = calloc(1, sizeof *h);
    if (!h) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    h->base = base;
    h->metrics = metrics;
    h->scorer = scorer;
    h->queue_depth = (size_t)ad_config_settings(config)->scoring.queue_depth;
    if (scorer) {
        h->results = event_new(base, ad_scorer_fd(scorer), EV_READ | EV_PERSIST, on_results, h);
        if (!h->results || event_add(h->results, NULL) < 0) {
            ad_errstr_set(errstr, errstr_size, "cannot watch the scorer");
            goto fail;
        }
    }
    h->maintenance = ad_maintenance_new(ad_config_settings(config), SIZE_MAX, errstr, errstr_size);
    if (!h->maintenance)
        goto fail;
    h->current = pipeline_build(h, config, errstr, errstr_size);
    if (!h->current || watch(h, ad_config_settings(config), errstr, errstr_size) < 0)
        goto fail;
    return h;
fail:
    unwatch(h);
    ad_maintenance_destroy(h->maintenance);
    pipeline_free(h->current);
    if (h->results)
        event_free(h->results);
    free(h);
    return NULL;
}

void ad_pipeline_destroy(struct ad_pipeline *h)
{
    if (!h)
        return;
    while (h->retired) {
        struct pipeline *p = h->retired;
        h->retired = p->next_retired;
        pipeline_free(p);
    }
    unwatch(h);
    ad_maintenance_destroy(h->maintenance);
    pipeline_free(h->current);
    if (h->results)
        event_free(h->results);
    free(h);
}
