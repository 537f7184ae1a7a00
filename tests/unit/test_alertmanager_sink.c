/*
 * The Alertmanager sink against real Alertmanagers (Debian's prometheus-alertmanager), started
 * by each test on free loopback ports with clustering off, and read back through their API:
 * the alert in Alertmanager's terms, acknowledgements only once every Alertmanager has it, an
 * Alertmanager down and back, resolutions, resends that bring an alert back to an Alertmanager
 * that lost it, and alerts restored after a restart. Skips (77) without the binary.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>

#include "base/clock.h"
#include "base/metrics.h"
#include "stream/alertmanager_sink.h"
#include "net_fixture.h"

#define ALERTMANAGER "/usr/bin/prometheus-alertmanager"
/* A bound on every wait, so that a broken build fails instead of hanging; no assertion is
 * about how long anything takes. */
#define WAIT_MS 60000

struct am {
    pid_t pid;
    int port;
    char dir[PATH_MAX];
};

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    json_t **out = arg;
    json_t *s = *out;
    char *joined = NULL;
    if (asprintf(&joined, "%s%.*s", json_string_value(s), (int)(size * n), data) < 0)
        return 0;
    json_string_set(s, joined);
    free(joined);
    return size * n;
}

/* GET url; the body as a string, NULL when no 200 came. */
static char *http_get(const char *url)
{
    CURL *c = curl_easy_init();
    json_t *body = json_string("");
    long status = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    char *out = rc == CURLE_OK && status == 200 ? strdup(json_string_value(body)) : NULL;
    json_decref(body);
    return out;
}

static bool am_ready(const struct am *a)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/-/ready", a->port);
    char *body = http_get(url);
    free(body);
    return body != NULL;
}

static void am_start(struct am *a)
{
    char config[PATH_MAX + 16], storage[PATH_MAX + 32], listen[64], log[PATH_MAX + 16];
    snprintf(config, sizeof config, "%s/am.yml", a->dir);
    snprintf(storage, sizeof storage, "--storage.path=%s/data", a->dir);
    snprintf(listen, sizeof listen, "--web.listen-address=127.0.0.1:%d", a->port);
    snprintf(log, sizeof log, "%s/am.log", a->dir);
    FILE *f = fopen(config, "w");
    assert_non_null(f);
    fputs("route: {receiver: none}\nreceivers: [{name: none}]\n", f);
    fclose(f);
    char config_arg[PATH_MAX + 32];
    snprintf(config_arg, sizeof config_arg, "--config.file=%s", config);
    a->pid = fork();
    assert_true(a->pid >= 0);
    if (a->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* dies with the test */
        FILE *out = freopen(log, "a", stderr);
        (void)out;
        execl(ALERTMANAGER, ALERTMANAGER, config_arg, storage, listen,
              "--cluster.listen-address=", "--log.level=warn", (char *)NULL);
        _exit(127);
    }
    int64_t deadline = ad_clock_mono_ms() + WAIT_MS;
    while (!am_ready(a)) {
        assert_true(ad_clock_mono_ms() < deadline);
        assert_int_equal(waitpid(a->pid, NULL, WNOHANG), 0);
        usleep(50000);
    }
}

static void am_stop(struct am *a)
{
    if (a->pid > 0) {
        kill(a->pid, SIGKILL);
        waitpid(a->pid, NULL, 0);
        a->pid = 0;
    }
}

static void am_new(struct am *a)
{
    snprintf(a->dir, sizeof a->dir, "/tmp/anomalyd-am-XXXXXX");
    assert_non_null(mkdtemp(a->dir));
    a->port = net_fixture_free_port();
    am_start(a);
}

static void am_free(struct am *a)
{
    char cmd[PATH_MAX + 16];
    am_stop(a);
    snprintf(cmd, sizeof cmd, "rm -rf %s", a->dir);
    assert_int_equal(system(cmd), 0);
}

/* The active alerts of one Alertmanager (its API), a new reference. */
static json_t *am_alerts(const struct am *a)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v2/alerts", a->port);
    char *body = http_get(url);
    json_t *out = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    return out ? out : json_array();
}

/* The active alert whose label instance is `instance`, or NULL (a new reference). */
static json_t *am_find(const struct am *a, const char *instance)
{
    json_t *all = am_alerts(a), *found = NULL, *alert;
    size_t i;
    json_array_foreach (all, i, alert) {
        const char *v =
            json_string_value(json_object_get(json_object_get(alert, "labels"), "instance"));
        if (v && strcmp(v, instance) == 0)
            found = json_incref(alert);
    }
    json_decref(all);
    return found;
}

/* ---- the sink on a loop ---- */

struct fixture {
    struct event_base *base;
    struct ad_metrics *metrics;
    struct ad_alertmanager_sink *sink;
    struct am am[2];
    size_t n_am;
    uint64_t acked[16];
    size_t n_acked;
};

