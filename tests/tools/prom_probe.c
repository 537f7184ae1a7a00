/*
 * prom-probe: runs one Prometheus source (stream/prom_source.h) on its own loop and prints
 * what it hands on, so that the integration tests can hold it against a real Prometheus and
 * against servers that misbehave.
 *
 * Output (stdout), one JSON object per line: every sample handed on,
 *     {"query":"cpu","labels":{"job":"a"},"t":1795323670000,"v":0.5}
 * with "NaN", "+Inf" or "-Inf" as strings for values JSON cannot hold, then one final line
 *     {"watermarks":{"cpu":1795323670000},"status":{...}}
 * with the watermarks in Unix ms and the source's /status part. It exits 0 once every
 * query's watermark has reached --until, 1 when --timeout passes first or on a runtime error,
 * 2 on usage or config errors. --metrics FILE writes the metrics registry there at exit.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "base/metrics.h"
#include "base/units.h"
#include "config/config.h"
#include "stream/prom_source.h"

#define AD_LOG_MODULE "prom-probe"
#include "base/log.h"

#define PROG "prom-probe"

struct options {
    const char *config;
    const char *source;
    const char *metrics_file;
    int64_t step;
    bool step_set;
    int64_t backfill;
    int64_t now;
    bool now_set;
    int64_t until;
    bool until_set;
    double timeout_s;
    int64_t min_backoff;
    int64_t max_backoff;
};

struct probe {
    const struct ad_settings_source *settings;
    struct event_base *base;
    int64_t until;
    int64_t *reached; /* per query: the end of the last range handed on */
    bool done;
    bool timed_out;
    bool write_failed;
    /* The clock: now_arg + (real now - real start), so time still moves. */
    int64_t clock_offset;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: " PROG " -c FILE [--source NAME] [--step DUR] [--backfill DUR]\n"
            "       [--now UNIX_MS] [--until UNIX_MS] [--timeout SECONDS]\n"
            "       [--min-backoff DUR] [--max-backoff DUR] [--metrics FILE]\n"
            "       [--log-level LEVEL] [--log-format logfmt|json]\n"
            "\n"
            "Runs the Prometheus source NAME (default: the first) of the config FILE and prints\n"
            "every sample it hands on as a JSON line, then the watermarks. Exits 0 when every\n"
            "query's watermark reached --until (default: where the first range ends), 1 at\n"
            "--timeout (default 60 s). --now starts the clock at that time; it still moves.\n");
}

static int64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t probe_clock(void *arg)
{
    const struct probe *p = arg;
    return real_ms() + p->clock_offset;
}

static int parse_int64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct options *opt)
{
    enum {
        O_SOURCE = 256,
        O_STEP,
        O_BACKFILL,
        O_NOW,
        O_UNTIL,
        O_TIMEOUT,
        O_MIN_BACKOFF,
        O_MAX_BACKOFF,
        O_METRICS,
        O_LOG_LEVEL,
        O_LOG_FORMAT
    };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"source", required_argument, NULL, O_SOURCE},
        {"step", required_argument, NULL, O_STEP},
        {"backfill", required_argument, NULL, O_BACKFILL},
        {"now", required_argument, NULL, O_NOW},
        {"until", required_argument, NULL, O_UNTIL},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"min-backoff", required_argument, NULL, O_MIN_BACKOFF},
        {"max-backoff", required_argument, NULL, O_MAX_BACKOFF},
        {"metrics", required_argument, NULL, O_METRICS},
        {"log-level", required_argument, NULL, O_LOG_LEVEL},
        {"log-format", required_argument, NULL, O_LOG_FORMAT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    opt->timeout_s = 60;
    while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'c':
            opt->config = optarg;
            break;
        case O_SOURCE:
            opt->source = optarg;
            break;
        case O_STEP:
            bad = ad_duration_parse(optarg, &opt->step) < 0 || opt->step <= 0;
            opt->step_set = true;
            break;
        case O_BACKFILL:
            bad = ad_duration_parse(optarg, &opt->backfill) < 0;
            break;
        case O_NOW:
            bad = parse_int64(optarg, &opt->now) < 0;
            opt->now_set = true;
            break;
        case O_UNTIL:
            bad = parse_int64(optarg, &opt->until) < 0;
            opt->until_set = true;
            break;
        case O_TIMEOUT: {
            char *end;
            opt->timeout_s = strtod(optarg, &end);
            bad = *end || !(opt->timeout_s > 0 && opt->timeout_s < 86400);
            break;
        }
        case O_MIN_BACKOFF:
            bad = ad_duration_parse(optarg, &opt->min_backoff) < 0;
            break;
        case O_MAX_BACKOFF:
            bad = ad_duration_parse(optarg, &opt->max_backoff) < 0;
            break;
        case O_METRICS:
            opt->metrics_file = optarg;
            break;
        case O_LOG_LEVEL: {
            enum ad_log_level level;
            bad = ad_log_level_parse(optarg, &level) < 0;
            if (!bad)
                ad_log_set_level(level);
            break;
        }
        case O_LOG_FORMAT: {
            enum ad_log_format format;
            bad = ad_log_format_parse(optarg, &format) < 0;
            if (!bad)
                ad_log_set_format(format);
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, PROG ": bad value for %s: \"%s\"\n", argv[optind - 1], optarg);
            return 2;
        }
    }
    if (optind < argc || !opt->config) {
        usage(stderr);
        return 2;
    }
    return -1;
}

