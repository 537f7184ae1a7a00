#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/metrics.h"
#include "daemon/process_metrics.h"

/* Log records go to a pipe, so tests can assert that an error was (or was not) logged. */
static int log_pipe[2] = {-1, -1};

static int setup_logs(void **state)
{
    (void)state;
    if (pipe2(log_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
        return -1;
    ad_log_set_fd(log_pipe[1]);
    return 0;
}

static int teardown_logs(void **state)
{
    (void)state;
    ad_log_set_fd(-1);
    close(log_pipe[0]);
    close(log_pipe[1]);
    return 0;
}

/* Everything logged since the last call, NUL-terminated (static storage). */
static const char *take_logs(void)
{
    static char buf[65536];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(log_pipe[0], buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof buf - 1)
            break;
    }
    buf[len] = '\0';
    return buf;
}

static void assert_error_logged(void)
{
    const char *logs = take_logs();
    if (!strstr(logs, "level=error") || !strstr(logs, "module=metrics"))
        fail_msg("expected an error from module metrics, got: \"%s\"", logs);
}

static void assert_nothing_logged(void)
{
    const char *logs = take_logs();
    if (logs[0] != '\0')
        fail_msg("expected no log output, got: \"%s\"", logs);
}

static char *render(struct ad_metrics *m)
{
    size_t len = 12345;
    char *text = ad_metrics_render(m, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    return text;
}

/* The value text of the series line that starts with exactly `series ` (name plus labels),
 * or NULL. The caller frees it. */
static char *series_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t line_len = nl ? (size_t)(nl - line) : strlen(line);
        if (line_len > n && strncmp(line, series, n) == 0 && line[n] == ' ')
            return strndup(line + n + 1, line_len - n - 1);
        line += line_len + (nl ? 1 : 0);
    }
    return NULL;
}

static double series_double(const char *text, const char *series)
{
    char *v = series_value(text, series);
    if (!v)
        fail_msg("series %s missing from:\n%s", series, text);
    char *end;
    double d = strtod(v, &end);
    assert_true(*end == '\0');
    free(v);
    return d;
}

static void assert_series(const char *text, const char *series, const char *expected)
{
    char *v = series_value(text, series);
    if (!v)
        fail_msg("series %s missing from:\n%s", series, text);
    assert_string_equal(v, expected);
    free(v);
}

/* ---- rendering ---- */

static void test_render_exact(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    assert_non_null(m);

    /* Registered out of order on purpose: output is sorted by name. */
    struct ad_gauge *g = ad_metrics_gauge(m, "temperature_celsius", "Current temperature.", NULL);
    struct ad_counter *get = ad_metrics_counter(m, "requests_total", "Requests handled.", "method",
                                                "get", "code", "200", NULL);
    struct ad_counter *post = ad_metrics_counter(m, "requests_total", "Requests handled.", "method",
                                                 "post", "code", "500", NULL);
    const double bounds[] = {0.1, 0.5, 1};
    struct ad_histogram *h = ad_metrics_histogram(m, "latency_seconds", "Scoring latency.", bounds,
                                                  3, "stage", "score", NULL);
    assert_non_null(g);
    assert_non_null(get);
    assert_non_null(post);
    assert_non_null(h);

    ad_gauge_set(g, -1.5);
    ad_counter_inc(get);
    ad_counter_add(get, 2);
    ad_counter_add(post, 0.1);
    ad_counter_add(post, 0.2);
    ad_histogram_observe(h, 0.0625);
    ad_histogram_observe(h, 0.25);
    ad_histogram_observe(h, 0.25);
    ad_histogram_observe(h, 2);

    const char *expected = "# HELP latency_seconds Scoring latency.\n"
                           "# TYPE latency_seconds histogram\n"
                           "latency_seconds_bucket{stage=\"score\",le=\"0.1\"} 1\n"
                           "latency_seconds_bucket{stage=\"score\",le=\"0.5\"} 3\n"
                           "latency_seconds_bucket{stage=\"score\",le=\"1\"} 3\n"
                           "latency_seconds_bucket{stage=\"score\",le=\"+Inf\"} 4\n"
                           "latency_seconds_sum{stage=\"score\"} 2.5625\n"
                           "latency_seconds_count{stage=\"score\"} 4\n"
                           "# HELP requests_total Requests handled.\n"
                           "# TYPE requests_total counter\n"
                           "requests_total{method=\"get\",code=\"200\"} 3\n"
                           "requests_total{method=\"post\",code=\"500\"} 0.30000000000000004\n"
                           "# HELP temperature_celsius Current temperature.\n"
                           "# TYPE temperature_celsius gauge\n"
                           "temperature_celsius -1.5\n";
    char *text = render(m);
    assert_string_equal(text, expected);
    free(text);
    assert_nothing_logged();
    ad_metrics_destroy(m);
}

