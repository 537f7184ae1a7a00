/*
 * Config loading and validation.
 *
 * Golden cases: every tests/unit/config_cases/NAME.yaml must produce exactly the errors in
 * NAME.errors, one "line:column: message" per line, in file order. (AD_UPDATE_GOLDEN=1 writes
 * the .errors files from the current output; review the diff before committing it.) The
 * other tests check what a valid file decodes to.
 */

#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

#define CASES_DIR AD_SOURCE_DIR "/tests/unit/config_cases"

/* Only AD_UPDATE_GOLDEN=1 rewrites the expected files; an empty or other value does not. */
static int update_golden(void)
{
    const char *v = getenv("AD_UPDATE_GOLDEN");
    return v && strcmp(v, "1") == 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n] = '\0';
    fclose(fp);
    if (len)
        *len = (size_t)n;
    return buf;
}

static struct ad_config *load(const char *yaml, struct ad_diag *diag)
{
    return ad_config_load_buffer("test.yaml", yaml, strlen(yaml), diag);
}

static struct ad_config *load_ok(const char *yaml)
{
    struct ad_diag *diag = ad_diag_new();
    struct ad_config *cfg = load(yaml, diag);
    if (!cfg)
        ad_diag_print(diag, stderr);
    ad_diag_destroy(diag);
    assert_non_null(cfg);
    return cfg;
}

/* The diag messages as "line:col: text\n" lines (the file name left out). */
static char *render_errors(const struct ad_diag *diag)
{
    size_t cap = 1024, len = 0;
    char *out = malloc(cap);
    out[0] = '\0';
    for (size_t i = 0; i < ad_diag_count(diag); i++) {
        char line[1400];
        int n = snprintf(line, sizeof line, "%d:%d: %s\n", ad_diag_line(diag, i),
                         ad_diag_column(diag, i), ad_diag_text(diag, i));
        while (len + (size_t)n + 1 > cap)
            out = realloc(out, cap *= 2);
        memcpy(out + len, line, (size_t)n + 1);
        len += (size_t)n;
    }
    if (ad_diag_dropped(diag)) {
        char line[64];
        int n = snprintf(line, sizeof line, "(%zu more)\n", ad_diag_dropped(diag));
        out = realloc(out, len + (size_t)n + 1);
        memcpy(out + len, line, (size_t)n + 1);
    }
    return out;
}

static int run_case(const char *name)
{
    char yaml_path[512], errors_path[512];
    size_t len;
    int failed = 0;

    snprintf(yaml_path, sizeof yaml_path, "%s/%s.yaml", CASES_DIR, name);
    snprintf(errors_path, sizeof errors_path, "%s/%s.errors", CASES_DIR, name);
    char *yaml = read_file(yaml_path, &len);
    assert_non_null(yaml);

    struct ad_diag *diag = ad_diag_new();
    char case_name[300];
    snprintf(case_name, sizeof case_name, "%s.yaml", name);
    struct ad_config *cfg = ad_config_load_buffer(case_name, yaml, len, diag);
    char *got = render_errors(diag);

    if (update_golden()) {
        FILE *fp = fopen(errors_path, "w");
        fputs(got, fp);
        fclose(fp);
    }
    char *want = read_file(errors_path, NULL);
    if (cfg) {
        fprintf(stderr, "case %s: loaded, but every case must fail\n", name);
        failed = 1;
    } else if (!want || strcmp(got, want) != 0) {
        fprintf(stderr, "case %s:\n--- want\n%s--- got\n%s", name, want ? want : "(missing)\n",
                got);
        failed = 1;
    }
    ad_config_unref(cfg);
    ad_diag_destroy(diag);
    free(got);
    free(want);
    free(yaml);
    return failed;
}

static void test_golden_error_cases(void **state)
{
    (void)state;
    DIR *dir = opendir(CASES_DIR);
    struct dirent *e;
    int cases = 0, failures = 0;

    assert_non_null(dir);
    setenv("AD_TEST_SECRET", "s3cret", 1);
    unsetenv("AD_TEST_UNSET");
    while ((e = readdir(dir)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".yaml") != 0)
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(n - 5), e->d_name);
        failures += run_case(name);
        cases++;
    }
    closedir(dir);
    assert_true(cases >= 60);
    assert_int_equal(failures, 0);
}

