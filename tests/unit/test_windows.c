/*
 * Golden cases for the event-time grid: tests/unit/window_cases/NAME.json describes a detector,
 * its sources and a sequence of steps; NAME.expected holds every window handed on and the
 * final counters. (AD_UPDATE_GOLDEN=1 rewrites the .expected files; review them.)
 *
 * A case file:
 *   {"spec": {"step": "10s", "window": 3, "lateness": "5s", "idle_timeout": "1m",
 *             "entity_idle_timeout": "10m", "max_entities": 100, "max_batch": 1000,
 *             "features": [{"agg": "sum", "fill": "zero"}, {"agg": "last", "fill": "carry"}]},
 *    "sources": {"logs": {"inputs": [0, 1]}, "prom": {"inputs": [0], "may_idle": false}},
 *    "compare_sorted": true,
 *    "steps": [["at", "0s"],                            processing time is now 0s
 *              ["event", "logs", 0, "12s", "a", {"0": 1}],   input 0 of logs, event time 12s
 *              ["sample", "prom", 0, "20s", "a", {"1": 7}],  a Prometheus sample at 20s
 *              ["range", "prom", 0, "20s"],                  prom's query 0 complete to 20s
 *              ["advance"]]}
 * Times are durations ("12s") or integers (ms). With compare_sorted the events are also run
 * sorted by event time (every other step where it was), and both runs must hand on the same
 * windows: out-of-order input within the lateness changes nothing.
 */

#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/units.h"
#include "windows/grid.h"
#include "windows/window_store.h"

#define CASES_DIR   AD_SOURCE_DIR "/tests/unit/window_cases"
#define MAX_SOURCES 4

struct output {
    char *text;
    size_t len, cap;
};

