#include "base/units.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

struct unit {
    const char *name;
    int64_t factor;
};

/* Longest names first where one is a prefix of another ("ms" before "m"). */
static const struct unit duration_units[] = {
    {"w", 7 * 24 * 3600 * 1000LL},
    {"d", 24 * 3600 * 1000LL},
    {"h", 3600 * 1000LL},
    {"ms", 1},
    {"m", 60 * 1000LL},
    {"s", 1000},
};

/* The order in which units may follow each other. */
static int duration_rank(const char *name)
{
    static const char *const order[] = {"w", "d", "h", "m", "s", "ms"};
    for (int i = 0; i < 6; i++)
        if (strcmp(order[i], name) == 0)
            return i;
    return -1;
}

static int parse_uint(const char **p, int64_t *out)
{
    const char *s = *p;
    int64_t v = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    for (; isdigit((unsigned char)*s); s++) {
        int d = *s - '0';
        if (v > (INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *p = s;
    *out = v;
    return 0;
}

int ad_duration_parse(const char *s, int64_t *ms)
{
    int64_t total = 0;
    int last_rank = -1;

    if (!s || !*s)
        return -1;
    while (*s) {
        int64_t n;
        if (parse_uint(&s, &n) < 0)
            return -1;
        const struct unit *u = NULL;
        for (size_t i = 0; i < sizeof duration_units / sizeof duration_units[0]; i++) {
            size_t len = strlen(duration_units[i].name);
            if (strncmp(s, duration_units[i].name, len) == 0) {
                u = &duration_units[i];
                break;
            }
        }
        if (!u)
            return -1;
        int rank = duration_rank(u->name);
        if (rank <= last_rank)
            return -1;
        last_rank = rank;
        s += strlen(u->name);
        if (n > (INT64_MAX - total) / u->factor)
            return -1;
        total += n * u->factor;
    }
    *ms = total;
    return 0;
}

void ad_duration_format(int64_t ms, char *buf, size_t size)
{
    static const struct unit order[] = {
        {"w", 7 * 24 * 3600 * 1000LL},
        {"d", 24 * 3600 * 1000LL},
        {"h", 3600 * 1000LL},
        {"m", 60 * 1000LL},
        {"s", 1000},
        {"ms", 1},
    };
    size_t used = 0;

    if (size == 0)
        return;
    buf[0] = '\0';
    if (ms <= 0) {
        snprintf(buf, size, ms == 0 ? "0s" : "%lldms", (long long)ms);
        return;
    }
    for (size_t i = 0; i < sizeof order / sizeof order[0] && ms > 0; i++) {
        int64_t n = ms / order[i].factor;
        if (n == 0)
            continue;
        ms -= n * order[i].factor;
        int w = snprintf(buf + used, size - used, "%lld%s", (long long)n, order[i].name);
        if (w < 0 || (size_t)w >= size - used)
            return;
        used += (size_t)w;
    }
}

int ad_size_parse(const char *s, int64_t *bytes)
{
    static const struct unit units[] = {
        {"KiB", 1024LL},
        {"MiB", 1024LL * 1024},
        {"GiB", 1024LL * 1024 * 1024},
        {"KB", 1000LL},
        {"MB", 1000LL * 1000},
        {"GB", 1000LL * 1000 * 1000},
        {"B", 1},
        {"", 1},
    };
    int64_t n;

    if (!s || parse_uint(&s, &n) < 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(s, units[i].name) == 0) {
            if (n > INT64_MAX / units[i].factor)
                return -1;
            *bytes = n * units[i].factor;
            return 0;
        }
    }
    return -1;
}
