/*
 * kafka-committed: prints a consumer group's committed offsets for one topic.
 *
 * kcat can consume in a group but cannot show what the group committed, so the integration tests
 * use this to prove that offsets were committed through the mock cluster. It asks the group
 * coordinator with rd_kafka_committed() on a consumer handle that carries the group id but never
 * subscribes, so it does not join the group and cannot trigger a rebalance of its members.
 *
 * Output (stdout), one line per partition, then the sum of the committed offsets:
 *     PARTITION OFFSET [HIGH] [METADATA]
 *     sum TOTAL
 * OFFSET is -1001 (RD_KAFKA_OFFSET_INVALID) for a partition without a commit, counted as 0 in
 * the sum. With -w, HIGH is the partition's high watermark; with -m, METADATA is the commit's
 * metadata as committed (anomalyd writes one line of JSON), or "-" when there is none.
 * Exit status 0, 1 on error, 2 on usage errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "rdkafka_tool.h"

#define PROG "kafka-committed"

struct options {
    const char *brokers;
    const char *group;
    const char *topic;
    int timeout_ms;
    bool watermarks;
    bool metadata;
    bool verbose;
};

static void usage(FILE *out)
{
    fprintf(out, "Usage: " PROG " -b BOOTSTRAP -g GROUP -t TOPIC [-w] [-m] [-T TIMEOUT_MS] [-v]\n"
                 "\n"
                 "Prints 'PARTITION OFFSET' for each partition of TOPIC as committed by GROUP,\n"
                 "then 'sum TOTAL'. OFFSET -1001 means nothing committed (counted as 0).\n"
                 "\n"
                 "  -w  add each partition's high watermark as a third column\n"
                 "  -m  add each commit's metadata as the last column (- for none)\n"
                 "  -T  timeout for each broker request in ms (default 10000)\n"
                 "  -v  librdkafka debug log (cgrp,protocol) on stderr\n");
}

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct options *opt)
{
    int c;

    opt->timeout_ms = 10000;
    while ((c = getopt(argc, argv, "b:g:t:T:wmvh")) != -1) {
        switch (c) {
        case 'b':
            opt->brokers = optarg;
            break;
        case 'g':
            opt->group = optarg;
            break;
        case 't':
            opt->topic = optarg;
            break;
        case 'T': {
            char *end;
            long v;

            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || v < 1 || v > 3600000) {
                tool_diag("-T must be 1..3600000 ms");
                return 2;
            }
            opt->timeout_ms = (int)v;
            break;
        }
        case 'w':
            opt->watermarks = true;
            break;
        case 'm':
            opt->metadata = true;
            break;
        case 'v':
            opt->verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || opt->brokers == NULL || opt->group == NULL || opt->topic == NULL) {
        usage(stderr);
        return 2;
    }
    return -1;
}

static rd_kafka_t *create_consumer(const struct options *opt)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    char errstr[512];
    /* Never commit: this tool only looks. Without a subscription or assignment there is nothing
     * to commit anyway, but a close must not be able to overwrite what the test checks. */
    const char *const props[][2] = {
        {"bootstrap.servers", opt->brokers},
        {"group.id", opt->group},
        {"client.id", PROG},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"log_level", opt->verbose ? "7" : "4"},
        {"debug", opt->verbose ? "cgrp,protocol" : NULL},
    };

    rd_kafka_conf_set_log_cb(conf, tool_rdkafka_log);
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++) {
        /* librdkafka refuses an empty "debug"; NULL means leave the default. */
        if (props[i][1] != NULL && rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr,
                                                     sizeof errstr) != RD_KAFKA_CONF_OK) {
            tool_diag("config %s: %s", props[i][0], errstr);
            goto out;
        }
    }
    /* rd_kafka_new() takes conf over, also when it fails. */
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    conf = NULL;
    if (rk == NULL)
        tool_diag("rd_kafka_new: %s", errstr);
out:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    return rk;
}

