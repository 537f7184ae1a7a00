/*
 * The model store watcher on a real event loop, with a temporary folder store (versions
 * written by model_fixture, CURRENT replaced with a rename as the trainer does) and, with
 * --http, the same store served by a real nginx.
 *
 * Every wait is on a condition with a deadline; "nothing happens" is asserted after the
 * watcher has demonstrably looked again (its check counters went up).
 *
 * Without arguments: the folder store (unit.model_watch). With --http: the HTTP store
 * (unit.model_watch_http), exiting 77 when nginx is not installed.
 */

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "detect/model_watch.h"
#include "model_fixture.h"
#include "nginx_fixture.h"

#define MAX_EVENTS 32
#define HOUR_MS    (3600 * 1000)

static const struct fixture_model spec = {
    .layers = 1, .hidden = 8, .features = 3, .window = 6, .step_ms = 10000, .seed = 7};

struct rec {
    struct ad_model_watch *w;
    bool serve; /* tell the watcher a reported version is served, as serving.c would */
    int models;
    char model_names[MAX_EVENTS][64], versions[MAX_EVENTS][64];
    int refused;
    char refused_versions[MAX_EVENTS][64], errors[MAX_EVENTS][4608];
};

struct ctx {
    struct event_base *base;
    struct ad_metrics *metrics;
    char *store;
    struct ad_settings_model_store settings;
    struct rec rec;
    struct ad_model_watch *w;
    struct nginx_fixture *nginx;
    char url[256];
    int publications;
};

static void on_model(void *arg, const char *model, struct ad_model *m)
{
    struct rec *r = arg;
    if (r->models < MAX_EVENTS) {
        snprintf(r->model_names[r->models], 64, "%s", model);
        snprintf(r->versions[r->models], 64, "%s", ad_model_version(m));
    }
    r->models++;
    if (r->serve)
        ad_model_watch_set_serving(r->w, model, ad_model_version(m));
    ad_model_unref(m);
}

static void on_refused(void *arg, const char *model, const char *version, const char *error)
{
    struct rec *r = arg;
    (void)model;
    if (r->refused < MAX_EVENTS) {
        snprintf(r->refused_versions[r->refused], 64, "%s", version);
        snprintf(r->errors[r->refused], 4608, "%s", error);
    }
    r->refused++;
}

/* ---- waiting ---- */

static void expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

/* Runs the loop until expr holds; fails after 30 s. */
#define WAIT_FOR(c, expr)                                                      \
    do {                                                                       \
        int late_ = 0;                                                         \
        struct timeval tv_ = {30, 0};                                          \
        struct event *deadline_ = evtimer_new((c)->base, expired, &late_);     \
        evtimer_add(deadline_, &tv_);                                          \
        while (!(expr) && !late_)                                              \
            event_base_loop((c)->base, EVLOOP_ONCE);                           \
        event_free(deadline_);                                                 \
        if (!(expr))                                                           \
            fail_msg("%s:%d: not within 30 s: %s", __FILE__, __LINE__, #expr); \
    } while (0)

/* A metric's value ("name{labels}" as rendered), 0 when it is not there. */
static double metric(struct ctx *c, const char *series)
{
    size_t len;
    char *text = ad_metrics_render(c->metrics, &len);
    double v = 0;
    size_t n = strlen(series);
    for (char *line = text; line && *line;) {
        char *end = strchr(line, '\n');
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            v = strtod(line + n + 1, NULL);
        line = end ? end + 1 : NULL;
    }
    free(text);
    return v;
}

static double checks(struct ctx *c, const char *result)
{
    char series[128];
    snprintf(series, sizeof series, "anomalyd_model_store_checks_total{result=\"%s\"}", result);
    return metric(c, series);
}

static double errors(struct ctx *c, const char *reason)
{
    char series[128];
    snprintf(series, sizeof series, "anomalyd_model_store_errors_total{reason=\"%s\"}", reason);
    return metric(c, series);
}

static double all_checks(struct ctx *c)
{
    return checks(c, "unchanged") + checks(c, "new_version") + checks(c, "missing") +
           checks(c, "error");
}

/* Lets the watcher look at the store n more times and report nothing new. */
static void polls_pass(struct ctx *c, int n)
{
    double start = checks(c, "unchanged");
    WAIT_FOR(c, checks(c, "unchanged") >= start + n);
}

/* ---- the store ---- */

static void make_dir(const char *path)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", path, strerror(errno));
}

