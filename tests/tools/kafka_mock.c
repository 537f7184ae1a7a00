/*
 * kafka-mock: a librdkafka mock Kafka cluster as a stand-alone process.
 *
 * librdkafka ships a mock cluster (rdkafka_mock.h) whose brokers speak the real Kafka protocol on
 * loopback sockets. No Kafka broker is packaged for Debian, so the integration tests start this
 * program, read the bootstrap servers it prints and point kcat, confluent-kafka or anomalyd at
 * them. A line-based control channel on stdin lets fault tests take brokers down and up.
 *
 * stdout carries exactly the bootstrap line and one answer per control command; everything else
 * (our diagnostics and librdkafka's log) goes to stderr, so a test can parse stdout blindly.
 *
 * See docs/testing-kafka-mock.md for the CLI, the control commands and the mock's quirks.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <syslog.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "rdkafka_tool.h"
#include <librdkafka/rdkafka_mock.h>

#define PROG "kafka-mock"

/* Teardown budget: rd_kafka_destroy() can block for minutes inside librdkafka's thread joins
 * (docs/testing-kafka-mock.md), and a test tool that hangs on exit stalls the whole suite. */

#define MAX_BROKERS    64
#define MAX_PARTITIONS 10000
/* Kafka's own limit on topic name length. */
#define MAX_TOPIC_NAME 249
/* Longer control lines are answered with an error and discarded. */
#define MAX_LINE 1024

struct options {
    int brokers;
    bool verbose;
    /* Pointers into argv: --topic specs, parsed again (and validated) when the topics are made. */
    const char **topics;
    int n_topics;
};

/* State of the stdin control channel. */
struct control {
    char buf[MAX_LINE];
    size_t len;
    /* Set while skipping the rest of an overlong line. */
    bool discarding;
    bool quit;
};

static bool verbose;
/* Answers on stdout are flushed one by one: the test waits for each before its next step. A
 * reader that went away (EPIPE; SIGPIPE is ignored) is not fatal, the cluster keeps serving. */
__attribute__((format(printf, 1, 2))) static void reply(const char *fmt, ...)
{
    static bool reported;
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = vprintf(fmt, ap);
    va_end(ap);
    if (r >= 0)
        r = putchar('\n');
    if (r >= 0)
        r = fflush(stdout);
    if (r < 0 && !reported) {
        tool_diag("cannot write to stdout: %s", strerror(errno));
        reported = true;
    }
    if (r < 0)
        clearerr(stdout);
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: " PROG " [--brokers N] [--topic NAME[:PARTITIONS[:REPLICATION]]]... "
            "[--verbose] [--help]\n"
            "\n"
            "Starts a librdkafka mock Kafka cluster on loopback and prints its bootstrap servers\n"
            "as one line on stdout. Runs until SIGINT, SIGTERM or the 'quit' command.\n"
            "\n"
            "  -b, --brokers N   number of brokers, ids 1..N (default 3, at most %d)\n"
            "  -t, --topic SPEC  create topic NAME up front with PARTITIONS (default 4) and\n"
            "                    REPLICATION (default min(3, N); librdkafka 2.0.2 ignores it\n"
            "                    and always uses min(3, N)); repeatable\n"
            "  -v, --verbose     librdkafka debug log (mock,broker) on stderr\n"
            "  -h, --help        this text\n"
            "\n"
            "Topics nobody created are auto-created by the mock on first use with 4 partitions\n"
            "and replication min(3, N); librdkafka 2.0.2 has no way to change that default.\n"
            "\n"
            "Control commands on stdin, one per line, each answered 'ok' or 'error: ...':\n"
            "  broker-down ID | broker-up ID      (ID -1 means all brokers)\n"
            "  topic-create NAME PARTITIONS [RF]\n"
            "  partition-leader TOPIC PARTITION ID   (moves the partition's leadership)\n"
            "  coordinator group|transaction KEY ID  (moves a group's coordinator)\n"
            "  request-delay ID API_KEY MS [COUNT]   (answers the next COUNT requests late)\n"
            "  request-delays-left ID API_KEY        (answers 'ok N': delays not yet used)\n"
            "  quit\n"
            "EOF on stdin only closes the control channel; the cluster keeps running.\n",
            MAX_BROKERS);
}