static void test_render_unlabelled_histogram(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    const double bounds[] = {1};
    struct ad_histogram *h = ad_metrics_histogram(m, "h_seconds", "H.", bounds, 1, NULL);
    struct ad_histogram *none = ad_metrics_histogram(m, "n_seconds", "N.", NULL, 0, NULL);
    assert_non_null(h);
    assert_non_null(none);
    ad_histogram_observe(h, 3);
    ad_histogram_observe(none, 0.5);

    char *text = render(m);
    assert_string_equal(text, "# HELP h_seconds H.\n"
                              "# TYPE h_seconds histogram\n"
                              "h_seconds_bucket{le=\"1\"} 0\n"
                              "h_seconds_bucket{le=\"+Inf\"} 1\n"
                              "h_seconds_sum 3\n"
                              "h_seconds_count 1\n"
                              "# HELP n_seconds N.\n"
                              "# TYPE n_seconds histogram\n"
                              "n_seconds_bucket{le=\"+Inf\"} 1\n"
                              "n_seconds_sum 0.5\n"
                              "n_seconds_count 1\n");
    free(text);
    ad_metrics_destroy(m);
}

static void test_render_empty_registry(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    size_t len = 99;
    char *text = ad_metrics_render(m, &len);
    assert_non_null(text);
    assert_string_equal(text, "");
    assert_int_equal(len, 0);
    free(text);
    /* len is optional. */
    text = ad_metrics_render(m, NULL);
    assert_non_null(text);
    free(text);
    ad_metrics_destroy(m);
}

static void test_value_formatting(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0, "0"},
        {-0.0, "0"},
        {3, "3"},
        {-42, "-42"},
        {1e15, "1000000000000000"},
        {9007199254740991.0, "9007199254740991"}, /* 2^53 - 1 */
        {9007199254740992.0, "9007199254740992"}, /* 2^53: %g, shortest is 16 digits */
        {1e20, "1e+20"},
        {0.5, "0.5"},
        {0.005, "0.005"},
        {0.1, "0.1"},
        {1.0 / 3.0, "0.3333333333333333"},
        {0.1 + 0.2, "0.30000000000000004"}, /* needs all 17 digits */
        {2.5e-7, "2.5e-07"},
        {-1e-300, "-1e-300"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
        {NAN, "NaN"},
    };
    struct ad_metrics *m = ad_metrics_new();
    struct ad_gauge *g = ad_metrics_gauge(m, "g", "G.", NULL);
    assert_non_null(g);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ad_gauge_set(g, cases[i].v);
        char *text = render(m);
        char *v = series_value(text, "g");
        assert_non_null(v);
        if (strcmp(v, cases[i].text) != 0)
            fail_msg("case %zu: expected %s, got %s", i, cases[i].text, v);
        /* Whatever the form, it must read back as the same double. */
        if (!isnan(cases[i].v) && !isinf(cases[i].v))
            assert_true(strtod(v, NULL) == cases[i].v);
        free(v);
        free(text);
    }
    ad_metrics_destroy(m);
}

static void test_escaping(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    struct ad_counter *c = ad_metrics_counter(m, "esc_total", "back\\slash\nnew \"quoted\"", "v",
                                              "a\\b\"c\nd", "plain", "héllo", NULL);
    assert_non_null(c);
    char *text = render(m);
    /* Help keeps its double quotes; label values escape them. */
    assert_string_equal(text, "# HELP esc_total back\\\\slash\\nnew \"quoted\"\n"
                              "# TYPE esc_total counter\n"
                              "esc_total{v=\"a\\\\b\\\"c\\nd\",plain=\"héllo\"} 0\n");
    free(text);
    ad_metrics_destroy(m);
}

