#include "daemon/daemon.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/units.h"
#include "base/version.h"
#include "daemon/admin.h"
#include "daemon/config_watch.h"
#include "daemon/notify.h"
#include "daemon/process_metrics.h"

#define AD_LOG_MODULE "daemon"
#include "base/log.h"

enum state { STATE_RUNNING, STATE_STOPPING };

struct ad_daemon {
    struct event_base *base;
    struct ad_metrics *metrics;
    struct ad_admin *admin;
    struct ad_daemon_options opts;

    struct ad_config *config;      /* in force */
    struct ad_config *boot_config; /* restart-only settings still come from it */

    struct event *sighup, *sigterm, *sigint;
    struct event *watchdog_timer, *shutdown_timer;

    struct ad_component components[AD_DAEMON_MAX_COMPONENTS];
    size_t n_components;

    enum state state;
    size_t stops_pending;
    bool finished;
    int exit_code;
    double started_at;

    bool last_reload_ok;
    double last_reload_at; /* 0: never reloaded */
    json_t *last_reload_errors;
    json_t *pending_restart;

    struct ad_counter *reloads_ok, *reloads_failed;
    struct ad_gauge *last_reload_successful, *last_reload_success_time, *pending_restart_keys;

    struct ad_config_watch *watch; /* NULL: daemon.watch_config off, or inotify failed */
    struct ad_counter *watch_changes;
    struct ad_gauge *watch_active;
};

static void apply_log_settings(struct ad_daemon *d)
{
    const struct ad_settings_daemon *s = &ad_config_settings(d->config)->daemon;
    /* The settings enums list levels and formats in the logger's order. */
    ad_log_set_level(d->opts.log_level_set ? d->opts.log_level : s->log_level);
    ad_log_set_format(d->opts.log_format_set ? d->opts.log_format : s->log_format);
}

static void collect_key(const char *key, void *arg)
{
    json_array_append_new(arg, json_string(key));
}

/* ---- stopping ---- */

static void finish(struct ad_daemon *d, int exit_code)
{
    if (d->finished)
        return;
    d->finished = true;
    d->exit_code = exit_code;
    event_base_loopbreak(d->base);
}

static void component_stopped(void *arg)
{
    struct ad_daemon *d = arg;
    if (d->stops_pending > 0 && --d->stops_pending == 0) {
        AD_INFO("every component stopped");
        finish(d, 0);
    }
}

static void on_shutdown_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct ad_daemon *d = arg;
    char bound[32];
    (void)fd;
    (void)what;
    ad_duration_format(ad_config_settings(d->config)->daemon.shutdown_timeout, bound, sizeof bound);
    AD_ERROR_KV("stop did not finish in time; exiting anyway", AD_KV_STR("shutdown_timeout", bound),
                AD_KV_INT("components_left", d->stops_pending));
    finish(d, 1);
}

static void begin_shutdown(struct ad_daemon *d, const char *why)
{
    int64_t timeout_ms = ad_config_settings(d->config)->daemon.shutdown_timeout;
    char bound[32];

    if (d->state == STATE_STOPPING) {
        AD_WARN_KV("second stop signal: exiting without waiting", AD_KV_STR("signal", why));
        finish(d, 1);
        return;
    }
    d->state = STATE_STOPPING;
    ad_duration_format(timeout_ms, bound, sizeof bound);
    AD_INFO_KV("stopping", AD_KV_STR("signal", why), AD_KV_STR("shutdown_timeout", bound));
    ad_notify_stopping();
    ad_admin_set_ready(d->admin, false, "stopping");

    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    evtimer_add(d->shutdown_timer, &tv);

    /* Count every stop before starting any, since a component may finish at once. */
    d->stops_pending = 1;
    for (size_t i = 0; i < d->n_components; i++)
        if (d->components[i].stop)
            d->stops_pending++;
    for (size_t i = 0; i < d->n_components; i++)
        if (d->components[i].stop)
            d->components[i].stop(d->components[i].ctx, component_stopped, d);
    component_stopped(d);
}