static json_t *value_json(double v)
{
    if (isnan(v))
        return json_string("NaN");
    if (isinf(v))
        return json_string(v > 0 ? "+Inf" : "-Inf");
    return json_real(v);
}

static void print_json(struct probe *p, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (!text || puts(text) == EOF)
        p->write_failed = true;
    free(text);
}

static void check_done(struct probe *p)
{
    for (size_t i = 0; i < p->settings->prometheus.queries.len; i++)
        if (p->reached[i] < p->until)
            return;
    p->done = true;
    event_base_loopbreak(p->base);
}

static void on_range(void *arg, size_t query, const struct ad_prom_matrix *m, int64_t start_ms,
                     int64_t end_ms)
{
    struct probe *p = arg;
    const char *name = p->settings->prometheus.queries.keys[query];
    (void)start_ms;

    for (size_t i = 0; i < m->n_series; i++) {
        const struct ad_prom_series *s = &m->series[i];
        json_t *labels = json_object();
        for (size_t l = 0; l < s->n_labels; l++)
            json_object_set_new(labels, s->label_names[l], json_string(s->label_values[l]));
        for (size_t j = 0; j < s->n_samples; j++) {
            json_t *line = json_object();
            json_object_set_new(line, "query", json_string(name));
            json_object_set(line, "labels", labels);
            json_object_set_new(line, "t", json_integer(s->times_ms[j]));
            json_object_set_new(line, "v", value_json(s->values[j]));
            print_json(p, line);
            json_decref(line);
        }
        json_decref(labels);
    }
    /* The watermark moves to end_ms after this returns. */
    p->reached[query] = end_ms;
    check_done(p);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    (void)fd;
    (void)what;
    p->timed_out = true;
    event_base_loopbreak(p->base);
}

static const struct ad_settings_source *find_source(const struct ad_settings *s, const char *name)
{
    for (size_t i = 0; i < s->n_sources; i++) {
        const struct ad_settings_source *src = &s->sources[i];
        if (src->type == AD_SOURCE_PROMETHEUS && (!name || strcmp(src->name, name) == 0))
            return src;
    }
    return NULL;
}

static int write_metrics(struct ad_metrics *m, const char *path)
{
    size_t len = 0;
    char *text = ad_metrics_render(m, &len);
    FILE *f = fopen(path, "w");
    int rc = text && f && fwrite(text, 1, len, f) == len ? 0 : -1;
    if (f && fclose(f) != 0)
        rc = -1;
    free(text);
    if (rc < 0)
        fprintf(stderr, PROG ": cannot write %s\n", path);
    return rc;
}