static void test_sorted_family_order(void **state)
{
    (void)state;
    static const char *const names[] = {"zeta", "alpha_beta", "mid", "alpha", "Alpha", "_x"};
    static const char *const sorted[] = {"Alpha", "_x", "alpha", "alpha_beta", "mid", "zeta"};
    struct ad_metrics *m = ad_metrics_new();
    for (size_t i = 0; i < 6; i++)
        assert_non_null(ad_metrics_gauge(m, names[i], "Help.", NULL));

    char *text = render(m);
    const char *p = text;
    for (size_t i = 0; i < 6; i++) {
        char want[64];
        snprintf(want, sizeof want, "# HELP %s Help.\n", sorted[i]);
        const char *at = strstr(text, want);
        assert_non_null(at);
        assert_true(at >= p);
        p = at + strlen(want);
    }
    free(text);
    ad_metrics_destroy(m);
}

static void test_children_in_creation_order(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    assert_non_null(ad_metrics_gauge(m, "g", "G.", "k", "z", NULL));
    assert_non_null(ad_metrics_gauge(m, "g", "G.", "k", "a", NULL));
    assert_non_null(ad_metrics_gauge(m, "g", "G.", "k", "m", NULL));
    char *text = render(m);
    assert_string_equal(text, "# HELP g G.\n# TYPE g gauge\ng{k=\"z\"} 0\ng{k=\"a\"} 0\n"
                              "g{k=\"m\"} 0\n");
    free(text);
    ad_metrics_destroy(m);
}

/* ---- registration ---- */

static double read_double(void *arg)
{
    return *(const double *)arg;
}

static double read_other(void *arg)
{
    (void)arg;
    return 7;
}

static void test_reregistration_same_pointer(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();

    struct ad_counter *a = ad_metrics_counter(m, "c_total", "C.", "x", "1", "y", "2", NULL);
    assert_non_null(a);
    assert_ptr_equal(ad_metrics_counter(m, "c_total", "C.", "x", "1", "y", "2", NULL), a);
    /* Label names are a set: another order names the same series. */
    assert_ptr_equal(ad_metrics_counter(m, "c_total", "C.", "y", "2", "x", "1", NULL), a);
    struct ad_counter *b = ad_metrics_counter(m, "c_total", "C.", "x", "1", "y", "3", NULL);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);

    ad_counter_inc(a);
    ad_counter_inc(ad_metrics_counter(m, "c_total", "C.", "y", "2", "x", "1", NULL));
    assert_true(ad_counter_value(a) == 2);
    assert_true(ad_counter_value(b) == 0);

    struct ad_gauge *g = ad_metrics_gauge(m, "g", "G.", NULL);
    assert_non_null(g);
    assert_ptr_equal(ad_metrics_gauge(m, "g", "G.", NULL), g);

    const double bounds[] = {1, 2};
    const double same[] = {1, 2};
    struct ad_histogram *h = ad_metrics_histogram(m, "h", "H.", bounds, 2, "k", "v", NULL);
    assert_non_null(h);
    assert_ptr_equal(ad_metrics_histogram(m, "h", "H.", same, 2, "k", "v", NULL), h);

    double value = 1;
    assert_int_equal(ad_metrics_gauge_func(m, "f", "F.", read_double, &value, NULL), 0);
    assert_int_equal(ad_metrics_gauge_func(m, "f", "F.", read_double, &value, NULL), 0);

    char *text = render(m);
    assert_series(text, "c_total{x=\"1\",y=\"2\"}", "2");
    assert_series(text, "c_total{x=\"1\",y=\"3\"}", "0");
    /* Registering twice did not duplicate the series. */
    assert_ptr_equal(strstr(strstr(text, "\nf ") + 1, "\nf "), NULL);
    free(text);
    assert_nothing_logged();
    ad_metrics_destroy(m);
}