/* ---- reloading ---- */

static void record_reload(struct ad_daemon *d, bool ok, json_t *errors)
{
    d->last_reload_ok = ok;
    d->last_reload_at = ad_clock_wall_seconds();
    json_decref(d->last_reload_errors);
    d->last_reload_errors = errors ? errors : json_array();
    ad_counter_inc(ok ? d->reloads_ok : d->reloads_failed);
    ad_gauge_set(d->last_reload_successful, ok ? 1 : 0);
    if (ok)
        ad_gauge_set(d->last_reload_success_time, d->last_reload_at);
}

static void notify_serving(struct ad_daemon *d)
{
    char status[400];
    snprintf(status, sizeof status, "serving; admin on %s; config %.12s",
             ad_admin_address(d->admin), ad_config_sha256(d->config));
    ad_notify_ready(status);
}

/* Offers next to every component; on a refusal, switches back those already switched. */
static int apply_components(struct ad_daemon *d, const struct ad_config *next, json_t *errors)
{
    char err[512];
    for (size_t i = 0; i < d->n_components; i++) {
        struct ad_component *c = &d->components[i];
        if (!c->apply)
            continue;
        err[0] = '\0';
        if (c->apply(c->ctx, next, err, sizeof err) == 0)
            continue;
        AD_ERROR_KV("component refused the new config", AD_KV_STR("component", c->name),
                    AD_KV_STR("error", err));
        json_array_append_new(errors, json_sprintf("%s: %s", c->name, err));
        while (i-- > 0) {
            struct ad_component *back = &d->components[i];
            if (back->apply && back->apply(back->ctx, d->config, err, sizeof err) < 0)
                AD_ERROR_KV("cannot switch a component back to the running config",
                            AD_KV_STR("component", back->name), AD_KV_STR("error", err));
        }
        return -1;
    }
    return 0;
}

static void warn_restart_key(const char *key, void *arg)
{
    (void)arg;
    AD_WARN_KV("setting changed; it takes effect after a restart", AD_KV_STR("key", key));
}

static void on_config_changed(void *arg)
{
    struct ad_daemon *d = arg;
    if (d->state == STATE_STOPPING) {
        AD_WARN("the config file changed while stopping: ignored");
        return;
    }
    ad_counter_inc(d->watch_changes);
    AD_INFO_KV("the config file changed", AD_KV_STR("path", ad_config_path(d->config)));
    ad_daemon_reload(d);
}

/* Starts or stops watching the config file as daemon.watch_config says. A watch that cannot
 * be set up is logged and left off: SIGHUP still reloads. */
static void sync_watch(struct ad_daemon *d)
{
    bool want = ad_config_settings(d->config)->daemon.watch_config;
    char err[300];
    if (want && !d->watch) {
        d->watch =
            ad_config_watch_new(d->base, ad_config_path(d->config), ad_config_sha256(d->config),
                                AD_CONFIG_WATCH_QUIET_MS, on_config_changed, d, err, sizeof err);
        if (d->watch)
            AD_INFO_KV("watching the config file for changes",
                       AD_KV_STR("path", ad_config_path(d->config)));
        else
            AD_WARN_KV("cannot watch the config file; reload with SIGHUP", AD_KV_STR("error", err));
    } else if (!want && d->watch) {
        ad_config_watch_destroy(d->watch);
        d->watch = NULL;
        AD_INFO("no longer watching the config file (daemon.watch_config is false)");
    }
    ad_gauge_set(d->watch_active, d->watch ? 1 : 0);
}

