#ifndef AD_LOG_RULES_H
#define AD_LOG_RULES_H

/*
 * The extraction rules of one Kafka source, compiled once: from a JSON log event they take the
 * event time, the entity labels, the filters' verdict and every feature's value.
 *
 * An event that cannot be used is rejected with a reason (it is counted and may go to the
 * dead-letter topic, see kafka_source.h); one that fails a filter is filtered (counted, not an
 * error). Within an accepted event:
 *   - count is 1; count_if is 1 or 0, so a bucket of non-matching events still has data;
 *   - sum, mean, min, max and last take a number, or a string that spells one ("12.5");
 *     a missing or null field leaves that feature without an observation in this event; any
 *     other type rejects the event (wrong_type), as does a non-finite number (not_finite);
 *   - labels take strings, numbers (integers as digits, others in %.17g form) and booleans; a
 * missing or null label rejects the event (label_missing), an object or array too (wrong_type).
 * Conditions (filters, count_if) never reject: a missing field, or one of another type than
 * the value compared with, does not match (so != matches it). `== null` matches null and
 * missing fields; `exists` matches present, non-null fields.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/settings.h"
#include "stream/json_extract.h"

#define AD_LOG_MAX_LABELS   32
#define AD_LOG_MAX_FEATURES 64

enum ad_reject_reason {
    AD_REJECT_NONE,
    AD_REJECT_TOO_LARGE,
    AD_REJECT_MALFORMED,
    AD_REJECT_NOT_OBJECT,
    AD_REJECT_TIME_MISSING,
    AD_REJECT_TIME_INVALID,
    AD_REJECT_TIME_TOO_OLD,
    AD_REJECT_TIME_IN_FUTURE,
    AD_REJECT_LABEL_MISSING,
    AD_REJECT_LABEL_INVALID, /* holds a NUL, which entity keys use as separator */
    AD_REJECT_WRONG_TYPE,
    AD_REJECT_NOT_FINITE,
    AD_REJECT_COUNT /* not a reason: how many there are */
};

/* The metric label of a reason: "too_large", "malformed_json", ... */
const char *ad_reject_reason_name(enum ad_reject_reason r);

enum ad_log_result { AD_LOG_ACCEPTED, AD_LOG_FILTERED, AD_LOG_REJECTED };

struct ad_log_event {
    int64_t time; /* Unix ms */
    /* Label values in the order of ad_log_rules_label_name; borrowed, valid until the next
     * apply. */
    const char *labels[AD_LOG_MAX_LABELS];
    size_t label_lens[AD_LOG_MAX_LABELS];
    /* Feature values in the source's feature order; bit f of present says feature f has one. */
    double values[AD_LOG_MAX_FEATURES];
    uint64_t present;
    enum ad_reject_reason reason; /* AD_LOG_REJECTED: why */
};

struct ad_log_rules;

/* source must be a Kafka source of a validated config; borrowed for the rules' lifetime.
 * Returns NULL with errstr filled. */
struct ad_log_rules *ad_log_rules_new(const struct ad_settings_source *source,
                                      enum ad_extract_engine engine, char *errstr,
                                      size_t errstr_size);
void ad_log_rules_destroy(struct ad_log_rules *r);

/*
 * Applies the rules to one message. kafka_ts is the message's timestamp (Unix ms, used with
 * time format kafka; -1 when the message has none), now the processing time (for max_past and
 * max_future).
 */
enum ad_log_result ad_log_rules_apply(struct ad_log_rules *r, const char *json, size_t len,
                                      int64_t kafka_ts, int64_t now, struct ad_log_event *out);

/* Labels: the source's `labels` in order, then its `static_labels`. */
size_t ad_log_rules_labels(const struct ad_log_rules *r);
const char *ad_log_rules_label_name(const struct ad_log_rules *r, size_t i);
/* The label's index, or -1. */
int ad_log_rules_label_index(const struct ad_log_rules *r, const char *name);

#endif