/* Parses a whole decimal int in [min, max]; returns 0 on success, -1 otherwise. */
static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

/* The mock accepts any string; refuse names a real broker would refuse (and ':' ends the name in
 * --topic specs anyway), so tests do not come to depend on mock-only leniency. */
static bool topic_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > MAX_TOPIC_NAME)
        return false;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* The mock's own default replication factor for auto-created topics. */
static int default_replication(int brokers)
{
    return brokers < 3 ? brokers : 3;
}

/* Creates one topic; on failure writes the reason to errstr and returns -1. */
static int create_topic(rd_kafka_mock_cluster_t *mcluster, int brokers, const char *name,
                        int partitions, int replication, char *errstr, size_t errstr_size)
{
    rd_kafka_resp_err_t err;

    if (!topic_name_valid(name, strlen(name))) {
        snprintf(errstr, errstr_size, "invalid topic name '%s'", name);
        return -1;
    }
    if (partitions < 1 || partitions > MAX_PARTITIONS) {
        snprintf(errstr, errstr_size, "partitions must be 1..%d", MAX_PARTITIONS);
        return -1;
    }
    /* librdkafka 2.0.2 ignores the factor (every partition gets min(3, brokers) replicas) and
     * newer versions cap it at the broker count: refuse what no real cluster could do, so tests
     * do not come to depend on either. */
    if (replication < 1 || replication > brokers) {
        snprintf(errstr, errstr_size, "replication factor must be 1..%d", brokers);
        return -1;
    }
    err = rd_kafka_mock_topic_create(mcluster, name, partitions, replication);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, errstr_size, "topic '%s': %s", name, rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

/* Creates the topic of one --topic NAME[:PARTITIONS[:REPLICATION]] spec. */
static int create_topic_spec(rd_kafka_mock_cluster_t *mcluster, int brokers, const char *spec)
{
    char name[MAX_TOPIC_NAME + 1];
    char errstr[256];
    const char *colon = strchr(spec, ':');
    size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    int partitions = 4;
    int replication = default_replication(brokers);
    int rc = -1;

    if (name_len == 0 || name_len > MAX_TOPIC_NAME) {
        tool_diag("--topic '%s': bad topic name", spec);
        goto out;
    }
    memcpy(name, spec, name_len);
    name[name_len] = '\0';

    if (colon != NULL) {
        char counts[64];
        char *second;

        if (strlen(colon + 1) >= sizeof counts) {
            tool_diag("--topic '%s': bad partition count", spec);
            goto out;
        }
        strcpy(counts, colon + 1);
        second = strchr(counts, ':');
        if (second != NULL)
            *second++ = '\0';
        if (parse_int(counts, 1, MAX_PARTITIONS, &partitions) != 0) {
            tool_diag("--topic '%s': partitions must be 1..%d", spec, MAX_PARTITIONS);
            goto out;
        }
        if (second != NULL && parse_int(second, 1, brokers, &replication) != 0) {
            tool_diag("--topic '%s': replication factor must be 1..%d", spec, brokers);
            goto out;
        }
    }

    if (create_topic(mcluster, brokers, name, partitions, replication, errstr, sizeof errstr) !=
        0) {
        tool_diag("--topic '%s': %s", spec, errstr);
        goto out;
    }
    if (verbose)
        tool_diag("created topic %s with %d partitions, replication %d", name, partitions,
                  replication);
    rc = 0;
out:
    return rc;
}

/* Returns -1 to go on, or the exit status (0 for --help, 2 for a usage error). */
static int parse_args(int argc, char **argv, struct options *opt)
{
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    opt->brokers = 3;
    opt->verbose = false;
    opt->n_topics = 0;
    /* At most one topic per argument; freed at exit by main. */
    opt->topics = calloc((size_t)argc, sizeof *opt->topics);
    if (opt->topics == NULL) {
        tool_diag("out of memory");
        return 1;
    }

    while ((c = getopt_long(argc, argv, "b:t:vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (parse_int(optarg, 1, MAX_BROKERS, &opt->brokers) != 0) {
                tool_diag("--brokers must be 1..%d", MAX_BROKERS);
                return 2;
            }
            break;
        case 't':
            opt->topics[opt->n_topics++] = optarg;
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
    if (optind < argc) {
        tool_diag("unexpected argument '%s'", argv[optind]);
        usage(stderr);
        return 2;
    }
    return -1;
}

/*
 * The mock cluster is created explicitly on a dummy producer handle rather than through the
 * test.mock.num.brokers property. With that property the handle itself becomes a client of its
 * own brokers: it connects, polls metadata and logs a connection error for every broker-down,
 * and the cluster can only be reached through rd_kafka_handle_mock_cluster() and is torn down
 * deep inside rd_kafka_destroy(). Here the handle has no bootstrap.servers, never connects
 * anywhere, and we get the cluster pointer (or NULL) back directly and destroy it ourselves.
 */
static rd_kafka_t *create_host_handle(bool debug)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    char errstr[512];

    rd_kafka_conf_set_log_cb(conf, tool_rdkafka_log);
    /* Quiet by default: warnings and errors only. */
    if (rd_kafka_conf_set(conf, "client.id", PROG, errstr, sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", debug ? "7" : "4", errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK ||
        (debug && rd_kafka_conf_set(conf, "debug", "mock,broker", errstr, sizeof errstr) !=
                      RD_KAFKA_CONF_OK)) {
        tool_diag("config: %s", errstr);
        goto out;
    }
    /* rd_kafka_new() takes conf over, also when it fails. */
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    conf = NULL;
    if (rk == NULL)
        tool_diag("rd_kafka_new: %s", errstr);
out:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    return rk;
}

/* Parses and runs one control command line (modified in place) and answers it. */
static void run_command(rd_kafka_mock_cluster_t *mcluster, int brokers, char *line,
                        struct control *ctl)
{
    char *save = NULL;
    char *argv[6];
    int argc = 0;
    char *tok;

    for (tok = strtok_r(line, " \t\r", &save); tok != NULL && argc < 6;
         tok = strtok_r(NULL, " \t\r", &save))
        argv[argc++] = tok;
    if (argc == 0)
        return; /* Blank lines are ignored, not answered. */
    if (argc == 6) {
        reply("error: too many arguments");
        return;
    }

    if (strcmp(argv[0], "broker-down") == 0 || strcmp(argv[0], "broker-up") == 0) {
        bool up = strcmp(argv[0], "broker-up") == 0;
        rd_kafka_resp_err_t err;
        int id;

        /* Checked here for a clear message; the mock says only "broker not available". */
        if (argc != 2 || parse_int(argv[1], -1, brokers, &id) != 0 || id == 0) {
            reply("error: usage: %s ID (1..%d, or -1 for all)", argv[0], brokers);
            return;
        }
        err = up ? rd_kafka_mock_broker_set_up(mcluster, id)
                 : rd_kafka_mock_broker_set_down(mcluster, id);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            reply("error: %s %d: %s", argv[0], id, rd_kafka_err2str(err));
            return;
        }
        if (verbose)
            tool_diag("broker %d is %s", id, up ? "up" : "down");
        reply("ok");
    } else if (strcmp(argv[0], "topic-create") == 0) {
        char errstr[256];
        int partitions;
        int replication = default_replication(brokers);

        if (argc < 3 || argc > 4 || parse_int(argv[2], 1, MAX_PARTITIONS, &partitions) != 0 ||
            (argc == 4 && parse_int(argv[3], 1, brokers, &replication) != 0)) {
            reply("error: usage: topic-create NAME PARTITIONS(1..%d) [RF(1..%d)]", MAX_PARTITIONS,
                  brokers);
            return;
        }
        if (create_topic(mcluster, brokers, argv[1], partitions, replication, errstr,
                         sizeof errstr) != 0) {
            reply("error: %s", errstr);
            return;
        }
        reply("ok");
    } else if (strcmp(argv[0], "partition-leader") == 0) {
        int partition, id;
        if (argc != 4 || parse_int(argv[2], 0, MAX_PARTITIONS - 1, &partition) != 0 ||
            parse_int(argv[3], 1, brokers, &id) != 0) {
            reply("error: usage: partition-leader TOPIC PARTITION ID(1..%d)", brokers);
            return;
        }
        rd_kafka_resp_err_t err =
            rd_kafka_mock_partition_set_leader(mcluster, argv[1], partition, id);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            reply("error: partition-leader: %s", rd_kafka_err2str(err));
            return;
        }
        reply("ok");
    } else if (strcmp(argv[0], "coordinator") == 0) {
        int id;
        if (argc != 4 || (strcmp(argv[1], "group") != 0 && strcmp(argv[1], "transaction") != 0) ||
            parse_int(argv[3], 1, brokers, &id) != 0) {
            reply("error: usage: coordinator group|transaction KEY ID(1..%d)", brokers);
            return;
        }
        rd_kafka_resp_err_t err = rd_kafka_mock_coordinator_set(mcluster, argv[1], argv[2], id);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            reply("error: coordinator: %s", rd_kafka_err2str(err));
            return;
        }
        reply("ok");
    } else if (strcmp(argv[0], "request-delay") == 0) {
        /* A request answered late but without error, e.g. SyncGroup (14), so that a test can act
         * while a client waits for it. One stack entry per request. */
        int id, api, ms, count = 1;
        if (argc < 4 || argc > 5 || parse_int(argv[1], 1, brokers, &id) != 0 ||
            parse_int(argv[2], 0, INT16_MAX, &api) != 0 ||
            parse_int(argv[3], 0, 3600 * 1000, &ms) != 0 ||
            (argc == 5 && parse_int(argv[4], 1, 1000, &count) != 0)) {
            reply("error: usage: request-delay ID(1..%d) API_KEY MS [COUNT(1..1000)]", brokers);
            return;
        }
        for (int i = 0; i < count; i++) {
            rd_kafka_resp_err_t err = rd_kafka_mock_broker_push_request_error_rtts(
                mcluster, id, (int16_t)api, 1, RD_KAFKA_RESP_ERR_NO_ERROR, ms);
            if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                reply("error: request-delay: %s", rd_kafka_err2str(err));
                return;
            }
        }
        reply("ok");
    } else if (strcmp(argv[0], "request-delays-left") == 0) {
        /* How many of those delays are still waiting for their request: 0 once the last
         * delayed request has arrived (its answer may still be on its way). */
        int id, api;
        size_t left = 0;
        if (argc != 3 || parse_int(argv[1], 1, brokers, &id) != 0 ||
            parse_int(argv[2], 0, INT16_MAX, &api) != 0) {
            reply("error: usage: request-delays-left ID(1..%d) API_KEY", brokers);
            return;
        }
        rd_kafka_resp_err_t err =
            rd_kafka_mock_broker_error_stack_cnt(mcluster, id, (int16_t)api, &left);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            reply("error: request-delays-left: %s", rd_kafka_err2str(err));
            return;
        }
        reply("ok %zu", left);
    } else if (strcmp(argv[0], "quit") == 0) {
        if (argc != 1) {
            reply("error: usage: quit");
            return;
        }
        reply("ok");
        ctl->quit = true;
    } else {
        reply("error: unknown command '%s'", argv[0]);
    }
}