int ad_daemon_reload(struct ad_daemon *d)
{
    const char *path = ad_config_path(d->config);
    struct ad_diag *diag = ad_diag_new();
    json_t *errors = json_array();
    struct ad_config *next;
    int rc = -1;

    if (!diag || !errors) {
        AD_ERROR("out of memory reloading the config");
        goto out;
    }
    AD_INFO_KV("reloading config", AD_KV_STR("path", path));
    ad_notify_reloading();
    /* Whatever started this reload, the file as it is now is what it loads. */
    ad_config_watch_mark_seen(d->watch);
    next = ad_config_load_file(path, diag);
    if (!next) {
        for (size_t i = 0; i < ad_diag_count(diag); i++) {
            AD_ERROR_KV("config error", AD_KV_STR("error", ad_diag_message(diag, i)));
            json_array_append_new(errors, json_string(ad_diag_message(diag, i)));
        }
        AD_ERROR_KV("config reload rejected; the running config stays in force",
                    AD_KV_STR("path", path), AD_KV_INT("errors", ad_diag_count(diag)));
        record_reload(d, false, errors);
        errors = NULL;
        goto out;
    }
    if (apply_components(d, next, errors) < 0) {
        AD_ERROR_KV("config reload rejected; the running config stays in force",
                    AD_KV_STR("path", path));
        ad_config_unref(next);
        record_reload(d, false, errors);
        errors = NULL;
        goto out;
    }

    ad_config_restart_changes(d->config, next, warn_restart_key, NULL);
    json_t *pending = json_array();
    ad_config_restart_changes(d->boot_config, next, collect_key, pending);
    json_decref(d->pending_restart);
    d->pending_restart = pending;
    ad_gauge_set(d->pending_restart_keys, (double)json_array_size(pending));

    ad_config_unref(d->config); /* path pointed into it */
    d->config = next;
    path = ad_config_path(next);
    apply_log_settings(d);
    ad_admin_set_token(d->admin, ad_config_settings(next)->daemon.admin_token.value);
    sync_watch(d);
    record_reload(d, true, NULL);
    AD_INFO_KV("config reloaded", AD_KV_STR("path", path),
               AD_KV_STR("sha256", ad_config_sha256(next)),
               AD_KV_INT("restart_pending", json_array_size(pending)));
    rc = 0;
out:
    json_decref(errors);
    ad_diag_destroy(diag);
    if (d->state == STATE_RUNNING)
        notify_serving(d);
    return rc;
}

/* ---- signals and timers ---- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct ad_daemon *d = arg;
    (void)what;
    if (sig == SIGHUP) {
        if (d->state == STATE_STOPPING)
            AD_WARN("SIGHUP while stopping: ignored");
        else
            ad_daemon_reload(d);
        return;
    }
    begin_shutdown(d, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    /* Sent from the loop itself, so a stuck loop stops the keep-alives and systemd restarts
     * the service. */
    ad_notify_watchdog();
}

/* ---- /status ---- */

static void build_status(void *arg, json_t *out)
{
    struct ad_daemon *d = arg;
    char started[32], loaded[32], reloaded[32];
    double now = ad_clock_wall_seconds();

    ad_clock_format((int64_t)(d->started_at * 1000), started, sizeof started);
    ad_clock_format((int64_t)(ad_config_loaded_at(d->config) * 1000), loaded, sizeof loaded);
    json_object_set_new(out, "version", json_string(AD_VERSION));
    json_object_set_new(out, "revision", json_string(AD_REVISION));
    json_object_set_new(out, "state",
                        json_string(d->state == STATE_RUNNING ? "running" : "stopping"));
    json_object_set_new(out, "started_at", json_string(started));
    json_object_set_new(out, "uptime_seconds", json_real(now - d->started_at));

    json_t *config = json_object();
    json_object_set_new(config, "path", json_string(ad_config_path(d->config)));
    json_object_set_new(config, "sha256", json_string(ad_config_sha256(d->config)));
    json_object_set_new(config, "loaded_at", json_string(loaded));
    json_object_set_new(config, "pending_restart", json_deep_copy(d->pending_restart));
    json_t *folders = json_array();
    const char *watched[2];
    size_t n_watched = d->watch ? ad_config_watch_folders(d->watch, watched) : 0;
    for (size_t i = 0; i < n_watched; i++)
        json_array_append_new(folders, json_string(watched[i]));
    json_object_set_new(config, "watch",
                        json_pack("{s:b, s:o}", "enabled", d->watch != NULL, "folders", folders));
    if (d->last_reload_at > 0) {
        ad_clock_format((int64_t)(d->last_reload_at * 1000), reloaded, sizeof reloaded);
        json_object_set_new(config, "last_reload",
                            json_pack("{s:s, s:s, s:O}", "result",
                                      d->last_reload_ok ? "success" : "failure", "at", reloaded,
                                      "errors", d->last_reload_errors));
    }
    json_object_set_new(out, "config", config);

    for (size_t i = 0; i < d->n_components; i++) {
        struct ad_component *c = &d->components[i];
        if (!c->status)
            continue;
        json_t *part = json_object();
        c->status(c->ctx, part);
        json_object_set_new(out, c->name, part);
    }
}

