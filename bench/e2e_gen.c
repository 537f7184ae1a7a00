/*
 * The end-to-end benchmark's load generator (bench/e2e.py drives it): JSON access-log events
 * for N entities on an event-time grid, produced to Kafka as fast as librdkafka takes them, or
 * the per-bucket features the daemon will compute from them, as a CSV for the trainer.
 *
 *     bench_e2e_gen --brokers B --topic T --partitions P --entities N --step-ms S --t0-ms T0
 *                   --buckets FIRST:END [--per-bucket K] [--pace SECONDS] [--credit]
 *                   [--incident-from B --incident-every E --incident-len L --incident-share X]
 *     bench_e2e_gen --csv FILE --entities N --step-ms S --t0-ms T0 --buckets FIRST:END ...
 *
 * Every event is a function of (entity, bucket, index) alone, so the CSV of a bucket range
 * holds exactly what the daemon aggregates from the events of that range, and runs repeat.
 * Entity e has its own base latency, daily-like cycle, payload size and error and warning
 * rates; it lives on partition e % P (Kafka's keyed placement, made explicit so that every
 * partition sees every bucket and the watermark moves). In an incident bucket a chosen share
 * of the entities answers 6x slower with half of its requests failing.
 *
 * --credit: stdin carries lines "N", each allowing N events in total to have been produced;
 * the driver sends the daemon's consumed count plus what the mock cluster's retention can
 * hold, so that a generator faster than the daemon never laps the retention and loses data.
 * --pace: bucket i of the range starts i * SECONDS after the first (a live stream); without
 * it, everything goes out at once (a backlog).
 *
 * Prints a JSON line per bucket as it starts ({"bucket", "wall_ms"}), then one with events,
 * bytes, seconds (first produce to last delivery report), events_per_second,
 * credit_wait_seconds and failed (delivery reports with an error).
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "rdkafka_tool.h"

#define INSTANCES_PER_SERVICE 16
#define INCIDENT_SLOWDOWN     6.0
#define INCIDENT_ERROR_RATE   0.5
#define SLOW_MS               500.0 /* the "slow" feature's threshold */

struct options {
    const char *brokers, *topic, *csv;
    int partitions;
    uint32_t entities;
    unsigned per_bucket;
    int64_t step_ms, t0_ms, first, end;
    int64_t incident_from, incident_every, incident_len;
    double incident_share, pace;
    bool credit;
};

/* One event, as the daemon will read it back. */
struct event {
    int64_t ts;
    uint32_t latency_tenths; /* latency_ms * 10: the JSON has one decimal */
    uint32_t bytes;
    uint16_t status;
    bool warn;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* splitmix64's finalizer: a good hash of a counter, so that events need no generator state. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static double unit(uint64_t h) /* [0, 1) */
{
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

/* Events of entity e in bucket b: per_bucket - 1 .. per_bucket + 1, at least 1. */
static unsigned events_in(const struct options *o, uint32_t e, int64_t b)
{
    if (o->per_bucket < 2)
        return 1;
    return o->per_bucket - 1 + (unsigned)(mix((uint64_t)e << 32 ^ (uint64_t)b ^ 0x5eed) % 3);
}

static bool in_incident(const struct options *o, uint32_t e, int64_t b)
{
    if (o->incident_every <= 0 || b < o->incident_from)
        return false;
    int64_t k = (b - o->incident_from) / o->incident_every;
    if ((b - o->incident_from) % o->incident_every >= o->incident_len)
        return false;
    return unit(mix((uint64_t)k * 0x100000001b3ULL ^ e ^ 0x1c1dULL << 40)) < o->incident_share;
}

static void make_event(const struct options *o, uint32_t e, int64_t b, unsigned j, unsigned n,
                       bool incident, struct event *ev)
{
    uint64_t p = mix(e);
    double base = 20.0 + (double)(p % 180);
    double amp = 0.1 + 0.2 * unit(mix(p ^ 1));
    double period = 8.0 + (double)(mix(p ^ 2) % 9);
    double phase = (double)(mix(p ^ 3) % 16);
    double error_rate = 0.005 + 0.015 * unit(mix(p ^ 4));
    double warn_rate = 0.01 + 0.04 * unit(mix(p ^ 5));
    uint32_t size = 500 + (uint32_t)(mix(p ^ 6) % 5000);

    uint64_t r = mix(((uint64_t)e << 32) ^ ((uint64_t)b << 8) ^ j ^ 0xe7e7ULL << 48);
    double u1 = 2.0 * unit(r) - 1.0, u2 = 2.0 * unit(mix(r ^ 1)) - 1.0;
    double latency =
        base * (1.0 + amp * sin(2.0 * M_PI * ((double)b + phase) / period)) * (1.0 + 0.1 * u1);
    double fail = error_rate;
    if (incident) {
        latency *= INCIDENT_SLOWDOWN;
        fail = INCIDENT_ERROR_RATE;
    }
    int64_t slot = o->step_ms / n;
    ev->ts = o->t0_ms + b * o->step_ms + (int64_t)j * slot + (int64_t)(mix(r ^ 2) % (uint64_t)slot);
    if (j == 0)
        ev->ts = o->t0_ms + b * o->step_ms; /* the bucket's first event moves the watermark */
    ev->latency_tenths = (uint32_t)lround(latency * 10.0);
    ev->bytes = (uint32_t)((double)size * (1.0 + 0.2 * u2));
    ev->status = unit(mix(r ^ 3)) < fail ? 503 : 200;
    ev->warn = unit(mix(r ^ 4)) < warn_rate;
}

/* ---- text, without printf: the generator must outrun the daemon ---- */

static char *put_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *put_uint(char *p, uint64_t v, int width)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < width)
        tmp[n++] = '0';
    while (n)
        *p++ = tmp[--n];
    return p;
}