static void out_printf(struct output *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void out_printf(struct output *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    while (o->len + (size_t)n + 1 > o->cap) {
        o->cap = o->cap ? o->cap * 2 : 4096;
        o->text = realloc(o->text, o->cap);
    }
    va_start(ap, fmt);
    vsnprintf(o->text + o->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    o->len += (size_t)n;
}

static int64_t ms_of(json_t *v)
{
    int64_t ms = 0;
    if (json_is_integer(v))
        return json_integer_value(v);
    if (!json_is_string(v) || ad_duration_parse(json_string_value(v), &ms) < 0)
        fail_msg("bad time %s", json_dumps(v, JSON_ENCODE_ANY));
    return ms;
}

static void print_number(struct output *o, float v)
{
    if (isnan(v))
        out_printf(o, "nan");
    else
        out_printf(o, "%g", (double)v);
}

static void consume(void *arg, struct ad_window_batch *b)
{
    struct output *o = arg;
    out_printf(o, "batch bucket=%llds windows=%zu%s", (long long)(b->bucket_start / 1000),
               b->n_windows, b->last_of_bucket ? " last" : "");
    if (b->skipped_no_data)
        out_printf(o, " skipped_no_data=%zu", b->skipped_no_data);
    out_printf(o, "\n");
    for (size_t w = 0; w < b->n_windows; w++) {
        size_t len;
        const char *key = ad_window_batch_key(b, w, &len);
        char name[128];
        size_t n = len < sizeof name - 1 ? len : sizeof name - 1;
        memcpy(name, key, n);
        for (size_t i = 0; i < n; i++)
            if (name[i] == '\0')
                name[i] = '/';
        name[n] = '\0';
        out_printf(o,
                   "bucket=%llds entity=%s history=%u values=", (long long)(b->bucket_start / 1000),
                   name, b->history[w]);
        for (size_t t = 0; t < b->window_len; t++) {
            out_printf(o, t ? " [" : "[");
            for (size_t f = 0; f < b->n_features; f++) {
                size_t i = (w * b->window_len + t) * b->n_features + f;
                if (f)
                    out_printf(o, ",");
                print_number(o, b->values[i]);
                if (!b->mask[i])
                    out_printf(o, "?");
            }
            out_printf(o, "]");
        }
        out_printf(o, "\n");
    }
    ad_window_batch_free(b);
}

static enum ad_agg agg_of(const char *s)
{
    const char *names[] = {"sum", "mean", "min", "max", "last"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0)
            return (enum ad_agg)i;
    fail_msg("bad agg %s", s);
    return AD_AGG_SUM;
}

static enum ad_fill_policy fill_of(const char *s)
{
    const char *names[] = {"zero", "carry", "nan"};
    for (int i = 0; i < 3; i++)
        if (strcmp(s, names[i]) == 0)
            return (enum ad_fill_policy)i;
    fail_msg("bad fill %s", s);
    return AD_FILL_ZERO;
}

struct run {
    struct ad_window_store *store;
    struct ad_grid *grid;
    const char *names[MAX_SOURCES];
    struct ad_watermark *sources[MAX_SOURCES];
    size_t n_sources;
    size_t n_features;
    int64_t step;
};

static struct ad_watermark *source(struct run *r, const char *name)
{
    for (size_t i = 0; i < r->n_sources; i++)
        if (strcmp(r->names[i], name) == 0)
            return r->sources[i];
    fail_msg("no source %s", name);
    return NULL;
}

static void observe(struct run *r, json_t *step, int64_t t)
{
    const char *entity = json_string_value(json_array_get(step, 4));
    json_t *values = json_array_get(step, 5);
    double v[AD_WINDOW_MAX_FEATURES] = {0};
    uint64_t present = 0;
    const char *k;
    json_t *x;
    json_object_foreach (values, k, x) {
        int f = atoi(k);
        v[f] = json_number_value(x);
        present |= 1ULL << f;
    }
    /* Entity names use '/' between label values in case files. */
    char key[128];
    size_t len = strlen(entity);
    memcpy(key, entity, len);
    for (size_t i = 0; i < len; i++)
        if (key[i] == '/')
            key[i] = '\0';
    ad_window_store_add(r->store, key, len, t, v, present);
}

/* Runs the steps; steps may be reordered (compare_sorted) by the caller. */
static char *run_case(json_t *doc, json_t *steps)
{
    json_t *spec = json_object_get(doc, "spec");
    json_t *features = json_object_get(spec, "features");
    struct output out = {NULL, 0, 0};
    struct run r = {0};
    enum ad_agg aggs[AD_WINDOW_MAX_FEATURES];
    enum ad_fill_policy fills[AD_WINDOW_MAX_FEATURES];
    char err[256];

    out_printf(&out, "%s", "");
    r.n_features = json_array_size(features);
    for (size_t f = 0; f < r.n_features; f++) {
        json_t *feature = json_array_get(features, f);
        aggs[f] = agg_of(json_string_value(json_object_get(feature, "agg")));
        fills[f] = fill_of(json_string_value(json_object_get(feature, "fill")));
    }
    r.step = ms_of(json_object_get(spec, "step"));
    struct ad_window_spec ws = {
        .detector = "golden",
        .step = r.step,
        .window_len = (size_t)json_integer_value(json_object_get(spec, "window")),
        .n_features = r.n_features,
        .aggs = aggs,
        .fills = fills,
        .allowed_lateness = ms_of(json_object_get(spec, "lateness")),
        .max_entities = (size_t)json_integer_value(json_object_get(spec, "max_entities")),
        .entity_idle_timeout = ms_of(json_object_get(spec, "entity_idle_timeout")),
        .max_batch = (size_t)json_integer_value(json_object_get(spec, "max_batch")),
        .max_open_buckets = (size_t)json_integer_value(json_object_get(spec, "max_open_buckets")),
    };
    r.store = ad_window_store_new(&ws, NULL, consume, &out, err, sizeof err);
    if (!r.store)
        fail_msg("%s", err);
    r.grid = ad_grid_new(r.store, ms_of(json_object_get(spec, "idle_timeout")));

    const char *name;
    json_t *src;
    json_object_foreach (json_object_get(doc, "sources"), name, src) {
        struct ad_watermark *w = ad_watermark_new(0);
        json_t *may = json_object_get(src, "may_idle");
        size_t i;
        json_t *input;
        json_array_foreach (json_object_get(src, "inputs"), i, input)
            ad_watermark_add_input(w, (int32_t)json_integer_value(input), !json_is_false(may), 0);
        r.names[r.n_sources] = name;
        r.sources[r.n_sources++] = w;
        ad_grid_add_source(r.grid, name, w);
    }

    int64_t now = 0;
    size_t i;
    json_t *step;
    json_array_foreach (steps, i, step) {
        const char *op = json_string_value(json_array_get(step, 0));
        if (strcmp(op, "at") == 0) {
            now = ms_of(json_array_get(step, 1));
        } else if (strcmp(op, "event") == 0) {
            int64_t t = ms_of(json_array_get(step, 3));
            observe(&r, step, t);
            ad_watermark_update(source(&r, json_string_value(json_array_get(step, 1))),
                                (int32_t)json_integer_value(json_array_get(step, 2)), t, now);
        } else if (strcmp(op, "sample") == 0) {
            observe(&r, step, ad_grid_sample_time(ms_of(json_array_get(step, 3)), r.step));
        } else if (strcmp(op, "range") == 0) {
            ad_watermark_update(source(&r, json_string_value(json_array_get(step, 1))),
                                (int32_t)json_integer_value(json_array_get(step, 2)),
                                ms_of(json_array_get(step, 3)), now);
        } else if (strcmp(op, "advance") == 0) {
            int64_t w = ad_grid_watermark(r.grid, now);
            out_printf(&out, "advance now=%llds watermark=%s", (long long)(now / 1000),
                       w == AD_WATERMARK_NONE ? "none" : "");
            if (w != AD_WATERMARK_NONE)
                out_printf(&out, "%llds", (long long)(w / 1000));
            out_printf(&out, "\n");
            ad_grid_advance(r.grid, now);
        } else {
            fail_msg("bad step %s", op);
        }
    }

    json_t *status = json_object();
    ad_window_store_status(r.store, status);
    out_printf(&out,
               "entities=%lld late=%lld refused_too_far=%lld evicted_idle=%lld "
               "evicted_limit=%lld windows=%lld\n",
               json_integer_value(json_object_get(status, "entities")),
               json_integer_value(json_object_get(status, "late")),
               json_integer_value(json_object_get(status, "refused_too_far")),
               json_integer_value(json_object_get(status, "evicted_idle")),
               json_integer_value(json_object_get(status, "evicted_limit")),
               json_integer_value(json_object_get(status, "windows_handed_on")));
    json_decref(status);
    ad_grid_destroy(r.grid);
    for (size_t s = 0; s < r.n_sources; s++)
        ad_watermark_destroy(r.sources[s]);
    ad_window_store_destroy(r.store);
    return out.text;
}

static int by_event_time(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int64_t tx = ms_of(json_array_get(x, 3)), ty = ms_of(json_array_get(y, 3));
    return tx < ty ? -1 : tx > ty;
}

/* The same steps with the events sorted by event time, every other step where it was. */
static json_t *sorted_steps(json_t *steps)
{
    size_t n = json_array_size(steps), n_events = 0;
    json_t **events = calloc(n, sizeof *events);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(steps, i);
        if (strcmp(json_string_value(json_array_get(s, 0)), "event") == 0)
            events[n_events++] = s;
    }
    /* qsort is not stable; equal times keep their order through a stable insertion sort. */
    for (size_t i = 1; i < n_events; i++)
        for (size_t j = i; j > 0 && by_event_time(&events[j - 1], &events[j]) > 0; j--) {
            json_t *tmp = events[j];
            events[j] = events[j - 1];
            events[j - 1] = tmp;
        }
    size_t next = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(steps, i);
        if (strcmp(json_string_value(json_array_get(s, 0)), "event") == 0)
            s = events[next++];
        json_array_append(out, s);
    }
    free(events);
    return out;
}