static void test_conflicting_reregistration(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    double value = 1;
    const double bounds[] = {1, 2};
    const double other_bounds[] = {1, 3};

    assert_non_null(ad_metrics_counter(m, "c_total", "C.", "x", "1", NULL));
    assert_nothing_logged();

    assert_null(ad_metrics_gauge(m, "c_total", "C.", "x", "1", NULL));
    assert_error_logged();
    assert_null(ad_metrics_histogram(m, "c_total", "C.", bounds, 2, "x", "1", NULL));
    assert_error_logged();
    assert_int_equal(ad_metrics_gauge_func(m, "c_total", "C.", read_double, &value, "x", "1", NULL),
                     -1);
    assert_error_logged();
    assert_null(ad_metrics_counter(m, "c_total", "Other help.", "x", "1", NULL));
    assert_error_logged();
    assert_null(ad_metrics_counter(m, "c_total", "C.", NULL));
    assert_error_logged();
    assert_null(ad_metrics_counter(m, "c_total", "C.", "z", "1", NULL));
    assert_error_logged();
    assert_null(ad_metrics_counter(m, "c_total", "C.", "x", "1", "y", "2", NULL));
    assert_error_logged();

    /* A plain series and a function series cannot share label values... */
    assert_int_equal(
        ad_metrics_counter_func(m, "c_total", "C.", read_double, &value, "x", "1", NULL), -1);
    assert_error_logged();
    /* ...but may share a family. */
    assert_int_equal(
        ad_metrics_counter_func(m, "c_total", "C.", read_double, &value, "x", "2", NULL), 0);
    assert_null(ad_metrics_counter(m, "c_total", "C.", "x", "2", NULL));
    assert_error_logged();
    assert_int_equal(
        ad_metrics_counter_func(m, "c_total", "C.", read_other, &value, "x", "2", NULL), -1);
    assert_error_logged();
    assert_int_equal(ad_metrics_counter_func(m, "c_total", "C.", read_double, NULL, "x", "2", NULL),
                     -1);
    assert_error_logged();

    assert_non_null(ad_metrics_histogram(m, "h", "H.", bounds, 2, NULL));
    assert_null(ad_metrics_histogram(m, "h", "H.", other_bounds, 2, NULL));
    assert_error_logged();
    assert_null(ad_metrics_histogram(m, "h", "H.", bounds, 1, NULL));
    assert_error_logged();

    /* A histogram's series names are taken, both ways round. */
    assert_null(ad_metrics_gauge(m, "h_count", "X.", NULL));
    assert_error_logged();
    assert_null(ad_metrics_counter(m, "h_bucket", "X.", NULL));
    assert_error_logged();
    assert_non_null(ad_metrics_gauge(m, "k_sum", "X.", NULL));
    assert_null(ad_metrics_histogram(m, "k", "K.", bounds, 2, NULL));
    assert_error_logged();
    /* Not a histogram suffix: fine. */
    assert_non_null(ad_metrics_gauge(m, "h_counts", "X.", NULL));
    assert_nothing_logged();

    /* The failed calls left nothing behind. */
    char *text = render(m);
    assert_null(strstr(text, "gauge\nc_total"));
    assert_null(strstr(text, "# HELP k "));
    assert_series(text, "c_total{x=\"1\"}", "0");
    assert_series(text, "c_total{x=\"2\"}", "1");
    free(text);
    ad_metrics_destroy(m);
}