static void test_every_error_has_a_position(void **state)
{
    /* Errors about the content of a file always point into it. */
    (void)state;
    struct ad_diag *diag = ad_diag_new();
    assert_null(load("sources:\n  - name: a\n    kafka: {topics: []}\n", diag));
    assert_true(ad_diag_count(diag) > 0);
    for (size_t i = 0; i < ad_diag_count(diag); i++) {
        assert_true(ad_diag_line(diag, i) > 0);
        assert_true(ad_diag_column(diag, i) > 0);
    }
    ad_diag_destroy(diag);
}

static void test_defaults(void **state)
{
    (void)state;
    struct ad_config *cfg = load_ok("daemon: {}\n");
    const struct ad_settings *s = ad_config_settings(cfg);
    assert_int_equal(s->daemon.log_level, AD_LOG_INFO);
    assert_int_equal(s->daemon.log_format, AD_LOG_LOGFMT);
    assert_string_equal(s->daemon.admin_listen, "127.0.0.1:9476");
    assert_int_equal(s->daemon.shutdown_timeout, 30000);
    assert_string_equal(s->kafka.group_id, "anomalyd");
    assert_string_equal(s->kafka.client_id, "anomalyd");
    assert_int_equal(s->kafka.brokers.len, 0);
    assert_int_equal(s->n_sources, 0);
    assert_int_equal(s->n_detectors, 0);
    assert_null(s->sinks.kafka.topic);
    assert_null(s->sinks.redis.url);
    assert_int_equal(s->scoring.backend, AD_BACKEND_AUTO);
    assert_int_equal(s->scoring.max_batch, 131072);
    assert_int_equal(s->scoring.queue_depth, 4);
    assert_int_equal(s->model_store.poll_interval, 30000);
    assert_int_equal(s->scoring.entity_metrics_limit, 10000);
    assert_int_equal(s->sinks.alertmanager.urls.len, 0);
    assert_null(s->daemon.admin_token.value);
    assert_int_equal(s->n_maintenance, 0);
    assert_null(s->feedback.path);
    assert_int_equal(s->feedback.history, 6 * 3600000);
    assert_int_equal(s->feedback.max_held, 1000);
    assert_int_equal(s->feedback.recent_alerts, 10000);
    ad_config_unref(cfg);
}

/* The on-call parts: the Alertmanager sink, maintenance windows, feedback. */
static void test_on_call_parts_decode(void **state)
{
    (void)state;
    struct ad_config *cfg =
        load_ok("daemon: {admin: {token: {env: HOME}}}\n"
                "sinks:\n"
                "  alertmanager:\n"
                "    urls: http://a:9093,http://b:9093\n"
                "    labels: {team: sre}\n"
                "    generator_url: 'https://g/explore?e={{entity}}&from={{window_start_ms}}'\n"
                "    bearer_token: secret\n"
                "maintenance:\n"
                "  - name: upgrade\n"
                "    start: 2026-11-22T02:00:00+01:00\n"
                "    end: 2026-11-22T04:00:00.5Z\n"
                "  - name: nightly\n"
                "    schedule: '30 2 * * *'\n"
                "    duration: 30m\n"
                "    timezone: Europe/Berlin\n");
    const struct ad_settings *s = ad_config_settings(cfg);
    const struct ad_settings_alertmanager_sink *am = &s->sinks.alertmanager;
    assert_int_equal(am->urls.len, 2);
    assert_string_equal(am->urls.items[1], "http://b:9093");
    assert_string_equal(am->severity, "warning");
    assert_int_equal(am->resend_interval, 60000);
    assert_int_equal(am->queue_limit, 10000);
    assert_int_equal(am->http.timeout, 10000);
    assert_string_equal(am->http.bearer_token.value, "secret");
    assert_string_equal(s->daemon.admin_token.value, getenv("HOME"));
    assert_int_equal(s->n_maintenance, 2);
    assert_int_equal(s->maintenance[0].start_ms, 1795309200000LL); /* 01:00Z */
    assert_int_equal(s->maintenance[0].end_ms, 1795320000500LL);
    assert_string_equal(s->maintenance[0].timezone, "UTC");
    assert_int_equal(s->maintenance[1].start_ms, INT64_MIN);
    assert_int_equal(s->maintenance[1].duration, 1800000);
    assert_string_equal(s->maintenance[1].timezone, "Europe/Berlin");
    ad_config_unref(cfg);
}

