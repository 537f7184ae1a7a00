#ifndef AD_DAEMON_H
#define AD_DAEMON_H

/*
 * The daemon's lifecycle on one libevent loop: signals, config reload, graceful stop, the
 * admin endpoint, service-manager notifications and the watchdog.
 *
 * SIGHUP reloads: the whole file is loaded and validated; an invalid file changes nothing
 * (each error is logged with its position and counted). A valid one is offered to every
 * component in turn at a safe point (between two loop callbacks); if one refuses, those already
 * switched are switched back and nothing changes. Settings that take effect only after a
 * restart are reported and listed in /status until the process restarts. With
 * daemon.watch_config, a change of the file's content reloads exactly the same way
 * (config_watch.h); every reload, whatever started it, marks the file's content as seen.
 *
 * SIGTERM or SIGINT stops: /readyz turns 503, every component is asked to stop, and the loop
 * ends when all have finished (exit status 0) or when daemon.shutdown_timeout passes (status
 * 1). A second signal during the stop exits at once (status 1).
 */

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <jansson.h>

#include "base/component.h"
#include "base/log.h"
#include "base/metrics.h"
#include "config/config.h"

struct ad_daemon;

struct ad_daemon_options {
    /* Command-line overrides that win over the config file, on start and on every reload. */
    bool log_level_set;
    enum ad_log_level log_level;
    bool log_format_set;
    enum ad_log_format log_format;
};

#define AD_DAEMON_MAX_COMPONENTS 16

/*
 * Creates the loop, the metrics registry and the admin server (bound now, so that a busy port
 * fails here). Takes over the caller's reference to config. Returns NULL with errstr filled.
 */
struct ad_daemon *ad_daemon_new(struct ad_config *config, const struct ad_daemon_options *opts,
                                char *errstr, size_t errstr_size);
void ad_daemon_destroy(struct ad_daemon *d);

/* Copies *component (its ctx stays the caller's). Returns 0, or -1 when full. */
int ad_daemon_add_component(struct ad_daemon *d, const struct ad_component *component);

/* Runs the loop until stopped. Returns the process exit status: 0, or 1 when the stop
 * overran its bound or was forced. */
int ad_daemon_run(struct ad_daemon *d);

/* Borrowed; valid until ad_daemon_destroy. */
struct event_base *ad_daemon_base(struct ad_daemon *d);
struct ad_metrics *ad_daemon_metrics(struct ad_daemon *d);
/* The config in force (borrowed; take a reference to keep it past the next reload). */
const struct ad_config *ad_daemon_config(const struct ad_daemon *d);
/* The admin server's bound address, e.g. "127.0.0.1:41873". */
const char *ad_daemon_admin_address(const struct ad_daemon *d);

/* Reloads now, as SIGHUP does. Returns 0 when the new config is in force, -1 otherwise. */
int ad_daemon_reload(struct ad_daemon *d);

#endif