static void test_invalid_names(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    const double bounds[] = {1, 2};

    static const char *const bad_metrics[] = {"", "1abc", "a-b", "a b", "a.b", "é"};
    for (size_t i = 0; i < sizeof bad_metrics / sizeof bad_metrics[0]; i++) {
        assert_null(ad_metrics_counter(m, bad_metrics[i], "H.", NULL));
        assert_error_logged();
    }
    assert_null(ad_metrics_gauge(m, NULL, "H.", NULL));
    assert_error_logged();
    assert_non_null(ad_metrics_gauge(m, "a:b_C9", "H.", NULL));
    assert_non_null(ad_metrics_gauge(m, ":x", "H.", NULL));
    assert_non_null(ad_metrics_gauge(m, "_", "H.", NULL));
    assert_nothing_logged();

    static const char *const bad_labels[] = {"", "1a", "a-b", "a:b", "__x", "__"};
    for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++) {
        assert_null(ad_metrics_counter(m, "l_total", "H.", bad_labels[i], "v", NULL));
        assert_error_logged();
    }
    assert_non_null(ad_metrics_counter(m, "ok_total", "H.", "_a", "v", "b_9", "w", NULL));
    /* le is reserved for histograms only. */
    assert_non_null(ad_metrics_counter(m, "le_total", "H.", "le", "v", NULL));
    assert_nothing_logged();
    assert_null(ad_metrics_histogram(m, "le_seconds", "H.", bounds, 2, "le", "v", NULL));
    assert_error_logged();

    /* A label name with no value, the same label twice. */
    assert_null(ad_metrics_counter(m, "odd_total", "H.", "a", "1", "b", NULL));
    assert_error_logged();
    assert_null(ad_metrics_counter(m, "dup_total", "H.", "a", "1", "a", "2", NULL));
    assert_error_logged();

    /* Text that would make the whole scrape unreadable. */
    assert_null(ad_metrics_counter(m, "utf_total", "H.", "a", "\xff", NULL));
    assert_error_logged();
    assert_null(ad_metrics_counter(m, "utf_total", "H.", "a", "\xc0\xaf", NULL)); /* overlong */
    assert_error_logged();
    assert_null(ad_metrics_counter(m, "utf_total", "H.", "a", "\xe2\x82", NULL)); /* cut */
    assert_error_logged();
    assert_null(ad_metrics_counter(m, "utf_total", "bad \xed\xa0\x80", NULL)); /* surrogate */
    assert_error_logged();
    assert_null(ad_metrics_counter(m, "nohelp_total", NULL, NULL));
    assert_error_logged();

    /* Bounds must be finite and strictly ascending. */
    const double descending[] = {2, 1};
    const double repeated[] = {1, 1};
    const double with_nan[] = {1, NAN};
    const double with_inf[] = {1, INFINITY};
    assert_null(ad_metrics_histogram(m, "b1", "H.", descending, 2, NULL));
    assert_error_logged();
    assert_null(ad_metrics_histogram(m, "b2", "H.", repeated, 2, NULL));
    assert_error_logged();
    assert_null(ad_metrics_histogram(m, "b3", "H.", with_nan, 2, NULL));
    assert_error_logged();
    assert_null(ad_metrics_histogram(m, "b4", "H.", with_inf, 2, NULL));
    assert_error_logged();
    assert_null(ad_metrics_histogram(m, "b5", "H.", NULL, 2, NULL));
    assert_error_logged();

    char *text = render(m);
    assert_null(strstr(text, "utf_total"));
    assert_null(strstr(text, "# HELP b"));
    assert_null(strstr(text, "l_total"));
    free(text);
    ad_metrics_destroy(m);
}

static void test_null_safety(void **state)
{
    (void)state;
    ad_counter_inc(NULL);
    ad_counter_add(NULL, 1);
    ad_gauge_set(NULL, 1);
    ad_gauge_add(NULL, 1);
    ad_histogram_observe(NULL, 1);
    assert_true(ad_counter_value(NULL) == 0);
    assert_true(ad_gauge_value(NULL) == 0);
    assert_int_equal(ad_histogram_count(NULL), 0);
    ad_metrics_destroy(NULL);

    size_t len = 5;
    assert_null(ad_metrics_render(NULL, &len));
    assert_int_equal(len, 0);

    assert_null(ad_metrics_counter(NULL, "c_total", "C.", NULL));
    assert_error_logged();
    assert_null(ad_metrics_gauge(NULL, "g", "G.", NULL));
    assert_error_logged();
    assert_null(ad_metrics_histogram(NULL, "h", "H.", NULL, 0, NULL));
    assert_error_logged();
    assert_int_equal(ad_metrics_gauge_func(NULL, "g", "G.", read_other, NULL, NULL), -1);
    assert_error_logged();
    assert_int_equal(ad_metrics_register_process(NULL), -1);
    assert_error_logged();

    struct ad_metrics *m = ad_metrics_new();
    assert_int_equal(ad_metrics_gauge_func(m, "g", "G.", NULL, NULL, NULL), -1);
    assert_error_logged();
    assert_int_equal(ad_metrics_counter_func(m, "c_total", "C.", NULL, NULL, NULL), -1);
    assert_error_logged();
    ad_metrics_destroy(m);
}