static const char full_pipeline[] =
    "daemon:\n"
    "  log: {level: debug, format: json}\n"
    "  admin: {listen: \"[::1]:0\"}\n"
    "  shutdown_timeout: 1m30s\n"
    "kafka:\n"
    "  brokers: \"k1:9092, k2:9093\"\n"
    "  properties:\n"
    "    linger.ms: 5\n"
    "    enable.idempotence: true\n"
    "    sasl.password: {env: AD_TEST_SECRET}\n"
    "sources:\n"
    "  - name: app\n"
    "    kafka:\n"
    "      topics: [logs, more-logs]\n"
    "      max_message_bytes: 64KiB\n"
    "      time: {path: ts, format: unix_ms, max_past: 1h}\n"
    "      labels: {service: svc, instance: \"host.name\"}\n"
    "      static_labels: {cluster: eu-1}\n"
    "      filters: ['kind == \"access\"', 'internal != true']\n"
    "      features:\n"
    "        requests: count\n"
    "        errors: count_if status >= 500\n"
    "        latency: mean latency_ms\n"
    "  - name: node\n"
    "    prometheus:\n"
    "      url: https://prom:9090\n"
    "      queries: {cpu: 'sum by (service, instance) (rate(cpu_seconds_total[1m]))'}\n"
    "      step: 30s\n"
    "      timeout: 3s\n"
    "      basic_auth: {username: u, password: {env: AD_TEST_SECRET}}\n"
    "      headers: {X-Scope-OrgID: tenant}\n"
    "detectors:\n"
    "  - name: checkout\n"
    "    keys: [service, instance]\n"
    "    features: [app.requests, app.errors, app.latency, node.cpu]\n"
    "    fill: {node.cpu: nan}\n"
    "    step: 30s\n"
    "    window: 32m\n"
    "    threshold: {likelihood: 0.999}\n"
    "    alert: {for: 2, repeat_interval: 0s}\n"
    "sinks:\n"
    "  kafka: {topic: alerts}\n"
    "  redis: {url: \"redis://bob:p%40ss@cache:6380/3\"}\n"
    "model_store: {path: models, poll_interval: 5s}\n"
    "scoring: {backend: cpu, cpu_threads: 2}\n";