/* Fills list with every partition of the topic, sorted; returns 0 or -1 (reported). */
static int list_partitions(rd_kafka_t *rk, const struct options *opt,
                           rd_kafka_topic_partition_list_t *list)
{
    const struct rd_kafka_metadata *md = NULL;
    const struct rd_kafka_metadata_topic *t = NULL;
    rd_kafka_resp_err_t err;
    int rc = -1;

    /* Metadata for all topics, not for this one: the mock cluster speaks Metadata v2 at most,
     * which cannot carry allow.auto.create.topics=false, and auto-creates every topic a client
     * names. Asking for it by name would turn a typo into a fresh, empty topic. */
    err = rd_kafka_metadata(rk, 1, NULL, &md, opt->timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        tool_diag("metadata: %s", rd_kafka_err2str(err));
        goto out;
    }
    for (int i = 0; i < md->topic_cnt && t == NULL; i++) {
        if (strcmp(md->topics[i].topic, opt->topic) == 0)
            t = &md->topics[i];
    }
    if (t == NULL) {
        tool_diag("topic %s does not exist", opt->topic);
        goto out;
    }
    if (t->err != RD_KAFKA_RESP_ERR_NO_ERROR || t->partition_cnt < 1) {
        tool_diag("topic %s: %s", opt->topic,
                  t->err != RD_KAFKA_RESP_ERR_NO_ERROR ? rd_kafka_err2str(t->err)
                                                       : "no partitions");
        goto out;
    }
    for (int i = 0; i < t->partition_cnt; i++)
        rd_kafka_topic_partition_list_add(list, opt->topic, t->partitions[i].id);
    rd_kafka_topic_partition_list_sort(list, NULL, NULL);
    rc = 0;
out:
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    return rc;
}

/* Looks up the committed offsets and prints them; returns 0 or -1 (reported). */
static int print_committed(rd_kafka_t *rk, const struct options *opt,
                           rd_kafka_topic_partition_list_t *list)
{
    rd_kafka_resp_err_t err;
    int64_t sum = 0;
    int rc = -1;

    err = rd_kafka_committed(rk, list, opt->timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        tool_diag("committed offsets of group %s: %s", opt->group, rd_kafka_err2str(err));
        goto out;
    }
    for (int i = 0; i < list->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &list->elems[i];
        int64_t lo = 0;
        int64_t hi = 0;

        if (p->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            tool_diag("%s [%" PRId32 "]: %s", p->topic, p->partition, rd_kafka_err2str(p->err));
            goto out;
        }
        if (opt->watermarks) {
            err = rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &lo, &hi,
                                                   opt->timeout_ms);
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                tool_diag("watermarks of %s [%" PRId32 "]: %s", p->topic, p->partition,
                          rd_kafka_err2str(err));
                goto out;
            }
            printf("%" PRId32 " %" PRId64 " %" PRId64, p->partition, p->offset, hi);
        } else {
            printf("%" PRId32 " %" PRId64, p->partition, p->offset);
        }
        if (opt->metadata && p->metadata_size > 0)
            printf(" %.*s", (int)p->metadata_size, (const char *)p->metadata);
        else if (opt->metadata)
            printf(" -");
        printf("\n");
        if (p->offset >= 0)
            sum += p->offset;
    }
    printf("sum %" PRId64 "\n", sum);
    rc = 0;
out:
    if (fflush(stdout) != 0) {
        tool_diag("stdout: %s", strerror(errno));
        rc = -1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    struct options opt = {0};
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_partition_list_t *list = NULL;
    int rc;

    tool_name = PROG;

    rc = parse_args(argc, argv, &opt);
    if (rc != -1)
        goto out;
    rc = 1;

    if (tool_teardown_guard_install() != 0)
        goto out;

    rk = create_consumer(&opt);
    if (rk == NULL)
        goto out;
    list = rd_kafka_topic_partition_list_new(16);
    if (list_partitions(rk, &opt, list) != 0)
        goto out;
    if (print_committed(rk, &opt, list) != 0)
        goto out;
    rc = 0;

out:
    /* The answer is already on stdout; the teardown is bounded (rdkafka_tool.h). */
    if (rk != NULL)
        tool_teardown_begin(rc);
    if (list != NULL)
        rd_kafka_topic_partition_list_destroy(list);
    if (rk != NULL) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    tool_teardown_end();
    return rc;
}
