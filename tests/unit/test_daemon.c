/*
 * The daemon's lifecycle in-process: signals raised from the loop, components that stop fast,
 * slowly or never, reloads that succeed, fail or are refused, and the messages a service
 * manager receives on NOTIFY_SOCKET (a real datagram socket, as systemd reads them).
 */

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/daemon.h"

static char dir[64];
static char config_path[128];

static void write_config(const char *text)
{
    /* Replace, as editors and ConfigMap updates do, so a reader never sees half a file. */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", config_path);
    FILE *fp = fopen(tmp, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    assert_int_equal(rename(tmp, config_path), 0);
}

static struct ad_daemon *start(const char *yaml)
{
    char err[256];
    struct ad_diag *diag = ad_diag_new();
    struct ad_daemon_options opts = {.log_level_set = true, .log_level = AD_LOG_WARN};
    write_config(yaml);
    struct ad_config *cfg = ad_config_load_file(config_path, diag);
    if (!cfg)
        ad_diag_print(diag, stderr);
    assert_non_null(cfg);
    ad_diag_destroy(diag);
    struct ad_daemon *d = ad_daemon_new(cfg, &opts, err, sizeof err);
    if (!d)
        fail_msg("%s", err);
    return d;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void raise_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    raise((int)(intptr_t)arg);
}

static void raise_after(struct ad_daemon *d, int sig, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    assert_int_equal(
        event_base_once(ad_daemon_base(d), -1, EV_TIMEOUT, raise_cb, (void *)(intptr_t)sig, &tv),
        0);
}

/* A component whose stop finishes at once, after delay_ms, or never (delay_ms < 0). */
struct stopper {
    int delay_ms;
    int stop_calls;
    struct event_base *base;
    ad_component_done_fn done;
    void *done_arg;
};

static void stopper_done(evutil_socket_t fd, short what, void *arg)
{
    struct stopper *s = arg;
    (void)fd;
    (void)what;
    s->done(s->done_arg);
}

static void stopper_stop(void *ctx, ad_component_done_fn done, void *done_arg)
{
    struct stopper *s = ctx;
    s->stop_calls++;
    s->done = done;
    s->done_arg = done_arg;
    if (s->delay_ms == 0) {
        done(done_arg);
    } else if (s->delay_ms > 0) {
        struct timeval tv = {s->delay_ms / 1000, (s->delay_ms % 1000) * 1000};
        event_base_once(s->base, -1, EV_TIMEOUT, stopper_done, s, &tv);
    }
}

static void add_stopper(struct ad_daemon *d, struct stopper *s)
{
    struct ad_component c = {.name = "stopper", .ctx = s, .stop = stopper_stop};
    s->base = ad_daemon_base(d);
    assert_int_equal(ad_daemon_add_component(d, &c), 0);
}

static const char base_config[] = "daemon:\n"
                                  "  admin: {listen: \"127.0.0.1:0\"}\n"
                                  "  shutdown_timeout: 400ms\n";

static void test_sigterm_stops_cleanly(void **state)
{
    (void)state;
    struct ad_daemon *d = start(base_config);
    struct stopper fast = {.delay_ms = 0}, slow = {.delay_ms = 100};
    add_stopper(d, &fast);
    add_stopper(d, &slow);
    raise_after(d, SIGTERM, 50);
    double t0 = now();
    assert_int_equal(ad_daemon_run(d), 0);
    double took = now() - t0;
    assert_int_equal(fast.stop_calls, 1);
    assert_int_equal(slow.stop_calls, 1);
    /* It waited for the slow component (status 0 says the bound did not fire). */
    assert_true(took >= 0.14);
    ad_daemon_destroy(d);
}

static void test_sigint_with_nothing_to_stop(void **state)
{
    (void)state;
    struct ad_daemon *d = start(base_config);
    raise_after(d, SIGINT, 20);
    assert_int_equal(ad_daemon_run(d), 0);
    ad_daemon_destroy(d);
}

static void test_stop_is_bounded(void **state)
{
    (void)state;
    struct ad_daemon *d = start(base_config);
    struct stopper stuck = {.delay_ms = -1};
    add_stopper(d, &stuck);
    raise_after(d, SIGTERM, 50);
    double t0 = now();
    assert_int_equal(ad_daemon_run(d), 1);
    double took = now() - t0;
    assert_true(took >= 0.44); /* 50 ms + the 400 ms bound */
    assert_true(took < 10.0);  /* and not hanging on the stuck component */
    ad_daemon_destroy(d);
}

static void test_second_signal_exits_at_once(void **state)
{
    (void)state;
    struct ad_daemon *d = start("daemon:\n  admin: {listen: \"127.0.0.1:0\"}\n"
                                "  shutdown_timeout: 30s\n");
    struct stopper stuck = {.delay_ms = -1};
    add_stopper(d, &stuck);
    raise_after(d, SIGTERM, 50);
    raise_after(d, SIGINT, 100);
    double t0 = now();
    assert_int_equal(ad_daemon_run(d), 1);
    assert_true(now() - t0 < 10.0); /* far below the 30 s bound */
    ad_daemon_destroy(d);
}

/* The value of one metric line, e.g. "anomalyd_config_reloads_total{result=\"failure\"}". */
static double metric(struct ad_daemon *d, const char *series)
{
    char *text = ad_metrics_render(ad_daemon_metrics(d), NULL);
    char needle[256];
    snprintf(needle, sizeof needle, "\n%s ", series);
    char *line = strstr(text, needle);
    double v = line ? strtod(line + strlen(needle), NULL) : NAN;
    free(text);
    return v;
}

static void test_reload(void **state)
{
    (void)state;
    struct ad_daemon *d = start(base_config);
    char before[65];
    snprintf(before, sizeof before, "%s", ad_config_sha256(ad_daemon_config(d)));

    /* An invalid file changes nothing. */
    write_config("daemon:\n  admin: {listen: \"127.0.0.1:0\"}\n  shutdown_timeot: 1s\n");
    assert_int_equal(ad_daemon_reload(d), -1);
    assert_string_equal(ad_config_sha256(ad_daemon_config(d)), before);
    assert_true(metric(d, "anomalyd_config_reloads_total{result=\"failure\"}") == 1);
    assert_true(metric(d, "anomalyd_config_reloads_total{result=\"success\"}") == 0);
    assert_true(metric(d, "anomalyd_config_last_reload_successful") == 0);
    assert_int_equal(ad_config_settings(ad_daemon_config(d))->daemon.shutdown_timeout, 400);

    /* A valid one applies; the new listen address waits for a restart. */
    write_config("daemon:\n  admin: {listen: \"127.0.0.1:1\"}\n  shutdown_timeout: 2s\n");
    assert_int_equal(ad_daemon_reload(d), 0);
    assert_string_not_equal(ad_config_sha256(ad_daemon_config(d)), before);
    assert_int_equal(ad_config_settings(ad_daemon_config(d))->daemon.shutdown_timeout, 2000);
    assert_true(metric(d, "anomalyd_config_reloads_total{result=\"success\"}") == 1);
    assert_true(metric(d, "anomalyd_config_last_reload_successful") == 1);
    assert_true(metric(d, "anomalyd_config_pending_restart_keys") == 1);

    /* Back to the address the process started with: nothing waits any more. */
    write_config(base_config);
    assert_int_equal(ad_daemon_reload(d), 0);
    assert_string_equal(ad_config_sha256(ad_daemon_config(d)), before);
    assert_true(metric(d, "anomalyd_config_pending_restart_keys") == 0);

    /* A file that went away is a failed reload too. */
    unlink(config_path);
    assert_int_equal(ad_daemon_reload(d), -1);
    assert_true(metric(d, "anomalyd_config_reloads_total{result=\"failure\"}") == 2);
    assert_string_equal(ad_config_sha256(ad_daemon_config(d)), before);
    ad_daemon_destroy(d);
}

/* A component that records what it was switched to, and may refuse. */
struct switcher {
    int refuse;
    int calls;
    char last_sha[8][65];
};

static int switcher_apply(void *ctx, const struct ad_config *next, char *errstr, size_t size)
{
    struct switcher *s = ctx;
    snprintf(s->last_sha[s->calls++ % 8], 65, "%s", ad_config_sha256(next));
    if (s->refuse) {
        snprintf(errstr, size, "cannot change that now");
        return -1;
    }
    return 0;
}

static void test_refused_reload_rolls_back(void **state)
{
    (void)state;
    struct ad_daemon *d = start(base_config);
    struct switcher first = {0}, second = {.refuse = 1};
    struct ad_component a = {.name = "first", .ctx = &first, .apply = switcher_apply};
    struct ad_component b = {.name = "second", .ctx = &second, .apply = switcher_apply};
    ad_daemon_add_component(d, &a);
    ad_daemon_add_component(d, &b);
    char running[65];
    snprintf(running, sizeof running, "%s", ad_config_sha256(ad_daemon_config(d)));

    write_config("daemon:\n  admin: {listen: \"127.0.0.1:0\"}\n  shutdown_timeout: 9s\n");
    assert_int_equal(ad_daemon_reload(d), -1);
    /* first was switched to the new config, then back to the running one. */
    assert_int_equal(first.calls, 2);
    assert_string_not_equal(first.last_sha[0], running);
    assert_string_equal(first.last_sha[1], running);
    assert_int_equal(second.calls, 1);
    assert_string_equal(ad_config_sha256(ad_daemon_config(d)), running);
    assert_true(metric(d, "anomalyd_config_reloads_total{result=\"failure\"}") == 1);

    second.refuse = 0;
    assert_int_equal(ad_daemon_reload(d), 0);
    assert_string_not_equal(ad_config_sha256(ad_daemon_config(d)), running);
    ad_daemon_destroy(d);
}

/* Receives notifications while the daemon runs, as systemd does: a unix datagram socket
 * queues only a few (net.unix.max_dgram_qlen, 10 by default), and then sd_notify blocks. */
struct listener {
    int fd;
    volatile int stop;
    char got[16384]; /* every message, each followed by "|" */
};

static void *listen_main(void *arg)
{
    struct listener *l = arg;
    char msg[1024];
    while (!l->stop) {
        struct timeval tv = {0, 20000};
        setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t n = recv(l->fd, msg, sizeof msg - 1, 0);
        if (n <= 0)
            continue;
        msg[n] = '\0';
        strncat(l->got, msg, sizeof l->got - strlen(l->got) - 2);
        strcat(l->got, "|");
    }
    return NULL;
}

static void test_service_manager_notifications(void **state)
{
    (void)state;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    static struct listener l;
    pthread_t thread;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/notify.sock", dir);
    l.fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    assert_int_equal(bind(l.fd, (struct sockaddr *)&sa, sizeof sa), 0);
    pthread_create(&thread, NULL, listen_main, &l);
    setenv("NOTIFY_SOCKET", sa.sun_path, 1);
    setenv("WATCHDOG_USEC", "100000", 1);
    unsetenv("WATCHDOG_PID");

    struct ad_daemon *d = start(base_config);
    raise_after(d, SIGHUP, 60);
    raise_after(d, SIGTERM, 400);
    assert_int_equal(ad_daemon_run(d), 0);
    ad_daemon_destroy(d);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    l.stop = 1;
    pthread_join(thread, NULL);
    /* What arrived after the listener's last look is still queued. */
    char msg[1024];
    ssize_t n;
    while ((n = recv(l.fd, msg, sizeof msg - 1, MSG_DONTWAIT)) > 0) {
        msg[n] = '\0';
        strncat(l.got, msg, sizeof l.got - strlen(l.got) - 2);
        strcat(l.got, "|");
    }
    close(l.fd);
    unlink(sa.sun_path);
    const char *got = l.got;

    const char *ready = strstr(got, "READY=1\nSTATUS=serving");
    const char *reloading = strstr(got, "RELOADING=1\nMONOTONIC_USEC=");
    const char *watchdog = strstr(got, "WATCHDOG=1|");
    const char *stopping = strstr(got, "STOPPING=1");
    if (!ready || !reloading || !watchdog || !stopping)
        fail_msg("messages: %s", got);
    /* READY, then RELOADING followed by READY again, and STOPPING last. */
    assert_true(ready < reloading);
    assert_non_null(strstr(reloading, "READY=1"));
    assert_true(strstr(reloading, "READY=1") < stopping);
    assert_null(strstr(stopping, "READY=1"));
    /* Keep-alives every 50 ms over 400 ms. */
    int keepalives = 0;
    for (const char *p = got; (p = strstr(p, "WATCHDOG=1")); p++)
        keepalives++;
    assert_true(keepalives >= 2);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/anomalyd-daemon-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(config_path, sizeof config_path, "%s/anomalyd.yaml", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(config_path);
    rmdir(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_stops_cleanly),
        cmocka_unit_test(test_sigint_with_nothing_to_stop),
        cmocka_unit_test(test_stop_is_bounded),
        cmocka_unit_test(test_second_signal_exits_at_once),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_refused_reload_rolls_back),
        cmocka_unit_test(test_service_manager_notifications),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