/*
 * Replaces <store>/<model>/CURRENT with a rename, as the trainer does. Each writing gets its
 * own mtime: nginx's ETag is the mtime in seconds and the size, which two writings in the same
 * second would share.
 */
static void write_current(struct ctx *c, const char *model, const char *text)
{
    char dir[4200], tmp[4300], path[4300];
    snprintf(dir, sizeof dir, "%s/%s", c->store, model);
    make_dir(dir);
    snprintf(tmp, sizeof tmp, "%s/.CURRENT.tmp", dir);
    snprintf(path, sizeof path, "%s/CURRENT", dir);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fprintf(f, "%s\n", text);
    assert_int_equal(fclose(f), 0);
    struct timespec times[2] = {{.tv_sec = 1700000000 + 10 * ++c->publications},
                                {.tv_sec = 1700000000 + 10 * c->publications}};
    assert_int_equal(utimensat(AT_FDCWD, tmp, times, 0), 0);
    assert_int_equal(rename(tmp, path), 0);
}

/* Writes the files of <store>/<model>/<version> (manifest naming them). */
static char *write_version(struct ctx *c, const char *model, const char *version,
                           const char *manifest_version)
{
    char *dir = NULL;
    char parent[4200];
    snprintf(parent, sizeof parent, "%s/%s", c->store, model);
    make_dir(parent);
    assert_true(asprintf(&dir, "%s/%s", parent, version) > 0);
    make_dir(dir);
    assert_int_equal(fixture_write(dir, &spec), 0);
    json_t *m = fixture_read_manifest(dir);
    json_object_set_new(m, "model", json_string(model));
    json_object_set_new(m, "version", json_string(manifest_version ? manifest_version : version));
    assert_int_equal(fixture_write_manifest(dir, m), 0);
    json_decref(m);
    return dir;
}

static void publish(struct ctx *c, const char *model, const char *version)
{
    free(write_version(c, model, version, NULL));
    write_current(c, model, version);
}

/*
 * A version whose weights end 20 bytes early: cut after the manifest was written (an
 * interrupted copy: the sha256 check refuses it), or by a writer that checksummed what it
 * wrote (the tensor check refuses it).
 */
static void publish_truncated(struct ctx *c, const char *model, const char *version,
                              bool checksummed)
{
    char *dir = write_version(c, model, version, NULL);
    char path[4300];
    size_t len;
    uint8_t *bytes = fixture_read_weights(dir, &len);
    assert_non_null(bytes);
    if (checksummed) {
        assert_int_equal(fixture_write_weights(dir, bytes, len - 20), 0);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        assert_int_equal(truncate(path, (off_t)(len - 20)), 0);
    }
    free(bytes);
    free(dir);
    write_current(c, model, version);
}

/* ---- set-up ---- */

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof *c);
    c->base = event_base_new();
    c->metrics = ad_metrics_new();
    c->store = fixture_tempdir();
    assert_non_null(c->store);
    c->settings.path = c->store;
    c->settings.poll_interval = 20;
    *state = c;
    return 0;
}

static int setup_http(void **state)
{
    setup(state);
    struct ctx *c = *state;
    c->nginx = nginx_fixture_start(c->store);
    assert_non_null(c->nginx);
    snprintf(c->url, sizeof c->url, "http://127.0.0.1:%d/", nginx_fixture_port(c->nginx));
    c->settings.path = NULL;
    c->settings.url = c->url;
    c->settings.poll_interval = 50;
    c->settings.http.timeout = 2000;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    ad_model_watch_destroy(c->w);
    nginx_fixture_destroy(c->nginx);
    fixture_remove(c->store);
    free(c->store);
    ad_metrics_destroy(c->metrics);
    event_base_free(c->base);
    free(c);
    return 0;
}

