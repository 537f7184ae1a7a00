#ifndef AD_ROUTING_H
#define AD_ROUTING_H

/*
 * From a source's data to a detector's windows: which of a source's features feed which of a
 * detector's, where the detector's key labels come from, how an entity key is written, and
 * the window store a detector's settings describe. The live pipeline (pipeline.c) and the
 * offline replay (replay.c) share it, so that both put the same event into the same cell.
 */

#include <stddef.h>
#include <stdint.h>

#include "config/settings.h"
#include "stream/log_rules.h"
#include "windows/window_store.h"

/* Entity keys longer than this are refused; label values that long are almost always bugs. */
#define AD_ROUTING_MAX_KEY 2048

/* What one detector takes from one source. */
struct ad_route {
    size_t detector;
    size_t n_features;
    size_t source_feature[AD_WINDOW_MAX_FEATURES];
    size_t detector_feature[AD_WINDOW_MAX_FEATURES];
    /* For each of the detector's keys: the Kafka label index, or the Prometheus series
     * label name (borrowed from the settings). */
    int label_index[AD_LOG_MAX_LABELS];
    const char *series_label[AD_LOG_MAX_LABELS];
};

/* Fills routes (room for s->n_detectors) with the routes of source si of a validated config,
 * one per detector that uses a feature of it, in detector order. Returns how many. */
size_t ad_routing_build(const struct ad_settings *s, size_t si, struct ad_route *routes);

/* Appends label value v (n bytes) as the index-th value of a NUL-separated entity key of len
 * bytes (batch.h); returns the new length, or SIZE_MAX when the key would exceed
 * AD_ROUTING_MAX_KEY (0 is the length of a key of one empty value). */
size_t ad_routing_key_append(char *key, size_t len, size_t index, const char *v, size_t n);

enum ad_routing_result {
    AD_ROUTING_OK,
    AD_ROUTING_KEY_TOO_LONG,
    AD_ROUTING_NO_FEATURES /* the event holds none of the detector's features */
};

/*
 * An accepted log event as route's detector (d) sees it: its entity key in key (room for
 * AD_ROUTING_MAX_KEY bytes; *len bytes), and values[f] for every detector feature f whose bit
 * is set in *present.
 */
enum ad_routing_result ad_routing_log_event(const struct ad_route *route,
                                            const struct ad_settings_detector *d,
                                            const struct ad_log_event *ev, char *key, size_t *len,
                                            double *values, uint64_t *present);

/* The window store of detector di: fills spec, pointing it at aggs and fills (room for
 * AD_WINDOW_MAX_FEATURES each, which must outlive the use of spec). */
void ad_routing_window_spec(const struct ad_settings *s, size_t di, size_t max_batch,
                            struct ad_window_spec *spec, enum ad_agg *aggs,
                            enum ad_fill_policy *fills);

#endif
