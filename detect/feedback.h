#ifndef AD_FEEDBACK_H
#define AD_FEEDBACK_H

/*
 * Operators' verdicts on one detector's alerts (docs/feedback.md): an alert, named by the id of
 * any of its notifications, marked as a false or a true positive.
 *
 * It remembers the detector's recent notifications by id (what a mark may name), keeps every
 * mark durably as one JSON line in <folder>/<model>/feedback.jsonl (appended and fsynced before
 * the mark counts; read back on start, the last line of an id winning), and answers which
 * windows false positives cover, so that the serving side keeps them out of the entity's
 * history, also after a restart. The reference trainer reads the same file.
 *
 * A mark spans the alert's windows: from the end of the first of the `for` anomalous windows
 * that fired it (starts_at − (for − 1) × step) through the end of the window that resolved
 * it; a mark made while the alert still fires stays open until its resolution is notified,
 * which closes it (a line is appended). Loop thread only.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config/settings.h"
#include "detect/alerts.h"

struct ad_feedback;

enum ad_feedback_verdict { AD_FEEDBACK_FALSE_POSITIVE, AD_FEEDBACK_TRUE_POSITIVE };

/* "false_positive", "true_positive"; and back (-1: neither). */
const char *ad_feedback_verdict_name(enum ad_feedback_verdict v);
int ad_feedback_verdict_parse(const char *name);

struct ad_feedback_options {
    const char *detector, *model;
    const struct ad_strlist *keys; /* the detector's key labels */
    const char *folder;            /* NULL: marks cannot be kept, and are refused */
    size_t recent;                 /* notifications remembered */
    int64_t step_ms, for_windows;
};

/* Reads the marks already kept for the detector. NULL with errstr filled (a file that cannot
 * be read; malformed lines are skipped and logged). The options are copied. */
struct ad_feedback *ad_feedback_new(const struct ad_feedback_options *o, char *errstr,
                                    size_t errstr_size);
void ad_feedback_destroy(struct ad_feedback *fb); /* accepts NULL */

/* A notification of entity key was made (sent, or rebuilt after a restart): remembered by id.
 * A resolution closes the open marks of its alert. */
void ad_feedback_notified(struct ad_feedback *fb, const struct ad_alert *alert, const char *key,
                          size_t len);

/* Whether id is a notification remembered, or a mark kept. */
bool ad_feedback_knows(const struct ad_feedback *fb, const char *id);

/* What a mark covers, for the judge. */
struct ad_feedback_span {
    const char *key; /* borrowed until the next call */
    size_t key_len;
    int64_t from_ms, through_ms; /* window ends; through INT64_MAX while the alert fires */
};

/* Why a mark was refused. */
enum ad_feedback_error { AD_FEEDBACK_OK, AD_FEEDBACK_UNKNOWN, AD_FEEDBACK_NOT_KEPT };

/*
 * Marks the alert of notification id (written to the file first). *record gets the mark as
 * kept (a new reference) and *span what it covers. Returns AD_FEEDBACK_OK; AD_FEEDBACK_UNKNOWN
 * for an id not known; AD_FEEDBACK_NOT_KEPT (errstr says why) when it cannot be kept.
 */
enum ad_feedback_error ad_feedback_mark(struct ad_feedback *fb, const char *id,
                                        enum ad_feedback_verdict verdict, const char *comment,
                                        const char *by, int64_t now_ms, json_t **record,
                                        struct ad_feedback_span *span, char *errstr,
                                        size_t errstr_size);

/* Whether a false-positive mark covers the window of entity key ending at end_ms. */
bool ad_feedback_false_positive(const struct ad_feedback *fb, const char *key, size_t len,
                                int64_t end_ms);

/* The mark of the alert of notification id (a new reference), or NULL when it has none. */
json_t *ad_feedback_get(const struct ad_feedback *fb, const char *id);

/* Marks kept, by verdict; notifications remembered; the file. */
void ad_feedback_status(const struct ad_feedback *fb, json_t *out);

#endif