static void on_ack(void *arg, uint64_t token)
{
    struct fixture *f = arg;
    assert_true(f->n_acked < 16);
    f->acked[f->n_acked++] = token;
}

static bool acked(struct fixture *f, uint64_t token)
{
    for (size_t i = 0; i < f->n_acked; i++)
        if (f->acked[i] == token)
            return true;
    return false;
}

/* Runs the loop until pred holds (fails after WAIT_MS). */
static void run_until(struct fixture *f, bool (*pred)(struct fixture *f, void *arg), void *arg)
{
    int64_t deadline = ad_clock_mono_ms() + WAIT_MS;
    while (!pred(f, arg)) {
        assert_true(ad_clock_mono_ms() < deadline);
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        usleep(5000);
    }
}

/* Runs the loop for about ms, for checks that something does not happen. */
static void run_for(struct fixture *f, int64_t ms)
{
    int64_t end = ad_clock_mono_ms() + ms;
    while (ad_clock_mono_ms() < end) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        usleep(5000);
    }
}

static bool is_acked(struct fixture *f, void *arg)
{
    return acked(f, *(uint64_t *)arg);
}

struct seen {
    size_t am;
    const char *instance;
    bool present;
};

static bool has_alert(struct fixture *f, void *arg)
{
    struct seen *s = arg;
    json_t *a = am_find(&f->am[s->am], s->instance);
    json_decref(a);
    return (a != NULL) == s->present;
}

static int setup(void **state, size_t n_am, int64_t resend_ms)
{
    if (access(ALERTMANAGER, X_OK) != 0)
        return -1;
    struct fixture *f = calloc(1, sizeof *f);
    f->base = event_base_new();
    f->metrics = ad_metrics_new();
    f->n_am = n_am;
    char urls[2][64];
    char *items[2];
    for (size_t i = 0; i < n_am; i++) {
        am_new(&f->am[i]);
        snprintf(urls[i], sizeof urls[i], "http://127.0.0.1:%d/", f->am[i].port);
        items[i] = urls[i];
    }
    char *label_keys[] = {"team"}, *label_values[] = {"sre"};
    struct ad_settings_alertmanager_sink s = {
        .urls = {.items = items, .len = n_am},
        .severity = "page",
        .labels = {.keys = label_keys, .values = label_values, .len = 1},
        .generator_url = "https://grafana/explore?i={{labels.instance}}&from={{window_start_ms}}",
        .resend_interval = resend_ms,
        .queue_limit = 3,
        .http = {.timeout = 5000},
    };
    char err[256];
    f->sink = ad_alertmanager_sink_new(f->base, &s, f->metrics, on_ack, f, err, sizeof err);
    if (!f->sink)
        fail_msg("%s", err);
    *state = f;
    return 0;
}

static int setup_one(void **state)
{
    return setup(state, 1, 3600000);
}

static int setup_pair(void **state)
{
    return setup(state, 2, 3600000);
}

