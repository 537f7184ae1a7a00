#ifndef AD_WATERMARK_H
#define AD_WATERMARK_H

/*
 * Event-time watermarks of one source. A source has inputs: a Kafka source one per assigned
 * partition, a Prometheus source one per query. Each input's watermark is the newest event
 * time it has delivered (for a partition) or the end of its last complete range (for a
 * query). The source's watermark is the minimum over its inputs: no input has more to say
 * about earlier times.
 *
 * An input that delivers nothing for the idle timeout (processing time) stops holding the
 * source back, so a quiet partition stalls the grid only until its timeout; it holds it again
 * as soon as it delivers. Inputs that must never be skipped (Prometheus queries: a Prometheus
 * that is down is not idle) are added with may_idle = false. A source whose every input is
 * idle is idle as a whole. A source without inputs (a consumer before its first assignment,
 * or one the group gave no partition) holds the grid until it has had none for the idle
 * timeout, and is idle after that, unless it is told its inputs are coming (ad_watermark_hold:
 * a consumer still joining its group, whose partitions will deliver what the grid must not
 * close before).
 *
 * Times are Unix milliseconds. Used on the loop thread only.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* No watermark yet: an input that has delivered nothing. */
#define AD_WATERMARK_NONE INT64_MIN

struct ad_watermark;

/* now: processing time, from which a source without inputs counts toward idleness. */
struct ad_watermark *ad_watermark_new(int64_t now);
void ad_watermark_destroy(struct ad_watermark *w);

/* Adds input id (a partition number, a query index) at processing time now. Adding an input
 * that exists resets it. Returns 0 or -1 (out of memory). */
int ad_watermark_add_input(struct ad_watermark *w, int32_t id, bool may_idle, int64_t now);
void ad_watermark_remove_input(struct ad_watermark *w, int32_t id);
size_t ad_watermark_inputs(const struct ad_watermark *w);

/* Input id delivered data up to event time t at processing time now. Unknown ids are
 * ignored. An input's watermark never goes back. Returns the input's watermark before the
 * update (AD_WATERMARK_NONE for an unknown id), so a caller sees when it crosses a boundary. */
int64_t ad_watermark_update(struct ad_watermark *w, int32_t id, int64_t t, int64_t now);

/* Input id's own watermark (AD_WATERMARK_NONE for an unknown id or one without data). */
int64_t ad_watermark_input(const struct ad_watermark *w, int32_t id);

/*
 * The source's watermark at processing time now, with inputs idle after idle_timeout:
 * the minimum over inputs that are not idle. *idle (may be NULL) says whether every input is
 * idle (or there has been none for idle_timeout); the watermark is then the maximum over all
 * inputs.
 * AD_WATERMARK_NONE when no input that counts has delivered anything.
 */
int64_t ad_watermark_get(const struct ad_watermark *w, int64_t now, int64_t idle_timeout,
                         bool *idle);

/* The source's inputs are coming (a Kafka consumer joining its group or waiting for its
 * assignment): without inputs it holds the grid, and is not idle, before processing time
 * until, whatever the idle timeout. INT64_MIN ends the hold. */
void ad_watermark_hold(struct ad_watermark *w, int64_t until);

/* Whether the source holds the grid at processing time now without having delivered anything
 * that counts: it is not idle, and its watermark is AD_WATERMARK_NONE (no inputs yet, or an
 * input that has not delivered). Another input may then bring data older than any open
 * bucket, so inputs that can wait (a Prometheus query) should. */
bool ad_watermark_waiting(const struct ad_watermark *w, int64_t now, int64_t idle_timeout);

/* Per input: id, watermark (RFC 3339), idle, seconds since it last delivered. */
void ad_watermark_status(const struct ad_watermark *w, int64_t now, int64_t idle_timeout,
                         json_t *out);

#endif
