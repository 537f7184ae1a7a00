#include "stream/log_rules.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/errstr.h"
#include "base/number.h"
#include "stream/event_time.h"

/* Room for one label value written from a number or boolean. */
#define NUMBER_TEXT 32

struct predicate {
    int path;
    enum ad_cmp_op op;
    enum ad_literal_type type;
    const char *string;
    size_t string_len;
    double number;
    bool boolean;
};

struct label_rule {
    const char *name;
    int path;                 /* -1: a static label */
    const char *static_value; /* borrowed from the settings */
};

struct feature_rule {
    enum ad_feature_kind kind;
    int path;                   /* sum .. last */
    struct predicate predicate; /* count_if */
};

struct ad_log_rules {
    char **path_texts;
    struct ad_jpath *paths;
    size_t n_paths;
    struct ad_extractor *extractor;
    struct ad_json_value *values;

    int time_path; /* -1 with format kafka */
    enum ad_time_format time_format;
    int64_t max_past, max_future;

    struct label_rule labels[AD_LOG_MAX_LABELS];
    size_t n_labels;
    char label_text[AD_LOG_MAX_LABELS][NUMBER_TEXT];

    struct predicate *filters;
    size_t n_filters;
    struct feature_rule *features;
    size_t n_features;
};

static const char *const reason_names[AD_REJECT_COUNT] = {
    "none",          "too_large",     "malformed_json", "not_an_object",
    "time_missing",  "time_invalid",  "time_too_old",   "time_in_future",
    "label_missing", "label_invalid", "wrong_type",     "not_finite",
};

const char *ad_reject_reason_name(enum ad_reject_reason r)
{
    return (unsigned)r < AD_REJECT_COUNT ? reason_names[r] : "unknown";
}

/* ---- compiling ---- */

/* The index of path text, adding it when new: each path is extracted once per event. */
static int add_path(struct ad_log_rules *r, const char *text, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < r->n_paths; i++)
        if (strcmp(r->path_texts[i], text) == 0)
            return (int)i;
    char **texts = realloc(r->path_texts, (r->n_paths + 1) * sizeof *texts);
    if (texts)
        r->path_texts = texts;
    struct ad_jpath *paths = realloc(r->paths, (r->n_paths + 1) * sizeof *paths);
    if (paths)
        r->paths = paths;
    if (!texts || !paths || !(r->path_texts[r->n_paths] = strdup(text))) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return -1;
    }
    const char *why;
    size_t offset;
    if (ad_jpath_parse(text, &r->paths[r->n_paths], &why, &offset) < 0) {
        /* The config was validated; this is a bug, not bad input. */
        ad_errstr_set(errstr, errstr_size, "bad JSON path \"%s\": %s", text, why);
        free(r->path_texts[r->n_paths]);
        return -1;
    }
    return (int)r->n_paths++;
}

static int compile_predicate(struct ad_log_rules *r, const struct ad_predicate *p,
                             struct predicate *out, char *errstr, size_t errstr_size)
{
    out->path = add_path(r, p->path, errstr, errstr_size);
    out->op = p->op;
    out->type = p->type;
    out->string = p->string;
    out->string_len = p->string ? strlen(p->string) : 0;
    out->number = p->number;
    out->boolean = p->boolean;
    return out->path < 0 ? -1 : 0;
}

struct ad_log_rules *ad_log_rules_new(const struct ad_settings_source *source,
                                      enum ad_extract_engine engine, char *errstr,
                                      size_t errstr_size)
{
    const struct ad_settings_kafka_source *k = &source->kafka;
    struct ad_log_rules *r = calloc(1, sizeof *r);

    if (!r) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    if (source->type != AD_SOURCE_KAFKA || source->n_features > AD_LOG_MAX_FEATURES ||
        k->labels.len + k->static_labels.len > AD_LOG_MAX_LABELS) {
        ad_errstr_set(errstr, errstr_size,
                      "source %s: not a Kafka source within %d labels and %d "
                      "features",
                      source->name, AD_LOG_MAX_LABELS, AD_LOG_MAX_FEATURES);
        goto err;
    }
    r->time_format = k->time.format;
    r->max_past = k->time.max_past;
    r->max_future = k->time.max_future;
    r->time_path = -1;
    if (k->time.format != AD_TIME_KAFKA &&
        (r->time_path = add_path(r, k->time.path, errstr, errstr_size)) < 0)
        goto err;

    for (size_t i = 0; i < k->labels.len; i++) {
        int path = add_path(r, k->labels.values[i], errstr, errstr_size);
        if (path < 0)
            goto err;
        r->labels[r->n_labels++] = (struct label_rule){k->labels.keys[i], path, NULL};
    }
    for (size_t i = 0; i < k->static_labels.len; i++)
        r->labels[r->n_labels++] =
            (struct label_rule){k->static_labels.keys[i], -1, k->static_labels.values[i]};

    r->filters = calloc(k->n_filters ? k->n_filters : 1, sizeof *r->filters);
    r->features = calloc(source->n_features ? source->n_features : 1, sizeof *r->features);
    if (!r->filters || !r->features) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto err;
    }
    for (size_t i = 0; i < k->n_filters; i++, r->n_filters++)
        if (compile_predicate(r, &k->filters[i], &r->filters[i], errstr, errstr_size) < 0)
            goto err;
    for (size_t i = 0; i < source->n_features; i++, r->n_features++) {
        const struct ad_settings_feature *f = &source->features[i];
        struct feature_rule *rule = &r->features[i];
        rule->kind = f->kind;
        rule->path = -1;
        if (f->kind == AD_FEATURE_COUNT_IF &&
            compile_predicate(r, &f->predicate, &rule->predicate, errstr, errstr_size) < 0)
            goto err;
        if (f->path && (rule->path = add_path(r, f->path, errstr, errstr_size)) < 0)
            goto err;
    }

    r->values = calloc(r->n_paths ? r->n_paths : 1, sizeof *r->values);
    if (!r->values) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto err;
    }
    r->extractor = ad_extractor_new(engine, r->paths, r->n_paths, (size_t)k->max_message_bytes,
                                    errstr, errstr_size);
    if (!r->extractor)
        goto err;
    return r;

