#include "base/clock.h"

#include <stdio.h>
#include <time.h>

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
