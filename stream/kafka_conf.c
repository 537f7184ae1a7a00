#include "stream/kafka_conf.h"

#define AD_LOG_MODULE "kafka"

#include <stdio.h>
#include <string.h>

#include "base/errstr.h"
#include "base/log.h"

int ad_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                      size_t errstr_size)
{
    char why[512];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) == RD_KAFKA_CONF_OK)
        return 0;
    ad_errstr_set(errstr, errstr_size, "%s: %s", name, why);
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
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < kafka->brokers.len; i++) {
        int n = snprintf(brokers + used, sizeof brokers - used, "%s%s", i ? "," : "",
                         kafka->brokers.items[i]);
        if (n < 0 || (size_t)n >= sizeof brokers - used) {
            ad_errstr_set(errstr, errstr_size, "kafka.brokers is longer than %zu bytes",
                          sizeof brokers);
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

void ad_kafka_conf_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    /* syslog levels: 0-3 errors, 4 warnings, 5-6 notices, 7 debug. */
    enum ad_log_level ours = level <= 3   ? AD_LOG_ERROR
                             : level == 4 ? AD_LOG_WARN
                             : level <= 6 ? AD_LOG_INFO
                                          : AD_LOG_DEBUG;
    AD_LOG_KV(ours, "librdkafka", AD_KV_STR("client", rd_kafka_name(rk)),
              AD_KV_STR("facility", fac), AD_KV_STR("message", buf));
}

int ad_kafka_conf_log_to_loop(rd_kafka_conf_t *conf, char *errstr, size_t errstr_size)
{
    if (ad_kafka_conf_set(conf, "log.queue", "true", errstr, errstr_size) < 0)
        return -1;
    rd_kafka_conf_set_log_cb(conf, ad_kafka_conf_log);
    return 0;
}
