#ifndef AD_CRON_H
#define AD_CRON_H

/*
 * Five-field cron schedules (minute hour day-of-month month day-of-week), evaluated on the
 * wall clock of a time zone (base/tz.h), for recurring maintenance windows
 * (docs/maintenance.md).
 *
 * Each field is `*`, a number, a range `a-b`, a step `*` `/n` or `a-b/n` or `a/n`, or a list of
 * those joined by commas. Months and weekdays also take names (JAN..DEC, SUN..SAT, any case);
 * weekday 7 is Sunday too. @yearly (@annually), @monthly, @weekly, @daily (@midnight) and
 * @hourly stand for their usual schedules. As in Vixie cron, when both day fields are
 * restricted (neither starts with `*`) a day matches either; otherwise both must match.
 *
 * A schedule fires at the first instant of each matching local minute. Local times that occur
 * twice (the clock set back) fire once, at the first occurrence; local times inside a gap (the
 * clock set forward) fire as far after the gap as they were into it (ad_tz_instant).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/tz.h"

struct ad_cron {
    uint64_t minutes; /* bit m: minute m */
    uint32_t hours;   /* bit h */
    uint32_t days;    /* bit d, 1..31 */
    uint16_t months;  /* bit m, 1..12 */
    uint8_t weekdays; /* bit w, 0 (Sunday)..6 */
    bool days_star, weekdays_star;
};

/* Parses text into out. Returns 0, or -1 with errstr filled and *offset (may be NULL) set to
 * the byte of text where the problem is. */
int ad_cron_parse(const char *text, struct ad_cron *out, size_t *offset, char *errstr,
                  size_t errstr_size);

/* The latest instant (Unix ms) at or before t_ms at which c fires in zone z, looking back no
 * further than after_ms (exclusive); INT64_MIN when there is none. */
int64_t ad_cron_prev(const struct ad_cron *c, const struct ad_tz *z, int64_t t_ms,
                     int64_t after_ms);

/* The earliest instant (Unix ms) after t_ms at which c fires in zone z, looking no further
 * than until_ms (inclusive); INT64_MAX when there is none. */
int64_t ad_cron_next(const struct ad_cron *c, const struct ad_tz *z, int64_t t_ms,
                     int64_t until_ms);

#endif
