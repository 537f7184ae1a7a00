#include "stream/prom_source.h"

#include "base/clock.h"
#include "base/errstr.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/units.h"
#include "stream/http_fetch.h"

#define AD_LOG_MODULE "prometheus"
#include "base/log.h"

/* Points per series in one request. Prometheus refuses more than 11,000; staying below keeps
 * a long backfill to a few requests of bounded size. */
#define MAX_POINTS 10000
/* A larger body is refused: a runaway query must not take the daemon's memory with it. */
#define MAX_BODY_BYTES (64 * 1024 * 1024)
/* At most one log line per query in this many ms; see may_log(). */
#define LOG_INTERVAL_MS        10000
#define DEFAULT_MIN_BACKOFF_MS 1000
#define DEFAULT_MAX_BACKOFF_MS 60000
#define JITTER                 0.2

enum reason {
    REASON_CONNECT,
    REASON_TIMEOUT,
    REASON_HTTP_STATUS,
    REASON_MALFORMED,
    REASON_ERROR_STATUS,
    REASON_WRONG_RESULT_TYPE,
    REASON_TOO_LARGE,
    N_REASONS
};

static const char *const reason_names[N_REASONS] = {
    "connect",      "timeout",           "http_status", "malformed",
    "error_status", "wrong_result_type", "too_large",
};

/* The state machine of one range query (one feature). */
struct query {
    struct ad_prom_source *src;
    size_t index;
    const char *name;   /* the feature name, borrowed from the settings */
    const char *promql; /* borrowed */
    int64_t watermark;  /* every bucket ending at or before it has been handed on */
    struct event *timer;
    /* The transfer in flight (NULL when none) and the end of the range it asks for. */
    struct ad_http_transfer *xfer;
    int64_t range_end;
    unsigned failures; /* consecutive */
    bool started;      /* a request has been sent: the backfill's start is settled */
    bool held_back;    /* waiting for the grid (ad_prom_source_limit), not for a timer */
    char last_error[512];
    int64_t last_error_at; /* Unix ms; 0: never */
    int64_t last_log;      /* monotonic ms of the last line logged */
    bool logged;
    unsigned suppressed; /* lines not logged since then */
    struct ad_counter *successes, *failures_total, *errors[N_REASONS], *samples;
    struct ad_gauge *lag;
};

struct ad_prom_source {
    struct event_base *base;
    const struct ad_settings_source *settings;
    char *url_base;    /* the configured URL without trailing slashes */
    char *display_url; /* the same without a password, for logs and /status */
    int64_t step, delay;
    int64_t min_backoff, max_backoff;
    struct ad_prom_source_handler handler;
    /* Alignment with the grid (ad_prom_source_limit): no sample after until_ms, at most
     * max_points per series in one request, and before the first request no sample at or
     * before from_ms. */
    int64_t until_ms, from_ms;
    size_t max_points;
    ad_clock_fn clock;
    void *clock_arg;
    uint64_t rng;
    struct ad_http_fetch *http; /* holds the credentials; wipes them when destroyed */
    struct ad_histogram *duration;
    struct ad_counter *warnings;
    struct query *queries;
    size_t n_queries;
};

/* ---- time and arithmetic ---- */

static int64_t real_clock(void *arg)
{
    (void)arg;
    return ad_clock_wall_ms();
}

static int64_t now_ms(const struct ad_prom_source *s)
{
    return s->clock(s->clock_arg);
}

/* The grid point at or before t (floor, also before 1970). */
static int64_t align_down(int64_t t, int64_t step)
{
    int64_t r = t % step;
    return r < 0 ? t - r - step : t - r;
}

/* Prometheus takes times and steps in seconds; ours are whole milliseconds. */
static void format_seconds(char *buf, size_t size, int64_t ms)
{
    uint64_t a = ms < 0 ? -(uint64_t)ms : (uint64_t)ms;
    const char *sign = ms < 0 ? "-" : "";
    if (a % 1000)
        snprintf(buf, size, "%s%" PRIu64 ".%03" PRIu64, sign, a / 1000, a % 1000);
    else
        snprintf(buf, size, "%s%" PRIu64, sign, a / 1000);
}