static void start_with(struct ctx *c, const char *const *models, size_t n,
                       const struct ad_model_expect *expect, bool no_inotify)
{
    char err[512];
    struct ad_model_watch_options o = {
        .base = c->base,
        .store = &c->settings,
        .models = models,
        .n_models = n,
        .expect = expect,
        .handler = {.on_model = on_model, .on_refused = on_refused, .arg = &c->rec},
        .metrics = c->metrics,
        .no_inotify = no_inotify,
    };
    c->w = ad_model_watch_new_with(&o, err, sizeof err);
    if (!c->w)
        fail_msg("%s", err);
    c->rec.w = c->w;
}

static void start(struct ctx *c, bool no_inotify)
{
    static const char *const models[] = {"m"};
    start_with(c, models, 1, NULL, no_inotify);
}

static json_t *status(struct ctx *c)
{
    json_t *out = json_object();
    ad_model_watch_status(c->w, out);
    return out;
}

/* ---- folder store ---- */

/* With a poll of an hour, only inotify can bring the news: the model folder appears after
 * the start (the store's watch) and CURRENT is then renamed over (the model folder's). */
static void test_inotify_alone_finds_new_versions(void **state)
{
    struct ctx *c = *state;
    c->settings.poll_interval = HOUR_MS;
    start(c, false);
    WAIT_FOR(c, checks(c, "missing") >= 1);
    json_t *s = status(c);
    assert_true(json_is_true(json_object_get(s, "inotify")));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(s, "models"), "m"), "state")),
                        "missing");
    json_decref(s);

    publish(c, "m", "v1");
    WAIT_FOR(c, c->rec.models == 1);
    assert_string_equal(c->rec.model_names[0], "m");
    assert_string_equal(c->rec.versions[0], "v1");

    publish(c, "m", "v2");
    WAIT_FOR(c, c->rec.models == 2);
    assert_string_equal(c->rec.versions[1], "v2");
    assert_int_equal(c->rec.refused, 0);
    assert_true(metric(c, "anomalyd_model_versions_found_total{model=\"m\"}") == 2);
    assert_true(metric(c, "anomalyd_model_load_duration_seconds_count") == 2);
}

/* Without inotify the poll finds versions; a refused one is reported once, and again only on
 * an explicit check or when CURRENT is written again. */
static void test_poll_and_refusals(void **state)
{
    struct ctx *c = *state;
    publish(c, "m", "v1");
    start(c, true);
    WAIT_FOR(c, c->rec.models == 1);
    assert_string_equal(c->rec.versions[0], "v1");
    json_t *s = status(c);
    assert_true(json_is_false(json_object_get(s, "inotify")));
    json_decref(s);

    publish_truncated(c, "m", "v2", true);
    WAIT_FOR(c, c->rec.refused == 1);
    assert_string_equal(c->rec.refused_versions[0], "v2");
    assert_non_null(strstr(c->rec.errors[0], "/m/v2/model.safetensors"));
    assert_non_null(strstr(c->rec.errors[0], "tensor head.")); /* the tensor cut off */
    assert_non_null(strstr(c->rec.errors[0], "past the"));

    polls_pass(c, 3);
    assert_int_equal(c->rec.refused, 1);
    assert_int_equal(c->rec.models, 1);
    s = status(c);
    json_t *m = json_object_get(json_object_get(s, "models"), "m");
    assert_string_equal(json_string_value(json_object_get(m, "current")), "v2");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(m, "refused"), "version")), "v2");
    json_decref(s);

    ad_model_watch_check(c->w); /* SIGHUP: an explicit check retries it */
    WAIT_FOR(c, c->rec.refused == 2);
    polls_pass(c, 3);
    assert_int_equal(c->rec.refused, 2);

    write_current(c, "m", "v2"); /* CURRENT written again, naming the same version */
    WAIT_FOR(c, c->rec.refused == 3);
    polls_pass(c, 3);
    assert_int_equal(c->rec.refused, 3);

    publish(c, "m", "v3");
    WAIT_FOR(c, c->rec.models == 2);
    assert_string_equal(c->rec.versions[1], "v3");
    assert_true(metric(c, "anomalyd_model_versions_refused_total{model=\"m\"}") == 3);
    assert_true(metric(c, "anomalyd_model_versions_found_total{model=\"m\"}") == 5);
    assert_true(errors(c, "bad_current") + errors(c, "read") + errors(c, "incomplete") == 0);
}