/* Only AD_UPDATE_GOLDEN=1 rewrites the expected files; an empty or other value does not. */
static int update_golden(void)
{
    const char *v = getenv("AD_UPDATE_GOLDEN");
    return v && strcmp(v, "1") == 0;
}

static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, fp);
    buf[got] = '\0';
    fclose(fp);
    return buf;
}

static int check_case(const char *name)
{
    char path[512], expected_path[512];
    json_error_t jerr;
    int failed = 0;

    snprintf(path, sizeof path, "%s/%s.json", CASES_DIR, name);
    snprintf(expected_path, sizeof expected_path, "%s/%s.expected", CASES_DIR, name);
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc)
        fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
    json_t *steps = json_object_get(doc, "steps");
    char *got = run_case(doc, steps);
    if (update_golden()) {
        FILE *fp = fopen(expected_path, "w");
        fputs(got, fp);
        fclose(fp);
    }
    char *want = read_file(expected_path);
    if (!want || strcmp(want, got) != 0) {
        fprintf(stderr, "case %s:\n--- want\n%s--- got\n%s", name, want ? want : "(missing)\n",
                got);
        failed = 1;
    }
    if (json_is_true(json_object_get(doc, "compare_sorted"))) {
        json_t *sorted = sorted_steps(steps);
        char *got_sorted = run_case(doc, sorted);
        /* The "advance" lines show watermarks, which depend on arrival order; the windows
         * and the counters must not. */
        char *a = got, *b = got_sorted;
        for (char *text = a; text; text = text == a ? b : NULL) {
            char *w = text, *r = text;
            while (*r) {
                char *eol = strchr(r, '\n');
                size_t len = eol ? (size_t)(eol - r + 1) : strlen(r);
                if (strncmp(r, "advance ", 8) != 0) {
                    memmove(w, r, len);
                    w += len;
                }
                r += len;
            }
            *w = '\0';
        }
        if (strcmp(a, b) != 0) {
            fprintf(stderr, "case %s: sorted input differs:\n--- as given\n%s--- sorted\n%s", name,
                    a, b);
            failed = 1;
        }
        free(got_sorted);
        json_decref(sorted);
    }
    free(got);
    free(want);
    json_decref(doc);
    return failed;
}

