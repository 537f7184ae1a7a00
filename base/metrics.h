#ifndef AD_METRICS_H
#define AD_METRICS_H

/*
 * A Prometheus metrics registry: counters, gauges and histograms with labels, rendered in the
 * text exposition format (version 0.0.4).
 *
 * A family (one metric name) is created on first use with a fixed set of label names; a child
 * is one set of label values within it. ad_metrics_counter() and friends find or create a
 * child under a mutex: call them at set-up (or when a new label value appears) and keep the
 * pointer. Updates on a child are lock-free atomics, safe from any thread. Children are owned
 * by the registry and stay valid until ad_metrics_destroy(). Every update function accepts
 * NULL and does nothing, so a failed registration never crashes a hot path.
 *
 * Label arguments are name/value string pairs ended by NULL:
 *     ad_metrics_counter(m, "anomalyd_config_reloads_total", "Config reloads.",
 *                        "result", "failure", NULL);
 * Registering a name again with another type, help text or label-name set is a programming
 * error: it returns NULL and logs an error.
 */

#include <stddef.h>

struct ad_metrics;
struct ad_counter;
struct ad_gauge;
struct ad_histogram;

/* Reads a value at scrape time (on the thread that renders). */
typedef double (*ad_metrics_read_fn)(void *arg);

struct ad_metrics *ad_metrics_new(void);
void ad_metrics_destroy(struct ad_metrics *m);

struct ad_counter *ad_metrics_counter(struct ad_metrics *m, const char *name, const char *help, ...)
    __attribute__((sentinel));
struct ad_gauge *ad_metrics_gauge(struct ad_metrics *m, const char *name, const char *help, ...)
    __attribute__((sentinel));
/* bounds: n_bounds upper bounds in ascending order; +Inf is implied. Copied. */
struct ad_histogram *ad_metrics_histogram(struct ad_metrics *m, const char *name, const char *help,
                                          const double *bounds, size_t n_bounds, ...)
    __attribute__((sentinel));

/* A counter or gauge whose value comes from fn(arg) at every scrape. arg is borrowed and must
 * outlive the registry. Returns 0, or -1 on a registration error. */
int ad_metrics_counter_func(struct ad_metrics *m, const char *name, const char *help,
                            ad_metrics_read_fn fn, void *arg, ...) __attribute__((sentinel));
int ad_metrics_gauge_func(struct ad_metrics *m, const char *name, const char *help,
                          ad_metrics_read_fn fn, void *arg, ...) __attribute__((sentinel));

void ad_counter_inc(struct ad_counter *c);
/* v must be >= 0; counters never go down. */
void ad_counter_add(struct ad_counter *c, double v);
double ad_counter_value(const struct ad_counter *c);

void ad_gauge_set(struct ad_gauge *g, double v);
void ad_gauge_add(struct ad_gauge *g, double v);
double ad_gauge_value(const struct ad_gauge *g);

void ad_histogram_observe(struct ad_histogram *h, double v);
unsigned long long ad_histogram_count(const struct ad_histogram *h);

/* Renders every family, sorted by name, children in creation order. Returns a NUL-terminated
 * string the caller frees, with its length in *len (may be NULL); NULL when out of memory. */
char *ad_metrics_render(struct ad_metrics *m, size_t *len);

/* Bucket bounds for durations in seconds, from 100 us to 60 s. */
extern const double ad_metrics_seconds_buckets[];
extern const size_t ad_metrics_seconds_buckets_len;

/* Bucket bounds for latencies in seconds, 1 ms to 10 s, at most 1.5x apart (1, 1.5, 2, 3, 4,
 * 5, 7.5 per decade), so that histogram_quantile() stays close around 100 ms too. */
extern const double ad_metrics_latency_buckets[];
extern const size_t ad_metrics_latency_buckets_len;

#endif
