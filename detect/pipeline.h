#ifndef AD_PIPELINE_H
#define AD_PIPELINE_H

/*
 * The data path built from a config: Kafka and Prometheus sources, one event-time grid and
 * window store per detector, and the routing between them.
 *
 * Each accepted log event and each Prometheus sample is routed to every detector that uses a
 * feature of its source: its entity key is built from the detector's key labels, and its
 * values are mapped to the detector's feature order. A timer moves every detector's grid to
 * its watermark (unless the scorer's queue is full); windows of the buckets that close go to
 * the detector's serving side (serving.h), which has them scored; once every window of a bucket
 * has come back, the Kafka offsets of the events in that bucket are released for commit. A
 * reload that leaves the pipeline as it is loads each detector's CURRENT model again. Stopping
 * waits for the batches in flight, then stops the sources, which commit what was released.
 *
 * On reload the pipeline is rebuilt only when the kafka, sources, detectors, feedback or
 * sinks.alertmanager sections changed; the old one is stopped in the background and leaves the
 * group before the new consumers join it (its uncommitted events are read again by the new
 * consumer, so nothing is lost, and its windows are rebuilt from the commit's rebuild point:
 * docs/delivery.md). A change of sinks.kafka or sinks.redis only replaces that sink.
 *
 * It is a daemon component (daemon.h): apply, stop and status.
 */

#include <stddef.h>

#include <event2/event.h>

#include "base/component.h"
#include "base/metrics.h"
#include "config/config.h"
#include "gpu/scorer.h"

struct ad_pipeline;

/* scorer (borrowed, outlives the pipeline) may be NULL: windows are then handed on unscored. */
struct ad_pipeline *ad_pipeline_new(struct event_base *base, struct ad_metrics *metrics,
                                    const struct ad_config *config, struct ad_scorer *scorer,
                                    char *errstr, size_t errstr_size);
void ad_pipeline_destroy(struct ad_pipeline *p);

/* The component to register with the daemon; ctx is p. */
struct ad_component ad_pipeline_component(struct ad_pipeline *p);

#endif
