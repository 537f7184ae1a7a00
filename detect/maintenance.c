#include "detect/maintenance.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/cron.h"
#include "base/errstr.h"
#include "base/tz.h"
#include "stream/log_rules.h"
#include "windows/batch.h"

/* How far ahead the next start of a schedule is looked for. */
#define HORIZON_MS (5 * 366 * 86400000LL)

struct matcher {
    size_t key;  /* index among the detector's keys */
    char *exact; /* or */
    regex_t re;
    bool is_re;
};

/* What is known of a window's activity: active (or not) for t in [from, until). */
struct known {
    int64_t from, until;
    bool active;
    int64_t start, end; /* active: the occurrence; inactive: the next start in start */
};

struct window {
    char *name, *comment;
    json_t *shown; /* detectors, match, match_re, and the times, as configured */
    struct matcher *matchers;
    size_t n_matchers;
    bool absolute;
    int64_t start_ms, end_ms; /* absolute */
    struct ad_cron cron;      /* recurring */
    int64_t duration;
    struct ad_tz *tz;
    struct known cache;
};

struct ad_maintenance {
    struct window *windows;
    size_t n;
    bool status_only; /* every window, for /status: no matchers, no entity matches */
};

static void free_window(struct window *w)
{
    free(w->name);
    free(w->comment);
    json_decref(w->shown);
    for (size_t i = 0; i < w->n_matchers; i++) {
        free(w->matchers[i].exact);
        if (w->matchers[i].is_re)
            regfree(&w->matchers[i].re);
    }
    free(w->matchers);
    ad_tz_free(w->tz);
}

void ad_maintenance_destroy(struct ad_maintenance *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free_window(&m->windows[i]);
    free(m->windows);
    free(m);
}

static bool applies(const struct ad_settings_maintenance *w, const char *detector)
{
    if (!w->detectors.len)
        return true;
    for (size_t i = 0; i < w->detectors.len; i++)
        if (strcmp(w->detectors.items[i], detector) == 0)
            return true;
    return false;
}

static ssize_t key_index(const struct ad_settings_detector *d, const char *label)
{
    for (size_t i = 0; i < d->keys.len; i++)
        if (strcmp(d->keys.items[i], label) == 0)
            return (ssize_t)i;
    return -1;
}

static json_t *strmap_json(const struct ad_strmap *m)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < m->len; i++)
        json_object_set_new(o, m->keys[i], json_string(m->values[i]));
    return o;
}

/* The matchers of w on detector d's keys; 1 when a label is not one of its keys (the window
 * can match none of its entities), -1 with errstr filled. */
static int compile_matchers(struct window *out, const struct ad_settings_maintenance *w,
                            const struct ad_settings_detector *d, char *errstr, size_t errstr_size)
{
    size_t n = w->match.len + w->match_re.len;
    out->matchers = calloc(n ? n : 1, sizeof *out->matchers);
    if (!out->matchers)
        return ad_errstr_set(errstr, errstr_size, "out of memory");
    for (size_t k = 0; k < 2; k++) {
        const struct ad_strmap *map = k ? &w->match_re : &w->match;
        for (size_t i = 0; i < map->len; i++) {
            ssize_t key = key_index(d, map->keys[i]);
            if (key < 0)
                return 1;
            struct matcher *m = &out->matchers[out->n_matchers];
            m->key = (size_t)key;
            if (!k) {
                if (!(m->exact = strdup(map->values[i])))
                    return ad_errstr_set(errstr, errstr_size, "out of memory");
            } else {
                char *anchored = NULL;
                if (asprintf(&anchored, "^(%s)$", map->values[i]) < 0)
                    return ad_errstr_set(errstr, errstr_size, "out of memory");
                int rc = regcomp(&m->re, anchored, REG_EXTENDED | REG_NOSUB);
                free(anchored);
                if (rc != 0)
                    return ad_errstr_set(errstr, errstr_size,
                                         "maintenance %s: the expression of %s does not compile",
                                         w->name, map->keys[i]);
                m->is_re = true;
            }
            out->n_matchers++;
        }
    }
    return 0;
}

struct ad_maintenance *ad_maintenance_new(const struct ad_settings *s, size_t d, char *errstr,
                                          size_t errstr_size)
{
    struct ad_maintenance *m = calloc(1, sizeof *m);
    if (!m || !(m->windows = calloc(s->n_maintenance ? s->n_maintenance : 1, sizeof *m->windows)))
        goto oom;
    m->status_only = d >= s->n_detectors;
    for (size_t i = 0; i < s->n_maintenance; i++) {
        const struct ad_settings_maintenance *w = &s->maintenance[i];
        const struct ad_settings_detector *det = d < s->n_detectors ? &s->detectors[d] : NULL;
        if (det && !applies(w, det->name))
            continue;
        struct window *out = &m->windows[m->n];
        char err[256];
        *out = (struct window){.absolute = w->start_ms != INT64_MIN,
                               .start_ms = w->start_ms,
                               .end_ms = w->end_ms,
                               .duration = w->duration,
                               .cache = {.from = 1, .until = 0}};
        out->name = strdup(w->name);
        out->comment = w->comment ? strdup(w->comment) : NULL;
        out->shown = json_object();
        if (!out->name || (w->comment && !out->comment) || !out->shown) {
            free_window(out);
            goto oom;
        }
        json_t *detectors = json_array();
        for (size_t k = 0; k < w->detectors.len; k++)
            json_array_append_new(detectors, json_string(w->detectors.items[k]));
        json_object_set_new(out->shown, "detectors", detectors);
        json_object_set_new(out->shown, "match", strmap_json(&w->match));
        json_object_set_new(out->shown, "match_re", strmap_json(&w->match_re));
        if (out->absolute) {
            json_object_set_new(out->shown, "start", json_string(w->start));
            json_object_set_new(out->shown, "end", json_string(w->end));
        } else {
            json_object_set_new(out->shown, "schedule", json_string(w->schedule));
            json_object_set_new(out->shown, "duration_seconds",
                                json_real((double)w->duration / 1000.0));
            json_object_set_new(out->shown, "timezone", json_string(w->timezone));
            if (ad_cron_parse(w->schedule, &out->cron, NULL, err, sizeof err) < 0 ||
                !(out->tz = ad_tz_load(w->timezone, err, sizeof err))) {
                ad_errstr_set(errstr, errstr_size, "maintenance %s: %s", w->name, err);
                free_window(out);
                goto fail;
            }
        }
        int rc = det ? compile_matchers(out, w, det, errstr, errstr_size) : 0;
        if (rc < 0) {
            free_window(out);
            goto fail;
        }
        if (rc > 0) { /* matches none of this detector's entities */
            free_window(out);
            continue;
        }
        m->n++;
    }
    return m;
oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
fail:
    ad_maintenance_destroy(m);
    return NULL;
}