err:
    ad_log_rules_destroy(r);
    return NULL;
}

void ad_log_rules_destroy(struct ad_log_rules *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_paths; i++) {
        free(r->path_texts[i]);
        ad_jpath_free(&r->paths[i]);
    }
    free(r->path_texts);
    free(r->paths);
    ad_extractor_destroy(r->extractor);
    free(r->values);
    free(r->filters);
    free(r->features);
    free(r);
}

/* ---- applying ---- */

static bool spells_non_finite(const char *s, size_t len)
{
    static const char *const words[] = {"nan",      "inf",       "+inf",     "-inf",
                                        "infinity", "+infinity", "-infinity"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i]) == len && strncasecmp(words[i], s, len) == 0)
            return true;
    return false;
}

/* A number, or a string holding one. */
static bool as_number(const struct ad_json_value *v, double *out)
{
    if (v->type == AD_JSON_NUMBER) {
        *out = v->number;
        return true;
    }
    return v->type == AD_JSON_STRING && ad_number_parse(v->string, v->string_len, out);
}

static bool equals(const struct predicate *p, const struct ad_json_value *v)
{
    double x;
    switch (p->type) {
    case AD_LITERAL_STRING:
        return v->type == AD_JSON_STRING && v->string_len == p->string_len &&
               memcmp(v->string, p->string, p->string_len) == 0;
    case AD_LITERAL_NUMBER:
        return as_number(v, &x) && x == p->number;
    case AD_LITERAL_BOOL:
        return v->type == AD_JSON_BOOL && v->boolean == p->boolean;
    case AD_LITERAL_NULL:
        return v->type == AD_JSON_NULL || v->type == AD_JSON_ABSENT;
    }
    return false;
}

static bool matches(const struct ad_log_rules *r, const struct predicate *p)
{
    const struct ad_json_value *v = &r->values[p->path];
    double x;
    switch (p->op) {
    case AD_OP_EXISTS:
        return v->type != AD_JSON_ABSENT && v->type != AD_JSON_NULL;
    case AD_OP_EQ:
        return equals(p, v);
    case AD_OP_NE:
        return !equals(p, v);
    case AD_OP_LT:
        return as_number(v, &x) && x < p->number;
    case AD_OP_LE:
        return as_number(v, &x) && x <= p->number;
    case AD_OP_GT:
        return as_number(v, &x) && x > p->number;
    case AD_OP_GE:
        return as_number(v, &x) && x >= p->number;
    }
    return false;
}

static enum ad_reject_reason read_time(const struct ad_log_rules *r, int64_t kafka_ts, int64_t now,
                                       int64_t *t)
{
    if (r->time_path < 0) {
        if (kafka_ts < 0)
            return AD_REJECT_TIME_MISSING;
        *t = kafka_ts;
    } else {
        switch (ad_event_time(&r->values[r->time_path], r->time_format, t)) {
        case AD_TIME_OK:
            break;
        case AD_TIME_MISSING:
            return AD_REJECT_TIME_MISSING;
        default:
            return AD_REJECT_TIME_INVALID;
        }
    }
    if (*t < now - r->max_past)
        return AD_REJECT_TIME_TOO_OLD;
    if (*t > now + r->max_future)
        return AD_REJECT_TIME_IN_FUTURE;
    return AD_REJECT_NONE;
}

