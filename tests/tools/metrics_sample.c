/* Prints a registry with one of everything the daemon registers, for promtool to lint. */
#include <stdio.h>
#include <stdlib.h>

#include "base/metrics.h"
#include "daemon/process_metrics.h"

static double read_queue_depth(void *arg)
{
    (void)arg;
    return 17;
}

static double read_bytes_in(void *arg)
{
    (void)arg;
    return 123456789;
}

int main(void)
{
    struct ad_metrics *m = ad_metrics_new();
    if (!m)
        return 1;

    struct ad_counter *events =
        ad_metrics_counter(m, "anomalyd_sample_events_total", "Events consumed.", NULL);
    struct ad_counter *ok = ad_metrics_counter(
        m, "anomalyd_sample_reloads_total", "Config reloads by result.", "result", "success", NULL);
    struct ad_counter *failed = ad_metrics_counter(
        m, "anomalyd_sample_reloads_total", "Config reloads by result.", "result", "failure", NULL);
    struct ad_gauge *up =
        ad_metrics_gauge(m, "anomalyd_sample_up", "Whether the sample runs.", NULL);
    struct ad_gauge *lag =
        ad_metrics_gauge(m, "anomalyd_sample_lag_seconds", "Consumer lag by partition.", "topic",
                         "in\"put\\", "partition", "0", NULL);
    struct ad_gauge *ratio = ad_metrics_gauge(
        m, "anomalyd_sample_score_ratio", "A value with a fraction,\nand a newline in help.", NULL);
    struct ad_histogram *latency = ad_metrics_histogram(
        m, "anomalyd_sample_score_duration_seconds", "Scoring latency.", ad_metrics_seconds_buckets,
        ad_metrics_seconds_buckets_len, "backend", "cpu", NULL);
    const double sizes[] = {1, 8, 64};
    struct ad_histogram *batch = ad_metrics_histogram(m, "anomalyd_sample_batch_size_events",
                                                      "Events per batch.", sizes, 3, NULL);
    int rc = 0;
    if (!events || !ok || !failed || !up || !lag || !ratio || !latency || !batch)
        rc = 1;
    if (ad_metrics_gauge_func(m, "anomalyd_sample_queue_depth", "Queued events.", read_queue_depth,
                              NULL, "queue", "score", NULL) != 0 ||
        ad_metrics_counter_func(m, "anomalyd_sample_received_bytes_total", "Bytes received.",
                                read_bytes_in, NULL, NULL) != 0 ||
        ad_metrics_register_process(m) != 0)
        rc = 1;

    ad_counter_add(events, 1000);
    ad_counter_inc(ok);
    ad_gauge_set(up, 1);
    ad_gauge_set(lag, 0.125);
    ad_gauge_set(ratio, 0.1 + 0.2);
    const double observations[] = {0.00003, 0.0007, 0.004, 0.2, 3, 120};
    for (size_t i = 0; i < sizeof observations / sizeof observations[0]; i++)
        ad_histogram_observe(latency, observations[i]);
    ad_histogram_observe(batch, 5);
    ad_histogram_observe(batch, 100);

    size_t len;
    char *text = ad_metrics_render(m, &len);
    if (!text || fwrite(text, 1, len, stdout) != len)
        rc = 1;
    free(text);
    ad_metrics_destroy(m);
    return rc;
}
