#ifndef AD_RDKAFKA_TOOL_H
#define AD_RDKAFKA_TOOL_H

/* What the Kafka test tools (kafka-mock, kafka-committed) share: messages on stderr, a
 * librdkafka log callback, and a bounded teardown. */

#include <librdkafka/rdkafka.h>

/* rd_kafka_destroy() and the mock cluster's teardown join librdkafka's threads, and such
 * joins have been seen to block for minutes. */
#define TOOL_TEARDOWN_BUDGET_S 5

/* Set by each tool's main() before anything else; prefixes every message. */
extern const char *tool_name;

/* "<tool>: <message>\n" on stderr. */
void tool_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* rd_kafka_conf_set_log_cb() target: "<tool>: rdkafka FACILITY: message" on stderr. Called
 * from librdkafka's threads; stdio locks stderr per call. */
void tool_rdkafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* Installs the SIGALRM handler that ends an overrunning teardown. Returns 0, or -1 with a
 * message. */
int tool_teardown_guard_install(void);

/* Starts the budget: if tool_teardown_end() is not reached within TOOL_TEARDOWN_BUDGET_S, the
 * process exits with status at once, so a hung join cannot change the verdict or keep a test
 * waiting. Clients are other processes, so skipping the rest of the teardown loses nothing. */
void tool_teardown_begin(int status);
void tool_teardown_end(void);

#endif