/* The version served, or the one reported last, is not reported again. */
static void test_same_version_reports_nothing(void **state)
{
    struct ctx *c = *state;
    c->rec.serve = true;
    publish(c, "m", "v1");
    start(c, true);
    WAIT_FOR(c, c->rec.models == 1);

    write_current(c, "m", "v1");
    polls_pass(c, 3);
    ad_model_watch_check(c->w);
    polls_pass(c, 2);
    assert_int_equal(c->rec.models, 1);

    /* Reported but not (or no longer) served: still not reported again while CURRENT
     * names it; the callee has had it. */
    ad_model_watch_set_serving(c->w, "m", NULL);
    write_current(c, "m", "v1");
    polls_pass(c, 3);
    assert_int_equal(c->rec.models, 1);

    /* A version served from elsewhere (the daemon's own load at start) is not reported. */
    free(write_version(c, "m", "v2", NULL));
    ad_model_watch_set_serving(c->w, "m", "v2");
    write_current(c, "m", "v2");
    polls_pass(c, 3);
    assert_int_equal(c->rec.models, 1);
    assert_int_equal(c->rec.refused, 0);
    assert_true(metric(c, "anomalyd_model_versions_found_total{model=\"m\"}") == 1);
}

static void test_announcements(void **state)
{
    struct ctx *c = *state;
    c->settings.poll_interval = HOUR_MS;
    start(c, true); /* neither inotify nor (within the test) a poll */
    WAIT_FOR(c, checks(c, "missing") >= 1);
    publish(c, "m", "v1");

    static const char good[] = "{\"model\": \"m\", \"version\": \"v1\", \"by\": \"kubeflow\"}";
    ad_model_watch_announce(c->w, good, strlen(good));
    WAIT_FOR(c, c->rec.models == 1);
    assert_string_equal(c->rec.versions[0], "v1");
    assert_true(metric(c, "anomalyd_model_announcements_total{result=\"accepted\"}") == 1);

    static const char *const bad[] = {"{oops",
                                      "[1]",
                                      "{\"version\": \"v1\"}",
                                      "{\"model\": \"m\", \"version\": \"../x\"}",
                                      "{\"model\": 7}",
                                      ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double before = all_checks(c);
        ad_model_watch_announce(c->w, bad[i], strlen(bad[i]));
        WAIT_FOR(c, all_checks(c) > before); /* then just a check */
    }
    assert_true(metric(c, "anomalyd_model_announcements_total{result=\"malformed\"}") == 6);

    static const char other[] = "{\"model\": \"other\", \"version\": \"v1\"}";
    ad_model_watch_announce(c->w, other, strlen(other));
    assert_true(metric(c, "anomalyd_model_announcements_total{result=\"unknown_model\"}") == 1);
    assert_int_equal(c->rec.models, 1);
    assert_int_equal(c->rec.refused, 0);
}

