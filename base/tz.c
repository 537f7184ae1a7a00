#include "base/tz.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/errstr.h"
#include "base/file.h"

/* Zone files are a few KiB; anything this large is not one. */
#define MAX_ZONE_FILE (1024 * 1024)
#define DAY_S         86400

/* A rule date of a POSIX TZ string: Jn (1..365, Feb 29 never counted), n (0..365) or
 * Mm.w.d (weekday d of week w of month m, week 5 the last). */
struct rule_date {
    char kind; /* 'J', 'n' or 'M' */
    int a, b, c;
    int32_t time; /* local seconds after midnight, may be negative or past a day */
};

/* The footer's rule, for instants after the last transition. */
struct posix_rule {
    bool valid, has_dst;
    int32_t std_off, dst_off; /* UTC offsets, east positive */
    struct rule_date start, end;
};

struct ad_tz {
    char *name;
    int64_t *times;   /* transitions, ascending */
    int32_t *offsets; /* the offset from each transition on */
    size_t n;
    int32_t initial; /* before the first transition: time type 0 */
    struct posix_rule rule;
};

int64_t ad_tz_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    /* Howard Hinnant's days_from_civil. */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void ad_tz_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static bool leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* ---- the POSIX TZ string of the footer ---- */

static const char *parse_name(const char *p)
{
    if (*p == '<') {
        const char *close = strchr(p, '>');
        return close ? close + 1 : NULL;
    }
    const char *start = p;
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
        p++;
    return p - start >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] as seconds; hours up to 167 (RFC 8536's extension for rule times). */
static const char *parse_hms(const char *p, int32_t *out)
{
    int sign = 1;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    int32_t parts[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            if (*p != ':')
                break;
            p++;
        }
        if (*p < '0' || *p > '9')
            return NULL;
        int v = 0, digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 3) {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        parts[i] = v;
    }
    if (parts[0] > 167 || parts[1] > 59 || parts[2] > 59)
        return NULL;
    *out = sign * (parts[0] * 3600 + parts[1] * 60 + parts[2]);
    return p;
}

static const char *parse_int(const char *p, int *out)
{
    if (*p < '0' || *p > '9')
        return NULL;
    int v = 0;
    while (*p >= '0' && *p <= '9' && v < 1000)
        v = v * 10 + (*p++ - '0');
    *out = v;
    return p;
}

static const char *parse_rule_date(const char *p, struct rule_date *r)
{
    r->time = 7200; /* 02:00 unless given */
    if (*p == 'J') {
        r->kind = 'J';
        if (!(p = parse_int(p + 1, &r->a)) || r->a < 1 || r->a > 365)
            return NULL;
    } else if (*p == 'M') {
        r->kind = 'M';
        if (!(p = parse_int(p + 1, &r->a)) || *p != '.' || !(p = parse_int(p + 1, &r->b)) ||
            *p != '.' || !(p = parse_int(p + 1, &r->c)) || r->a < 1 || r->a > 12 || r->b < 1 ||
            r->b > 5 || r->c > 6)
            return NULL;
    } else {
        r->kind = 'n';
        if (!(p = parse_int(p, &r->a)) || r->a > 365)
            return NULL;
    }
    if (*p == '/' && !(p = parse_hms(p + 1, &r->time)))
        return NULL;
    return p;
}

static bool parse_posix(const char *p, struct posix_rule *r)
{
    int32_t off;
    memset(r, 0, sizeof *r);
    if (!(p = parse_name(p)) || !(p = parse_hms(p, &off)))
        return false;
    r->std_off = -off; /* POSIX counts west of Greenwich as positive */
    if (!*p) {
        r->valid = true;
        return true;
    }
    if (!(p = parse_name(p)))
        return false;
    r->has_dst = true;
    r->dst_off = r->std_off + 3600;
    if (*p && *p != ',') {
        if (!(p = parse_hms(p, &off)))
            return false;
        r->dst_off = -off;
    }
    /* Without rules, POSIX leaves them to the implementation; the US rules since 2007 are
     * glibc's choice, and no zone file omits them. */
    if (!*p) {
        r->start = (struct rule_date){'M', 3, 2, 0, 7200};
        r->end = (struct rule_date){'M', 11, 1, 0, 7200};
        r->valid = true;
        return true;
    }
    if (*p != ',' || !(p = parse_rule_date(p + 1, &r->start)) || *p != ',' ||
        !(p = parse_rule_date(p + 1, &r->end)) || *p)
        return false;
    r->valid = true;
    return true;
}