int main(int argc, char **argv)
{
    struct options opt = {0};
    struct probe p = {0};
    struct ad_diag *diag = NULL;
    struct ad_config *cfg = NULL;
    struct ad_metrics *metrics = NULL;
    struct ad_prom_source *src = NULL;
    struct event *timer = NULL;
    char err[512];
    int rc;

    ad_log_set_level(AD_LOG_INFO);
    rc = parse_args(argc, argv, &opt);
    if (rc >= 0)
        return rc;
    rc = 2;
    diag = ad_diag_new();
    if (!diag)
        goto out;
    cfg = ad_config_load_file(opt.config, diag);
    if (!cfg) {
        ad_diag_print(diag, stderr);
        goto out;
    }
    p.settings = find_source(ad_config_settings(cfg), opt.source);
    if (!p.settings) {
        fprintf(stderr, PROG ": %s has no Prometheus source%s%s\n", opt.config,
                opt.source ? " named " : "", opt.source ? opt.source : "");
        goto out;
    }
    if (!opt.step_set && !p.settings->prometheus.step) {
        fprintf(stderr, PROG ": the source has no step: give --step\n");
        goto out;
    }
    rc = 1;
    p.base = event_base_new();
    metrics = ad_metrics_new();
    p.reached = calloc(p.settings->prometheus.queries.len, sizeof *p.reached);
    timer = p.base ? evtimer_new(p.base, on_timeout, &p) : NULL;
    if (!p.base || !metrics || !p.reached || !timer) {
        fprintf(stderr, PROG ": out of memory\n");
        goto out;
    }
    if (opt.now_set)
        p.clock_offset = opt.now - real_ms();

    struct ad_prom_source_options so = {
        .base = p.base,
        .settings = p.settings,
        .step_ms = opt.step_set ? opt.step : p.settings->prometheus.step,
        .backfill_ms = opt.backfill,
        .metrics = metrics,
        .handler = {.on_range = on_range, .arg = &p},
        .clock = probe_clock,
        .clock_arg = &p,
        .min_backoff_ms = opt.min_backoff,
        .max_backoff_ms = opt.max_backoff,
    };
    /* By default, until the first range (backfill included) has been handed on. */
    int64_t ready = probe_clock(&p) - p.settings->prometheus.delay;
    p.until = opt.until_set ? opt.until : ready - ((ready % so.step_ms) + so.step_ms) % so.step_ms;
    src = ad_prom_source_new(&so, err, sizeof err);
    if (!src) {
        fprintf(stderr, PROG ": %s\n", err);
        goto out;
    }
    for (size_t i = 0; i < p.settings->prometheus.queries.len; i++)
        p.reached[i] = ad_prom_source_watermark(src, i);
    struct timeval tv = {.tv_sec = (time_t)opt.timeout_s,
                         .tv_usec =
                             (suseconds_t)((opt.timeout_s - (double)(time_t)opt.timeout_s) * 1e6)};
    evtimer_add(timer, &tv);
    check_done(&p);
    if (!p.done && event_base_dispatch(p.base) < 0) {
        fprintf(stderr, PROG ": the event loop failed\n");
        goto out;
    }

    json_t *final = json_object(), *marks = json_object(), *status = json_object();
    for (size_t i = 0; i < p.settings->prometheus.queries.len; i++)
        json_object_set_new(marks, p.settings->prometheus.queries.keys[i],
                            json_integer(ad_prom_source_watermark(src, i)));
    ad_prom_source_status(src, status);
    json_object_set_new(final, "watermarks", marks);
    json_object_set_new(final, "status", status);
    print_json(&p, final);
    json_decref(final);
    rc = p.done && !p.write_failed ? 0 : 1;
    if (p.timed_out)
        fprintf(stderr, PROG ": timed out after %g s\n", opt.timeout_s);

out:
    /* Aborts whatever is still in flight, as the daemon does on a stop. */
    ad_prom_source_destroy(src);
    if (metrics && opt.metrics_file && write_metrics(metrics, opt.metrics_file) < 0)
        rc = 1;
    if (fflush(stdout) != 0)
        rc = 1;
    if (timer)
        event_free(timer);
    if (p.base)
        event_base_free(p.base);
    free(p.reached);
    ad_metrics_destroy(metrics);
    ad_config_unref(cfg);
    ad_diag_destroy(diag);
    return rc;
}