static void test_golden_window_cases(void **state)
{
    (void)state;
    DIR *dir = opendir(CASES_DIR);
    struct dirent *e;
    int cases = 0, failures = 0;
    assert_non_null(dir);
    while ((e = readdir(dir)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0)
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(n - 5), e->d_name);
        failures += check_case(name);
        cases++;
    }
    closedir(dir);
    assert_true(cases >= 6);
    assert_int_equal(failures, 0);
}

/* ---- batch buffers ---- */

struct held {
    struct ad_window_batch *batches[8];
    size_t n;
};

static void hold(void *arg, struct ad_window_batch *b)
{
    struct held *h = arg;
    assert_true(h->n < 8);
    h->batches[h->n++] = b;
}

static void add_bucket(struct ad_window_store *s, int64_t bucket)
{
    static const char *const keys[] = {"e0", "e1", "e2"};
    double v[2] = {1, 2};
    for (size_t e = 0; e < 3; e++)
        ad_window_store_add(s, keys[e], 2, bucket * 10000 + 1000 + (int64_t)e, v, 3);
}

/* A bucket's batches come back to the store and the next bucket is assembled in the same
 * buffers; batches still out when the store goes are freed after it, by whoever holds them
 * (the sanitizers see any leak or use after free). */
static void test_batch_buffers_reused(void **state)
{
    (void)state;
    static const enum ad_agg aggs[2] = {AD_AGG_SUM, AD_AGG_LAST};
    static const enum ad_fill_policy fills[2] = {AD_FILL_ZERO, AD_FILL_CARRY};
    struct ad_window_spec spec = {.detector = "d",
                                  .step = 10000,
                                  .window_len = 2,
                                  .n_features = 2,
                                  .aggs = aggs,
                                  .fills = fills,
                                  .max_entities = 10,
                                  .entity_idle_timeout = 600000,
                                  .max_batch = 2};
    struct held h = {0};
    char err[256];
    struct ad_window_store *s = ad_window_store_new(&spec, NULL, hold, &h, err, sizeof err);
    assert_non_null(s);

    add_bucket(s, 0);
    add_bucket(s, 1);
    ad_window_store_advance(s, 10000); /* bucket 0: 2 + 1 windows */
    assert_int_equal(h.n, 2);
    float *first[2] = {h.batches[0]->values, h.batches[1]->values};
    ad_window_batch_free(h.batches[0]);
    ad_window_batch_free(h.batches[1]);
    h.n = 0;

    add_bucket(s, 2);
    ad_window_store_advance(s, 20000); /* bucket 1, in the buffers bucket 0 had */
    assert_int_equal(h.n, 2);
    for (size_t i = 0; i < 2; i++)
        assert_true(h.batches[i]->values == first[0] || h.batches[i]->values == first[1]);
    assert_int_equal(h.batches[0]->n_windows, 2);
    assert_int_equal(h.batches[1]->n_windows, 1);
    assert_true(h.batches[1]->last_of_bucket && !h.batches[0]->last_of_bucket);
    assert_int_equal(h.batches[0]->bucket_start, 10000);
    assert_true(h.batches[0]->mask[0] && h.batches[0]->values[2] == 1);

    ad_window_store_destroy(s);
    ad_window_batch_free(h.batches[0]);
    ad_window_batch_free(h.batches[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_window_cases),
        cmocka_unit_test(test_batch_buffers_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