static void test_full_pipeline_decodes(void **state)
{
    (void)state;
    setenv("AD_TEST_SECRET", "s3cret", 1);
    struct ad_config *cfg = load_ok(full_pipeline);
    const struct ad_settings *s = ad_config_settings(cfg);

    assert_int_equal(s->daemon.log_level, AD_LOG_DEBUG);
    assert_int_equal(s->daemon.log_format, AD_LOG_JSON);
    assert_string_equal(s->daemon.admin_listen, "[::1]:0");
    assert_int_equal(s->daemon.shutdown_timeout, 90000);

    assert_int_equal(s->kafka.brokers.len, 2);
    assert_string_equal(s->kafka.brokers.items[0], "k1:9092");
    assert_string_equal(s->kafka.brokers.items[1], "k2:9093");
    assert_int_equal(s->kafka.properties.len, 3);
    assert_string_equal(s->kafka.properties.keys[0], "linger.ms");
    assert_string_equal(s->kafka.properties.values[0].value, "5");
    assert_string_equal(s->kafka.properties.values[1].value, "true");
    assert_string_equal(s->kafka.properties.values[2].value, "s3cret");
    assert_string_equal(s->kafka.properties.values[2].origin, "env:AD_TEST_SECRET");

    assert_int_equal(s->n_sources, 2);
    const struct ad_settings_source *app = &s->sources[0];
    assert_int_equal(app->type, AD_SOURCE_KAFKA);
    assert_int_equal(app->kafka.topics.len, 2);
    assert_int_equal(app->kafka.max_message_bytes, 65536);
    assert_string_equal(app->kafka.time.path, "ts");
    assert_int_equal(app->kafka.time.format, AD_TIME_UNIX_MS);
    assert_int_equal(app->kafka.time.max_past, 3600000);
    assert_int_equal(app->kafka.time.max_future, 300000);
    assert_int_equal(app->kafka.n_filters, 2);
    assert_string_equal(app->kafka.filters[0].path, "kind");
    assert_int_equal(app->kafka.filters[0].op, AD_OP_EQ);
    assert_int_equal(app->kafka.filters[0].type, AD_LITERAL_STRING);
    assert_string_equal(app->kafka.filters[0].string, "access");
    assert_int_equal(app->kafka.filters[1].type, AD_LITERAL_BOOL);
    assert_true(app->kafka.filters[1].boolean);
    assert_int_equal(app->n_features, 3);
    assert_string_equal(app->features[0].name, "requests");
    assert_int_equal(app->features[0].kind, AD_FEATURE_COUNT);
    assert_int_equal(app->features[1].kind, AD_FEATURE_COUNT_IF);
    assert_int_equal(app->features[1].predicate.op, AD_OP_GE);
    assert_true(app->features[1].predicate.number == 500.0);
    assert_int_equal(app->features[2].kind, AD_FEATURE_MEAN);
    assert_string_equal(app->features[2].path, "latency_ms");

    const struct ad_settings_source *node = &s->sources[1];
    assert_int_equal(node->type, AD_SOURCE_PROMETHEUS);
    assert_int_equal(node->prometheus.step, 30000);
    assert_int_equal(node->prometheus.delay, 60000);
    assert_int_equal(node->prometheus.http.timeout, 3000);
    assert_string_equal(node->prometheus.http.basic_username, "u");
    assert_string_equal(node->prometheus.http.basic_password.value, "s3cret");
    assert_int_equal(node->prometheus.http.headers.len, 1);
    assert_int_equal(node->n_features, 1);
    assert_int_equal(node->features[0].kind, AD_FEATURE_QUERY);

    assert_int_equal(s->n_detectors, 1);
    const struct ad_settings_detector *d = &s->detectors[0];
    assert_int_equal(d->window_len, 64);
    assert_string_equal(d->model, "checkout");
    assert_true(fabs(d->threshold_likelihood - 0.999) < 1e-12);
    /* A likelihood of 0.999 is a surprise of 3. */
    assert_true(fabs(d->threshold_surprise - 3.0) < 1e-9);
    assert_true(isnan(d->threshold_score));
    assert_int_equal(d->alert.for_windows, 2);
    assert_int_equal(d->alert.resolve_for, 100);
    assert_int_equal(d->alert.repeat_interval, 0);
    assert_int_equal(d->refs[0].source, 0);
    assert_int_equal(d->refs[0].feature, 0);
    assert_int_equal(d->refs[0].fill, AD_FILL_ZERO);
    assert_int_equal(d->refs[2].fill, AD_FILL_CARRY);
    assert_int_equal(d->refs[3].source, 1);
    assert_int_equal(d->refs[3].fill, AD_FILL_NAN);

    assert_string_equal(s->sinks.kafka.topic, "alerts");
    assert_string_equal(s->sinks.redis.host, "cache");
    assert_int_equal(s->sinks.redis.port, 6380);
    assert_int_equal(s->sinks.redis.db, 3);
    assert_string_equal(s->sinks.redis.username.value, "bob");
    assert_string_equal(s->sinks.redis.password.value, "p@ss");
    assert_string_equal(s->sinks.redis.stream, "anomalyd:alerts");

    /* Relative to the folder of "test.yaml", which has none: as written. */
    assert_string_equal(s->model_store.path, "models");
    assert_int_equal(s->scoring.backend, AD_BACKEND_CPU);
    assert_int_equal(s->scoring.cpu_threads, 2);

    ad_config_unref(cfg);
}

