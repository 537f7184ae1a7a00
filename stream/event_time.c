#include "stream/event_time.h"

#include <math.h>
#include <stdbool.h>

/* 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the years RFC 3339 can write. */
#define MIN_MS (-62135596800000LL)
#define MAX_MS 253402300799999LL

static bool is_digit(char c)
{
    return (unsigned char)(c - '0') <= 9;
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const unsigned char days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/*
 * Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's
 * days_from_civil), for y >= 1: eras of 400 years have 146097 days, and a year that starts in
 * March keeps the leap day at its end.
 */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int era = y / 400;
    int yoe = y - era * 400;
    int doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int64_t)era * 146097 + doe - 719468;
}

int ad_time_parse_rfc3339(const char *s, size_t len, int64_t *ms)
{
    int year, month, day, hour, minute, second, frac = 0, offset = 0;
    size_t i = 19;

    /* Fixed positions up to the seconds: "2026-11-22T05:01:02" */
    if (len < 20 || !digits(s, 4, &year) || s[4] != '-' || !digits(s + 5, 2, &month) ||
        s[7] != '-' || !digits(s + 8, 2, &day) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !digits(s + 11, 2, &hour) || s[13] != ':' || !digits(s + 14, 2, &minute) || s[16] != ':' ||
        !digits(s + 17, 2, &second))
        return -1;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && is_digit(s[i]))
            i++;
        size_t n = i - start;
        if (n == 0 || n > 9)
            return -1;
        /* Milliseconds: the first three digits, the rest truncated. */
        for (size_t k = 0; k < 3; k++)
            frac = frac * 10 + (k < n ? s[start + k] - '0' : 0);
    }
    if (i == len)
        return -1;
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        int sign = s[i++] == '-' ? -1 : 1, oh, om;
        if (len - i == 5 && s[i + 2] == ':') {
            if (!digits(s + i, 2, &oh) || !digits(s + i + 3, 2, &om))
                return -1;
        } else if (len - i == 4) {
            if (!digits(s + i, 2, &oh) || !digits(s + i + 2, 2, &om))
                return -1;
        } else {
            return -1;
        }
        if (oh > 23 || om > 59)
            return -1;
        offset = sign * (oh * 3600 + om * 60);
        i = len;
    } else {
        return -1;
    }
    if (i != len || year < 1 || month < 1 || month > 12 || day < 1 ||
        day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60)
        return -1;
    if (second == 60) {
        /* A leap second: the last moment of the minute before it, so the order is kept. */
        second = 59;
        frac = 999;
    }
    int64_t secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    *ms = (secs - offset) * 1000 + frac;
    return 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return q - (a % b != 0 && (a < 0) != (b < 0));
}

static enum ad_time_status in_range(int64_t v, int64_t *ms)
{
    if (v < MIN_MS || v > MAX_MS)
        return AD_TIME_MALFORMED;
    *ms = v;
    return AD_TIME_OK;
}

/* A JSON number of seconds (scale 3), milliseconds (0) or microseconds (-3). */
static enum ad_time_status from_number(double x, int scale, int64_t *ms)
{
    /* Bounds with a margin, so that the conversions below are defined; in_range is exact. */
    double limit = 2.6e14 * (scale == 3 ? 1e-3 : scale == 0 ? 1 : 1e3);
    if (!isfinite(x) || fabs(x) > limit)
        return AD_TIME_MALFORMED;
    switch (scale) {
    case 3:
        /*
         * Rounded to the microsecond first: 1795323662.123 is held as 1795323662.1229999..., and
         * truncating that would give ...122 ms. A double has sub-microsecond precision until
         * about year 2240, so no written digit is lost.
         */
        return in_range(floor_div(llround(x * 1e6), 1000), ms);
    case 0:
        return in_range((int64_t)floor(x), ms);
    default:
        if (x == floor(x))
            return in_range(floor_div((int64_t)x, 1000), ms);
        return in_range((int64_t)floor(x / 1000), ms);
    }
}

/*
 * A numeric string, "-"? digits ("." digits)?, read exactly: floor(value * 10^scale) is made of
 * the digits before the shifted point, minus one for a negative value with non-zero digits after.
 */
static enum ad_time_status from_string(const char *s, size_t len, int scale, int64_t *ms)
{
    size_t i = 0, n_int, n_frac = 0;
    bool negative = len > 0 && s[0] == '-';
    i += negative;
    const char *int_digits = s + i, *frac_digits = NULL;
    while (i < len && is_digit(s[i]))
        i++;
    n_int = (size_t)(s + i - int_digits);
    if (i < len && s[i] == '.') {
        frac_digits = s + ++i;
        while (i < len && is_digit(s[i]))
            i++;
        n_frac = (size_t)(s + i - frac_digits);
        if (n_frac == 0)
            return AD_TIME_MALFORMED;
    }
    if (n_int == 0 || i != len)
        return AD_TIME_MALFORMED;

    long point = (long)n_int + scale; /* digits before the point once scaled */
    long n = (long)(n_int + n_frac) > point ? (long)(n_int + n_frac) : point;
    int64_t v = 0;
    bool rest = false;
    for (long k = 0; k < n; k++) {
        int d = 0;
        if (k < (long)n_int)
            d = int_digits[k] - '0';
        else if (k - (long)n_int < (long)n_frac)
            d = frac_digits[k - (long)n_int] - '0';
        if (k < point) {
            if (v > MAX_MS) /* also keeps v * 10 from overflowing */
                return AD_TIME_MALFORMED;
            v = v * 10 + d;
        } else if (d) {
            rest = true;
        }
    }
    return in_range(negative ? -v - rest : v, ms);
}

static enum ad_time_status unix_time(const struct ad_json_value *v, int scale, int64_t *ms)
{
    if (v->type == AD_JSON_NUMBER)
        return from_number(v->number, scale, ms);
    if (v->type == AD_JSON_STRING)
        return from_string(v->string, v->string_len, scale, ms);
    return AD_TIME_WRONG_TYPE;
}

enum ad_time_status ad_event_time(const struct ad_json_value *v, enum ad_time_format format,
                                  int64_t *ms)
{
    if (!v || v->type == AD_JSON_ABSENT || v->type == AD_JSON_NULL)
        return AD_TIME_MISSING;
    switch (format) {
    case AD_TIME_RFC3339:
        if (v->type != AD_JSON_STRING)
            return AD_TIME_WRONG_TYPE;
        return ad_time_parse_rfc3339(v->string, v->string_len, ms) == 0 ? AD_TIME_OK
                                                                        : AD_TIME_MALFORMED;
    case AD_TIME_UNIX_S:
        return unix_time(v, 3, ms);
    case AD_TIME_UNIX_MS:
        return unix_time(v, 0, ms);
    case AD_TIME_UNIX_US:
        return unix_time(v, -3, ms);
    case AD_TIME_KAFKA:
        break; /* the caller's business: no field to read */
    }
    return AD_TIME_WRONG_TYPE;
}