/* ---- updates ---- */

static void test_counter_ignores_negative(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    struct ad_counter *c = ad_metrics_counter(m, "c_total", "C.", NULL);
    assert_true(ad_counter_value(c) == 0);
    ad_counter_add(c, 2);
    ad_counter_add(c, -1);
    ad_counter_add(c, -0.0001);
    ad_counter_add(c, NAN);
    ad_counter_add(c, -INFINITY);
    assert_true(ad_counter_value(c) == 2);
    ad_counter_inc(c);
    ad_counter_add(c, 0.5);
    ad_counter_add(c, 0);
    assert_true(ad_counter_value(c) == 3.5);
    char *text = render(m);
    assert_series(text, "c_total", "3.5");
    free(text);
    ad_metrics_destroy(m);
}

static void test_gauge_updates(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    struct ad_gauge *g = ad_metrics_gauge(m, "g", "G.", NULL);
    ad_gauge_set(g, 5);
    ad_gauge_add(g, -7.5);
    assert_true(ad_gauge_value(g) == -2.5);
    ad_gauge_set(g, 10);
    assert_true(ad_gauge_value(g) == 10);
    ad_metrics_destroy(m);
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    const double bounds[] = {-1, 0, 1, 10};
    struct ad_histogram *h = ad_metrics_histogram(m, "h", "H.", bounds, 4, NULL);
    /* A value equal to a bound belongs to that bucket (le means <=). */
    const double values[] = {-5, -1, -0.5, 0, 1, 1.0000001, 10, 11, INFINITY, NAN};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        ad_histogram_observe(h, values[i]);
    assert_int_equal(ad_histogram_count(h), 10);

    char *text = render(m);
    assert_series(text, "h_bucket{le=\"-1\"}", "2");
    assert_series(text, "h_bucket{le=\"0\"}", "4");
    assert_series(text, "h_bucket{le=\"1\"}", "5");
    assert_series(text, "h_bucket{le=\"10\"}", "7");
    assert_series(text, "h_bucket{le=\"+Inf\"}", "10");
    assert_series(text, "h_count", "10");
    assert_series(text, "h_sum", "NaN");
    free(text);
    ad_metrics_destroy(m);
}

static void test_seconds_buckets(void **state)
{
    (void)state;
    assert_int_equal(ad_metrics_seconds_buckets_len, 18);
    assert_true(ad_metrics_seconds_buckets[0] == 0.0001);
    assert_true(ad_metrics_seconds_buckets[17] == 60);
    for (size_t i = 1; i < ad_metrics_seconds_buckets_len; i++)
        assert_true(ad_metrics_seconds_buckets[i] > ad_metrics_seconds_buckets[i - 1]);

    struct ad_metrics *m = ad_metrics_new();
    struct ad_histogram *h = ad_metrics_histogram(m, "d_seconds", "D.", ad_metrics_seconds_buckets,
                                                  ad_metrics_seconds_buckets_len, NULL);
    assert_non_null(h);
    ad_histogram_observe(h, 0.003);
    char *text = render(m);
    static const char *const les[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                                      "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
                                      "1",      "2.5",     "5",      "10",    "30",     "60"};
    for (size_t i = 0; i < 18; i++) {
        char series[64];
        snprintf(series, sizeof series, "d_seconds_bucket{le=\"%s\"}", les[i]);
        assert_series(text, series, i < 5 ? "0" : "1");
    }
    assert_series(text, "d_seconds_sum", "0.003");
    free(text);
    ad_metrics_destroy(m);
}

/* 1 ms to 10 s, no step wider than 1.5x, so a percentile read from the buckets is off by at
 * most half of itself; the labels render as written. */