/*
 * Splits what read() returned into lines. Stdio is not used for stdin: fgets() would pull several
 * lines into its buffer, and poll() would then not wake up for the ones left there.
 */
static void feed_control(rd_kafka_mock_cluster_t *mcluster, int brokers, struct control *ctl,
                         const char *data, size_t n)
{
    for (size_t i = 0; i < n && !ctl->quit; i++) {
        char c = data[i];

        if (c == '\n') {
            if (ctl->discarding)
                reply("error: line longer than %d bytes", MAX_LINE - 1);
            else {
                ctl->buf[ctl->len] = '\0';
                run_command(mcluster, brokers, ctl->buf, ctl);
            }
            ctl->len = 0;
            ctl->discarding = false;
        } else if (!ctl->discarding) {
            if (ctl->len + 1 < sizeof ctl->buf)
                ctl->buf[ctl->len++] = c;
            else
                ctl->discarding = true;
        }
    }
}

/*
 * Serves the control channel until SIGINT/SIGTERM arrive on sigfd or 'quit' is read. At EOF
 * stdin is dropped from the poll set: tests often start us with stdin from /dev/null and still
 * expect the cluster to run until they signal it.
 */
static void serve(rd_kafka_mock_cluster_t *mcluster, int brokers, int sigfd)
{
    struct control ctl = {.len = 0, .discarding = false, .quit = false};
    struct pollfd fds[2] = {
        {.fd = sigfd, .events = POLLIN},
        {.fd = STDIN_FILENO, .events = POLLIN},
    };
    nfds_t nfds = 2;

    while (!ctl.quit) {
        if (poll(fds, nfds, -1) < 0) {
            if (errno == EINTR)
                continue;
            tool_diag("poll: %s", strerror(errno));
            break;
        }
        if (fds[0].revents != 0) {
            struct signalfd_siginfo si;

            if (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si && verbose)
                tool_diag("got %s, shutting down", strsignal((int)si.ssi_signo));
            break;
        }
        if (nfds == 2 && fds[1].revents != 0) {
            char data[4096];
            ssize_t n = read(STDIN_FILENO, data, sizeof data);

            if (n > 0) {
                feed_control(mcluster, brokers, &ctl, data, (size_t)n);
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                /* A last line without its newline still counts. */
                if (n == 0 && ctl.len > 0 && !ctl.discarding)
                    feed_control(mcluster, brokers, &ctl, "\n", 1);
                /* Always said: it is the one sign a test can wait for that EOF was seen. */
                tool_diag("stdin closed; running until SIGINT/SIGTERM");
                nfds = 1;
            }
        }
    }
}