/* The instant a rule date happens in year y, its time read with offset `before`. */
static int64_t rule_instant(const struct rule_date *r, int64_t y, int32_t before)
{
    int64_t jan1 = ad_tz_days_from_civil(y, 1, 1), day;
    if (r->kind == 'J') {
        day = jan1 + r->a - 1 + (leap(y) && r->a >= 60);
    } else if (r->kind == 'n') {
        day = jan1 + r->a;
    } else {
        int64_t first = ad_tz_days_from_civil(y, (unsigned)r->a, 1);
        int wday = (int)(((first + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
        day = first + (r->c - wday + 7) % 7 + 7 * (r->b - 1);
        int64_t next_month = r->a == 12 ? ad_tz_days_from_civil(y + 1, 1, 1)
                                        : ad_tz_days_from_civil(y, (unsigned)r->a + 1, 1);
        while (day >= next_month)
            day -= 7;
    }
    return day * DAY_S + r->time - before;
}

static int32_t rule_offset(const struct posix_rule *r, int64_t t)
{
    if (!r->has_dst)
        return r->std_off;
    int64_t y;
    unsigned m, d;
    ad_tz_civil_from_days(floor_div(t + r->std_off, DAY_S), &y, &m, &d);
    int64_t start = rule_instant(&r->start, y, r->std_off);
    int64_t end = rule_instant(&r->end, y, r->dst_off);
    bool dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
    return dst ? r->dst_off : r->std_off;
}

/* ---- the zone file ---- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct counts {
    uint32_t isut, isstd, leap, time, type, chars;
};

static bool read_counts(const uint8_t *p, size_t len, struct counts *c)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return false;
    c->isut = be32(p + 20);
    c->isstd = be32(p + 24);
    c->leap = be32(p + 28);
    c->time = be32(p + 32);
    c->type = be32(p + 36);
    c->chars = be32(p + 40);
    return c->type >= 1 && c->type <= 256 && c->time <= 100000 && c->leap <= 100000 &&
           c->chars <= 100000 && c->isut <= 256 && c->isstd <= 256;
}

static size_t block_size(const struct counts *c, size_t time_size)
{
    return (size_t)c->time * time_size + c->time + (size_t)c->type * 6 + c->chars +
           (size_t)c->leap * (time_size + 4) + c->isstd + c->isut;
}

static int parse_file(struct ad_tz *z, const uint8_t *buf, size_t len, char *errstr,
                      size_t errstr_size)
{
    struct counts c;
    size_t time_size = 4;
    const uint8_t *p = buf, *end = buf + len;
    if (!read_counts(p, len, &c))
        return ad_errstr_set(errstr, errstr_size, "not a TZif zone file");
    /* Version 2 and later repeat the data with 64-bit times after the 32-bit block. */
    if (buf[4] >= '2') {
        size_t skip = 44 + block_size(&c, 4);
        if (skip > len || !read_counts(p + skip, len - skip, &c))
            return ad_errstr_set(errstr, errstr_size, "a truncated TZif zone file");
        p += skip;
        time_size = 8;
    }
    p += 44;
    if ((size_t)(end - p) < block_size(&c, time_size))
        return ad_errstr_set(errstr, errstr_size, "a truncated TZif zone file");
    const uint8_t *times = p, *idx = p + (size_t)c.time * time_size;
    const uint8_t *types = idx + c.time;
    z->times = malloc((c.time ? c.time : 1) * sizeof *z->times);
    z->offsets = malloc((c.time ? c.time : 1) * sizeof *z->offsets);
    if (!z->times || !z->offsets)
        return ad_errstr_set(errstr, errstr_size, "out of memory");
    for (uint32_t i = 0; i < c.time; i++) {
        if (idx[i] >= c.type)
            return ad_errstr_set(errstr, errstr_size, "a TZif transition names no type");
        z->times[i] = time_size == 8 ? be64(times + 8 * i) : (int32_t)be32(times + 4 * i);
        z->offsets[i] = (int32_t)be32(types + 6 * idx[i]);
    }
    z->n = c.time;
    z->initial = (int32_t)be32(types); /* RFC 8536: before the first transition, type 0 */
    p += block_size(&c, time_size);
    /* The footer: "\n<POSIX TZ>\n", for instants after the last transition. */
    if (time_size == 8 && p < end && *p == '\n') {
        const uint8_t *nl = memchr(p + 1, '\n', (size_t)(end - p - 1));
        if (nl && nl > p + 1) {
            char rule[128];
            size_t n = (size_t)(nl - p - 1);
            if (n < sizeof rule) {
                memcpy(rule, p + 1, n);
                rule[n] = '\0';
                if (!parse_posix(rule, &z->rule))
                    return ad_errstr_set(errstr, errstr_size,
                                         "the zone file's TZ rule \"%s\" is not understood", rule);
            }
        }
    }
    return 0;
}

struct ad_tz *ad_tz_load(const char *name, char *errstr, size_t errstr_size)
{
    struct ad_tz *z = calloc(1, sizeof *z);
    char *buf = NULL, path[4096], why[256];
    size_t len;
    if (!z || !(z->name = strdup(name))) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto fail;
    }
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0)
        return z;
    if (!*name || name[0] == '/' || strstr(name, "..")) {
        ad_errstr_set(errstr, errstr_size, "\"%s\" is not a time zone name", name);
        goto fail;
    }
    const char *dir = getenv("TZDIR");
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
    buf = ad_file_read(path, MAX_ZONE_FILE, &len, NULL, why, sizeof why);
    if (!buf) {
        ad_errstr_set(errstr, errstr_size, "unknown time zone \"%s\" (%s: %s)", name, path, why);
        goto fail;
    }
    if (parse_file(z, (const uint8_t *)buf, len, why, sizeof why) < 0) {
        ad_errstr_set(errstr, errstr_size, "time zone \"%s\": %s: %s", name, path, why);
        goto fail;
    }
    free(buf);
    return z;
fail:
    free(buf);
    ad_tz_free(z);
    return NULL;
}

