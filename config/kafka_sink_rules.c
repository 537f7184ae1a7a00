#include "config/kafka_sink_rules.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

static bool conf_is(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char got[64];
    size_t size = sizeof got;
    return rd_kafka_conf_get(conf, name, got, &size) == RD_KAFKA_CONF_OK && strcmp(got, value) == 0;
}

const char *ad_kafka_sink_conflict(rd_kafka_conf_t *conf, const char *name)
{
    static const struct {
        const char *name;
        const char *bad; /* as rd_kafka_conf_get shows it; NULL: any value */
        const char *why;
    } rules[] = {
        {"enable.idempotence", "false",
         "the Kafka sink needs the idempotent producer (retries without duplicates, in order)"},
        {"delivery.report.only.error", "true",
         "the Kafka sink acknowledges alerts on their successful delivery reports"},
        {"transactional.id", NULL, "the Kafka sink does not use transactions"},
        {"enable.gapless.guarantee", "true",
         "the Kafka sink re-produces failed alerts itself; this would stop the producer"},
        {"partitioner", "random", "alerts are partitioned by entity to keep them in order"},
    };
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++)
        if (strcmp(name, rules[r].name) == 0 &&
            (!rules[r].bad || conf_is(conf, rules[r].name, rules[r].bad)))
            return rules[r].why;
    if ((strcmp(name, "acks") == 0 || strcmp(name, "request.required.acks") == 0) &&
        !conf_is(conf, "request.required.acks", "-1"))
        return "the Kafka sink acknowledges alerts only once every in-sync replica has them "
               "(acks=all)";
    return NULL;
}