/* ---- paths the admin endpoint hands to components ---- */

static int serve_component(void *arg, const struct ad_component_request *req,
                           struct ad_component_reply *out)
{
    struct ad_daemon *d = arg;
    for (size_t i = 0; i < d->n_components; i++) {
        struct ad_component *c = &d->components[i];
        if (c->serve && c->serve(c->ctx, req, out) == 0)
            return 0;
    }
    return -1;
}

/* ---- construction ---- */

static int register_metrics(struct ad_daemon *d)
{
    static const char reloads_help[] = "Config reloads by result.";
    d->reloads_ok = ad_metrics_counter(d->metrics, "anomalyd_config_reloads_total", reloads_help,
                                       "result", "success", NULL);
    d->reloads_failed = ad_metrics_counter(d->metrics, "anomalyd_config_reloads_total",
                                           reloads_help, "result", "failure", NULL);
    d->last_reload_successful =
        ad_metrics_gauge(d->metrics, "anomalyd_config_last_reload_successful",
                         "Whether the last config reload succeeded (1) or not (0).", NULL);
    d->last_reload_success_time =
        ad_metrics_gauge(d->metrics, "anomalyd_config_last_reload_success_timestamp_seconds",
                         "When the config was last loaded successfully, in Unix seconds.", NULL);
    d->pending_restart_keys =
        ad_metrics_gauge(d->metrics, "anomalyd_config_pending_restart_keys",
                         "Changed settings that take effect only after a restart.", NULL);
    d->watch_changes = ad_metrics_counter(
        d->metrics, "anomalyd_config_watch_changes_total",
        "Changes of the config file's content that the watch noticed; each starts a reload.", NULL);
    d->watch_active =
        ad_metrics_gauge(d->metrics, "anomalyd_config_watch_active",
                         "Whether the config file is watched for changes (1) or not (0).", NULL);
    struct ad_gauge *info = ad_metrics_gauge(
        d->metrics, "anomalyd_build_info", "Build information; the value is always 1.", "version",
        AD_VERSION, "revision", AD_REVISION, "cuda", AD_BUILT_WITH_CUDA ? "true" : "false", NULL);
    if (!d->reloads_ok || !d->reloads_failed || !d->last_reload_successful ||
        !d->last_reload_success_time || !d->pending_restart_keys || !d->watch_changes ||
        !d->watch_active || !info)
        return -1;
    ad_gauge_set(info, 1);
    ad_gauge_set(d->last_reload_successful, 1);
    ad_gauge_set(d->last_reload_success_time, ad_config_loaded_at(d->config));
    return ad_metrics_register_process(d->metrics);
}