/* What the detector requires, and the names in the manifest, are checked. */
static void test_expectations_and_names(void **state)
{
    struct ctx *c = *state;
    static const char *const models[] = {"m", "n"};
    char *names[] = {"other.a", "other.b", "other.c"};
    struct ad_strlist features = {.items = names, .len = 3};
    struct ad_model_expect expect[2] = {{.features = &features, .window = spec.window},
                                        {.window = spec.window, .step_ms = spec.step_ms}};
    publish(c, "m", "v1");
    free(write_version(c, "n", "v5", "v1")); /* folder v5, manifest says v1 */
    write_current(c, "n", "v5");
    start_with(c, models, 2, expect, true);
    WAIT_FOR(c, c->rec.refused == 2);
    for (int i = 0; i < 2; i++) {
        if (strstr(c->rec.errors[i], "/m/v1/manifest.json"))
            assert_non_null(strstr(c->rec.errors[i], "features differ"));
        else
            assert_non_null(strstr(c->rec.errors[i], "CURRENT names model \"n\" version \"v5\""));
    }
    assert_int_equal(c->rec.models, 0);

    /* A valid, fitting version of n is taken. */
    publish(c, "n", "v6");
    WAIT_FOR(c, c->rec.models == 1);
    assert_string_equal(c->rec.model_names[0], "n");
}

/* A CURRENT that names no version, or a version whose files are not there yet, is a store
 * error retried at every poll, not a refusal. */
static void test_store_errors_are_retried(void **state)
{
    struct ctx *c = *state;
    start(c, true);
    write_current(c, "m", "not a version!");
    WAIT_FOR(c, errors(c, "bad_current") >= 2);

    char dir[4200];
    snprintf(dir, sizeof dir, "%s/m/v1", c->store);
    make_dir(dir);
    write_current(c, "m", "v1");
    WAIT_FOR(c, errors(c, "incomplete") >= 2);
    json_t *s = status(c);
    json_t *m = json_object_get(json_object_get(s, "models"), "m");
    assert_string_equal(json_string_value(json_object_get(m, "state")), "error");
    assert_string_equal(json_string_value(json_object_get(m, "error_reason")), "incomplete");
    json_decref(s);
    assert_int_equal(c->rec.refused, 0);

    free(write_version(c, "m", "v1", NULL));
    WAIT_FOR(c, c->rec.models == 1);
    assert_string_equal(c->rec.versions[0], "v1");
    s = status(c);
    m = json_object_get(json_object_get(s, "models"), "m");
    assert_string_equal(json_string_value(json_object_get(m, "state")), "ok");
    json_decref(s);
    /* The retries were not news. */
    assert_true(metric(c, "anomalyd_model_versions_found_total{model=\"m\"}") == 1);
}

static void test_bad_arguments(void **state)
{
    struct ctx *c = *state;
    char err[256];
    static const char *const dup[] = {"m", "m"};
    static const char *const slash[] = {"../m"};
    struct ad_settings_model_store none = {0};
    struct ad_model_watch_handler h = {0};
    assert_null(ad_model_watch_new(c->base, &c->settings, dup, 2, &h, NULL, err, sizeof err));
    assert_non_null(strstr(err, "listed twice"));
    assert_null(ad_model_watch_new(c->base, &c->settings, slash, 1, &h, NULL, err, sizeof err));
    assert_non_null(strstr(err, "not a model name"));
    assert_null(ad_model_watch_new(c->base, &none, dup, 1, &h, NULL, err, sizeof err));
    assert_non_null(strstr(err, "path or url"));
}

/* Destroyed while a version loads: the load is waited for and dropped, nothing leaks. */
static void test_destroy_while_loading(void **state)
{
    struct ctx *c = *state;
    publish(c, "m", "v1");
    start(c, true);
    WAIT_FOR(c, checks(c, "new_version") >= 1);
    ad_model_watch_destroy(c->w);
    c->w = NULL;
    assert_true(c->rec.models <= 1);
}

/* Replaces one file of <store>/<model>/<version> with what make(path) puts there. */
static void replace_file(struct ctx *c, const char *version, const char *file,
                         void (*make)(const char *path))
{
    char *dir = write_version(c, "m", version, NULL);
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    assert_int_equal(unlink(path), 0);
    make(path);
    free(dir);
}

static void make_fifo(const char *path)
{
    assert_int_equal(mkfifo(path, 0644), 0);
}