static int setup_resending(void **state)
{
    return setup(state, 1, 200);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ad_alertmanager_sink_destroy(f->sink);
    for (size_t i = 0; i < f->n_am; i++)
        am_free(&f->am[i]);
    ad_metrics_destroy(f->metrics);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* An alert document as detect/alerts.c writes it (docs/alerts.md), starting a minute ago. */
static char *document(const char *instance, const char *state, const char *id)
{
    char starts[40], ends[40], wstart[40], *doc = NULL;
    int64_t now = ad_clock_wall_ms();
    ad_clock_format(now - 60000, starts, sizeof starts);
    ad_clock_format(now - 1000, ends, sizeof ends);
    ad_clock_format(now - 3660000, wstart, sizeof wstart);
    bool resolved = strcmp(state, "resolved") == 0;
    int n = asprintf(
        &doc,
        "{\"id\":\"%s\",\"fingerprint\":\"81850d5a4d6ee0b9\",\"detector\":\"checkout\","
        "\"entity\":\"service=checkout,instance=%s\",\"labels\":{\"service\":\"checkout\","
        "\"instance\":\"%s\",\"pod.name\":\"p-1\"},\"state\":\"%s\",\"reason\":\"%s\","
        "\"flapping\":false,\"starts_at\":\"%s\"%s%s%s,\"window_start\":\"%s\","
        "\"window_end\":\"%s\",\"score\":8.812346,\"seasonal_score\":null,\"surprise\":7.21,"
        "\"stream\":\"lstm\",\"recurring\":false,\"likelihood\":0.9999999384,"
        "\"anomalous\":true,\"model\":\"checkout\",\"model_version\":\"20261121-1\","
        "\"top_features\":[{\"feature\":\"app.errors\",\"share\":0.612},{\"feature\":"
        "\"app.latency\",\"share\":0.254}],\"summary\":\"checkout: %s anomalous\","
        "\"notified_at\":\"%s\"}",
        id, instance, instance, state, resolved ? "normal" : "anomalous", starts,
        resolved ? ",\"ends_at\":\"" : "", resolved ? ends : "", resolved ? "\"" : "", wstart,
        starts, instance, starts);
    assert_true(n > 0);
    return doc;
}

static void send_alert(struct fixture *f, const char *instance, const char *state, const char *id,
                       uint64_t token)
{
    char entity[64];
    snprintf(entity, sizeof entity, "service=checkout,instance=%s", instance);
    char *doc = document(instance, state, id);
    struct ad_alert_msg msg = {
        .id = id, .detector = "checkout", .entity = entity, .json = doc, .json_len = strlen(doc)};
    assert_int_equal(ad_alertmanager_sink_send(f->sink, &msg, token), 0);
    free(doc);
}

static const char *label(json_t *alert, const char *name)
{
    return json_string_value(json_object_get(json_object_get(alert, "labels"), name));
}

static const char *note(json_t *alert, const char *name)
{
    return json_string_value(json_object_get(json_object_get(alert, "annotations"), name));
}

static void test_alert_in_alertmanagers_terms(void **state)
{
    struct fixture *f = *state;
    uint64_t token = 7;
    int64_t before = ad_clock_wall_ms();
    send_alert(f, "c-1", "firing", "48bc2b2be172cf4e9c810b07d3b67dc6", token);
    run_until(f, is_acked, &token);
    int64_t after = ad_clock_wall_ms();
    json_t *a = am_find(&f->am[0], "c-1");
    assert_non_null(a);
    assert_string_equal(label(a, "alertname"), "checkout");
    assert_string_equal(label(a, "service"), "checkout");
    assert_string_equal(label(a, "pod_name"), "p-1"); /* a Prometheus label name */
    assert_string_equal(label(a, "severity"), "page");
    assert_string_equal(label(a, "team"), "sre");
    assert_string_equal(note(a, "alert_id"), "48bc2b2be172cf4e9c810b07d3b67dc6");
    assert_string_equal(note(a, "surprise"), "7.21");
    assert_string_equal(note(a, "score"), "8.81235");
    assert_string_equal(note(a, "model_version"), "20261121-1");
    assert_string_equal(note(a, "top_features"), "app.errors 61.2%, app.latency 25.4%");
    assert_string_equal(note(a, "summary"), "checkout: c-1 anomalous");
    assert_null(note(a, "seasonal_score")); /* null numbers are left out */
    /* The template, with the window's start in ms. */
    int64_t wstart;
    char expect[160];
    assert_int_equal(ad_clock_parse(note(a, "window_start"), &wstart), 0);
    snprintf(expect, sizeof expect, "https://grafana/explore?i=c-1&from=%lld", (long long)wstart);
    assert_string_equal(json_string_value(json_object_get(a, "generatorURL")), expect);
    /* endsAt: four resend intervals after the send, which happened between before and
     * after. */
    int64_t ends;
    assert_int_equal(ad_clock_parse(json_string_value(json_object_get(a, "endsAt")), &ends), 0);
    assert_true(ends >= before + 4 * 3600000LL - 1000 && ends <= after + 4 * 3600000LL + 1000);
    json_decref(a);

    /* The resolution: acknowledged, and Alertmanager no longer has it active. */
    token = 8;
    send_alert(f, "c-1", "resolved", "e7ed3a54ded9c19200d19d5f8cb7524d", token);
    run_until(f, is_acked, &token);
    struct seen gone = {0, "c-1", false};
    run_until(f, has_alert, &gone);

    /* A document that is not an alert is refused, and nothing waits for it. */
    struct ad_alert_msg bad = {
        .id = "x", .detector = "checkout", .entity = "e", .json = "{}", .json_len = 2};
    assert_int_equal(ad_alertmanager_sink_send(f->sink, &bad, 9), -1);
    assert_int_equal(ad_alertmanager_sink_queued(f->sink), 0);
}

static void test_ha_pair_and_an_alertmanager_down(void **state)
{
    struct fixture *f = *state;
    am_stop(&f->am[1]);
    uint64_t token = 1;
    send_alert(f, "c-2", "firing", "11111111111111111111111111111111", token);
    struct seen first = {0, "c-2", true};
    run_until(f, has_alert, &first);
    /* One has it, the other is down: not acknowledged, and the queue holds it. */
    run_for(f, 500);
    assert_false(acked(f, token));
    assert_int_equal(ad_alertmanager_sink_queued(f->sink), 1);
    json_t *status = json_object();
    ad_alertmanager_sink_status(f->sink, status);
    json_t *peers = json_object_get(status, "alertmanagers");
    assert_true(json_is_true(json_object_get(json_array_get(peers, 0), "up")));
    assert_false(json_is_true(json_object_get(json_array_get(peers, 1), "up")));
    assert_non_null(json_object_get(json_array_get(peers, 1), "last_error"));
    json_decref(status);
    /* Back-pressure once the queue reaches its limit (3). */
    send_alert(f, "c-3", "firing", "22222222222222222222222222222222", 2);
    assert_false(ad_alertmanager_sink_full(f->sink));
    send_alert(f, "c-3", "resolved", "33333333333333333333333333333333", 3);
    assert_true(ad_alertmanager_sink_full(f->sink));

    /* Back: both have everything, in order (c-3 fired and resolved), and all is acknowledged. */
    am_start(&f->am[1]);
    token = 3;
    run_until(f, is_acked, &token);
    assert_true(acked(f, 1) && acked(f, 2));
    assert_false(ad_alertmanager_sink_full(f->sink));
    for (size_t i = 0; i < 2; i++) {
        json_t *a = am_find(&f->am[i], "c-2");
        assert_non_null(a);
        json_decref(a);
        a = am_find(&f->am[i], "c-3");
        assert_null(a);
    }
}

static void test_resends_and_restore(void **state)
{
    struct fixture *f = *state;
    uint64_t token = 1;
    send_alert(f, "c-4", "firing", "44444444444444444444444444444444", token);
    run_until(f, is_acked, &token);
    /* An Alertmanager that lost its memory (restarted without the alert) gets it back from
     * the resends, with no new notification. */
    am_stop(&f->am[0]);
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf %s/data", f->am[0].dir);
    assert_int_equal(system(cmd), 0);
    am_start(&f->am[0]);
    struct seen back = {0, "c-4", true};
    run_until(f, has_alert, &back);
    assert_int_equal(f->n_acked, 1);
    /* Resent with endsAt moving on: four intervals after a send. */
    json_t *a = am_find(&f->am[0], "c-4");
    int64_t ends;
    assert_int_equal(ad_clock_parse(json_string_value(json_object_get(a, "endsAt")), &ends), 0);
    assert_true(ends > ad_clock_wall_ms());
    json_decref(a);

    /* A restored firing alert (rebuilt after a restart) is resent without an acknowledgement;
     * a restored resolution stops it. */
    char *doc = document("c-5", "firing", "55555555555555555555555555555555");
    struct ad_alert_msg msg = {.id = "55555555555555555555555555555555",
                               .detector = "checkout",
                               .entity = "service=checkout,instance=c-5",
                               .json = doc,
                               .json_len = strlen(doc)};
    ad_alertmanager_sink_restore(f->sink, &msg);
    free(doc);
    struct seen restored = {0, "c-5", true};
    run_until(f, has_alert, &restored);
    assert_int_equal(f->n_acked, 1);
    json_t *status = json_object();
    ad_alertmanager_sink_status(f->sink, status);
    assert_int_equal(json_integer_value(json_object_get(status, "firing")), 2);
    json_decref(status);
    doc = document("c-5", "resolved", "66666666666666666666666666666666");
    msg.json = doc;
    msg.json_len = strlen(doc);
    ad_alertmanager_sink_restore(f->sink, &msg);
    free(doc);
    status = json_object();
    ad_alertmanager_sink_status(f->sink, status);
    assert_int_equal(json_integer_value(json_object_get(status, "firing")), 1);
    json_decref(status);
}

static void stopped(void *arg, bool flushed)
{
    int *out = arg;
    *out = flushed ? 1 : 0;
}

static bool stop_done(struct fixture *f, void *arg)
{
    (void)f;
    return *(int *)arg >= 0;
}

static void test_stop_waits_then_gives_up(void **state)
{
    struct fixture *f = *state;
    am_stop(&f->am[0]);
    send_alert(f, "c-6", "firing", "77777777777777777777777777777777", 1);
    int result = -1;
    ad_alertmanager_sink_stop(f->sink, ad_clock_mono_ms() + 300, stopped, &result);
    run_until(f, stop_done, &result);
    assert_int_equal(result, 0); /* not flushed */
    assert_false(acked(f, 1));
}

int main(void)
{
    if (access(ALERTMANAGER, X_OK) != 0) {
        printf("skipped: %s is not installed\n", ALERTMANAGER);
        return 77;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_alert_in_alertmanagers_terms, setup_one, teardown),
        cmocka_unit_test_setup_teardown(test_ha_pair_and_an_alertmanager_down, setup_pair,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_resends_and_restore, setup_resending, teardown),
        cmocka_unit_test_setup_teardown(test_stop_waits_then_gives_up, setup_one, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