static size_t entity_names(uint32_t e, char *service, char *instance)
{
    char *p = put_uint(put_str(service, "svc-"), e / INSTANCES_PER_SERVICE, 5);
    *p = '\0';
    p = put_uint(put_str(put_str(instance, service), "-"), e % INSTANCES_PER_SERVICE, 2);
    *p = '\0';
    return (size_t)(p - instance);
}

static size_t format_event(const struct event *ev, const char *service, const char *instance,
                           char *out)
{
    static const char *const paths[] = {"/api/v1/cart", "/api/v1/checkout", "/api/v2/search",
                                        "/api/v1/users/orders"};
    char *p = out;
    p = put_uint(put_str(p, "{\"ts\":"), (uint64_t)ev->ts, 1);
    p = put_str(put_str(put_str(p, ",\"service\":\""), service), "\"");
    p = put_str(put_str(put_str(p, ",\"instance\":\""), instance), "\"");
    p = put_str(p, ev->warn ? ",\"level\":\"warn\"" : ",\"level\":\"info\"");
    p = put_uint(put_str(p, ",\"status\":"), ev->status, 1);
    p = put_uint(put_str(p, ",\"latency_ms\":"), ev->latency_tenths / 10, 1);
    p = put_uint(put_str(p, "."), ev->latency_tenths % 10, 1);
    p = put_uint(put_str(p, ",\"bytes\":"), ev->bytes, 1);
    p = put_str(put_str(put_str(p, ",\"path\":\""), paths[ev->bytes % 4]), "\"}");
    return (size_t)(p - out);
}

/* ---- CSV: what the daemon's features make of the same events ---- */