static void make_folder(const char *path)
{
    make_dir(path);
}

static void make_device(const char *path)
{
    assert_int_equal(symlink("/dev/zero", path), 0); /* would be read for ever */
}

/* FIFOs, folders and devices where the store's files should be: each is refused at once
 * with what it is, the thread that loads versions is never blocked (a later good version is
 * served) and a stop does not wait. The alarm turns a blocked open into a failure. */
static void test_special_files_are_refused(void **state)
{
    struct ctx *c = *state;
    char path[4300];
    alarm(60);
    snprintf(path, sizeof path, "%s/m", c->store);
    make_dir(path);
    snprintf(path, sizeof path, "%s/m/CURRENT", c->store);
    make_fifo(path);
    start(c, true);
    WAIT_FOR(c, errors(c, "bad_current") >= 1);
    json_t *s = status(c);
    const char *last = json_string_value(
        json_object_get(json_object_get(json_object_get(s, "models"), "m"), "error"));
    if (!last || !strstr(last, "/m/CURRENT: is a FIFO, not a regular file"))
        fail_msg("status: %s", last ? last : "(no error)");
    json_decref(s);
    assert_int_equal(unlink(path), 0);

    replace_file(c, "v1", "manifest.json", make_fifo);
    write_current(c, "m", "v1");
    WAIT_FOR(c, c->rec.refused == 1);
    assert_non_null(strstr(c->rec.errors[0], "/m/v1/manifest.json: is a FIFO, not a regular file"));

    replace_file(c, "v2", "model.safetensors", make_folder);
    write_current(c, "m", "v2");
    WAIT_FOR(c, c->rec.refused == 2);
    assert_non_null(
        strstr(c->rec.errors[1], "/m/v2/model.safetensors: is a directory, not a regular file"));

    replace_file(c, "v3", "model.safetensors", make_device);
    write_current(c, "m", "v3");
    WAIT_FOR(c, c->rec.refused == 3);
    assert_non_null(strstr(c->rec.errors[2],
                           "/m/v3/model.safetensors: is a character device, not a regular file"));

    publish(c, "m", "v4");
    WAIT_FOR(c, c->rec.models == 1);
    assert_string_equal(c->rec.versions[0], "v4");
    assert_true(metric(c, "anomalyd_model_versions_refused_total{model=\"m\"}") == 3);

    /* A FIFO manifest again, and a stop while the watcher looks at it. */
    replace_file(c, "v5", "manifest.json", make_fifo);
    write_current(c, "m", "v5");
    WAIT_FOR(c, checks(c, "new_version") >= 5);
    ad_model_watch_destroy(c->w);
    c->w = NULL;
    alarm(0);
}

/* ---- HTTP store ---- */