/* The detection defaults (docs/scoring.md, docs/alerts.md). */
static void test_detection_defaults(void **state)
{
    (void)state;
    struct ad_config *cfg =
        load_ok("model_store: {path: /tmp}\nsources:\n  - name: m\n    prometheus: {url: "
                "\"http://p:9090\", queries: {v: up}}\ndetectors:\n  - name: d\n    keys: [i]\n"
                "    features: [m.v]\n  - name: e\n    keys: [i]\n    features: [m.v]\n"
                "    threshold: {likelihood: 0.99999}\n    direction: {m.v: down}\n"
                "    min_deviation: {m.v: \"2.5, 10%\"}\n    streams: seasonal\n");
    const struct ad_settings_detector *d = &ad_config_settings(cfg)->detectors[0];
    assert_true(d->threshold_surprise == AD_DEFAULT_SURPRISE && AD_DEFAULT_SURPRISE == 5.0);
    assert_true(isnan(d->threshold_likelihood));
    assert_true(isnan(d->threshold_score)); /* no raw-score threshold unless set */
    assert_int_equal(d->alert.for_windows, 1);
    assert_int_equal(d->alert.resolve_for, 100);
    assert_int_equal(d->alert.repeat_interval, 0);
    assert_true(d->stream_lstm && d->stream_seasonal);
    assert_int_equal(d->refs[0].control.direction, AD_DIRECTION_BOTH);
    assert_true(d->refs[0].control.min_abs == 0 && d->refs[0].control.min_rel == 0);
    /* The same threshold given as a likelihood. */
    const struct ad_settings_detector *e = &ad_config_settings(cfg)->detectors[1];
    assert_true(fabs(e->threshold_surprise - 5.0) < 1e-6);
    assert_int_equal(e->refs[0].control.direction, AD_DIRECTION_DOWN);
    assert_true(e->refs[0].control.min_abs == 2.5 &&
                fabs(e->refs[0].control.min_rel - 0.1) < 1e-12);
    assert_true(!e->stream_lstm && e->stream_seasonal);
    ad_config_unref(cfg);
}

/* entity_idle_timeout scales with the window unless set: sparse series keep their history. */
static void test_entity_idle_timeout_default(void **state)
{
    (void)state;
    static const struct {
        const char *step, *window, *set;
        int64_t expect;
    } cases[] = {
        {"10s", "5m", NULL, 3600 * 1000},             /* second-scale traffic: 1h */
        {"1m", "1h", NULL, 4 * 3600 * 1000},          /* 4 windows */
        {"1h", "16h", NULL, 64LL * 3600 * 1000},      /* hourly data: gaps of days survive */
        {"1h", "16h", "30m", 30 * 60 * 1000},         /* set: as set */
        {"1d", "12w", NULL, 30LL * 24 * 3600 * 1000}, /* the bound */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[1024];
        snprintf(yaml, sizeof yaml,
                 "model_store: {path: /tmp}\nsources:\n  - name: m\n    prometheus: {url: "
                 "\"http://p:9090\", queries: {v: "
                 "up}}\ndetectors:\n  - name: d\n    keys: [instance]\n    features: [m.v]\n"
                 "    step: %s\n    window: %s\n%s%s%s",
                 cases[i].step, cases[i].window, cases[i].set ? "    entity_idle_timeout: " : "",
                 cases[i].set ? cases[i].set : "", cases[i].set ? "\n" : "");
        struct ad_config *cfg = load_ok(yaml);
        assert_int_equal(ad_config_settings(cfg)->detectors[0].entity_idle_timeout,
                         cases[i].expect);
        ad_config_unref(cfg);
    }
}

static void test_anchors_and_aliases(void **state)
{
    (void)state;
    struct ad_config *cfg = load_ok("kafka:\n"
                                    "  brokers: &b [\"a:1\", \"b:2\"]\n"
                                    "sinks:\n"
                                    "  kafka:\n"
                                    "    topic: &t alerts\n"
                                    "model_store:\n"
                                    "  path: *t\n");
    const struct ad_settings *s = ad_config_settings(cfg);
    assert_int_equal(s->kafka.brokers.len, 2);
    assert_string_equal(s->model_store.path, "alerts");
    ad_config_unref(cfg);
}