/* xorshift64*: jitter needs no more than this, and no shared state. */
static double random_unit(struct ad_prom_source *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (double)((s->rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

/* ---- logging and metrics ---- */

/*
 * At most one line per query per LOG_INTERVAL_MS: a Prometheus that is down for an hour
 * would otherwise write a line per retry for every query. The lines left out are counted and
 * reported with the next one; the metrics count every failure.
 */
static bool may_log(struct query *q)
{
    int64_t now = ad_clock_mono_ms();
    if (q->logged && now - q->last_log < LOG_INTERVAL_MS) {
        q->suppressed++;
        return false;
    }
    q->logged = true;
    q->last_log = now;
    return true;
}

static void update_lag(struct query *q, int64_t now)
{
    ad_gauge_set(q->lag, (double)(now - q->watermark) / 1000.0);
}

static void register_metrics(struct ad_prom_source *s, struct ad_metrics *m)
{
    const char *src = s->settings->name;
    if (!m)
        return;
    s->duration = ad_metrics_histogram(
        m, "anomalyd_prometheus_request_duration_seconds",
        "Duration of range query requests to Prometheus, failed ones included.",
        ad_metrics_seconds_buckets, ad_metrics_seconds_buckets_len, "source", src, NULL);
    s->warnings =
        ad_metrics_counter(m, "anomalyd_prometheus_warnings_total",
                           "Warnings in successful Prometheus responses.", "source", src, NULL);
    for (size_t i = 0; i < s->n_queries; i++) {
        struct query *q = &s->queries[i];
        static const char requests_help[] = "Range query requests to Prometheus by result.";
        q->successes =
            ad_metrics_counter(m, "anomalyd_prometheus_requests_total", requests_help, "source",
                               src, "query", q->name, "result", "success", NULL);
        q->failures_total =
            ad_metrics_counter(m, "anomalyd_prometheus_requests_total", requests_help, "source",
                               src, "query", q->name, "result", "failure", NULL);
        for (int r = 0; r < N_REASONS; r++)
            q->errors[r] = ad_metrics_counter(
                m, "anomalyd_prometheus_errors_total",
                "Failed range query requests to Prometheus by reason; each is retried.", "source",
                src, "query", q->name, "reason", reason_names[r], NULL);
        q->samples = ad_metrics_counter(m, "anomalyd_prometheus_samples_total",
                                        "Samples received from Prometheus and handed on.", "source",
                                        src, "query", q->name, NULL);
        q->lag = ad_metrics_gauge(m, "anomalyd_prometheus_watermark_lag_seconds",
                                  "Now minus the watermark of a Prometheus query.", "source", src,
                                  "query", q->name, NULL);
    }
}

/* ---- scheduling ---- */

static void schedule(struct query *q, int64_t in_ms)
{
    if (in_ms < 0)
        in_ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(in_ms / 1000),
                         .tv_usec = (suseconds_t)(in_ms % 1000) * 1000};
    evtimer_add(q->timer, &tv);
}

/* min_backoff doubling per consecutive failure up to max_backoff, then ±20%, so that many
 * queries (or replicas) that failed together do not retry in lockstep. */
static int64_t backoff_ms(struct ad_prom_source *s, unsigned failures)
{
    double b = (double)s->min_backoff;
    for (unsigned i = 1; i < failures && b < (double)s->max_backoff; i++)
        b *= 2;
    if (b > (double)s->max_backoff)
        b = (double)s->max_backoff;
    return (int64_t)(b * (1.0 - JITTER + 2 * JITTER * random_unit(s)));
}

static void fail(struct query *q, enum reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Counts a failure and retries after the backoff; the watermark stays where it is. */
static void fail(struct query *q, enum reason reason, const char *fmt, ...)
{
    struct ad_prom_source *s = q->src;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(q->last_error, sizeof q->last_error, fmt, ap);
    va_end(ap);
    for (char *p = q->last_error; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    q->last_error_at = now_ms(s);
    q->failures++;
    update_lag(q, q->last_error_at);
    ad_counter_inc(q->failures_total);
    ad_counter_inc(q->errors[reason]);

    int64_t retry = backoff_ms(s, q->failures);
    if (may_log(q)) {
        AD_WARN_KV("range query failed", AD_KV_STR("source", s->settings->name),
                   AD_KV_STR("query", q->name), AD_KV_STR("reason", reason_names[reason]),
                   AD_KV_STR("error", q->last_error), AD_KV_INT("failures", q->failures),
                   AD_KV_DOUBLE("retry_in_seconds", (double)retry / 1000.0),
                   AD_KV_INT("suppressed", q->suppressed));
        q->suppressed = 0;
    }
    schedule(q, retry);
}

/* ---- one request ---- */

static void on_answer(void *arg, struct ad_http_response *r);

/* Starts the next request if its range is ready, otherwise waits until it is. */
static void start_fetch(struct query *q)
{
    struct ad_prom_source *s = q->src;
    int64_t now = now_ms(s);
    int64_t start = q->watermark + s->step;
    int64_t end = align_down(now - s->delay, s->step);
    char *escaped = NULL, *url = NULL;
    char t0[32], t1[32], step[32], err[256];
    struct ad_http_request req = {.accept = "application/json", .max_body = MAX_BODY_BYTES};

    update_lag(q, now);
    q->held_back = false;
    if (end < start) {
        /* The bucket ending at start is complete once delay has passed after it. */
        schedule(q, start + s->delay - now);
        return;
    }
    if (s->until_ms < start) {
        /* The grid is not ready for more (docs/windows.md, "Partitions far ahead"): the next
         * ad_prom_source_limit that allows it starts the request. */
        q->held_back = true;
        return;
    }
    if (s->until_ms < end)
        end = align_down(s->until_ms, s->step);
    if ((end - start) / s->step >= (int64_t)s->max_points)
        end = start + (int64_t)(s->max_points - 1) * s->step;
    q->started = true;

    escaped = ad_http_escape(q->promql);
    format_seconds(t0, sizeof t0, start);
    format_seconds(t1, sizeof t1, end);
    format_seconds(step, sizeof step, s->step);
    if (!escaped || asprintf(&url, "%s/api/v1/query_range?query=%s&start=%s&end=%s&step=%s",
                             s->url_base, escaped, t0, t1, step) < 0) {
        url = NULL;
        goto err;
    }
    req.url = url;
    q->range_end = end;
    /* err may quote the URL, password included: it is not passed on. */
    q->xfer = ad_http_fetch_get(s->http, &req, on_answer, q, err, sizeof err);
    if (!q->xfer)
        goto err;
    AD_DEBUG_KV("range query", AD_KV_STR("source", s->settings->name), AD_KV_STR("query", q->name),
                AD_KV_STR("start", t0), AD_KV_STR("end", t1), AD_KV_STR("step", step));
    free(escaped);
    free(url);
    return;

err:
    free(escaped);
    free(url);
    /* Only memory or a libcurl without a needed feature gets here; retrying is all there is. */
    fail(q, REASON_CONNECT, "cannot set up the request");
}

/* Every sample must lie on the grid inside (start, end], as the handler is promised; a
 * server or proxy that sends others is broken, and its answer is not used. */
static int check_grid(const struct ad_prom_matrix *m, int64_t start, int64_t end, int64_t step,
                      char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < m->n_series; i++)
        for (size_t j = 0; j < m->series[i].n_samples; j++) {
            int64_t t = m->series[i].times_ms[j];
            if (t <= start || t > end || align_down(t, step) != t) {
                ad_errstr_set(errstr, errstr_size,
                              "result[%zu]: sample time %" PRId64 " ms is not a step of the range "
                              "asked for",
                              i, t);
                return -1;
            }
        }
    return 0;
}

/* A short, printable version of an error body that is not Prometheus JSON (a proxy's page). */
static void body_excerpt(const struct ad_http_response *r, char *out, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < r->body_len && n + 1 < size && n < 200; i++) {
        unsigned char c = r->body[i];
        if (c == '\n' || c == '\r')
            break;
        out[n++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[n] = '\0';
}

static void fail_http_status(struct query *q, const struct ad_http_response *r)
{
    struct ad_prom_matrix m;
    char detail[512];
    /* Prometheus answers 400, 422 and 503 with its usual JSON carrying the reason. */
    if (ad_prom_parse_matrix((const char *)r->body, r->body_len, &m, detail, sizeof detail) !=
        AD_PROM_ERROR_STATUS)
        body_excerpt(r, detail, sizeof detail);
    ad_prom_matrix_free(&m);
    if (detail[0])
        fail(q, REASON_HTTP_STATUS, "HTTP status %ld: %s", r->status, detail);
    else
        fail(q, REASON_HTTP_STATUS, "HTTP status %ld", r->status);
}

/*
 * What each transport failure counts as. "malformed" covers answers that are not HTTP (no
 * status line) and responses that break off after their status line (a body shorter than its
 * Content-Length, bad compression); a connection reset, as everything else that keeps a
 * response from arriving (TLS included), counts as "connect". Running out of memory does too:
 * retrying is all there is.
 */
static enum reason reason_of(enum ad_http_result result)
{
    switch (result) {
    case AD_HTTP_TIMEOUT:
        return REASON_TIMEOUT;
    case AD_HTTP_TOO_LARGE:
        return REASON_TOO_LARGE;
    case AD_HTTP_TRUNCATED:
    case AD_HTTP_MALFORMED:
        return REASON_MALFORMED;
    case AD_HTTP_OK:
    case AD_HTTP_CONNECT:
    case AD_HTTP_RESET:
    case AD_HTTP_INTERNAL:
        break;
    }
    return REASON_CONNECT;
}

static void handle_body(struct query *q, const struct ad_http_response *r)
{
    struct ad_prom_source *s = q->src;
    struct ad_prom_matrix m;
    char err[512];
    int64_t start = q->watermark, end = q->range_end;

    enum ad_prom_parse_result pr =
        ad_prom_parse_matrix((const char *)r->body, r->body_len, &m, err, sizeof err);
    switch (pr) {
    case AD_PROM_OK:
        break;
    case AD_PROM_ERROR_STATUS:
        fail(q, REASON_ERROR_STATUS, "%s", err);
        goto out;
    case AD_PROM_WRONG_RESULT_TYPE:
        fail(q, REASON_WRONG_RESULT_TYPE, "%s", err);
        goto out;
    case AD_PROM_MALFORMED:
        fail(q, REASON_MALFORMED, "%s", err);
        goto out;
    }
    if (check_grid(&m, start, end, s->step, err, sizeof err) < 0) {
        fail(q, REASON_MALFORMED, "%s", err);
        goto out;
    }

    size_t samples = 0;
    for (size_t i = 0; i < m.n_series; i++)
        samples += m.series[i].n_samples;
    ad_counter_inc(q->successes);
    ad_counter_add(q->samples, (double)samples);
    ad_counter_add(s->warnings, (double)m.n_warnings);
    if (m.n_warnings || q->failures) {
        /* One limiter per query for all its lines, recoveries and warnings included. */
        if (may_log(q)) {
            if (q->failures)
                AD_INFO_KV("range query recovered", AD_KV_STR("source", s->settings->name),
                           AD_KV_STR("query", q->name), AD_KV_INT("failures", q->failures),
                           AD_KV_INT("suppressed", q->suppressed));
            else
                AD_WARN_KV("range query warning", AD_KV_STR("source", s->settings->name),
                           AD_KV_STR("query", q->name), AD_KV_STR("warning", m.warnings[0]),
                           AD_KV_INT("warnings", m.n_warnings),
                           AD_KV_INT("suppressed", q->suppressed));
            q->suppressed = 0;
        }
    }
    q->failures = 0;

    if (s->handler.on_range)
        s->handler.on_range(s->handler.arg, q->index, &m, start, end);
    q->watermark = end;
    update_lag(q, now_ms(s));
    /* start_fetch decides: the next chunk at once when catching up, else the next step. */
    schedule(q, 0);

out:
    ad_prom_matrix_free(&m);
}

/* A transfer ended (the transfer is gone): judges the outcome. */
static void on_answer(void *arg, struct ad_http_response *r)
{
    struct query *q = arg;

    q->xfer = NULL;
    ad_histogram_observe(q->src->duration, r->seconds);
    if (r->result != AD_HTTP_OK)
        fail(q, reason_of(r->result), "%s", r->error);
    else if (r->status != 200)
        fail_http_status(q, r);
    else
        handle_body(q, r);
}

static void on_query_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_fetch(arg);
}

/* ---- set-up ---- */

struct ad_prom_source *ad_prom_source_new(const struct ad_prom_source_options *opts, char *errstr,
                                          size_t errstr_size)
{
    const struct ad_settings_source *set = opts->settings;
    struct ad_prom_source *s = NULL;
    char d1[32], d2[32], d3[32];

    if (!opts->base || !set || set->type != AD_SOURCE_PROMETHEUS || !set->prometheus.url ||
        opts->step_ms <= 0 || opts->backfill_ms < 0 || opts->min_backoff_ms < 0 ||
        opts->max_backoff_ms < 0 || set->prometheus.queries.len == 0) {
        ad_errstr_set(errstr, errstr_size,
                      "a Prometheus source needs a loop, a prometheus source with queries, a "
                      "positive step and no negative durations");
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->base = opts->base;
    s->settings = set;
    s->step = opts->step_ms;
    s->delay = set->prometheus.delay;
    s->min_backoff = opts->min_backoff_ms ? opts->min_backoff_ms : DEFAULT_MIN_BACKOFF_MS;
    s->max_backoff = opts->max_backoff_ms ? opts->max_backoff_ms : DEFAULT_MAX_BACKOFF_MS;
    if (s->max_backoff < s->min_backoff)
        s->max_backoff = s->min_backoff;
    s->handler = opts->handler;
    s->until_ms = opts->limited ? INT64_MIN : INT64_MAX;
    s->from_ms = INT64_MIN;
    s->max_points =
        opts->max_points && opts->max_points < MAX_POINTS ? opts->max_points : MAX_POINTS;
    s->clock = opts->clock ? opts->clock : real_clock;
    s->clock_arg = opts->clock_arg;
    s->rng = (uint64_t)real_clock(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s;
    if (!s->rng)
        s->rng = 1;

    /* Authentication, TLS, headers and the timeout (for the whole request and for each
     * connection attempt) are the client's. */
    s->http = ad_http_fetch_new(s->base, &set->prometheus.http, errstr, errstr_size);
    if (!s->http)
        goto err;
    s->url_base = strdup(set->prometheus.url);
    s->display_url = ad_http_redact_url(set->prometheus.url);
    if (!s->url_base || !s->display_url)
        goto oom;
    for (size_t n = strlen(s->url_base); n > 0 && s->url_base[n - 1] == '/'; n--)
        s->url_base[n - 1] = '\0';

    s->n_queries = set->prometheus.queries.len;
    s->queries = calloc(s->n_queries, sizeof *s->queries);
    if (!s->queries)
        goto oom;
    int64_t now = now_ms(s);
    int64_t first = align_down(now - s->delay - opts->backfill_ms, s->step);
    for (size_t i = 0; i < s->n_queries; i++) {
        struct query *q = &s->queries[i];
        q->src = s;
        q->index = i;
        q->name = set->prometheus.queries.keys[i];
        q->promql = set->prometheus.queries.values[i];
        q->watermark = first;
        q->timer = evtimer_new(s->base, on_query_timer, q);
        if (!q->timer)
            goto oom;
    }
    register_metrics(s, opts->metrics);
    for (size_t i = 0; i < s->n_queries; i++) {
        update_lag(&s->queries[i], now);
        schedule(&s->queries[i], 0);
    }

    ad_duration_format(s->step, d1, sizeof d1);
    ad_clock_format(first, d2, sizeof d2);
    ad_duration_format(s->delay, d3, sizeof d3);
    AD_INFO_KV("prometheus source started", AD_KV_STR("source", set->name),
               AD_KV_STR("url", s->display_url), AD_KV_INT("queries", s->n_queries),
               AD_KV_STR("step", d1), AD_KV_STR("delay", d3), AD_KV_STR("watermark", d2));
    return s;

oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
err:
    ad_prom_source_destroy(s);
    return NULL;
}

void ad_prom_source_destroy(struct ad_prom_source *s)
{
    if (!s)
        return;
    /* Aborts the transfers in flight without calling on_answer. */
    ad_http_fetch_destroy(s->http);
    for (size_t i = 0; s->queries && i < s->n_queries; i++)
        if (s->queries[i].timer)
            event_free(s->queries[i].timer);
    free(s->queries);
    free(s->url_base);
    free(s->display_url);
    free(s);
}

/* ---- queries ---- */

void ad_prom_source_limit(struct ad_prom_source *s, int64_t from_ms, int64_t until_ms)
{
    s->until_ms = until_ms;
    s->from_ms = from_ms;
    for (size_t i = 0; i < s->n_queries; i++) {
        struct query *q = &s->queries[i];
        /* Where the backfill starts is settled by the first request. */
        if (!q->started && from_ms != INT64_MIN && align_down(from_ms, s->step) > q->watermark)
            q->watermark = align_down(from_ms, s->step);
        if (q->held_back && !q->xfer && until_ms >= q->watermark + s->step) {
            q->held_back = false;
            schedule(q, 0);
        }
    }
}

int64_t ad_prom_source_watermark(const struct ad_prom_source *s, size_t query)
{
    return query < s->n_queries ? s->queries[query].watermark : INT64_MIN;
}

int64_t ad_prom_source_min_watermark(const struct ad_prom_source *s)
{
    int64_t min = INT64_MAX;
    for (size_t i = 0; i < s->n_queries; i++)
        if (s->queries[i].watermark < min)
            min = s->queries[i].watermark;
    return min;
}

/* The error text may quote a server's bytes cut at any point; JSON needs valid UTF-8. */
static json_t *error_json(const struct query *q)
{
    json_t *j = json_string(q->last_error);
    if (j)
        return j;
    char ascii[sizeof q->last_error];
    size_t i = 0;
    for (; q->last_error[i]; i++)
        ascii[i] = (unsigned char)q->last_error[i] < 0x80 ? q->last_error[i] : '?';
    ascii[i] = '\0';
    return json_string(ascii);
}

void ad_prom_source_status(const struct ad_prom_source *s, json_t *out)
{
    int64_t now = now_ms(s);
    char text[64];
    json_t *queries = json_object();

    json_object_set_new(out, "url", json_string(s->display_url));
    json_object_set_new(out, "step_seconds", json_real((double)s->step / 1000.0));
    json_object_set_new(out, "delay_seconds", json_real((double)s->delay / 1000.0));
    ad_clock_format(ad_prom_source_min_watermark(s), text, sizeof text);
    json_object_set_new(out, "watermark", json_string(text));
    for (size_t i = 0; i < s->n_queries; i++) {
        const struct query *q = &s->queries[i];
        json_t *o = json_object();
        ad_clock_format(q->watermark, text, sizeof text);
        json_object_set_new(o, "watermark", json_string(text));
        json_object_set_new(o, "lag_seconds", json_real((double)(now - q->watermark) / 1000.0));
        json_object_set_new(o, "consecutive_failures", json_integer(q->failures));
        json_object_set_new(o, "last_error", q->last_error_at ? error_json(q) : json_null());
        if (q->last_error_at) {
            ad_clock_format(q->last_error_at, text, sizeof text);
            json_object_set_new(o, "last_error_at", json_string(text));
        }
        json_object_set_new(o, "in_flight", json_boolean(q->xfer != NULL));
        json_object_set_new(o, "waiting_for_grid", json_boolean(q->held_back));
        json_object_set_new(queries, q->name, o);
    }
    json_object_set_new(out, "queries", queries);
}