struct ad_daemon *ad_daemon_new(struct ad_config *config, const struct ad_daemon_options *opts,
                                char *errstr, size_t errstr_size)
{
    struct ad_daemon *d = calloc(1, sizeof *d);
    char err[300];

    if (!d) {
        ad_config_unref(config);
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    d->config = config;
    d->boot_config = ad_config_ref(config);
    d->opts = *opts;
    d->started_at = ad_clock_wall_seconds();
    d->pending_restart = json_array();
    d->last_reload_errors = json_array();
    apply_log_settings(d);

    d->base = event_base_new();
    d->metrics = ad_metrics_new();
    if (!d->base || !d->metrics || !d->pending_restart || !d->last_reload_errors) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto err;
    }
    if (register_metrics(d) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot register metrics");
        goto err;
    }
    d->admin = ad_admin_new(d->base, ad_config_settings(config)->daemon.admin_listen, d->metrics,
                            err, sizeof err);
    if (!d->admin) {
        ad_errstr_set(errstr, errstr_size, "admin endpoint: %s", err);
        goto err;
    }
    ad_admin_set_status_fn(d->admin, build_status, d);
    ad_admin_set_serve_fn(d->admin, serve_component, d);
    ad_admin_set_token(d->admin, ad_config_settings(config)->daemon.admin_token.value);

    d->sighup = evsignal_new(d->base, SIGHUP, on_signal, d);
    d->sigterm = evsignal_new(d->base, SIGTERM, on_signal, d);
    d->sigint = evsignal_new(d->base, SIGINT, on_signal, d);
    d->watchdog_timer = event_new(d->base, -1, EV_PERSIST, on_watchdog, d);
    d->shutdown_timer = evtimer_new(d->base, on_shutdown_deadline, d);
    if (!d->sighup || !d->sigterm || !d->sigint || !d->watchdog_timer || !d->shutdown_timer ||
        evsignal_add(d->sighup, NULL) < 0 || evsignal_add(d->sigterm, NULL) < 0 ||
        evsignal_add(d->sigint, NULL) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot set up signal handling");
        goto err;
    }
    sync_watch(d);
    return d;

err:
    ad_daemon_destroy(d);
    return NULL;
}

void ad_daemon_destroy(struct ad_daemon *d)
{
    if (!d)
        return;
    struct event *events[] = {d->sighup, d->sigterm, d->sigint, d->watchdog_timer,
                              d->shutdown_timer};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
        if (events[i])
            event_free(events[i]);
    ad_config_watch_destroy(d->watch);
    ad_admin_destroy(d->admin);
    ad_metrics_destroy(d->metrics);
    if (d->base)
        event_base_free(d->base);
    ad_config_unref(d->config);
    ad_config_unref(d->boot_config);
    json_decref(d->pending_restart);
    json_decref(d->last_reload_errors);
    free(d);
}

int ad_daemon_add_component(struct ad_daemon *d, const struct ad_component *component)
{
    if (d->n_components == AD_DAEMON_MAX_COMPONENTS)
        return -1;
    d->components[d->n_components++] = *component;
    return 0;
}

int ad_daemon_run(struct ad_daemon *d)
{
    uint64_t watchdog_usec = ad_notify_watchdog_usec();
    if (watchdog_usec > 0) {
        uint64_t half = watchdog_usec / 2;
        struct timeval tv = {.tv_sec = (time_t)(half / 1000000),
                             .tv_usec = (suseconds_t)(half % 1000000)};
        evtimer_add(d->watchdog_timer, &tv);
        AD_INFO_KV("watchdog enabled", AD_KV_INT("interval_ms", half / 1000));
    }
    ad_admin_set_ready(d->admin, true, NULL);
    AD_INFO_KV("anomalyd started", AD_KV_STR("version", AD_VERSION),
               AD_KV_STR("config", ad_config_path(d->config)),
               AD_KV_STR("sha256", ad_config_sha256(d->config)),
               AD_KV_STR("admin", ad_admin_address(d->admin)));
    notify_serving(d);

    if (event_base_dispatch(d->base) < 0) {
        AD_ERROR("the event loop failed");
        return 1;
    }
    if (!d->finished) /* nothing left to wait for: cannot happen while signals are armed */
        return 1;
    AD_INFO_KV("anomalyd stopped", AD_KV_INT("exit_code", d->exit_code));
    return d->exit_code;
}

struct event_base *ad_daemon_base(struct ad_daemon *d)
{
    return d->base;
}

struct ad_metrics *ad_daemon_metrics(struct ad_daemon *d)
{
    return d->metrics;
}

const struct ad_config *ad_daemon_config(const struct ad_daemon *d)
{
    return d->config;
}

const char *ad_daemon_admin_address(const struct ad_daemon *d)
{
    return ad_admin_address(d->admin);
}
