#include "base/cron.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/errstr.h"

#define DAY_S 86400

struct field {
    const char *what;
    int min, max;
    const char *const *names; /* names for min, min+1, ...; NULL: numbers only */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static const struct field fields[5] = {
    {"minute", 0, 59, NULL},          {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL},    {"month", 1, 12, month_names},
    {"day of week", 0, 7, day_names},
};

static const struct {
    const char *name, *spec;
} macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

/* A number or, where the field has them, a three-letter name. */
static const char *parse_value(const char *p, const struct field *f, int *out)
{
    if (isdigit((unsigned char)*p)) {
        int v = 0;
        while (isdigit((unsigned char)*p) && v < 1000)
            v = v * 10 + (*p++ - '0');
        *out = v;
        return p;
    }
    for (int i = 0; f->names && i <= f->max - f->min && i < (f == &fields[4] ? 7 : 12); i++) {
        if (strncasecmp(p, f->names[i], 3) == 0 && !isalpha((unsigned char)p[3])) {
            *out = f->min + i;
            return p + 3;
        }
    }
    return NULL;
}

/* One field (up to its end: a space or the text's end) into bits. */
static int parse_field(const char *text, const char **pp, const struct field *f, uint64_t *bits,
                       bool *star, size_t *offset, char *errstr, size_t errstr_size)
{
    const char *p = *pp;
    *bits = 0;
    *star = *p == '*';
    for (;;) {
        const char *item = p;
        int lo, hi, step = 1;
        if (*p == '*') {
            lo = f->min;
            hi = f->max;
            p++;
        } else {
            if (!(p = parse_value(p, f, &lo)))
                goto bad;
            hi = lo;
            if (*p == '-' && !(p = parse_value(p + 1, f, &hi)))
                goto bad;
        }
        if (*p == '/') {
            if (!isdigit((unsigned char)p[1]))
                goto bad;
            p++;
            step = 0;
            while (isdigit((unsigned char)*p) && step < 1000)
                step = step * 10 + (*p++ - '0');
            if (step < 1)
                goto bad;
            if (item[0] != '*' && hi == lo)
                hi = f->max; /* "a/n": from a to the end */
        }
        if (lo < f->min || hi > f->max || lo > hi) {
            if (offset)
                *offset = (size_t)(item - text);
            return ad_errstr_set(errstr, errstr_size, "%s out of range %d-%d", f->what, f->min,
                                 f->max);
        }
        for (int v = lo; v <= hi; v += step)
            *bits |= UINT64_C(1) << v;
        if (*p != ',')
            break;
        p++;
    }
    if (*p && *p != ' ' && *p != '\t')
        goto bad_at_p;
    *pp = p;
    return 0;
bad:
    if (!p)
        p = *pp;
bad_at_p:
    if (offset)
        *offset = (size_t)(p - text);
    return ad_errstr_set(errstr, errstr_size, "bad %s field", f->what);
}

int ad_cron_parse(const char *text, struct ad_cron *out, size_t *offset, char *errstr,
                  size_t errstr_size)
{
    const char *p = text;
    memset(out, 0, sizeof *out);
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '@') {
        for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++) {
            const char *rest = p + strlen(macros[i].name);
            if (strncasecmp(p, macros[i].name, strlen(macros[i].name)) == 0 &&
                strspn(rest, " \t") == strlen(rest))
                return ad_cron_parse(macros[i].spec, out, NULL, errstr, errstr_size);
        }
        if (offset)
            *offset = (size_t)(p - text);
        return ad_errstr_set(errstr, errstr_size,
                             "unknown macro (@yearly, @monthly, @weekly, @daily, @hourly)");
    }
    uint64_t bits[5];
    bool star[5];
    for (int i = 0; i < 5; i++) {
        if (!*p) {
            if (offset)
                *offset = (size_t)(p - text);
            return ad_errstr_set(errstr, errstr_size,
                                 "expected 5 fields (minute hour day month weekday), got %d", i);
        }
        if (parse_field(text, &p, &fields[i], &bits[i], &star[i], offset, errstr, errstr_size) < 0)
            return -1;
        while (*p == ' ' || *p == '\t')
            p++;
    }
    if (*p) {
        if (offset)
            *offset = (size_t)(p - text);
        return ad_errstr_set(errstr, errstr_size, "more than 5 fields");
    }
    out->minutes = bits[0];
    out->hours = (uint32_t)bits[1];
    out->days = (uint32_t)bits[2];
    out->months = (uint16_t)bits[3];
    out->weekdays = (uint8_t)((bits[4] | bits[4] >> 7) & 0x7f); /* 7 is Sunday too */
    out->days_star = star[2];
    out->weekdays_star = star[4];
    return 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Whether local day `days` (since 1970-01-01) matches the day fields. */
static bool day_matches(const struct ad_cron *c, int64_t days)
{
    int64_t y;
    unsigned m, d;
    ad_tz_civil_from_days(days, &y, &m, &d);
    if (!(c->months >> m & 1))
        return false;
    int wday = (int)(((days + 4) % 7 + 7) % 7);
    bool dom = c->days >> d & 1, dow = c->weekdays >> wday & 1;
    if (!c->days_star && !c->weekdays_star)
        return dom || dow;
    return dom && dow;
}

/*
 * The best instant of a local day: with `latest`, the largest firing instant at or before
 * bound; otherwise the smallest after it. Every matching minute is looked at, since around a
 * gap the instants are not in the order of the local times. Instants in seconds.
 */
static bool best_of_day(const struct ad_cron *c, const struct ad_tz *z, int64_t day, int64_t bound,
                        bool latest, int64_t *best)
{
    bool found = false;
    *best = latest ? INT64_MIN : INT64_MAX;
    for (int h = 0; h < 24; h++) {
        if (!(c->hours >> h & 1))
            continue;
        for (int m = 0; m < 60; m++) {
            if (!(c->minutes >> m & 1))
                continue;
            int64_t t = ad_tz_instant(z, day * DAY_S + h * 3600 + m * 60);
            if (latest ? t <= bound && t > *best : t > bound && t < *best) {
                *best = t;
                found = true;
            }
        }
    }
    return found;
}

int64_t ad_cron_prev(const struct ad_cron *c, const struct ad_tz *z, int64_t t_ms, int64_t after_ms)
{
    int64_t t = floor_div(t_ms, 1000), after = floor_div(after_ms, 1000);
    /* A day later than t's local date can hold an earlier instant only around a transition:
     * start one day on. */
    int64_t day = floor_div(t + ad_tz_offset(z, t), DAY_S) + 1;
    int64_t last = floor_div(after + ad_tz_offset(z, after), DAY_S) - 1;
    for (; day >= last; day--) {
        int64_t best;
        if (day_matches(c, day) && best_of_day(c, z, day, t, true, &best))
            return best > after ? best * 1000 : INT64_MIN;
    }
    return INT64_MIN;
}

int64_t ad_cron_next(const struct ad_cron *c, const struct ad_tz *z, int64_t t_ms, int64_t until_ms)
{
    int64_t t = floor_div(t_ms, 1000), until = floor_div(until_ms, 1000);
    int64_t day = floor_div(t + ad_tz_offset(z, t), DAY_S) - 1;
    int64_t last = floor_div(until + ad_tz_offset(z, until), DAY_S) + 1;
    for (; day <= last; day++) {
        int64_t best;
        if (day_matches(c, day) && best_of_day(c, z, day, t, false, &best))
            return best <= until ? best * 1000 : INT64_MAX;
    }
    return INT64_MAX;
}