static void test_relative_paths_follow_the_config_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/anomalyd-test-XXXXXX";
    char path[512], secret[512];
    assert_non_null(mkdtemp(dir));
    snprintf(secret, sizeof secret, "%s/token", dir);
    FILE *fp = fopen(secret, "w");
    fputs("t0ken\n", fp); /* the trailing newline is not part of the secret */
    fclose(fp);
    snprintf(path, sizeof path, "%s/anomalyd.yaml", dir);
    fp = fopen(path, "w");
    fputs("model_store:\n  url: https://store/models\n  bearer_token: {file: token}\n", fp);
    fclose(fp);

    struct ad_diag *diag = ad_diag_new();
    struct ad_config *cfg = ad_config_load_file(path, diag);
    assert_non_null(cfg);
    const struct ad_settings *s = ad_config_settings(cfg);
    assert_string_equal(s->model_store.http.bearer_token.value, "t0ken");
    assert_string_equal(s->model_store.http.bearer_token.origin, "file:token");
    assert_string_equal(ad_config_path(cfg), path);
    ad_config_unref(cfg);

    fp = fopen(path, "w");
    fputs("model_store:\n  path: models\n", fp);
    fclose(fp);
    cfg = ad_config_load_file(path, diag);
    assert_non_null(cfg);
    char want[600];
    snprintf(want, sizeof want, "%s/models", dir);
    assert_string_equal(ad_config_settings(cfg)->model_store.path, want);
    ad_config_unref(cfg);
    ad_diag_destroy(diag);
    unlink(secret);
    unlink(path);
    rmdir(dir);
}

static void test_missing_file(void **state)
{
    (void)state;
    struct ad_diag *diag = ad_diag_new();
    assert_null(ad_config_load_file("/nonexistent/anomalyd.yaml", diag));
    assert_int_equal(ad_diag_count(diag), 1);
    assert_string_equal(ad_diag_message(diag, 0),
                        "/nonexistent/anomalyd.yaml: cannot open: No such file or directory");
    ad_diag_destroy(diag);
}

/* A FIFO, a folder or a device where the config or a secret file should be: refused at once
 * with what it is (a FIFO would block open(2) until a writer came; the alarm makes that a
 * failure), and the rest of the file is still checked. */
static void test_special_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/anomalyd-test-XXXXXX";
    char path[512], fifo[512], want[1024];
    assert_non_null(mkdtemp(dir));
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(30);

    struct ad_diag *diag = ad_diag_new();
    assert_null(ad_config_load_file(fifo, diag));
    assert_int_equal(ad_diag_count(diag), 1);
    snprintf(want, sizeof want, "%s: cannot open: is a FIFO, not a regular file", fifo);
    assert_string_equal(ad_diag_message(diag, 0), want);
    ad_diag_destroy(diag);

    diag = ad_diag_new();
    assert_null(ad_config_load_file(dir, diag));
    snprintf(want, sizeof want, "%s: cannot open: is a directory, not a regular file", dir);
    assert_string_equal(ad_diag_message(diag, 0), want);
    ad_diag_destroy(diag);

    diag = ad_diag_new();
    assert_null(ad_config_load_file("/dev/zero", diag)); /* would be read for ever */
    assert_string_equal(ad_diag_message(diag, 0),
                        "/dev/zero: cannot open: is a character device, not a regular file");
    ad_diag_destroy(diag);

    snprintf(path, sizeof path, "%s/anomalyd.yaml", dir);
    FILE *fp = fopen(path, "w");
    fputs("kafka:\n  properties:\n    sasl.password: {file: /dev/zero}\n"
          "model_store:\n  url: https://store/models\n  bearer_token: {file: fifo}\n"
          "  bogus: 1\n",
          fp);
    fclose(fp);
    diag = ad_diag_new();
    assert_null(ad_config_load_file(path, diag));
    char *text = render_errors(diag);
    snprintf(
        want, sizeof want,
        "3:27: kafka.properties[\"sasl.password\"].file: cannot read secret file /dev/zero: is a "
        "character device, not a regular file\n"
        "6:24: model_store.bearer_token.file: cannot read secret file %s/fifo: is a FIFO, not a "
        "regular file\n"
        "7:3: model_store.bogus: unknown key \"bogus\" in model_store\n",
        dir);
    assert_string_equal(text, want);
    free(text);
    ad_diag_destroy(diag);

    alarm(0);
    unlink(path);
    unlink(fifo);
    rmdir(dir);
}

