#include "kafka_conf.h"

#include <stdio.h>
#include <string.h>

int ad_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                      size_t errstr_size)
{
    char why[512];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) == RD_KAFKA_CONF_OK)
        return 0;
    snprintf(errstr, errstr_size, "%s: %s", name, why);
    return -1;
}

static int set_all(rd_kafka_conf_t *conf, const struct ad_secretmap *props, char *errstr,
                   size_t errstr_size)
{
    for (size_t i = 0; props && i < props->len; i++)
        if (ad_kafka_conf_set(conf, props->keys[i], props->values[i].value, errstr, errstr_size) <
            0)
            return -1;
    return 0;
}

rd_kafka_conf_t *ad_kafka_conf_new(const struct ad_settings_kafka *kafka, const char *group_id,
                                   const struct ad_secretmap *extra, char *errstr,
                                   size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char brokers[4096] = "";
    size_t used = 0;

    if (!conf) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < kafka->brokers.len; i++) {
        int n = snprintf(brokers + used, sizeof brokers - used, "%s%s", i ? "," : "",
                         kafka->brokers.items[i]);
        if (n < 0 || (size_t)n >= sizeof brokers - used) {
            snprintf(errstr, errstr_size, "kafka.brokers is longer than %zu bytes", sizeof brokers);
            goto err;
        }
        used += (size_t)n;
    }
    if ((kafka->brokers.len &&
         ad_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, errstr_size) < 0) ||
        ad_kafka_conf_set(conf, "client.id", kafka->client_id, errstr, errstr_size) < 0 ||
        (group_id && ad_kafka_conf_set(conf, "group.id", group_id, errstr, errstr_size) < 0) ||
        set_all(conf, &kafka->properties, errstr, errstr_size) < 0 ||
        set_all(conf, extra, errstr, errstr_size) < 0)
        goto err;
    return conf;

err:
    rd_kafka_conf_destroy(conf);
    return NULL;
}
