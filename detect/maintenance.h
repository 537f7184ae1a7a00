#ifndef AD_MAINTENANCE_H
#define AD_MAINTENANCE_H

/*
 * Maintenance windows (docs/maintenance.md), compiled from a config for one detector: which
 * entities each matches (exact values and anchored POSIX regular expressions on the
 * detector's key labels) and when it is active (an absolute range, or a cron schedule in a
 * time zone with a duration). While a window is active for an entity, the serving side
 * notifies nothing for it and its windows enter no history.
 *
 * Times are event times (a window's end) for the decision, so a replay or a restart that
 * rebuilds the windows decides the same; /status shows which windows are active by the wall
 * clock. A set is immutable but for its caches; one thread uses it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config/settings.h"

struct ad_maintenance;

/*
 * The windows of s that apply to detector d (every window with d = SIZE_MAX, for /status: no
 * entity matches then). Copies what it needs: s may go. Returns NULL with errstr filled (a
 * time zone that cannot be read, a regex that does not compile, no memory).
 */
struct ad_maintenance *ad_maintenance_new(const struct ad_settings *s, size_t d, char *errstr,
                                          size_t errstr_size);
void ad_maintenance_destroy(struct ad_maintenance *m); /* accepts NULL */

/* How many windows the set holds. */
size_t ad_maintenance_count(const struct ad_maintenance *m);

/* The name of a window active at t_ms that matches the entity key (its label values in the
 * detector's key order, NUL-separated), or NULL. */
const char *ad_maintenance_covering(struct ad_maintenance *m, const char *key, size_t len,
                                    int64_t t_ms);

/* Whether window i is active at t_ms: 1 with [*start, *end) its current occurrence, 0 with
 * *start its next start (INT64_MAX: none ahead). */
int ad_maintenance_active(struct ad_maintenance *m, size_t i, int64_t t_ms, int64_t *start,
                          int64_t *end);

/* An array in out: every window, with its matchers, schedule and whether it is active at
 * now_ms (until when, or its next start). */
void ad_maintenance_status(struct ad_maintenance *m, int64_t now_ms, json_t *out);

#endif