static int write_csv(const struct options *o)
{
    FILE *f = fopen(o->csv, "w");
    if (!f) {
        tool_diag("%s: %s", o->csv, strerror(errno));
        return -1;
    }
    fprintf(f, "time_ms,service,instance,app.requests,app.errors,app.warnings,app.latency_mean,"
               "app.latency_max,app.latency_min,app.bytes,app.slow\n");
    char service[32], instance[48];
    for (int64_t b = o->first; b < o->end; b++) {
        for (uint32_t e = 0; e < o->entities; e++) {
            unsigned n = events_in(o, e, b), errors = 0, warnings = 0, slow = 0;
            bool incident = in_incident(o, e, b);
            double sum = 0, max = -INFINITY, min = INFINITY, bytes = 0;
            for (unsigned j = 0; j < n; j++) {
                struct event ev;
                make_event(o, e, b, j, n, incident, &ev);
                double ms = (double)ev.latency_tenths / 10.0;
                errors += ev.status >= 500;
                warnings += ev.warn;
                slow += ms > SLOW_MS;
                sum += ms;
                max = ms > max ? ms : max;
                min = ms < min ? ms : min;
                bytes += ev.bytes;
            }
            entity_names(e, service, instance);
            fprintf(f, "%" PRId64 ",%s,%s,%u,%u,%u,%.17g,%.17g,%.17g,%.17g,%u\n",
                    o->t0_ms + b * o->step_ms, service, instance, n, errors, warnings, sum / n, max,
                    min, bytes, slow);
        }
    }
    if (fclose(f) != 0) {
        tool_diag("%s: %s", o->csv, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- producing ---- */

static uint64_t failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err && failed++ == 0)
        tool_diag("delivery failed: %s", rd_kafka_err2str(m->err));
}

/* What --credit allows: the newest number read from stdin; UINT64_MAX once stdin ends. */
struct credit {
    uint64_t allowed;
    char line[64];
    size_t len;
};

/* Reads what stdin has, waiting at most timeout_ms for it. */
static void credit_read(struct credit *c, int timeout_ms)
{
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return;
    char buf[256];
    ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
    if (n <= 0) {
        c->allowed = UINT64_MAX;
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            c->line[c->len] = '\0';
            c->allowed = strtoull(c->line, NULL, 10);
            c->len = 0;
        } else if (c->len + 1 < sizeof c->line) {
            c->line[c->len++] = buf[i];
        }
    }
}

static rd_kafka_t *producer_new(const struct options *o)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    static const char *const props[][2] = {
        {"linger.ms", "5"},
        {"batch.num.messages", "10000"},
        {"batch.size", "1000000"},
        {"queue.buffering.max.messages", "200000"},
        {"queue.buffering.max.kbytes", "1048576"},
        {"acks", "1"},
        {"log.connection.close", "false"},
    };
    if (rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, err, sizeof err) !=
        RD_KAFKA_CONF_OK)
        goto fail;
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], err, sizeof err) != RD_KAFKA_CONF_OK)
            goto fail;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_log_cb(conf, tool_rdkafka_log);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        tool_diag("%s", err);
    return rk;
fail:
    tool_diag("%s", err);
    rd_kafka_conf_destroy(conf);
    return NULL;
}

static int produce(const struct options *o)
{
    rd_kafka_t *rk = producer_new(o);
    if (!rk)
        return -1;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->topic, NULL);
    struct credit credit = {.allowed = o->credit ? 0 : UINT64_MAX};
    uint64_t events = 0, bytes = 0;
    double started = now_seconds(), waited = 0;
    char service[32], instance[48], text[512];
    int rc = 0;

    for (int64_t b = o->first; b < o->end && rc == 0; b++) {
        if (o->pace > 0) {
            double due = started + o->pace * (double)(b - o->first);
            double left;
            while ((left = due - now_seconds()) > 0)
                rd_kafka_poll(rk, left > 0.05 ? 50 : (int)(left * 1000) + 1);
        }
        /* When the bucket's first event goes out: with --pace, the earliest moment the bucket
         * before it can close, from which the driver measures detection end to end. */
        struct timespec wall;
        clock_gettime(CLOCK_REALTIME, &wall);
        printf("{\"bucket\": %" PRId64 ", \"wall_ms\": %.3f}\n", b,
               (double)wall.tv_sec * 1e3 + (double)wall.tv_nsec * 1e-6);
        for (uint32_t e = 0; e < o->entities && rc == 0; e++) {
            unsigned n = events_in(o, e, b);
            bool incident = in_incident(o, e, b);
            size_t key_len = entity_names(e, service, instance);
            for (unsigned j = 0; j < n; j++) {
                while (events >= credit.allowed) {
                    double t = now_seconds();
                    rd_kafka_poll(rk, 0);
                    credit_read(&credit, 20);
                    waited += now_seconds() - t;
                }
                struct event ev;
                make_event(o, e, b, j, n, incident, &ev);
                size_t len = format_event(&ev, service, instance, text);
                while (rd_kafka_produce(rkt, (int32_t)(e % (uint32_t)o->partitions),
                                        RD_KAFKA_MSG_F_COPY, text, len, instance, key_len,
                                        NULL) != 0) {
                    if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                        tool_diag("produce: %s", rd_kafka_err2str(rd_kafka_last_error()));
                        rc = -1;
                        break;
                    }
                    rd_kafka_poll(rk, 1);
                }
                events++;
                bytes += len;
                if ((events & 1023) == 0) {
                    rd_kafka_poll(rk, 0);
                    if (o->credit)
                        credit_read(&credit, 0);
                }
            }
        }
    }
    while (rd_kafka_outq_len(rk) > 0 && rd_kafka_flush(rk, 1000) == RD_KAFKA_RESP_ERR__TIMED_OUT)
        if (now_seconds() - started > 600) {
            tool_diag("%d messages not delivered after 600 s", rd_kafka_outq_len(rk));
            rc = -1;
            break;
        }
    double seconds = now_seconds() - started;
    printf("{\"events\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"seconds\": %.6f, "
           "\"events_per_second\": %.1f, \"credit_wait_seconds\": %.3f, \"failed\": %" PRIu64 "}\n",
           events, bytes, seconds, (double)events / seconds, waited, failed);
    fflush(stdout);
    tool_teardown_begin(rc == 0 && failed == 0 ? 0 : 1);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    tool_teardown_end();
    return rc == 0 && failed == 0 ? 0 : -1;
}

