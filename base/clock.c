#include "base/clock.h"

#include <stdio.h>
#include <time.h>

#include "base/tz.h"

static int64_t ms_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double seconds_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t ad_clock_wall_ms(void)
{
    return ms_of(CLOCK_REALTIME);
}

double ad_clock_wall_seconds(void)
{
    return seconds_of(CLOCK_REALTIME);
}

int64_t ad_clock_mono_ms(void)
{
    return ms_of(CLOCK_MONOTONIC);
}

double ad_clock_mono_seconds(void)
{
    return seconds_of(CLOCK_MONOTONIC);
}

void ad_clock_format(int64_t ms, char *buf, size_t size)
{
    int64_t frac = ((ms % 1000) + 1000) % 1000;
    time_t secs = (time_t)((ms - frac) / 1000);
    struct tm tm;
    char base[40];
    gmtime_r(&secs, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    if (frac)
        snprintf(buf, size, "%s.%03dZ", base, (int)frac);
    else
        snprintf(buf, size, "%sZ", base);
}

/* n digits at p as a number, or -1. */
static int digits(const char *p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

int ad_clock_parse(const char *text, int64_t *ms)
{
    static const unsigned char month_days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = text;
    /* Field by field, each only once everything before it matched: a short text ends at its
     * NUL, which no check accepts, so nothing past it is read. */
    int y, mo, d, h, mi, s;
    if ((y = digits(p, 4)) < 0 || p[4] != '-')
        return -1;
    if ((mo = digits(p + 5, 2)) < 1 || mo > 12 || p[7] != '-')
        return -1;
    if ((d = digits(p + 8, 2)) < 1 || d > month_days[mo - 1] ||
        (p[10] != 'T' && p[10] != 't' && p[10] != ' '))
        return -1;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return -1;
    if ((h = digits(p + 11, 2)) < 0 || h > 23 || p[13] != ':')
        return -1;
    if ((mi = digits(p + 14, 2)) < 0 || mi > 59 || p[16] != ':')
        return -1;
    if ((s = digits(p + 17, 2)) < 0 || s > 60)
        return -1;
    p += 19;
    int64_t frac = 0;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 3)
                frac = frac * 10 + (*p - '0');
        if (n == 0)
            return -1;
        for (; n < 3; n++)
            frac *= 10;
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if ((oh = digits(p + 1, 2)) < 0 || oh > 23 || p[3] != ':')
            return -1;
        if ((om = digits(p + 4, 2)) < 0 || om > 59)
            return -1;
        offset = (*p == '-' ? -1 : 1) * (oh * 3600 + om * 60);
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    int64_t days = ad_tz_days_from_civil(y, (unsigned)mo, (unsigned)d);
    *ms = ((days * 86400 + h * 3600 + mi * 60 + (s > 59 ? 59 : s)) - offset) * 1000 + frac;
    return 0;
}
