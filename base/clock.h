#ifndef AD_CLOCK_H
#define AD_CLOCK_H

/*
 * Clocks and timestamps, in one place: wall-clock time (event time, what is shown) and
 * monotonic time (durations, deadlines), in Unix milliseconds or seconds.
 */

#include <stddef.h>
#include <stdint.h>

int64_t ad_clock_wall_ms(void);
double ad_clock_wall_seconds(void);
int64_t ad_clock_mono_ms(void);
double ad_clock_mono_seconds(void);

/* Writes ms as RFC 3339 UTC: "2026-11-22T05:01:02Z", or with ".123" when there are
 * milliseconds. Times before 1970 work too. */
void ad_clock_format(int64_t ms, char *buf, size_t size);

/* Reads an RFC 3339 time ("2026-11-22T05:01:02Z", "...02.5+01:00") into Unix ms (a leap
 * second reads as :59). Returns 0, or -1 when text is not one. */
int ad_clock_parse(const char *text, int64_t *ms);

#endif