size_t ad_maintenance_count(const struct ad_maintenance *m)
{
    return m ? m->n : 0;
}

/* What is known at t: from the cache, or worked out (and cached). */
static const struct known *known_at(struct window *w, int64_t t)
{
    struct known *k = &w->cache;
    if (t >= k->from && t < k->until)
        return k;
    if (w->absolute) {
        if (t < w->start_ms)
            *k = (struct known){INT64_MIN, w->start_ms, false, w->start_ms, 0};
        else if (t < w->end_ms)
            *k = (struct known){w->start_ms, w->end_ms, true, w->start_ms, w->end_ms};
        else
            *k = (struct known){w->end_ms, INT64_MAX, false, INT64_MAX, 0};
        return k;
    }
    /* The latest start within one duration before t: active until it ends. */
    int64_t start = ad_cron_prev(&w->cron, w->tz, t, t - w->duration);
    if (start != INT64_MIN) {
        *k = (struct known){start, start + w->duration, true, start, start + w->duration};
        return k;
    }
    int64_t next = ad_cron_next(&w->cron, w->tz, t, t + HORIZON_MS);
    *k = (struct known){t, next == INT64_MAX ? t + HORIZON_MS : next, false, next, 0};
    return k;
}

int ad_maintenance_active(struct ad_maintenance *m, size_t i, int64_t t_ms, int64_t *start,
                          int64_t *end)
{
    const struct known *k = known_at(&m->windows[i], t_ms);
    *start = k->start;
    *end = k->end;
    return k->active;
}

static bool matches(const struct window *w, const char *key, size_t len)
{
    const char *values[AD_LOG_MAX_LABELS];
    size_t lens[AD_LOG_MAX_LABELS];
    size_t n = ad_entity_key_split(key, len, values, lens, AD_LOG_MAX_LABELS);
    for (size_t i = 0; i < w->n_matchers; i++) {
        const struct matcher *m = &w->matchers[i];
        if (m->key >= n || m->key >= AD_LOG_MAX_LABELS)
            return false;
        const char *v = values[m->key];
        size_t vl = lens[m->key];
        if (!m->is_re) {
            if (strlen(m->exact) != vl || memcmp(m->exact, v, vl) != 0)
                return false;
            continue;
        }
        char stack[256], *text = vl < sizeof stack ? stack : malloc(vl + 1);
        if (!text)
            return false;
        memcpy(text, v, vl);
        text[vl] = '\0';
        bool ok = regexec(&m->re, text, 0, NULL, 0) == 0;
        if (text != stack)
            free(text);
        if (!ok)
            return false;
    }
    return true;
}

const char *ad_maintenance_covering(struct ad_maintenance *m, const char *key, size_t len,
                                    int64_t t_ms)
{
    for (size_t i = 0; m && !m->status_only && i < m->n; i++) {
        struct window *w = &m->windows[i];
        if (known_at(w, t_ms)->active && matches(w, key, len))
            return w->name;
    }
    return NULL;
}

static json_t *time_of(int64_t ms)
{
    char text[40];
    if (ms == INT64_MAX || ms == INT64_MIN)
        return json_null();
    ad_clock_format(ms, text, sizeof text);
    return json_string(text);
}

void ad_maintenance_status(struct ad_maintenance *m, int64_t now_ms, json_t *out)
{
    for (size_t i = 0; m && i < m->n; i++) {
        struct window *w = &m->windows[i];
        json_t *part = json_deep_copy(w->shown);
        if (!part)
            continue;
        json_object_set_new(part, "name", json_string(w->name));
        if (w->comment)
            json_object_set_new(part, "comment", json_string(w->comment));
        /* The wall clock's answer, without disturbing the event-time cache. */
        struct known saved = w->cache;
        const struct known *k = known_at(w, now_ms);
        json_object_set_new(part, "active", json_boolean(k->active));
        if (k->active) {
            json_object_set_new(part, "active_since", time_of(k->start));
            json_object_set_new(part, "active_until", time_of(k->end));
        } else {
            json_object_set_new(part, "next_start", time_of(k->start));
        }
        w->cache = saved;
        json_array_append_new(out, part);
    }
}