/* ---- options ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_e2e_gen (--brokers B --topic T --partitions P | --csv FILE)\n"
               "         --entities N --step-ms S --t0-ms T0 --buckets FIRST:END\n"
               "         [--per-bucket K] [--pace SECONDS] [--credit]\n"
               "         [--incident-from B --incident-every E --incident-len L "
               "--incident-share X]\n");
}

static int parse_range(const char *s, int64_t *first, int64_t *end)
{
    char *colon;
    *first = strtoll(s, &colon, 10);
    if (*colon != ':')
        return -1;
    *end = strtoll(colon + 1, NULL, 10);
    return *end >= *first ? 0 : -1;
}

int main(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"partitions", required_argument, NULL, 'p'},
        {"csv", required_argument, NULL, 'c'},
        {"entities", required_argument, NULL, 'n'},
        {"per-bucket", required_argument, NULL, 'k'},
        {"step-ms", required_argument, NULL, 's'},
        {"t0-ms", required_argument, NULL, '0'},
        {"buckets", required_argument, NULL, 'B'},
        {"pace", required_argument, NULL, 'P'},
        {"credit", no_argument, NULL, 'C'},
        {"incident-from", required_argument, NULL, 'f'},
        {"incident-every", required_argument, NULL, 'e'},
        {"incident-len", required_argument, NULL, 'l'},
        {"incident-share", required_argument, NULL, 'x'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct options o = {.topic = "logs", .partitions = 1, .per_bucket = 2, .step_ms = 10000};
    bool have_range = false;
    int c;
    tool_name = "bench_e2e_gen";
    while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (c) {
        case 'b':
            o.brokers = optarg;
            break;
        case 't':
            o.topic = optarg;
            break;
        case 'p':
            o.partitions = atoi(optarg);
            break;
        case 'c':
            o.csv = optarg;
            break;
        case 'n':
            o.entities = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'k':
            o.per_bucket = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 's':
            o.step_ms = strtoll(optarg, NULL, 10);
            break;
        case '0':
            o.t0_ms = strtoll(optarg, NULL, 10);
            break;
        case 'B':
            have_range = parse_range(optarg, &o.first, &o.end) == 0;
            break;
        case 'P':
            o.pace = strtod(optarg, NULL);
            break;
        case 'C':
            o.credit = true;
            break;
        case 'f':
            o.incident_from = strtoll(optarg, NULL, 10);
            break;
        case 'e':
            o.incident_every = strtoll(optarg, NULL, 10);
            break;
        case 'l':
            o.incident_len = strtoll(optarg, NULL, 10);
            break;
        case 'x':
            o.incident_share = strtod(optarg, NULL);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!have_range || o.entities == 0 || o.step_ms <= 0 || o.per_bucket == 0 ||
        o.per_bucket > 1000 || o.partitions < 1 || (!o.csv && !o.brokers) || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (o.csv)
        return write_csv(&o) == 0 ? 0 : 1;
    if (tool_teardown_guard_install() < 0)
        return 1;
    /* Every message is copied into librdkafka's queue and freed on delivery: keep the heap
     * instead of handing it back and faulting it in again (a third of the time otherwise). */
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    mallopt(M_TOP_PAD, 64 << 20);
    return produce(&o) == 0 ? 0 : 1;
}
