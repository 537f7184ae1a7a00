#define AD_LOG_MODULE "metrics"
#include "daemon/process_metrics.h"

#include "base/file.h"
#include "base/log.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Fields of /proc/self/stat (proc(5) numbering, from 1) that the metrics read. */
enum {
    STAT_UTIME = 14,
    STAT_STIME = 15,
    STAT_STARTTIME = 22,
    STAT_VSIZE = 23,
    STAT_RSS = 24,
};

/* One numeric field of /proc/self/stat, or NaN. Fields start after the last ')', because
 * the command name (field 2) may itself contain spaces and parentheses. */
static double stat_field(int field)
{
    char why[128];
    size_t len;
    /* A stat line is about 300 to 1100 bytes. */
    char *buf = ad_file_read("/proc/self/stat", 4096, &len, NULL, why, sizeof why);
    if (!buf)
        return NAN;
    char *p = strrchr(buf, ')');
    if (!p) {
        free(buf);
        return NAN;
    }
    p++;
    double value = NAN;
    for (int i = 3; i <= field; i++) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        if (i == field) {
            char *end;
            unsigned long long v = strtoull(p, &end, 10);
            value = end == p ? NAN : (double)v;
            break;
        }
        p += strcspn(p, " ");
    }
    free(buf);
    return value;
}

static double clock_ticks(void)
{
    long t = sysconf(_SC_CLK_TCK);
    return t > 0 ? (double)t : NAN;
}

static double read_cpu_seconds(void *arg)
{
    (void)arg;
    return (stat_field(STAT_UTIME) + stat_field(STAT_STIME)) / clock_ticks();
}

static double read_resident_bytes(void *arg)
{
    (void)arg;
    long page = sysconf(_SC_PAGESIZE);
    return stat_field(STAT_RSS) * (page > 0 ? (double)page : NAN);
}

static double read_virtual_bytes(void *arg)
{
    (void)arg;
    return stat_field(STAT_VSIZE);
}

static double read_open_fds(void *arg)
{
    (void)arg;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return NAN;
    /* Leave out the descriptor this very listing holds open. */
    int self = dirfd(d);
    double n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (atoi(e->d_name) == self)
            continue;
        n++;
    }
    closedir(d);
    return n;
}

static double read_max_fds(void *arg)
{
    (void)arg;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return NAN;
    return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

/* Boot time plus the start tick. The kernel derives btime from the wall clock, so it is read
 * at every scrape like the official clients do. */
static double read_start_time(void *arg)
{
    (void)arg;
    char why[128];
    size_t len;
    /* The interrupt line before btime can be tens of kilobytes long. */
    char *text = ad_file_read("/proc/stat", 4u << 20, &len, NULL, why, sizeof why);
    if (!text)
        return NAN;
    const char *line = strncmp(text, "btime ", 6) == 0 ? text : strstr(text, "\nbtime ");
    double btime = line ? strtod(line + (line == text ? 6 : 7), NULL) : NAN;
    free(text);
    return btime + stat_field(STAT_STARTTIME) / clock_ticks();
}

int ad_metrics_register_process(struct ad_metrics *m)
{
    /* Names and help texts as the official Go and Python clients write them. */
    static const struct {
        const char *name;
        const char *help;
        int counter;
        ad_metrics_read_fn fn;
    } defs[] = {
        {"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", 1,
         read_cpu_seconds},
        {"process_resident_memory_bytes", "Resident memory size in bytes.", 0, read_resident_bytes},
        {"process_virtual_memory_bytes", "Virtual memory size in bytes.", 0, read_virtual_bytes},
        {"process_open_fds", "Number of open file descriptors.", 0, read_open_fds},
        {"process_max_fds", "Maximum number of open file descriptors.", 0, read_max_fds},
        {"process_start_time_seconds", "Start time of the process since unix epoch in seconds.", 0,
         read_start_time},
    };

    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        int rc =
            defs[i].counter
                ? ad_metrics_counter_func(m, defs[i].name, defs[i].help, defs[i].fn, NULL, NULL)
                : ad_metrics_gauge_func(m, defs[i].name, defs[i].help, defs[i].fn, NULL, NULL);
        if (rc != 0) {
            AD_ERROR("cannot register process metric %s", defs[i].name);
            return -1;
        }
    }
    return 0;
}