static void test_http_versions_etag_404_and_outage(void **state)
{
    struct ctx *c = *state;
    static const char *const models[] = {"m", "gone", "fail503"};
    struct ad_secret token = {.value = "tok"};
    c->settings.http.bearer_token = token;
    publish(c, "m", "v1");
    start_with(c, models, 3, NULL, false);
    WAIT_FOR(c, c->rec.models == 1);
    assert_string_equal(c->rec.versions[0], "v1");
    assert_string_equal(c->rec.model_names[0], "m");

    /* The next polls send the ETag and get 304s; the missing model is a 404, not an error; a
     * 5xx is an error, retried at every poll. */
    WAIT_FOR(c, checks(c, "unchanged") >= 2 && checks(c, "missing") >= 2);
    WAIT_FOR(c, errors(c, "http_status") >= 2);
    assert_true(errors(c, "connect") + errors(c, "not_found") + errors(c, "timeout") == 0);
    WAIT_FOR(c, nginx_fixture_count(c->nginx, "GET /m/CURRENT 304 \"Bearer tok\"") >= 1);
    assert_true(nginx_fixture_count(c->nginx, "GET /gone/CURRENT 404") >= 1);
    assert_true(nginx_fixture_count(c->nginx, "GET /m/v1/model.safetensors 200") == 1);
    json_t *s = status(c);
    assert_string_equal(json_string_value(json_object_get(s, "type")), "http");
    json_t *gone = json_object_get(json_object_get(s, "models"), "gone");
    assert_string_equal(json_string_value(json_object_get(gone, "state")), "missing");
    json_t *fail = json_object_get(json_object_get(s, "models"), "fail503");
    assert_string_equal(json_string_value(json_object_get(fail, "error_reason")), "http_status");
    assert_non_null(strstr(json_string_value(json_object_get(fail, "error")), "status 503"));
    json_decref(s);

    publish(c, "m", "v2");
    WAIT_FOR(c, c->rec.models == 2);
    assert_string_equal(c->rec.versions[1], "v2");

    /* nginx goes away: errors are counted at every poll; it comes back with a new version. */
    assert_int_equal(nginx_fixture_stop(c->nginx), 0);
    WAIT_FOR(c, errors(c, "connect") >= 6);
    s = status(c);
    json_t *m = json_object_get(json_object_get(s, "models"), "m");
    assert_string_equal(json_string_value(json_object_get(m, "error_reason")), "connect");
    json_decref(s);
    publish(c, "m", "v3");
    assert_int_equal(nginx_fixture_restart(c->nginx), 0);
    WAIT_FOR(c, c->rec.models == 3);
    assert_string_equal(c->rec.versions[2], "v3");
    s = status(c);
    m = json_object_get(json_object_get(s, "models"), "m");
    assert_string_equal(json_string_value(json_object_get(m, "state")), "ok");
    json_decref(s);
    assert_int_equal(c->rec.refused, 0);
}

static void test_http_refusal_and_missing_file(void **state)
{
    struct ctx *c = *state;
    publish_truncated(c, "m", "v1", false);
    start(c, false);
    WAIT_FOR(c, c->rec.refused == 1);
    assert_non_null(strstr(c->rec.errors[0], "/m/v1/model.safetensors: sha256 is"));
    assert_non_null(strstr(c->rec.errors[0], c->url + strlen("http://"))); /* names the URL */
    polls_pass(c, 3);
    assert_int_equal(c->rec.refused, 1);
    assert_int_equal(nginx_fixture_count(c->nginx, "GET /m/v1/model.safetensors"), 1);

    /* CURRENT moves to a version whose weights are not uploaded yet: 404s, retried. */
    char *dir = write_version(c, "m", "v2", NULL);
    char weights[4300];
    snprintf(weights, sizeof weights, "%s/model.safetensors", dir);
    size_t len;
    uint8_t *bytes = fixture_read_weights(dir, &len);
    assert_int_equal(unlink(weights), 0);
    write_current(c, "m", "v2");
    WAIT_FOR(c, errors(c, "not_found") >= 2);
    assert_int_equal(c->rec.refused, 1);
    assert_int_equal(c->rec.models, 0);

    FILE *f = fopen(weights, "wb");
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(bytes);
    free(dir);
    WAIT_FOR(c, c->rec.models == 1);
    assert_string_equal(c->rec.versions[0], "v2");
}

int main(int argc, char **argv)
{
    const struct CMUnitTest folder[] = {
        cmocka_unit_test_setup_teardown(test_inotify_alone_finds_new_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll_and_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_version_reports_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_announcements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expectations_and_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_errors_are_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_while_loading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_special_files_are_refused, setup, teardown),
    };
    const struct CMUnitTest http[] = {
        cmocka_unit_test_setup_teardown(test_http_versions_etag_404_and_outage, setup_http,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_http_refusal_and_missing_file, setup_http, teardown),
    };
    if (argc > 1 && strcmp(argv[1], "--http") == 0) {
        if (!nginx_fixture_available()) {
            fprintf(stderr, "skipped: nginx is not installed\n");
            return 77;
        }
        return cmocka_run_group_tests_name("http store", http, NULL, NULL);
    }
    return cmocka_run_group_tests_name("folder store", folder, NULL, NULL);
}
