#ifndef AD_KAFKA_SOURCE_RULES_H
#define AD_KAFKA_SOURCE_RULES_H

/*
 * The librdkafka property values the Kafka sources' consumer must not be given (docs/delivery.md,
 * "Rebalances"): checked by --check-config and every reload on kafka.properties (config_schema.c,
 * with the key's position), and again by the Kafka source itself for settings that did not come
 * through the loader.
 */

/* The assignors the consumer uses unless kafka.properties names others among these. */
#define AD_KAFKA_SOURCE_ASSIGNORS "range,roundrobin"

/*
 * Why property name set to value would break the consumer; NULL when it would not. Today one
 * rule: partition.assignment.strategy may name only the eager assignors (range, roundrobin),
 * since librdkafka 2.0.2's cooperative-sticky assignor aborts the process when a consumer is
 * closed between joining the group and its first assignment (fixed upstream in 2.3.0).
 */
const char *ad_kafka_source_conflict(const char *name, const char *value);

#endif
