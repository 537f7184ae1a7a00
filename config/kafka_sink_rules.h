#ifndef AD_KAFKA_SINK_RULES_H
#define AD_KAFKA_SINK_RULES_H

/*
 * The librdkafka properties the alert producer must not be given, because they would break
 * at-least-once delivery of alerts (docs/sinks.md): checked by --check-config and every
 * reload (config_schema.c, with the key's position), and again by the Kafka sink itself for
 * settings that did not come through the loader.
 */

#include <librdkafka/rdkafka.h>

/*
 * Why property name, as set among the producer's properties (conf holds all of them as
 * librdkafka parsed them), would break delivery; NULL when it would not. name is the property
 * as the operator wrote it ("acks" and "request.required.acks" are the same property).
 */
const char *ad_kafka_sink_conflict(rd_kafka_conf_t *conf, const char *name);

#endif
