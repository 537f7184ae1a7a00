#include "stream/prom_response.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/errstr.h"
#include "base/number.h"

/* Seconds beyond this (about year 318,000) would overflow when turned into milliseconds;
 * no real Prometheus sends them, so they are malformed rather than clamped. */
#define MAX_ABS_SECONDS 1e13

/*
 * Sample values are strings: Go's strconv.FormatFloat output, or NaN and the infinities in
 * Prometheus' spelling. Only a plain decimal number is accepted beyond those, so that strtod's
 * extras (hex, "inf", "nan(...)", leading blanks) cannot slip in.
 */
static bool parse_value(const char *s, double *out)
{
    if (strcmp(s, "NaN") == 0) {
        *out = NAN;
        return true;
    }
    if (strcmp(s, "+Inf") == 0 || strcmp(s, "Inf") == 0) {
        *out = INFINITY;
        return true;
    }
    if (strcmp(s, "-Inf") == 0) {
        *out = -INFINITY;
        return true;
    }
    double v;
    /* ±HUGE_VAL: beyond float64, which Prometheus never sends. */
    if (!ad_number_parse(s, strlen(s), &v) || isinf(v))
        return false;
    *out = v;
    return true;
}

static int cmp_label(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(x[0], y[0]);
}

/* Copies the labels of one series, sorted by name. Returns 0 or -1 (err filled). */
static int parse_labels(json_t *metric, size_t idx, struct ad_prom_series *s, char *errstr,
                        size_t errstr_size)
{
    size_t n = json_object_size(metric);
    char **pairs = NULL;
    const char *key;
    json_t *value;
    size_t i = 0;
    int rc = -1;

    s->label_names = calloc(n ? n : 1, sizeof *s->label_names);
    s->label_values = calloc(n ? n : 1, sizeof *s->label_values);
    pairs = calloc(n ? 2 * n : 1, sizeof *pairs);
    if (!s->label_names || !s->label_values || !pairs) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto out;
    }
    json_object_foreach (metric, key, value) {
        if (!json_is_string(value)) {
            ad_errstr_set(errstr, errstr_size, "result[%zu].metric.%s is not a string", idx, key);
            goto out;
        }
        pairs[2 * i] = (char *)key;
        pairs[2 * i + 1] = (char *)json_string_value(value);
        i++;
    }
    /* Sorted pairs, so that equal label sets compare equal whatever order the JSON had. */
    qsort(pairs, n, 2 * sizeof *pairs, cmp_label);
    for (i = 0; i < n; i++) {
        s->label_names[i] = strdup(pairs[2 * i]);
        s->label_values[i] = strdup(pairs[2 * i + 1]);
        s->n_labels++;
        if (!s->label_names[i] || !s->label_values[i]) {
            ad_errstr_set(errstr, errstr_size, "out of memory");
            goto out;
        }
    }
    rc = 0;

out:
    free(pairs);
    return rc;
}

static int parse_samples(json_t *values, size_t idx, struct ad_prom_series *s, char *errstr,
                         size_t errstr_size)
{
    size_t n = json_array_size(values);

    s->times_ms = calloc(n ? n : 1, sizeof *s->times_ms);
    s->values = calloc(n ? n : 1, sizeof *s->values);
    if (!s->times_ms || !s->values) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (size_t j = 0; j < n; j++) {
        json_t *pair = json_array_get(values, j);
        json_t *t = json_array_get(pair, 0), *v = json_array_get(pair, 1);
        if (!json_is_array(pair) || json_array_size(pair) != 2) {
            ad_errstr_set(errstr, errstr_size,
                          "result[%zu].values[%zu] is not a [time, value] pair", idx, j);
            return -1;
        }
        if (!json_is_number(t)) {
            ad_errstr_set(errstr, errstr_size, "result[%zu].values[%zu]: the time is not a number",
                          idx, j);
            return -1;
        }
        double secs = json_number_value(t);
        if (!(fabs(secs) < MAX_ABS_SECONDS)) {
            ad_errstr_set(errstr, errstr_size, "result[%zu].values[%zu]: time %g is out of range",
                          idx, j, secs);
            return -1;
        }
        if (!json_is_string(v)) {
            ad_errstr_set(errstr, errstr_size, "result[%zu].values[%zu]: the value is not a string",
                          idx, j);
            return -1;
        }
        int64_t ms = llround(secs * 1000.0);
        if (j > 0 && ms <= s->times_ms[j - 1]) {
            ad_errstr_set(errstr, errstr_size, "result[%zu].values[%zu]: times are not ascending",
                          idx, j);
            return -1;
        }
        if (!parse_value(json_string_value(v), &s->values[j])) {
            ad_errstr_set(errstr, errstr_size,
                          "result[%zu].values[%zu]: value \"%.64s\" is not a number", idx, j,
                          json_string_value(v));
            return -1;
        }
        s->times_ms[j] = ms;
        s->n_samples++;
    }
    return 0;
}

static enum ad_prom_parse_result parse_error_status(json_t *root, char *errstr, size_t errstr_size)
{
    const char *type = json_string_value(json_object_get(root, "errorType"));
    const char *msg = json_string_value(json_object_get(root, "error"));
    bool has_type = type && *type, has_msg = msg && *msg;
    if (has_type && has_msg)
        ad_errstr_set(errstr, errstr_size, "%s: %s", type, msg);
    else if (has_msg)
        ad_errstr_set(errstr, errstr_size, "%s", msg);
    else
        ad_errstr_set(errstr, errstr_size, "%s: (no error message)", has_type ? type : "error");
    return AD_PROM_ERROR_STATUS;
}

