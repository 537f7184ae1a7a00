#ifndef AD_PROM_SOURCE_H
#define AD_PROM_SOURCE_H

/*
 * A Prometheus source: one range query per configured feature, run on the loop by an
 * http_fetch client (libcurl's multi interface; its connections are shared by the queries).
 *
 * Sample times are aligned to the epoch grid of the source's step. A sample at time t belongs
 * to the bucket that ends at t, [t - step, t). Each query keeps a watermark: every bucket that
 * ends at or before it has been fetched and handed on. On start the watermark is
 * align(now - delay - backfill); then every step the query fetches (watermark, align(now -
 * delay)] with /api/v1/query_range (in chunks of at most 10,000 samples) and, on success,
 * hands the samples on and moves the watermark to the range's end. A failure (connection
 * refused, timeout, HTTP 4xx/5xx, malformed or truncated JSON, an error status, a resultType
 * other than matrix) is counted and retried with exponential backoff and jitter, and never
 * moves the watermark: nothing is skipped, the grid waits and then catches up. A source
 * aligned with its grid (options.limited) fetches no further than ad_prom_source_limit says.
 *
 * Every function runs on the loop thread.
 */

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "base/metrics.h"
#include "config/settings.h"
#include "stream/prom_response.h"

struct ad_prom_source;

/* Wall-clock time in Unix milliseconds; tests substitute a clock. */
typedef int64_t (*ad_clock_fn)(void *arg);

struct ad_prom_source_handler {
    /*
     * The samples of query `query` (its index in settings->prometheus.queries, which is also
     * the source's feature index) for the range (start_ms, end_ms], every sample time in it a
     * multiple of the step. m is borrowed for the call. Called before the watermark moves to
     * end_ms.
     */
    void (*on_range)(void *arg, size_t query, const struct ad_prom_matrix *m, int64_t start_ms,
                     int64_t end_ms);
    void *arg;
};

struct ad_prom_source_options {
    struct event_base *base;
    const struct ad_settings_source *settings; /* borrowed; must outlive the source */
    int64_t step_ms;                           /* the grid's step */
    int64_t backfill_ms;                       /* how far back the first fetch reaches */
    struct ad_metrics *metrics;                /* borrowed */
    struct ad_prom_source_handler handler;
    ad_clock_fn clock; /* NULL: the real clock */
    void *clock_arg;
    /* Aligned with the grid: nothing is fetched before the first ad_prom_source_limit. */
    bool limited;
    /* Points per series in one request at most; 0 means 10,000 (Prometheus refuses more
     * than 11,000). */
    size_t max_points;
    /* Retry backoff bounds; 0 means the defaults (1 s and 60 s). */
    int64_t min_backoff_ms;
    int64_t max_backoff_ms;
};

/* Returns NULL with errstr filled on failure. Fetching starts at once. */
struct ad_prom_source *ad_prom_source_new(const struct ad_prom_source_options *opts, char *errstr,
                                          size_t errstr_size);
/* Aborts transfers in flight. Accepts NULL. */
void ad_prom_source_destroy(struct ad_prom_source *s);

/*
 * Aligns the source with the grid it feeds (docs/windows.md, "Partitions far ahead"): no
 * sample after until_ms is fetched (INT64_MAX: no bound; INT64_MIN: nothing for now), and
 * until the first request, no sample at or before from_ms (INT64_MIN: the backfill as
 * configured), which moves the watermarks there at once. A query that waits for the bound
 * fetches as soon as a call allows it. A Prometheus source is pulled, so holding it back
 * costs nothing: the samples wait in Prometheus, not in the windows.
 */
void ad_prom_source_limit(struct ad_prom_source *s, int64_t from_ms, int64_t until_ms);

/* The watermark of one query, in Unix ms. */
int64_t ad_prom_source_watermark(const struct ad_prom_source *s, size_t query);
/* The lowest watermark over all queries: what the grid may rely on. */
int64_t ad_prom_source_min_watermark(const struct ad_prom_source *s);

/* Adds this source's part of /status: per query its watermark, lag, last error, retries. */
void ad_prom_source_status(const struct ad_prom_source *s, json_t *out);

#endif