static void test_oversized_file(void **state)
{
    (void)state;
    size_t len = AD_CONFIG_MAX_BYTES + 1;
    char *buf = malloc(len);
    memset(buf, '#', len);
    struct ad_diag *diag = ad_diag_new();
    assert_null(ad_config_load_buffer("big.yaml", buf, len, diag));
    assert_int_equal(ad_diag_count(diag), 1);
    assert_non_null(strstr(ad_diag_message(diag, 0), "larger than"));
    ad_diag_destroy(diag);
    free(buf);
}

static void test_sha256_is_of_the_bytes(void **state)
{
    (void)state;
    struct ad_config *a = load_ok("daemon: {}\n");
    struct ad_config *b = load_ok("daemon: {}\n# same settings, other bytes\n");
    /* sha256("daemon: {}\n") */
    assert_string_equal(ad_config_sha256(a),
                        "5c224503370d1945ba8663777805de81a47f40e9163a2540873d8df50b099dd2");
    assert_string_not_equal(ad_config_sha256(a), ad_config_sha256(b));
    ad_config_unref(a);
    ad_config_unref(b);
}

static void collect(const char *key, void *arg)
{
    char *out = arg;
    strcat(out, key);
    strcat(out, ";");
}

static void test_restart_changes(void **state)
{
    (void)state;
    struct ad_config *a = load_ok("daemon: {admin: {listen: \"127.0.0.1:1\"}, log: {level: "
                                  "info}}\nkafka: {brokers: \"b:1\"}\nscoring: {backend: cpu}\n");
    struct ad_config *b = load_ok("daemon: {admin: {listen: \"127.0.0.1:2\"}, log: {level: "
                                  "debug}}\nkafka: {brokers: \"b:1\"}\nscoring: {backend: cpu}\n");
    struct ad_config *c = load_ok("daemon: {admin: {listen: \"127.0.0.1:1\"}}\nkafka: {brokers: "
                                  "\"b:2\", properties: {linger.ms: 1}}\nscoring: {backend: "
                                  "auto, max_batch: 10}\n");
    char keys[512] = "";

    assert_int_equal(ad_config_restart_changes(a, a, collect, keys), 0);
    assert_string_equal(keys, "");
    /* The log level changes live; the listen address does not. */
    assert_int_equal(ad_config_restart_changes(a, b, collect, keys), 1);
    assert_string_equal(keys, "daemon.admin.listen;");
    keys[0] = '\0';
    /* Kafka settings change live (the pipeline is rebuilt); the backend does not. */
    assert_int_equal(ad_config_restart_changes(a, c, collect, keys), 1);
    assert_string_equal(keys, "scoring.backend;");
    ad_config_unref(a);
    ad_config_unref(b);
    ad_config_unref(c);
}

/* What a reload logs as changed, and the sections it compares to choose between a sink swap
 * and a rebuild (docs/config.md, "Reloading"). */