static int parse_warnings(json_t *root, struct ad_prom_matrix *out, char *errstr,
                          size_t errstr_size)
{
    json_t *warnings = json_object_get(root, "warnings");
    size_t i;
    json_t *w;

    if (!warnings || json_is_null(warnings))
        return 0;
    if (!json_is_array(warnings)) {
        ad_errstr_set(errstr, errstr_size, "\"warnings\" is not an array");
        return -1;
    }
    out->warnings = calloc(json_array_size(warnings) + 1, sizeof *out->warnings);
    if (!out->warnings) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return -1;
    }
    json_array_foreach (warnings, i, w) {
        if (!json_is_string(w)) {
            ad_errstr_set(errstr, errstr_size, "warnings[%zu] is not a string", i);
            return -1;
        }
        out->warnings[i] = strdup(json_string_value(w));
        if (!out->warnings[i]) {
            ad_errstr_set(errstr, errstr_size, "out of memory");
            return -1;
        }
        out->n_warnings++;
    }
    return 0;
}

enum ad_prom_parse_result ad_prom_parse_matrix(const char *body, size_t len,
                                               struct ad_prom_matrix *out, char *errstr,
                                               size_t errstr_size)
{
    enum ad_prom_parse_result rc = AD_PROM_MALFORMED;
    json_error_t jerr;
    json_t *root;

    memset(out, 0, sizeof *out);
    ad_errstr_set(errstr, errstr_size, "%s", "");
    root = json_loadb(body ? body : "", body ? len : 0, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        ad_errstr_set(errstr, errstr_size, "invalid JSON at line %d, column %d: %s", jerr.line,
                      jerr.column, jerr.text);
        return AD_PROM_MALFORMED;
    }
    if (!json_is_object(root)) {
        ad_errstr_set(errstr, errstr_size, "the response is not a JSON object");
        goto out;
    }
    json_t *status = json_object_get(root, "status");
    if (!json_is_string(status)) {
        ad_errstr_set(errstr, errstr_size, "\"status\" is %s", status ? "not a string" : "missing");
        goto out;
    }
    if (strcmp(json_string_value(status), "error") == 0) {
        rc = parse_error_status(root, errstr, errstr_size);
        goto out;
    }
    if (strcmp(json_string_value(status), "success") != 0) {
        ad_errstr_set(errstr, errstr_size, "unknown status \"%.64s\"", json_string_value(status));
        goto out;
    }
    if (parse_warnings(root, out, errstr, errstr_size) < 0)
        goto out;

    json_t *data = json_object_get(root, "data");
    if (!json_is_object(data)) {
        ad_errstr_set(errstr, errstr_size, "\"data\" is %s", data ? "not an object" : "missing");
        goto out;
    }
    json_t *type = json_object_get(data, "resultType");
    if (!json_is_string(type)) {
        ad_errstr_set(errstr, errstr_size, "\"data.resultType\" is %s",
                      type ? "not a string" : "missing");
        goto out;
    }
    if (strcmp(json_string_value(type), "matrix") != 0) {
        ad_errstr_set(errstr, errstr_size, "resultType is \"%.64s\", expected \"matrix\"",
                      json_string_value(type));
        rc = AD_PROM_WRONG_RESULT_TYPE;
        goto out;
    }
    json_t *result = json_object_get(data, "result");
    if (!json_is_array(result)) {
        ad_errstr_set(errstr, errstr_size, "\"data.result\" is %s",
                      result ? "not an array" : "missing");
        goto out;
    }

    size_t n = json_array_size(result);
    out->series = calloc(n ? n : 1, sizeof *out->series);
    if (!out->series) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *series = json_array_get(result, i);
        struct ad_prom_series *s = &out->series[out->n_series];
        if (!json_is_object(series)) {
            ad_errstr_set(errstr, errstr_size, "result[%zu] is not an object", i);
            goto out;
        }
        json_t *metric = json_object_get(series, "metric");
        json_t *values = json_object_get(series, "values");
        if (!json_is_object(metric)) {
            ad_errstr_set(errstr, errstr_size, "result[%zu].metric is %s", i,
                          metric ? "not an object" : "missing");
            goto out;
        }
        /* A native-histogram series carries "histograms" instead of "values"; it has no
         * float samples to hand on, so it counts as a series without samples. */
        if (!values && json_object_get(series, "histograms"))
            values = json_array();
        else
            json_incref(values);
        if (!json_is_array(values)) {
            ad_errstr_set(errstr, errstr_size, "result[%zu].values is %s", i,
                          values ? "not an array" : "missing");
            json_decref(values);
            goto out;
        }
        out->n_series++;
        int bad = parse_labels(metric, i, s, errstr, errstr_size) < 0 ||
                  parse_samples(values, i, s, errstr, errstr_size) < 0;
        json_decref(values);
        if (bad)
            goto out;
    }
    rc = AD_PROM_OK;

out:
    json_decref(root);
    return rc;
}

void ad_prom_matrix_free(struct ad_prom_matrix *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_series; i++) {
        struct ad_prom_series *s = &m->series[i];
        for (size_t j = 0; j < s->n_labels; j++) {
            free(s->label_names[j]);
            free(s->label_values[j]);
        }
        free(s->label_names);
        free(s->label_values);
        free(s->times_ms);
        free(s->values);
    }
    free(m->series);
    for (size_t i = 0; i < m->n_warnings; i++)
        free(m->warnings[i]);
    free(m->warnings);
    memset(m, 0, sizeof *m);
}

const char *ad_prom_parse_result_name(enum ad_prom_parse_result r)
{
    switch (r) {
    case AD_PROM_OK:
        return "ok";
    case AD_PROM_MALFORMED:
        return "malformed";
    case AD_PROM_ERROR_STATUS:
        return "error_status";
    case AD_PROM_WRONG_RESULT_TYPE:
        return "wrong_result_type";
    }
    return "unknown";
}
