#ifndef AD_EVENT_TIME_H
#define AD_EVENT_TIME_H

/*
 * Event times of log events, as the `time` rules of a Kafka source read them. All results are
 * Unix milliseconds (int64). Sub-millisecond digits are truncated toward negative infinity.
 */

#include <stddef.h>
#include <stdint.h>

#include "config/settings.h"
#include "stream/json_extract.h"

/*
 * RFC 3339 / ISO 8601 date-times: "2026-11-22T05:01:02Z", "2026-11-22T05:01:02.123456Z",
 * "2026-11-22 05:01:02.5+01:00" (a space for 'T', lowercase 't'/'z', and offsets +hh:mm,
 * -hh:mm, +hhmm accepted; up to 9 fraction digits). Years 0001..9999; leap seconds (:60) are
 * read as :59.999. s need not be NUL-terminated. Returns 0, or -1 when malformed.
 */
int ad_time_parse_rfc3339(const char *s, size_t len, int64_t *ms);

enum ad_time_status {
    AD_TIME_OK,
    AD_TIME_MISSING,    /* the field is absent or null */
    AD_TIME_WRONG_TYPE, /* e.g. a number where rfc3339 text is expected, an object */
    AD_TIME_MALFORMED,  /* text that does not parse, a non-finite or out-of-range number */
};

/*
 * The event time from an extracted field in the given format: rfc3339 takes a string; unix_s,
 * unix_ms and unix_us take a number or a numeric string ("1795323662.5" for unix_s).
 * AD_TIME_KAFKA is not handled here (the caller has the message timestamp).
 */
enum ad_time_status ad_event_time(const struct ad_json_value *v, enum ad_time_format format,
                                  int64_t *ms);

#endif
