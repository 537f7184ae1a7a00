#include "config/kafka_source_rules.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* Whether the comma-separated list names `name` (spaces around names are allowed, as
 * librdkafka allows them). */
static bool names(const char *list, const char *name)
{
    size_t want = strlen(name);
    for (const char *p = list; *p;) {
        p += strspn(p, ", \t");
        size_t len = strcspn(p, ", \t");
        if (len == want && strncmp(p, name, len) == 0)
            return true;
        p += len;
    }
    return false;
}

/* Whether every name of the list is an eager assignor; an empty list is librdkafka's to
 * refuse. */
static bool eager_only(const char *list)
{
    for (const char *p = list; *p;) {
        p += strspn(p, ", \t");
        size_t len = strcspn(p, ", \t");
        if (len && !((len == 5 && strncmp(p, "range", 5) == 0) ||
                     (len == 10 && strncmp(p, "roundrobin", 10) == 0)))
            return false;
        p += len;
    }
    return true;
}

const char *ad_kafka_source_conflict(const char *name, const char *value)
{
    if (strcmp(name, "partition.assignment.strategy") != 0 || !value)
        return NULL;
    if (names(value, "cooperative-sticky"))
        return "librdkafka 2.0.2's cooperative-sticky assignor aborts the process when a "
               "consumer is closed or rebuilt before its first assignment (fixed in "
               "librdkafka 2.3.0); use the eager \"range\" and \"roundrobin\" (the default)";
    if (!eager_only(value))
        return "the Kafka sources take only the eager assignors \"range\" and \"roundrobin\" "
               "(the default)";
    return NULL;
}