static enum ad_reject_reason read_label(struct ad_log_rules *r, size_t i, struct ad_log_event *out)
{
    const struct label_rule *rule = &r->labels[i];
    if (rule->path < 0) {
        out->labels[i] = rule->static_value;
        out->label_lens[i] = strlen(rule->static_value);
        return AD_REJECT_NONE;
    }
    const struct ad_json_value *v = &r->values[rule->path];
    switch (v->type) {
    case AD_JSON_STRING:
        if (memchr(v->string, '\0', v->string_len))
            return AD_REJECT_LABEL_INVALID;
        out->labels[i] = v->string;
        out->label_lens[i] = v->string_len;
        return AD_REJECT_NONE;
    case AD_JSON_NUMBER: {
        double x = v->number;
        int n = (x == floor(x) && fabs(x) < 9007199254740992.0)
                    ? snprintf(r->label_text[i], NUMBER_TEXT, "%.0f", x)
                    : snprintf(r->label_text[i], NUMBER_TEXT, "%.17g", x);
        out->labels[i] = r->label_text[i];
        out->label_lens[i] = (size_t)n;
        return AD_REJECT_NONE;
    }
    case AD_JSON_BOOL:
        out->labels[i] = v->boolean ? "true" : "false";
        out->label_lens[i] = strlen(out->labels[i]);
        return AD_REJECT_NONE;
    case AD_JSON_ABSENT:
    case AD_JSON_NULL:
        return AD_REJECT_LABEL_MISSING;
    default:
        return AD_REJECT_WRONG_TYPE;
    }
}

static enum ad_reject_reason read_feature(const struct ad_log_rules *r, size_t f,
                                          struct ad_log_event *out)
{
    const struct feature_rule *rule = &r->features[f];
    if (rule->kind == AD_FEATURE_COUNT) {
        out->values[f] = 1;
    } else if (rule->kind == AD_FEATURE_COUNT_IF) {
        out->values[f] = matches(r, &rule->predicate) ? 1 : 0;
    } else {
        const struct ad_json_value *v = &r->values[rule->path];
        double x;
        if (v->type == AD_JSON_ABSENT || v->type == AD_JSON_NULL)
            return AD_REJECT_NONE; /* this event says nothing about the feature */
        if (v->type == AD_JSON_STRING && spells_non_finite(v->string, v->string_len))
            return AD_REJECT_NOT_FINITE;
        if (!as_number(v, &x))
            return AD_REJECT_WRONG_TYPE;
        if (!isfinite(x))
            return AD_REJECT_NOT_FINITE;
        out->values[f] = x;
    }
    out->present |= 1ULL << f;
    return AD_REJECT_NONE;
}

static enum ad_log_result reject(struct ad_log_event *out, enum ad_reject_reason reason)
{
    out->reason = reason;
    return AD_LOG_REJECTED;
}

enum ad_log_result ad_log_rules_apply(struct ad_log_rules *r, const char *json, size_t len,
                                      int64_t kafka_ts, int64_t now, struct ad_log_event *out)
{
    enum ad_reject_reason why;

    out->present = 0;
    out->reason = AD_REJECT_NONE;
    switch (ad_extractor_run(r->extractor, json, len, r->values)) {
    case AD_EXTRACT_OK:
        break;
    case AD_EXTRACT_TOO_LARGE:
        return reject(out, AD_REJECT_TOO_LARGE);
    case AD_EXTRACT_NOT_OBJECT:
        return reject(out, AD_REJECT_NOT_OBJECT);
    default:
        return reject(out, AD_REJECT_MALFORMED);
    }
    /* Filters first: events they exclude need not carry a time or labels. */
    for (size_t i = 0; i < r->n_filters; i++)
        if (!matches(r, &r->filters[i]))
            return AD_LOG_FILTERED;
    if ((why = read_time(r, kafka_ts, now, &out->time)) != AD_REJECT_NONE)
        return reject(out, why);
    for (size_t i = 0; i < r->n_labels; i++)
        if ((why = read_label(r, i, out)) != AD_REJECT_NONE)
            return reject(out, why);
    for (size_t f = 0; f < r->n_features; f++)
        if ((why = read_feature(r, f, out)) != AD_REJECT_NONE)
            return reject(out, why);
    return AD_LOG_ACCEPTED;
}

size_t ad_log_rules_labels(const struct ad_log_rules *r)
{
    return r->n_labels;
}

const char *ad_log_rules_label_name(const struct ad_log_rules *r, size_t i)
{
    return i < r->n_labels ? r->labels[i].name : NULL;
}

int ad_log_rules_label_index(const struct ad_log_rules *r, const char *name)
{
    for (size_t i = 0; i < r->n_labels; i++)
        if (strcmp(r->labels[i].name, name) == 0)
            return (int)i;
    return -1;
}
