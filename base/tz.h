#ifndef AD_TZ_H
#define AD_TZ_H

/*
 * IANA time zones, read from the system's compiled zone files (TZif, RFC 8536) without the C
 * library's TZ environment variable: setenv("TZ") races with every thread that reads the
 * environment (librdkafka's resolver does, through getaddrinfo), so the daemon never touches
 * it. A zone is its transitions, their local time types, and the POSIX TZ rule of the file's
 * footer for instants after the last transition.
 *
 * Instants and local times are in seconds: an instant counts from the Unix epoch in UTC, a
 * local time counts the same way on the zone's wall clock (instant + UTC offset).
 *
 * An ad_tz is immutable once loaded: any thread may use it.
 */

#include <stddef.h>
#include <stdint.h>

struct ad_tz;

/*
 * Loads the zone name ("UTC", "Europe/Berlin", "America/New_York") from $TZDIR, else
 * /usr/share/zoneinfo. "UTC" needs no file. Names holding ".." or starting with "/" are
 * refused. Returns NULL with errstr filled.
 */
struct ad_tz *ad_tz_load(const char *name, char *errstr, size_t errstr_size);
void ad_tz_free(struct ad_tz *z); /* accepts NULL */

/* The zone's name as loaded. */
const char *ad_tz_name(const struct ad_tz *z);

/* The UTC offset in seconds (east positive) at instant t. */
int32_t ad_tz_offset(const struct ad_tz *z, int64_t t);

/*
 * The instant of local time `local`. A local time that occurs twice (a clock set back) gives
 * its first occurrence; one that does not occur (a clock set forward, inside the gap) is read
 * with the offset in force before the gap, which lands as far after the gap's end as it was
 * after its start (02:30 in a gap from 02:00 to 03:00 is 03:30), as cron implementations run a
 * job scheduled inside the gap.
 */
int64_t ad_tz_instant(const struct ad_tz *z, int64_t local);

/* Days since 1970-01-01 of a civil date, and back (proleptic Gregorian). */
int64_t ad_tz_days_from_civil(int64_t y, unsigned m, unsigned d);
void ad_tz_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

#endif
