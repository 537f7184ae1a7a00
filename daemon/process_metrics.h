#ifndef AD_PROCESS_METRICS_H
#define AD_PROCESS_METRICS_H

#include "base/metrics.h"

/* Registers the standard process_* metrics (cpu seconds, resident and virtual memory, open
 * and max fds, start time) read from /proc/self at scrape time. Returns 0 or -1. */
int ad_metrics_register_process(struct ad_metrics *m);

#endif
