#ifndef AD_KAFKA_CONF_H
#define AD_KAFKA_CONF_H

/*
 * librdkafka configuration from the `kafka` section: the brokers, client id and (for a
 * consumer) group id anomalyd owns, then the operator's pass-through properties, then a
 * client's own overrides (the Kafka sink's `properties`).
 */

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "config/settings.h"

/*
 * Returns a new conf the caller owns (hand it to rd_kafka_new, or rd_kafka_conf_destroy it),
 * or NULL with errstr naming the property librdkafka refused. group_id is NULL for a producer;
 * extra may be NULL.
 */
rd_kafka_conf_t *ad_kafka_conf_new(const struct ad_settings_kafka *kafka, const char *group_id,
                                   const struct ad_secretmap *extra, char *errstr,
                                   size_t errstr_size);

/* Sets one property; on failure fills errstr with "name: librdkafka's reason". Returns 0 or
 * -1. */
int ad_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                      size_t errstr_size);

/*
 * Routes librdkafka's log lines into the daemon's log (module "librdkafka", syslog levels
 * mapped to ours) through the handle's queues, so that they are written by the loop thread's
 * polls rather than by librdkafka's threads: sets log.queue and the log callback. After
 * rd_kafka_new, the owner calls rd_kafka_set_log_queue(rk, NULL) (the main queue) or names a
 * queue it polls. Returns 0, or -1 with errstr filled.
 */
int ad_kafka_conf_log_to_loop(rd_kafka_conf_t *conf, char *errstr, size_t errstr_size);

/* Writes one librdkafka log line into the daemon's log as ad_kafka_conf_log_to_loop's callback
 * does: for a client that sets a log callback of its own to look at some lines first. */
void ad_kafka_conf_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

#endif