int main(int argc, char **argv)
{
    struct options opt = {0};
    sigset_t sigs;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mcluster = NULL;
    int sigfd = -1;
    int rc;

    tool_name = PROG;

    rc = parse_args(argc, argv, &opt);
    if (rc != -1)
        goto out;
    rc = 1;
    verbose = opt.verbose;

    /* A test that stopped reading our answers must not kill the cluster under its clients. */
    signal(SIGPIPE, SIG_IGN);

    /* SIGINT/SIGTERM are blocked before any librdkafka thread exists, so every thread inherits
     * the mask and the signals are only ever consumed through the signalfd in serve(). */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &sigs, NULL) != 0) {
        tool_diag("sigprocmask: %s", strerror(errno));
        goto out;
    }
    sigfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sigfd < 0) {
        tool_diag("signalfd: %s", strerror(errno));
        goto out;
    }

    if (tool_teardown_guard_install() != 0)
        goto out;

    rk = create_host_handle(opt.verbose);
    if (rk == NULL)
        goto out;
    mcluster = rd_kafka_mock_cluster_new(rk, opt.brokers);
    if (mcluster == NULL) {
        tool_diag("rd_kafka_mock_cluster_new failed");
        goto out;
    }
    for (int i = 0; i < opt.n_topics; i++) {
        if (create_topic_spec(mcluster, opt.brokers, opt.topics[i]) != 0)
            goto out;
    }

    /* The brokers' sockets are listening once rd_kafka_mock_cluster_new() returns, and the
     * topics exist: a client that reads this line can connect at once. */
    reply("%s", rd_kafka_mock_cluster_bootstraps(mcluster));
    if (opt.verbose)
        tool_diag("%d brokers up at %s", opt.brokers, rd_kafka_mock_cluster_bootstraps(mcluster));

    serve(mcluster, opt.brokers, sigfd);
    rc = 0;

out:
    /* The mock thread and the handle's threads are joined here: bounded (rdkafka_tool.h). */
    if (mcluster != NULL || rk != NULL)
        tool_teardown_begin(rc);
    if (mcluster != NULL)
        rd_kafka_mock_cluster_destroy(mcluster);
    if (rk != NULL)
        rd_kafka_destroy(rk);
    tool_teardown_end();
    if (sigfd >= 0)
        close(sigfd);
    free(opt.topics);
    return rc;
}