static void test_latency_buckets(void **state)
{
    (void)state;
    size_t n = ad_metrics_latency_buckets_len;
    assert_true(ad_metrics_latency_buckets[0] == 0.001);
    assert_true(ad_metrics_latency_buckets[n - 1] == 10);
    assert_int_equal(n, 29);
    for (size_t i = 1; i < n; i++) {
        assert_true(ad_metrics_latency_buckets[i] > ad_metrics_latency_buckets[i - 1]);
        assert_true(ad_metrics_latency_buckets[i] <= 1.5000001 * ad_metrics_latency_buckets[i - 1]);
    }

    struct ad_metrics *m = ad_metrics_new();
    struct ad_histogram *h =
        ad_metrics_histogram(m, "l_seconds", "L.", ad_metrics_latency_buckets, n, NULL);
    assert_non_null(h);
    ad_histogram_observe(h, 0.09);
    ad_histogram_observe(h, 0.1);
    char *text = render(m);
    assert_series(text, "l_seconds_bucket{le=\"0.075\"}", "0");
    assert_series(text, "l_seconds_bucket{le=\"0.1\"}", "2");
    assert_series(text, "l_seconds_bucket{le=\"0.0075\"}", "0");
    assert_series(text, "l_seconds_bucket{le=\"10\"}", "2");
    assert_series(text, "l_seconds_count", "2");
    free(text);
    ad_metrics_destroy(m);
}

/* ---- concurrency ---- */

#define THREADS    4
#define ITERATIONS 100000

struct worker {
    struct ad_metrics *m;
    int id;
};

static void *hammer(void *arg)
{
    const struct worker *w = arg;
    const double bounds[] = {1, 2, 3};
    /* Registration races too: every thread must get the same children. */
    struct ad_counter *c = ad_metrics_counter(w->m, "hits_total", "Hits.", NULL);
    struct ad_gauge *g = ad_metrics_gauge(w->m, "level", "Level.", NULL);
    struct ad_histogram *h = ad_metrics_histogram(w->m, "sizes", "Sizes.", bounds, 3, NULL);
    char id[8];
    snprintf(id, sizeof id, "%d", w->id);
    struct ad_counter *mine = ad_metrics_counter(w->m, "per_thread_total", "Per.", "t", id, NULL);
    for (int i = 0; i < ITERATIONS; i++) {
        ad_counter_inc(c);
        ad_counter_add(mine, 1);
        ad_gauge_add(g, 1);
        ad_histogram_observe(h, (double)(i % 7));
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){.m = m, .id = i};
        assert_int_equal(pthread_create(&threads[i], NULL, hammer, &workers[i]), 0);
    }
    /* Scrape while they run: must neither crash nor block them for long. */
    for (int i = 0; i < 20; i++)
        free(render(m));
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);

    /* Per thread: i % 7 over 100000 values is 14285 full cycles (sum 21 each) plus 0..4. */
    const double per_thread_sum = 14285.0 * 21 + (0 + 1 + 2 + 3 + 4);
    char *text = render(m);
    assert_series(text, "hits_total", "400000");
    assert_series(text, "level", "400000");
    assert_series(text, "sizes_count", "400000");
    assert_true(series_double(text, "sizes_sum") == THREADS * per_thread_sum);
    /* Values 0 and 1 are <= 1: 14286 + 14286 per thread (0..4 appear once more each). */
    assert_series(text, "sizes_bucket{le=\"1\"}", "114288");
    assert_series(text, "sizes_bucket{le=\"2\"}", "171432");
    assert_series(text, "sizes_bucket{le=\"3\"}", "228576");
    assert_series(text, "sizes_bucket{le=\"+Inf\"}", "400000");
    for (int i = 0; i < THREADS; i++) {
        char series[64];
        snprintf(series, sizeof series, "per_thread_total{t=\"%d\"}", i);
        assert_series(text, series, "100000");
    }
    free(text);
    assert_nothing_logged();
    ad_metrics_destroy(m);
}

/* ---- function-backed metrics ---- */

struct probe {
    double value;
    int calls;
};

static double read_probe(void *arg)
{
    struct probe *p = arg;
    p->calls++;
    return p->value;
}

