#ifndef AD_GRID_H
#define AD_GRID_H

/*
 * One detector's event-time grid: its window store and the watermarks of the sources that
 * feed it. The detector's watermark is the minimum over its sources that are not idle (an idle
 * Kafka source holds nothing back; see watermark.h). When every source is idle, the watermark
 * follows processing time, now minus the idle timeout, so that the windows of entities that
 * went silent keep closing: silence is a signal too. The watermark never goes back.
 *
 * Prometheus samples: a sample at time t describes the bucket that ends at t, so it is
 * observed at ad_grid_sample_time(t, step) = t - step.
 */

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "windows/watermark.h"
#include "windows/window_store.h"

#define AD_GRID_MAX_SOURCES 16

struct ad_grid;

/* store and the watermarks added later are borrowed and must outlive the grid. */
struct ad_grid *ad_grid_new(struct ad_window_store *store, int64_t idle_timeout);
void ad_grid_destroy(struct ad_grid *g);

/* Adds a source's watermark tracker; name is for /status (copied). Returns 0 or -1. */
int ad_grid_add_source(struct ad_grid *g, const char *name, struct ad_watermark *w);

/* The detector's watermark at processing time now (AD_WATERMARK_NONE before any). */
int64_t ad_grid_watermark(struct ad_grid *g, int64_t now);

/* Moves the store to the watermark at now; returns the newest closed bucket's index. */
int64_t ad_grid_advance(struct ad_grid *g, int64_t now);

struct ad_window_store *ad_grid_store(const struct ad_grid *g);

/* The event time at which a Prometheus sample at t is observed. */
int64_t ad_grid_sample_time(int64_t t, int64_t step);

/* Watermark, lag behind now, and per source its inputs (watermark.h). */
void ad_grid_status(struct ad_grid *g, int64_t now, json_t *out);

#endif