void ad_tz_free(struct ad_tz *z)
{
    if (!z)
        return;
    free(z->name);
    free(z->times);
    free(z->offsets);
    free(z);
}

const char *ad_tz_name(const struct ad_tz *z)
{
    return z->name;
}

int32_t ad_tz_offset(const struct ad_tz *z, int64_t t)
{
    if (z->n == 0 || t < z->times[0])
        return z->n == 0 && z->rule.valid ? rule_offset(&z->rule, t) : z->initial;
    if (t >= z->times[z->n - 1] && z->rule.valid)
        return rule_offset(&z->rule, t);
    size_t lo = 0, hi = z->n; /* the last transition at or before t */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->times[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return z->offsets[lo];
}

int64_t ad_tz_instant(const struct ad_tz *z, int64_t local)
{
    /* The offsets a day before and a day after bracket any single transition near local. */
    int32_t before = ad_tz_offset(z, local - DAY_S), after = ad_tz_offset(z, local + DAY_S);
    int64_t a = local - before, b = local - after;
    bool a_ok = ad_tz_offset(z, a) == before, b_ok = ad_tz_offset(z, b) == after;
    if (a_ok && b_ok)
        return a < b ? a : b; /* occurs twice: the first */
    if (a_ok)
        return a;
    if (b_ok)
        return b;
    return a; /* inside a gap: the offset before it */
}
