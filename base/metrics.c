#define AD_LOG_MODULE "metrics"
#include "base/grow.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/utf8.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double ad_metrics_seconds_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                             0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                             1,      2.5,     5,      10,    30,     60};
const size_t ad_metrics_seconds_buckets_len =
    sizeof ad_metrics_seconds_buckets / sizeof ad_metrics_seconds_buckets[0];

const double ad_metrics_latency_buckets[] = {
    0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02,
    0.03,  0.04,   0.05,  0.075, 0.1,   0.15,  0.2,    0.3,  0.4,   0.5,
    0.75,  1,      1.5,   2,     3,     4,     5,      7.5,  10};
const size_t ad_metrics_latency_buckets_len =
    sizeof ad_metrics_latency_buckets / sizeof ad_metrics_latency_buckets[0];

enum metric_type { TYPE_COUNTER, TYPE_GAUGE, TYPE_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* Doubles live in atomics as their bit patterns: C11 has no atomic floating-point add. */
struct ad_counter {
    _Atomic uint64_t bits;
};

struct ad_gauge {
    _Atomic uint64_t bits;
};

struct ad_histogram {
    size_t n_bounds;
    const double *bounds; /* the family's copy */
    _Atomic uint64_t sum_bits;
    /* n_bounds + 1 per-bucket (not cumulative) counts; the last one is above every bound.
     * The count is their sum, so _count always equals the +Inf bucket. */
    _Atomic uint64_t *buckets;
};

struct child {
    struct child *next;
    char **values;         /* one per family label, in the family's label order */
    ad_metrics_read_fn fn; /* set: the value is fn(arg) at render time */
    void *arg;
    union {
        struct ad_counter counter;
        struct ad_gauge gauge;
        struct ad_histogram hist;
    } u;
    _Atomic uint64_t buckets[]; /* histograms only */
};

struct family {
    struct family *next; /* the list is kept sorted by name */
    char *name;
    char *help;
    enum metric_type type;
    size_t n_labels;
    char **labels;
    size_t n_bounds;
    double *bounds;
    struct child *children;
    struct child **tail; /* creation order */
};

struct ad_metrics {
    pthread_mutex_t lock;
    struct family *families;
};

/* The label pairs of one call, as given. */
struct label_args {
    size_t n;
    const char **names;
    const char **values;
};

static uint64_t double_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double bits_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, double_bits(bits_double(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

static double atomic_load_double(const _Atomic uint64_t *p)
{
    return bits_double(atomic_load_explicit((_Atomic uint64_t *)p, memory_order_relaxed));
}

/* ---- validation ---- */

static bool valid_metric_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool valid_label_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* Reads the NULL-ended name/value pairs. Returns 0, or -1 (logged). */
static int collect_labels(const char *metric, va_list ap, struct label_args *out)
{
    va_list count_ap;
    size_t n = 0;
    const char *name;

    out->n = 0;
    out->names = NULL;
    out->values = NULL;

    va_copy(count_ap, ap);
    while ((name = va_arg(count_ap, const char *)) != NULL) {
        if (va_arg(count_ap, const char *) == NULL) {
            va_end(count_ap);
            AD_ERROR("metric %s: label %s has no value", metric, name);
            return -1;
        }
        n++;
    }
    va_end(count_ap);
    if (n == 0)
        return 0;

    out->names = calloc(n, sizeof *out->names);
    out->values = calloc(n, sizeof *out->values);
    if (!out->names || !out->values) {
        free(out->names);
        free(out->values);
        out->names = NULL;
        out->values = NULL;
        AD_ERROR("metric %s: out of memory", metric);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        out->names[i] = va_arg(ap, const char *);
        out->values[i] = va_arg(ap, const char *);
    }
    out->n = n;
    return 0;
}

static void free_label_args(struct label_args *la)
{
    free(la->names);
    free(la->values);
}

static int check_labels(const char *metric, enum metric_type type, const struct label_args *la)
{
    for (size_t i = 0; i < la->n; i++) {
        const char *l = la->names[i];
        if (!valid_label_name(l) || strncmp(l, "__", 2) == 0) {
            AD_ERROR("metric %s: invalid label name \"%s\"", metric, l);
            return -1;
        }
        if (type == TYPE_HISTOGRAM && strcmp(l, "le") == 0) {
            AD_ERROR("metric %s: label name \"le\" is reserved for histogram buckets", metric);
            return -1;
        }
        if (!ad_utf8_valid(la->values[i], strlen(la->values[i]))) {
            AD_ERROR("metric %s: label %s value is not valid UTF-8", metric, l);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(l, la->names[j]) == 0) {
                AD_ERROR("metric %s: label %s given twice", metric, l);
                return -1;
            }
        }
    }
    return 0;
}

static int check_bounds(const char *metric, const double *bounds, size_t n)
{
    if (n > 0 && !bounds) {
        AD_ERROR("metric %s: no bucket bounds", metric);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(bounds[i])) {
            AD_ERROR("metric %s: bucket bound %zu is not finite (+Inf is implied)", metric, i);
            return -1;
        }
        if (i > 0 && !(bounds[i] > bounds[i - 1])) {
            AD_ERROR("metric %s: bucket bounds are not strictly ascending", metric);
            return -1;
        }
    }
    return 0;
}

/* ---- families and children ---- */

/* True when full is base plus a suffix that a histogram named base renders. */
static bool is_histogram_series(const char *full, const char *base)
{
    size_t n = strlen(base);
    if (strncmp(full, base, n) != 0)
        return false;
    const char *rest = full + n;
    return strcmp(rest, "_bucket") == 0 || strcmp(rest, "_sum") == 0 || strcmp(rest, "_count") == 0;
}

/* A histogram's _sum/_count/_bucket series must not collide with another family's. */
static const struct family *find_collision(const struct ad_metrics *m, const char *name,
                                           enum metric_type type)
{
    for (const struct family *f = m->families; f; f = f->next) {
        if (type == TYPE_HISTOGRAM && is_histogram_series(f->name, name))
            return f;
        if (f->type == TYPE_HISTOGRAM && is_histogram_series(name, f->name))
            return f;
    }
    return NULL;
}

static void free_strings(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_child(struct child *c, size_t n_labels)
{
    free_strings(c->values, n_labels);
    free(c);
}

static void free_family(struct family *f)
{
    struct child *c = f->children;
    while (c) {
        struct child *next = c->next;
        free_child(c, f->n_labels);
        c = next;
    }
    free(f->name);
    free(f->help);
    free_strings(f->labels, f->n_labels);
    free(f->bounds);
    free(f);
}

static struct family *family_new(const char *name, const char *help, enum metric_type type,
                                 const struct label_args *la, const double *bounds, size_t n_bounds)
{
    struct family *f = calloc(1, sizeof *f);
    if (!f)
        goto err;
    f->type = type;
    f->tail = &f->children;
    f->name = strdup(name);
    f->help = strdup(help);
    if (!f->name || !f->help)
        goto err;
    if (la->n > 0) {
        f->labels = calloc(la->n, sizeof *f->labels);
        if (!f->labels)
            goto err;
        f->n_labels = la->n;
        for (size_t i = 0; i < la->n; i++) {
            f->labels[i] = strdup(la->names[i]);
            if (!f->labels[i])
                goto err;
        }
    }
    if (n_bounds > 0) {
        f->bounds = malloc(n_bounds * sizeof *f->bounds);
        if (!f->bounds)
            goto err;
        memcpy(f->bounds, bounds, n_bounds * sizeof *f->bounds);
        f->n_bounds = n_bounds;
    }
    return f;

err:
    if (f)
        free_family(f);
    return NULL;
}

/* Index of each family label in the call's pairs, or -1 when the name sets differ. */
static int map_labels(const struct family *f, const struct label_args *la, size_t *idx)
{
    if (la->n != f->n_labels)
        return -1;
    for (size_t i = 0; i < f->n_labels; i++) {
        size_t j = 0;
        while (j < la->n && strcmp(f->labels[i], la->names[j]) != 0)
            j++;
        if (j == la->n)
            return -1;
        idx[i] = j;
    }
    return 0;
}

static int check_same_family(const struct family *f, const char *help, enum metric_type type,
                             const struct label_args *la, size_t *idx, const double *bounds,
                             size_t n_bounds)
{
    if (f->type != type) {
        AD_ERROR("metric %s: registered as %s, now requested as %s", f->name, type_names[f->type],
                 type_names[type]);
        return -1;
    }
    if (strcmp(f->help, help) != 0) {
        AD_ERROR("metric %s: registered with another help text", f->name);
        return -1;
    }
    if (map_labels(f, la, idx) != 0) {
        AD_ERROR("metric %s: registered with another set of label names", f->name);
        return -1;
    }
    if (type == TYPE_HISTOGRAM &&
        (f->n_bounds != n_bounds ||
         (n_bounds > 0 && memcmp(f->bounds, bounds, n_bounds * sizeof *bounds) != 0))) {
        AD_ERROR("metric %s: registered with other bucket bounds", f->name);
        return -1;
    }
    return 0;
}

static struct child *find_child(const struct family *f, const struct label_args *la,
                                const size_t *idx)
{
    for (struct child *c = f->children; c; c = c->next) {
        size_t i = 0;
        while (i < f->n_labels && strcmp(c->values[i], la->values[idx[i]]) == 0)
            i++;
        if (i == f->n_labels)
            return c;
    }
    return NULL;
}

static struct child *child_new(const struct family *f, const struct label_args *la,
                               const size_t *idx, ad_metrics_read_fn fn, void *arg)
{
    size_t n_buckets = f->type == TYPE_HISTOGRAM ? f->n_bounds + 1 : 0;
    struct child *c = calloc(1, sizeof *c + n_buckets * sizeof c->buckets[0]);
    if (!c)
        goto err;
    if (f->n_labels > 0) {
        c->values = calloc(f->n_labels, sizeof *c->values);
        if (!c->values)
            goto err;
        for (size_t i = 0; i < f->n_labels; i++) {
            c->values[i] = strdup(la->values[idx[i]]);
            if (!c->values[i])
                goto err;
        }
    }
    c->fn = fn;
    c->arg = arg;
    switch (f->type) {
    case TYPE_COUNTER:
        atomic_init(&c->u.counter.bits, double_bits(0.0));
        break;
    case TYPE_GAUGE:
        atomic_init(&c->u.gauge.bits, double_bits(0.0));
        break;
    case TYPE_HISTOGRAM:
        c->u.hist.n_bounds = f->n_bounds;
        c->u.hist.bounds = f->bounds;
        c->u.hist.buckets = c->buckets;
        atomic_init(&c->u.hist.sum_bits, double_bits(0.0));
        for (size_t i = 0; i < n_buckets; i++)
            atomic_init(&c->buckets[i], 0);
        break;
    }
    return c;

err:
    if (c)
        free_child(c, f->n_labels);
    return NULL;
}

/* Finds or creates the child for one registration call; NULL (logged) on any error. */
static struct child *lookup(struct ad_metrics *m, enum metric_type type, const char *name,
                            const char *help, const double *bounds, size_t n_bounds,
                            ad_metrics_read_fn fn, void *arg, va_list ap)
{
    struct label_args la = {0};
    struct family *f = NULL;
    struct child *c = NULL;
    size_t *idx = NULL;
    bool locked = false;
    bool fresh = false;

    if (!valid_metric_name(name)) {
        AD_ERROR("invalid metric name \"%s\"", name ? name : "(null)");
        goto out;
    }
    if (!m) {
        AD_ERROR("metric %s: no registry", name);
        goto out;
    }
    if (!help || !ad_utf8_valid(help, strlen(help))) {
        AD_ERROR("metric %s: help text missing or not valid UTF-8", name);
        goto out;
    }
    if (collect_labels(name, ap, &la) != 0 || check_labels(name, type, &la) != 0)
        goto out;
    if (type == TYPE_HISTOGRAM && check_bounds(name, bounds, n_bounds) != 0)
        goto out;
    idx = calloc(la.n + 1, sizeof *idx);
    if (!idx) {
        AD_ERROR("metric %s: out of memory", name);
        goto out;
    }

    pthread_mutex_lock(&m->lock);
    locked = true;
    struct family **pos = &m->families;
    while (*pos && strcmp((*pos)->name, name) < 0)
        pos = &(*pos)->next;
    if (*pos && strcmp((*pos)->name, name) == 0) {
        f = *pos;
        if (check_same_family(f, help, type, &la, idx, bounds, n_bounds) != 0)
            goto out;
        c = find_child(f, &la, idx);
        if (c) {
            /* The same registration twice is fine; a second writer for one series is not. */
            if (c->fn != fn || c->arg != arg) {
                AD_ERROR("metric %s: series already registered %s", name,
                         c->fn ? "as a function" : "as a plain metric");
                c = NULL;
            }
            goto out;
        }
    } else {
        const struct family *other = find_collision(m, name, type);
        if (other) {
            AD_ERROR("metric %s: collides with histogram series of %s", name, other->name);
            goto out;
        }
        f = family_new(name, help, type, &la, bounds, n_bounds);
        if (!f) {
            AD_ERROR("metric %s: out of memory", name);
            goto out;
        }
        fresh = true;
        for (size_t i = 0; i < la.n; i++)
            idx[i] = i;
    }

    c = child_new(f, &la, idx, fn, arg);
    if (!c) {
        AD_ERROR("metric %s: out of memory", name);
        if (fresh)
            free_family(f);
        goto out;
    }
    *f->tail = c;
    f->tail = &c->next;
    if (fresh) {
        f->next = *pos;
        *pos = f;
    }

out:
    if (locked)
        pthread_mutex_unlock(&m->lock);
    free(idx);
    free_label_args(&la);
    return c;
}

/* ---- public registration ---- */

struct ad_metrics *ad_metrics_new(void)
{
    struct ad_metrics *m = calloc(1, sizeof *m);
    if (!m)
        goto err;
    if (pthread_mutex_init(&m->lock, NULL) != 0)
        goto err;
    return m;

err:
    free(m);
    AD_ERROR("cannot create the metrics registry");
    return NULL;
}

void ad_metrics_destroy(struct ad_metrics *m)
{
    if (!m)
        return;
    struct family *f = m->families;
    while (f) {
        struct family *next = f->next;
        free_family(f);
        f = next;
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

struct ad_counter *ad_metrics_counter(struct ad_metrics *m, const char *name, const char *help, ...)
{
    va_list ap;
    va_start(ap, help);
    struct child *c = lookup(m, TYPE_COUNTER, name, help, NULL, 0, NULL, NULL, ap);
    va_end(ap);
    return c ? &c->u.counter : NULL;
}

struct ad_gauge *ad_metrics_gauge(struct ad_metrics *m, const char *name, const char *help, ...)
{
    va_list ap;
    va_start(ap, help);
    struct child *c = lookup(m, TYPE_GAUGE, name, help, NULL, 0, NULL, NULL, ap);
    va_end(ap);
    return c ? &c->u.gauge : NULL;
}

struct ad_histogram *ad_metrics_histogram(struct ad_metrics *m, const char *name, const char *help,
                                          const double *bounds, size_t n_bounds, ...)
{
    va_list ap;
    va_start(ap, n_bounds);
    struct child *c = lookup(m, TYPE_HISTOGRAM, name, help, bounds, n_bounds, NULL, NULL, ap);
    va_end(ap);
    return c ? &c->u.hist : NULL;
}

static int register_func(struct ad_metrics *m, enum metric_type type, const char *name,
                         const char *help, ad_metrics_read_fn fn, void *arg, va_list labels)
{
    if (!fn) {
        AD_ERROR("metric %s: no read function", name ? name : "(null)");
        return -1;
    }
    return lookup(m, type, name, help, NULL, 0, fn, arg, labels) ? 0 : -1;
}

int ad_metrics_counter_func(struct ad_metrics *m, const char *name, const char *help,
                            ad_metrics_read_fn fn, void *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int rc = register_func(m, TYPE_COUNTER, name, help, fn, arg, ap);
    va_end(ap);
    return rc;
}

int ad_metrics_gauge_func(struct ad_metrics *m, const char *name, const char *help,
                          ad_metrics_read_fn fn, void *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int rc = register_func(m, TYPE_GAUGE, name, help, fn, arg, ap);
    va_end(ap);
    return rc;
}

/* ---- updates ---- */

void ad_counter_inc(struct ad_counter *c)
{
    if (c)
        atomic_add_double(&c->bits, 1.0);
}

void ad_counter_add(struct ad_counter *c, double v)
{
    /* Also false for NaN. */
    if (c && v >= 0)
        atomic_add_double(&c->bits, v);
}

double ad_counter_value(const struct ad_counter *c)
{
    return c ? atomic_load_double(&c->bits) : 0.0;
}

void ad_gauge_set(struct ad_gauge *g, double v)
{
    if (g)
        atomic_store_explicit(&g->bits, double_bits(v), memory_order_relaxed);
}

void ad_gauge_add(struct ad_gauge *g, double v)
{
    if (g)
        atomic_add_double(&g->bits, v);
}

double ad_gauge_value(const struct ad_gauge *g)
{
    return g ? atomic_load_double(&g->bits) : 0.0;
}

void ad_histogram_observe(struct ad_histogram *h, double v)
{
    if (!h)
        return;
    /* First bound >= v; NaN compares false everywhere and lands in the +Inf bucket. */
    size_t lo = 0, hi = h->n_bounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    atomic_add_double(&h->sum_bits, v);
}

unsigned long long ad_histogram_count(const struct ad_histogram *h)
{
    if (!h)
        return 0;
    unsigned long long n = 0;
    for (size_t i = 0; i <= h->n_bounds; i++)
        n += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
    return n;
}

/* ---- rendering ---- */

struct buf {
    char *data;
    size_t len;
    size_t cap;
    bool oom;
};

static void buf_put(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (ad_grow(&b->data, &b->cap, b->len + n + 1, 1) < 0) {
        b->oom = true;
        return;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_puts(struct buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_putc(struct buf *b, char c)
{
    buf_put(b, &c, 1);
}

/* Escapes backslash and newline, and the double quote too when quote is set. */
static void buf_put_escaped(struct buf *b, const char *s, bool quote)
{
    const char *run = s;
    for (; *s; s++) {
        const char *esc = NULL;
        if (*s == '\\')
            esc = "\\\\";
        else if (*s == '\n')
            esc = "\\n";
        else if (*s == '"' && quote)
            esc = "\\\"";
        if (esc) {
            buf_put(b, run, (size_t)(s - run));
            buf_puts(b, esc);
            run = s + 1;
        }
    }
    buf_put(b, run, (size_t)(s - run));
}

/* Integers print as such (Prometheus and people both read them better); anything else gets
 * the shortest form that reads back as the same double. */
static void format_double(char *out, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(out, size, "NaN");
    } else if (isinf(v)) {
        snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
    } else if (v == trunc(v) && fabs(v) < 9007199254740992.0) {
        snprintf(out, size, "%.0f", v == 0 ? 0.0 : v); /* no "-0" */
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(out, size, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

static void buf_put_double(struct buf *b, double v)
{
    char tmp[40];
    format_double(tmp, sizeof tmp, v);
    buf_puts(b, tmp);
}

static void put_labels(struct buf *b, const struct family *f, const struct child *c, const char *le)
{
    if (f->n_labels == 0 && !le)
        return;
    buf_putc(b, '{');
    for (size_t i = 0; i < f->n_labels; i++) {
        if (i > 0)
            buf_putc(b, ',');
        buf_puts(b, f->labels[i]);
        buf_puts(b, "=\"");
        buf_put_escaped(b, c->values[i], true);
        buf_putc(b, '"');
    }
    if (le) {
        if (f->n_labels > 0)
            buf_putc(b, ',');
        buf_puts(b, "le=\"");
        buf_puts(b, le);
        buf_putc(b, '"');
    }
    buf_putc(b, '}');
}

static void put_series_start(struct buf *b, const struct family *f, const char *suffix,
                             const struct child *c, const char *le)
{
    buf_puts(b, f->name);
    buf_puts(b, suffix);
    put_labels(b, f, c, le);
    buf_putc(b, ' ');
}

static void render_histogram(struct buf *b, const struct family *f, const struct child *c)
{
    const struct ad_histogram *h = &c->u.hist;
    char tmp[40];
    uint64_t cum = 0;

    /* Read each bucket once, so every line agrees with the one before. */
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < h->n_bounds)
            format_double(tmp, sizeof tmp, h->bounds[i]);
        else
            snprintf(tmp, sizeof tmp, "+Inf");
        put_series_start(b, f, "_bucket", c, tmp);
        snprintf(tmp, sizeof tmp, "%" PRIu64 "\n", cum);
        buf_puts(b, tmp);
    }
    put_series_start(b, f, "_sum", c, NULL);
    buf_put_double(b, atomic_load_double(&h->sum_bits));
    buf_putc(b, '\n');
    put_series_start(b, f, "_count", c, NULL);
    snprintf(tmp, sizeof tmp, "%" PRIu64 "\n", cum);
    buf_puts(b, tmp);
}

static void render_family(struct buf *b, const struct family *f)
{
    buf_puts(b, "# HELP ");
    buf_puts(b, f->name);
    buf_putc(b, ' ');
    buf_put_escaped(b, f->help, false);
    buf_puts(b, "\n# TYPE ");
    buf_puts(b, f->name);
    buf_putc(b, ' ');
    buf_puts(b, type_names[f->type]);
    buf_putc(b, '\n');

    for (const struct child *c = f->children; c; c = c->next) {
        if (f->type == TYPE_HISTOGRAM) {
            render_histogram(b, f, c);
            continue;
        }
        double v;
        if (c->fn)
            v = c->fn(c->arg);
        else if (f->type == TYPE_COUNTER)
            v = atomic_load_double(&c->u.counter.bits);
        else
            v = atomic_load_double(&c->u.gauge.bits);
        put_series_start(b, f, "", c, NULL);
        buf_put_double(b, v);
        buf_putc(b, '\n');
    }
}

char *ad_metrics_render(struct ad_metrics *m, size_t *len)
{
    struct buf b = {0};

    if (len)
        *len = 0;
    if (!m)
        return NULL;
    /* Read functions run under the lock: they must not register metrics. */
    pthread_mutex_lock(&m->lock);
    for (const struct family *f = m->families; f; f = f->next)
        render_family(&b, f);
    pthread_mutex_unlock(&m->lock);
    buf_put(&b, "", 0); /* an empty registry still yields "" */

    if (b.oom) {
        free(b.data);
        AD_ERROR("out of memory rendering metrics");
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.data;
}