static void test_func_metrics(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    struct probe depth = {.value = 12, .calls = 0};
    struct probe done = {.value = 5, .calls = 0};
    assert_int_equal(
        ad_metrics_gauge_func(m, "queue_depth", "Depth.", read_probe, &depth, "q", "in", NULL), 0);
    assert_int_equal(
        ad_metrics_counter_func(m, "jobs_done_total", "Done.", read_probe, &done, NULL), 0);
    assert_int_equal(depth.calls, 0);

    char *text = render(m);
    assert_int_equal(depth.calls, 1);
    assert_int_equal(done.calls, 1);
    assert_series(text, "queue_depth{q=\"in\"}", "12");
    assert_series(text, "jobs_done_total", "5");
    assert_non_null(strstr(text, "# TYPE jobs_done_total counter\n"));
    assert_non_null(strstr(text, "# TYPE queue_depth gauge\n"));
    free(text);

    depth.value = 0.25;
    done.value = 6;
    text = render(m);
    assert_int_equal(depth.calls, 2);
    assert_series(text, "queue_depth{q=\"in\"}", "0.25");
    assert_series(text, "jobs_done_total", "6");
    free(text);
    ad_metrics_destroy(m);
}

/* ---- process metrics ---- */

static void test_process_metrics(void **state)
{
    (void)state;
    struct ad_metrics *m = ad_metrics_new();
    assert_int_equal(ad_metrics_register_process(m), 0);
    /* Twice is harmless: same functions, same series. */
    assert_int_equal(ad_metrics_register_process(m), 0);
    assert_nothing_logged();

    /* Burn a little CPU so the counter has something to show. */
    volatile double x = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    do {
        for (int i = 0; i < 100000; i++)
            x += i;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    } while ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9 < 0.05);
    assert_true(x > 0); /* the loop's result is used, so no compiler drops it */

    char *text = render(m);
    assert_non_null(strstr(text, "# HELP process_cpu_seconds_total Total user and system CPU "
                                 "time spent in seconds.\n"
                                 "# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(text, "# TYPE process_resident_memory_bytes gauge\n"));
    assert_non_null(strstr(text, "# TYPE process_virtual_memory_bytes gauge\n"));
    assert_non_null(strstr(text, "# TYPE process_open_fds gauge\n"));
    assert_non_null(strstr(text, "# TYPE process_max_fds gauge\n"));
    assert_non_null(strstr(text, "# TYPE process_start_time_seconds gauge\n"));

    double cpu = series_double(text, "process_cpu_seconds_total");
    double rss = series_double(text, "process_resident_memory_bytes");
    double vsz = series_double(text, "process_virtual_memory_bytes");
    double fds = series_double(text, "process_open_fds");
    double max_fds = series_double(text, "process_max_fds");
    double start = series_double(text, "process_start_time_seconds");
    free(text);

    double cpu_now = (double)t1.tv_sec + (double)t1.tv_nsec / 1e9;
    /* Ticks are coarse: a loose window, yet one a wrong CLK_TCK scale falls out of. */
    if (!(cpu >= 0.03 && cpu <= cpu_now + 0.5))
        fail_msg("cpu seconds %f, clock says %f", cpu, cpu_now);
    assert_true(rss > 0);
    assert_true(vsz >= rss);
    assert_true(fds >= 3);
    assert_true(max_fds > 0 && max_fds >= fds);
    double now = (double)time(NULL);
    if (!(start > now - 3600 && start <= now + 1))
        fail_msg("start time %f not within the last hour of %f", start, now);

    /* The fd count follows the real table exactly. */
    int extra[5];
    for (int i = 0; i < 5; i++) {
        extra[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        assert_true(extra[i] >= 0);
    }
    text = render(m);
    assert_true(series_double(text, "process_open_fds") == fds + 5);
    free(text);
    for (int i = 0; i < 5; i++)
        close(extra[i]);
    ad_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_render_unlabelled_histogram),
        cmocka_unit_test(test_render_empty_registry),
        cmocka_unit_test(test_value_formatting),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_sorted_family_order),
        cmocka_unit_test(test_children_in_creation_order),
        cmocka_unit_test(test_reregistration_same_pointer),
        cmocka_unit_test(test_conflicting_reregistration),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_null_safety),
        cmocka_unit_test(test_counter_ignores_negative),
        cmocka_unit_test(test_gauge_updates),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_seconds_buckets),
        cmocka_unit_test(test_latency_buckets),
        cmocka_unit_test(test_concurrent_updates),
        cmocka_unit_test(test_func_metrics),
        cmocka_unit_test(test_process_metrics),
    };
    return cmocka_run_group_tests(tests, setup_logs, teardown_logs);
}