static void test_changes_and_nested_sections(void **state)
{
    (void)state;
    struct ad_config *a =
        load_ok("daemon: {log: {level: info}}\nkafka: {brokers: \"b:1\"}\nsinks: {redis: {url: "
                "\"redis://h:1/0\", queue_limit: 10}}\n");
    struct ad_config *b =
        load_ok("daemon: {log: {level: debug}}\nkafka: {brokers: \"b:1\"}\nsinks: {redis: "
                "{url: \"redis://h:1/0\", queue_limit: 11}}\n");
    char keys[512] = "";
    static const char *const redis[] = {"sinks.redis", NULL};
    static const char *const kafka_sink[] = {"sinks.kafka", NULL};
    static const char *const data_path[] = {"kafka", "sources", "detectors", NULL};

    ad_config_changes(a, a, collect, keys);
    assert_string_equal(keys, "");
    /* Every changed key by its path, live or not. */
    ad_config_changes(a, b, collect, keys);
    assert_string_equal(keys, "daemon.log.level;sinks.redis.queue_limit;");
    assert_false(ad_config_sections_equal(a, b, redis));
    assert_true(ad_config_sections_equal(a, b, kafka_sink));
    assert_true(ad_config_sections_equal(a, b, data_path));
    ad_config_unref(a);
    ad_config_unref(b);
}

static void test_reference_covers_every_section(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    ad_config_write_reference(fp);
    fclose(fp);
    const char *sections[] = {"### `daemon`",
                              "### `daemon.log`",
                              "### `daemon.admin`",
                              "### `kafka`",
                              "### `sources[]`",
                              "### `sources[].kafka`",
                              "### `sources[].kafka.time`",
                              "### `sources[].prometheus`",
                              "### `sources[].prometheus.basic_auth`",
                              "### `sources[].prometheus.tls`",
                              "### `detectors[]`",
                              "### `detectors[].threshold`",
                              "### `detectors[].alert`",
                              "### `sinks.kafka`",
                              "### `sinks.redis`",
                              "### `model_store`",
                              "### `scoring`"};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        if (!strstr(text, sections[i]))
            fail_msg("reference lacks %s", sections[i]);
    }
    assert_non_null(strstr(text, "| `shutdown_timeout` | duration, between 0s and 1h | `30s` | "
                                 "live |"));
    assert_non_null(strstr(text, "| `listen` | string | `127.0.0.1:9476` | restart |"));
    free(text);
}

static void test_references_are_shared_and_released(void **state)
{
    (void)state;
    struct ad_config *cfg = load_ok("daemon: {}\n");
    assert_ptr_equal(ad_config_ref(cfg), cfg);
    ad_config_unref(cfg);
    assert_string_equal(ad_config_settings(cfg)->kafka.group_id, "anomalyd");
    ad_config_unref(cfg); /* the last reference: ASan and valgrind see it freed */
    ad_config_unref(NULL);
}

static void test_split_address(void **state)
{
    (void)state;
    char host[64];
    int port;
    assert_int_equal(ad_config_split_address("127.0.0.1:9476", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9476);
    assert_int_equal(ad_config_split_address("[::1]:0", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 0);
    assert_int_equal(ad_config_split_address(":80", host, sizeof host, &port), 0);
    assert_string_equal(host, "");
    assert_int_equal(ad_config_split_address("host", host, sizeof host, &port), -1);
    assert_int_equal(ad_config_split_address("host:", host, sizeof host, &port), -1);
    assert_int_equal(ad_config_split_address("host:65536", host, sizeof host, &port), -1);
    assert_int_equal(ad_config_split_address("::1:80", host, sizeof host, &port), -1);
    assert_int_equal(ad_config_split_address("[::1]80", host, sizeof host, &port), -1);
    assert_int_equal(ad_config_split_address("h:8x", host, sizeof host, &port), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_error_cases),
        cmocka_unit_test(test_every_error_has_a_position),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_pipeline_decodes),
        cmocka_unit_test(test_on_call_parts_decode),
        cmocka_unit_test(test_detection_defaults),
        cmocka_unit_test(test_entity_idle_timeout_default),
        cmocka_unit_test(test_anchors_and_aliases),
        cmocka_unit_test(test_relative_paths_follow_the_config_file),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_special_files),
        cmocka_unit_test(test_oversized_file),
        cmocka_unit_test(test_sha256_is_of_the_bytes),
        cmocka_unit_test(test_restart_changes),
        cmocka_unit_test(test_changes_and_nested_sections),
        cmocka_unit_test(test_reference_covers_every_section),
        cmocka_unit_test(test_references_are_shared_and_released),
        cmocka_unit_test(test_split_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
