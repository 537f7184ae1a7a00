#include "stream/kafka_sink.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/grow.h"
#include "config/kafka_sink_rules.h"
#include "stream/kafka_conf.h"
#include "stream/kafka_wake.h"

#define AD_LOG_MODULE "kafka_sink"
#include "base/log.h"

/* The bound on unacknowledged alerts when queue.buffering.max.messages gives none. */
#define DEFAULT_BOUND 100000
/* Polls even without a wake-up this often, and retries a failed producer rebuild. */
#define SAFETY_INTERVAL_MS 500
/* A failed alert waits MIN_BACKOFF_MS, doubling per failed attempt, up to MAX_BACKOFF_MS. */
#define MIN_BACKOFF_MS  100
#define MAX_BACKOFF_MS  10000
#define LOG_INTERVAL_MS 10000
/* rd_kafka_poll() calls per wake-up before other events get a turn. */
#define POLL_ROUNDS 64

struct alert {
    struct alert *prev, *next; /* every unacknowledged alert, oldest first */
    uint64_t seq;              /* order of send(): waiting alerts go out in this order */
    uint64_t token;
    double sent_s; /* monotonic, for the delivery duration */
    int64_t due_ms;
    unsigned failed_attempts;
    bool in_flight; /* librdkafka holds it and owes a delivery report */
    const char *id, *detector, *entity;
    size_t entity_len;
    char *json;
    size_t json_len;
    char data[];
};

/* A binary min-heap of alerts: by seq (ready to go), or by due time then seq (backing off). */
struct heap {
    struct alert **items;
    size_t len, cap;
    bool by_due;
};

struct ad_kafka_sink {
    struct event_base *base;
    const struct ad_settings_kafka *kafka;
    const struct ad_settings_kafka_sink *settings;
    ad_sink_ack_fn ack;
    void *ack_arg;

    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    rd_kafka_queue_t *queue;
    struct ad_kafka_wake *wake; /* the producer's main queue */
    struct event *safety_timer, *retry_timer, *stop_timer, *done_event;
    int64_t retry_armed_ms; /* the due time retry_timer is set for; 0: not set */

    /* A fatal error: nothing is produced until the old producer has reported every alert it
     * held; then a new one takes over and the old one is destroyed on the reaper thread. */
    bool replacing;
    pthread_t reaper;
    bool reaper_running;

    struct alert *oldest, *newest;
    size_t unacked, in_flight;
    struct heap ready, delayed;
    uint64_t next_seq;
    size_t bound;

    bool stopping;
    void (*stop_done)(void *, bool);
    void *stop_arg;
    bool destroying;

    struct ad_log_ratelimit transient_log, permanent_log, error_log;
    uint64_t failures_since_delivery;
    char last_error[768];

    struct {
        uint64_t delivered, retried, failed, restarts, client_errors;
    } counts;
    struct ad_counter *delivered_total, *retried_total, *failed_total, *restarts_total;
    struct ad_gauge *queue_gauge;
    struct ad_histogram *duration;
};

/* ---- heaps ---- */

static bool before(const struct heap *h, const struct alert *a, const struct alert *b)
{
    if (h->by_due && a->due_ms != b->due_ms)
        return a->due_ms < b->due_ms;
    return a->seq < b->seq;
}

static int heap_push(struct heap *h, struct alert *a)
{
    if (ad_grow(&h->items, &h->cap, h->len + 1, sizeof *h->items) < 0)
        return -1;
    size_t i = h->len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(h, a, h->items[parent]))
            break;
        h->items[i] = h->items[parent];
        i = parent;
    }
    h->items[i] = a;
    return 0;
}

static struct alert *heap_top(const struct heap *h)
{
    return h->len ? h->items[0] : NULL;
}

static struct alert *heap_pop(struct heap *h)
{
    if (!h->len)
        return NULL;
    struct alert *top = h->items[0], *last = h->items[--h->len];
    size_t i = 0;
    while (true) {
        size_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && before(h, h->items[child + 1], h->items[child]))
            child++;
        if (!before(h, h->items[child], last))
            break;
        h->items[i] = h->items[child];
        i = child;
    }
    if (h->len)
        h->items[i] = last;
    return top;
}

/* ---- alerts ---- */

static struct alert *alert_new(const struct ad_alert_msg *msg)
{
    const char *id = msg->id ? msg->id : "", *detector = msg->detector ? msg->detector : "";
    const char *entity = msg->entity ? msg->entity : "";
    size_t id_len = strlen(id), det_len = strlen(detector), ent_len = strlen(entity);
    size_t json_len = msg->json ? msg->json_len : 0;
    struct alert *a = malloc(sizeof *a + id_len + det_len + ent_len + json_len + 4);
    if (!a)
        return NULL;
    *a = (struct alert){.entity_len = ent_len, .json_len = json_len};
    char *p = a->data;
    a->id = memcpy(p, id, id_len + 1);
    p += id_len + 1;
    a->detector = memcpy(p, detector, det_len + 1);
    p += det_len + 1;
    a->entity = memcpy(p, entity, ent_len + 1);
    p += ent_len + 1;
    a->json = p;
    if (json_len)
        memcpy(p, msg->json, json_len);
    p[json_len] = '\0';
    return a;
}

static void unlink_alert(struct ad_kafka_sink *s, struct alert *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        s->oldest = a->next;
    if (a->next)
        a->next->prev = a->prev;
    else
        s->newest = a->prev;
    s->unacked--;
}

static void update_gauge(struct ad_kafka_sink *s)
{
    ad_gauge_set(s->queue_gauge, (double)s->unacked);
}

/* Errors only an operator can fix: retrying soon will not help, but the alert is kept. */
static bool permanent_error(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_INVALID_REQUIRED_ACKS:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION:
    case RD_KAFKA_RESP_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return true;
    default:
        return false;
    }
}

static int64_t backoff_ms(unsigned failed_attempts)
{
    int64_t ms = MIN_BACKOFF_MS;
    for (unsigned i = 1; i < failed_attempts && ms < MAX_BACKOFF_MS; i++)
        ms *= 2;
    return ms < MAX_BACKOFF_MS ? ms : MAX_BACKOFF_MS;
}

static void arm_retry(struct ad_kafka_sink *s)
{
    struct alert *next = heap_top(&s->delayed);
    if (!next || next->due_ms == s->retry_armed_ms)
        return;
    int64_t wait = next->due_ms - ad_clock_mono_ms();
    if (wait < 0)
        wait = 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    if (event_add(s->retry_timer, &tv) == 0)
        s->retry_armed_ms = next->due_ms;
}

/* A report (or produce()) failed with err: the alert goes back in line after its backoff.
 * classify: whether err says something about the alert (not after a fatal error). */
static void failed(struct ad_kafka_sink *s, struct alert *a, rd_kafka_resp_err_t err, bool classify)
{
    bool permanent = classify && permanent_error(err);
    uint64_t held;

    a->failed_attempts++;
    a->due_ms = ad_clock_mono_ms() + backoff_ms(a->failed_attempts);
    s->failures_since_delivery++;
    snprintf(s->last_error, sizeof s->last_error, "%s: %s", rd_kafka_err2name(err),
             rd_kafka_err2str(err));
    if (permanent) {
        s->counts.failed++;
        ad_counter_inc(s->failed_total);
        if (ad_log_ratelimit_allow(&s->permanent_log, ad_clock_mono_ms(), &held))
            AD_ERROR_KV("alert not accepted by Kafka; it is kept and retried until this is fixed",
                        AD_KV_STR("topic", s->settings->topic),
                        AD_KV_STR("error", rd_kafka_err2name(err)),
                        AD_KV_STR("reason", rd_kafka_err2str(err)), AD_KV_STR("alert", a->id),
                        AD_KV_INT("attempts", a->failed_attempts), AD_KV_INT("suppressed", held));
    } else {
        s->counts.retried++;
        ad_counter_inc(s->retried_total);
        if (ad_log_ratelimit_allow(&s->transient_log, ad_clock_mono_ms(), &held))
            AD_WARN_KV("alert delivery failed; retrying", AD_KV_STR("topic", s->settings->topic),
                       AD_KV_STR("error", rd_kafka_err2name(err)),
                       AD_KV_STR("reason", rd_kafka_err2str(err)), AD_KV_STR("alert", a->id),
                       AD_KV_INT("attempts", a->failed_attempts), AD_KV_INT("suppressed", held));
    }
    if (heap_push(&s->delayed, a) < 0) {
        /* Still linked among the unacknowledged: the safety timer puts it back in line. */
        AD_ERROR("out of memory queueing a failed alert for retry");
        return;
    }
    arm_retry(s);
}

static void start_replace(struct ad_kafka_sink *s, const char *why);

static rd_kafka_resp_err_t produce(struct ad_kafka_sink *s, struct alert *a)
{
    /* The value is not copied: the alert outlives its delivery report. */
    return rd_kafka_producev(s->rk, RD_KAFKA_V_RKT(s->rkt),
                             RD_KAFKA_V_KEY(a->entity, a->entity_len),
                             RD_KAFKA_V_VALUE(a->json, a->json_len), RD_KAFKA_V_MSGFLAGS(0),
                             RD_KAFKA_V_HEADER("anomalyd-alert-id", a->id, -1),
                             RD_KAFKA_V_HEADER("anomalyd-detector", a->detector, -1),
                             RD_KAFKA_V_OPAQUE(a), RD_KAFKA_V_END);
}

/* Hands waiting alerts to librdkafka, oldest first, until its queue is full. */
static void drain(struct ad_kafka_sink *s)
{
    int64_t now = ad_clock_mono_ms();
    struct alert *a;

    while ((a = heap_top(&s->delayed)) && a->due_ms <= now) {
        if (heap_push(&s->ready, a) < 0)
            break;
        heap_pop(&s->delayed);
    }
    while (s->rk && !s->replacing && (a = heap_top(&s->ready))) {
        rd_kafka_resp_err_t err = produce(s, a);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break; /* delivery reports make room and drain again */
        if (err == RD_KAFKA_RESP_ERR__FATAL) {
            start_replace(s, "produce");
            break;
        }
        heap_pop(&s->ready);
        if (err) {
            failed(s, a, err, true);
            continue;
        }
        a->in_flight = true;
        s->in_flight++;
    }
    arm_retry(s);
}

/* ---- stopping ---- */

static void check_stop(struct ad_kafka_sink *s)
{
    if (s->stop_done && s->unacked == 0)
        event_active(s->done_event, EV_TIMEOUT, 0);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct ad_kafka_sink *s = arg;
    (void)fd;
    (void)what;
    if (!s->stop_done)
        return;
    void (*done)(void *, bool) = s->stop_done;
    bool flushed = s->unacked == 0;
    s->stop_done = NULL;
    event_del(s->stop_timer);
    AD_INFO_KV(flushed ? "Kafka sink flushed" : "Kafka sink stopped with alerts unacknowledged",
               AD_KV_STR("topic", s->settings->topic), AD_KV_INT("unacknowledged", s->unacked));
    done(s->stop_arg, flushed); /* may destroy s */
}

static void on_stop_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    on_done(-1, 0, arg);
}

void ad_kafka_sink_stop(struct ad_kafka_sink *s, int64_t deadline_ms,
                        void (*done)(void *arg, bool flushed), void *arg)
{
    s->stopping = true;
    s->stop_done = done;
    s->stop_arg = arg;
    int64_t wait = deadline_ms - ad_clock_mono_ms();
    if (wait < 0)
        wait = 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)((wait % 1000) * 1000)};
    event_add(s->stop_timer, &tv);
    AD_INFO_KV("Kafka sink flushing", AD_KV_STR("topic", s->settings->topic),
               AD_KV_INT("unacknowledged", s->unacked), AD_KV_INT("timeout_ms", wait));
    check_stop(s);
}

/* ---- librdkafka callbacks (all served by polls on the loop thread) ---- */

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct ad_kafka_sink *s = opaque;
    uint64_t held;
    if (s->destroying)
        return;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t cause = rd_kafka_fatal_error(rk, why, sizeof why);
        snprintf(s->last_error, sizeof s->last_error, "%s: %s", rd_kafka_err2name(cause), why);
        AD_ERROR_KV("Kafka producer failed; replacing it", AD_KV_STR("topic", s->settings->topic),
                    AD_KV_STR("error", rd_kafka_err2name(cause)), AD_KV_STR("reason", why));
        start_replace(s, "fatal error");
        return;
    }
    s->counts.client_errors++;
    if (ad_log_ratelimit_allow(&s->error_log, ad_clock_mono_ms(), &held))
        AD_WARN_KV("Kafka client error", AD_KV_STR("topic", s->settings->topic),
                   AD_KV_STR("error", rd_kafka_err2name((rd_kafka_resp_err_t)err)),
                   AD_KV_STR("reason", reason), AD_KV_INT("suppressed", held));
}

static void delivered(struct ad_kafka_sink *s, struct alert *a)
{
    uint64_t token = a->token;
    unlink_alert(s, a);
    s->counts.delivered++;
    ad_counter_inc(s->delivered_total);
    ad_histogram_observe(s->duration, ad_clock_mono_seconds() - a->sent_s);
    if (s->failures_since_delivery) {
        AD_INFO_KV("alerts delivered again", AD_KV_STR("topic", s->settings->topic),
                   AD_KV_INT("failures", s->failures_since_delivery));
        s->failures_since_delivery = 0;
    }
    free(a);
    update_gauge(s);
    s->ack(s->ack_arg, token);
    check_stop(s);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct ad_kafka_sink *s = opaque;
    struct alert *a = m->_private;
    if (s->destroying || !a)
        return;
    a->in_flight = false;
    s->in_flight--;
    if (!m->err)
        delivered(s, a);
    else /* after a fatal error every report fails with it: not the alert's fault */
        failed(s, a, m->err, rd_kafka_fatal_error(rk, NULL, 0) == RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* ---- the producer ---- */

static void finish_replace(struct ad_kafka_sink *s);

static void poll_producer(struct ad_kafka_sink *s)
{
    bool more = true;
    for (int i = 0; s->rk && i < POLL_ROUNDS; i++) {
        if (rd_kafka_poll(s->rk, 0) == 0) {
            more = false;
            break;
        }
    }
    if (more && s->rk)
        ad_kafka_wake_again(s->wake);
    if (s->replacing && s->in_flight == 0)
        finish_replace(s);
    drain(s);
    update_gauge(s);
}

static void on_wake(void *arg)
{
    poll_producer(arg);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct ad_kafka_sink *s = arg;
    (void)fd;
    (void)what;
    s->retry_armed_ms = 0;
    drain(s);
}

static void on_safety(evutil_socket_t fd, short what, void *arg)
{
    struct ad_kafka_sink *s = arg;
    (void)fd;
    (void)what;
    /* Put back alerts that could not be queued for retry (out of memory). */
    size_t waiting = s->ready.len + s->delayed.len + s->in_flight;
    if (waiting < s->unacked) {
        for (struct alert *a = s->oldest; a; a = a->next) {
            bool queued = a->in_flight;
            for (size_t i = 0; !queued && i < s->ready.len; i++)
                queued = s->ready.items[i] == a;
            for (size_t i = 0; !queued && i < s->delayed.len; i++)
                queued = s->delayed.items[i] == a;
            if (!queued && heap_push(&s->ready, a) < 0)
                break;
        }
    }
    poll_producer(s);
}

/* Where the operator set a property ("sinks.kafka.properties" wins), or NULL. */
static const char *property_origin(const struct ad_kafka_sink *s, const char *name)
{
    const struct ad_secretmap *maps[] = {&s->settings->properties, &s->kafka->properties};
    static const char *const origins[] = {"sinks.kafka.properties", "kafka.properties"};
    for (size_t m = 0; m < 2; m++)
        for (size_t i = 0; i < maps[m]->len; i++)
            if (strcmp(maps[m]->keys[i], name) == 0)
                return origins[m];
    return NULL;
}

/* Refuses the properties that would break at-least-once delivery (kafka_sink_rules.h), naming
 * where they are set. conf holds them as librdkafka parsed them. */
static int check_properties(const struct ad_kafka_sink *s, rd_kafka_conf_t *conf, char *errstr,
                            size_t errstr_size)
{
    const struct ad_secretmap *maps[] = {&s->settings->properties, &s->kafka->properties};
    for (size_t m = 0; m < 2; m++) {
        for (size_t i = 0; i < maps[m]->len; i++) {
            const char *name = maps[m]->keys[i];
            const char *why = ad_kafka_sink_conflict(conf, name);
            if (why) {
                ad_errstr_set(errstr, errstr_size, "%s.%s: %s; remove it", property_origin(s, name),
                              name, why);
                return -1;
            }
        }
    }
    return 0;
}

static void teardown_producer(struct ad_kafka_sink *s)
{
    if (s->queue) {
        rd_kafka_queue_io_event_enable(s->queue, -1, NULL, 0);
        rd_kafka_queue_destroy(s->queue);
        s->queue = NULL;
    }
    if (s->rkt) {
        rd_kafka_topic_destroy(s->rkt);
        s->rkt = NULL;
    }
}

/* Builds s->rk from the settings; check refuses unsafe properties (only the first time: a
 * replacement uses the same settings). */
static int create_producer(struct ad_kafka_sink *s, bool check, char *errstr, size_t errstr_size)
{
    char why[512], value[32];
    size_t size = sizeof value;
    rd_kafka_conf_t *conf =
        ad_kafka_conf_new(s->kafka, NULL, &s->settings->properties, errstr, errstr_size);
    if (!conf)
        return -1;
    if ((check && check_properties(s, conf, errstr, errstr_size) < 0) ||
        ad_kafka_conf_set(conf, "enable.idempotence", "true", errstr, errstr_size) < 0 ||
        ad_kafka_conf_log_to_loop(conf, errstr, errstr_size) < 0)
        goto err;
    if (rd_kafka_conf_get(conf, "queue.buffering.max.messages", value, &size) == RD_KAFKA_CONF_OK &&
        atol(value) > 0)
        s->bound = (size_t)atol(value);
    else
        s->bound = DEFAULT_BOUND;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, s);
    s->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!s->rk) {
        ad_errstr_set(errstr, errstr_size, "Kafka sink producer: %s", why);
        goto err; /* rd_kafka_new destroyed conf only on success */
    }
    conf = NULL;
    /* Logs, errors and delivery reports all on the main queue, served by our polls. */
    rd_kafka_set_log_queue(s->rk, NULL);
    s->rkt = rd_kafka_topic_new(s->rk, s->settings->topic, NULL);
    s->queue = rd_kafka_queue_get_main(s->rk);
    if (!s->rkt || !s->queue) {
        ad_errstr_set(errstr, errstr_size, "Kafka sink producer: %s",
                      rd_kafka_err2str(rd_kafka_last_error()));
        teardown_producer(s);
        rd_kafka_destroy(s->rk);
        s->rk = NULL;
        return -1;
    }
    ad_kafka_wake_watch(s->wake, s->queue);
    /* What arrived before the wake-up was enabled wrote nothing: look now. */
    ad_kafka_wake_again(s->wake);
    return 0;

err:
    if (conf)
        rd_kafka_conf_destroy(conf);
    return -1;
}

static void *reap(void *rk)
{
    rd_kafka_destroy(rk);
    return NULL;
}

static void start_replace(struct ad_kafka_sink *s, const char *why)
{
    if (s->replacing || !s->rk)
        return;
    s->replacing = true;
    AD_WARN_KV("replacing the Kafka producer", AD_KV_STR("topic", s->settings->topic),
               AD_KV_STR("why", why), AD_KV_INT("in_flight", s->in_flight));
    /* Every alert it holds comes back in a failed report; then finish_replace swaps. */
    rd_kafka_purge(s->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
                              RD_KAFKA_PURGE_F_NON_BLOCKING);
    ad_kafka_wake_again(s->wake);
}

static void finish_replace(struct ad_kafka_sink *s)
{
    char err[512];
    if (s->rk) {
        rd_kafka_t *old = s->rk;
        teardown_producer(s);
        s->rk = NULL;
        /* Destroying joins librdkafka's threads: not on the loop. */
        if (s->reaper_running)
            pthread_join(s->reaper, NULL);
        s->reaper_running = pthread_create(&s->reaper, NULL, reap, old) == 0;
        if (!s->reaper_running)
            rd_kafka_destroy(old);
    }
    ad_kafka_wake_drain(s->wake);
    if (create_producer(s, false, err, sizeof err) < 0) {
        AD_ERROR_KV("cannot create a new Kafka producer; retrying",
                    AD_KV_STR("topic", s->settings->topic), AD_KV_STR("error", err));
        return; /* the safety timer comes back */
    }
    s->replacing = false;
    s->counts.restarts++;
    ad_counter_inc(s->restarts_total);
    AD_INFO_KV("Kafka producer replaced", AD_KV_STR("topic", s->settings->topic),
               AD_KV_INT("unacknowledged", s->unacked));
}

/* ---- the sink ---- */

static void register_metrics(struct ad_kafka_sink *s, struct ad_metrics *m)
{
    static const char alerts_help[] =
        "Alert delivery reports from Kafka, by result (retried and failed alerts are kept and "
        "produced again).";
    s->delivered_total = ad_metrics_counter(m, "anomalyd_kafka_sink_alerts_total", alerts_help,
                                            "result", "delivered", NULL);
    s->retried_total = ad_metrics_counter(m, "anomalyd_kafka_sink_alerts_total", alerts_help,
                                          "result", "retried", NULL);
    s->failed_total = ad_metrics_counter(m, "anomalyd_kafka_sink_alerts_total", alerts_help,
                                         "result", "failed", NULL);
    s->queue_gauge =
        ad_metrics_gauge(m, "anomalyd_kafka_sink_queue_alerts",
                         "Alerts sent to the Kafka sink and not acknowledged yet.", NULL);
    s->duration = ad_metrics_histogram(
        m, "anomalyd_kafka_sink_delivery_duration_seconds",
        "Time from an alert's send to its acknowledgement by Kafka, retries included.",
        ad_metrics_seconds_buckets, ad_metrics_seconds_buckets_len, NULL);
    s->restarts_total = ad_metrics_counter(m, "anomalyd_kafka_sink_producer_restarts_total",
                                           "Kafka producers replaced after a fatal error.", NULL);
}

struct ad_kafka_sink *ad_kafka_sink_new(struct event_base *base,
                                        const struct ad_settings_kafka *kafka,
                                        const struct ad_settings_kafka_sink *settings,
                                        struct ad_metrics *metrics, ad_sink_ack_fn ack,
                                        void *ack_arg, char *errstr, size_t errstr_size)
{
    struct ad_kafka_sink *s = calloc(1, sizeof *s);
    if (!s) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->base = base;
    s->kafka = kafka;
    s->settings = settings;
    s->ack = ack;
    s->ack_arg = ack_arg;
    s->delayed.by_due = true;
    s->transient_log.interval_ms = LOG_INTERVAL_MS;
    s->permanent_log.interval_ms = LOG_INTERVAL_MS;
    s->error_log.interval_ms = LOG_INTERVAL_MS;
    register_metrics(s, metrics);

    if (!settings->topic || !*settings->topic) {
        ad_errstr_set(errstr, errstr_size, "sinks.kafka.topic is required");
        goto err;
    }
    s->wake = ad_kafka_wake_new(base, on_wake, s, errstr, errstr_size);
    if (!s->wake)
        goto err;
    s->safety_timer = event_new(base, -1, EV_PERSIST, on_safety, s);
    s->retry_timer = event_new(base, -1, 0, on_retry, s);
    s->stop_timer = event_new(base, -1, 0, on_stop_deadline, s);
    s->done_event = event_new(base, -1, 0, on_done, s);
    struct timeval safety = {SAFETY_INTERVAL_MS / 1000, (SAFETY_INTERVAL_MS % 1000) * 1000};
    if (!s->safety_timer || !s->retry_timer || !s->stop_timer || !s->done_event ||
        event_add(s->safety_timer, &safety) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot register loop events");
        goto err;
    }
    if (create_producer(s, true, errstr, errstr_size) < 0)
        goto err;
    AD_INFO_KV("Kafka sink ready", AD_KV_STR("topic", settings->topic),
               AD_KV_INT("bound", s->bound));
    return s;

err:
    ad_kafka_sink_destroy(s);
    return NULL;
}

int ad_kafka_sink_send(struct ad_kafka_sink *s, const struct ad_alert_msg *msg, uint64_t token)
{
    struct alert *a = alert_new(msg);
    if (!a)
        return -1;
    a->token = token;
    a->seq = s->next_seq;
    a->sent_s = ad_clock_mono_seconds();
    if (heap_push(&s->ready, a) < 0) {
        free(a);
        return -1;
    }
    s->next_seq++;
    a->prev = s->newest;
    if (s->newest)
        s->newest->next = a;
    else
        s->oldest = a;
    s->newest = a;
    s->unacked++;
    drain(s);
    update_gauge(s);
    return 0;
}

bool ad_kafka_sink_full(const struct ad_kafka_sink *s)
{
    return s->unacked >= s->bound;
}

size_t ad_kafka_sink_queued(const struct ad_kafka_sink *s)
{
    return s->unacked;
}

void ad_kafka_sink_unacked(const struct ad_kafka_sink *s, ad_sink_unacked_fn fn, void *arg)
{
    for (const struct alert *a = s->oldest; a; a = a->next) {
        struct ad_alert_msg msg = {.id = a->id,
                                   .detector = a->detector,
                                   .entity = a->entity,
                                   .json = a->json,
                                   .json_len = a->json_len};
        fn(arg, &msg, a->token);
    }
}

void ad_kafka_sink_destroy(struct ad_kafka_sink *s)
{
    if (!s)
        return;
    s->destroying = true;
    struct event *events[] = {s->safety_timer, s->retry_timer, s->stop_timer, s->done_event};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
        if (events[i])
            event_free(events[i]);
    teardown_producer(s);
    if (s->rk) {
        /* Nothing waits for a broker: what is not acknowledged now is given up. */
        rd_kafka_purge(s->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
                                  RD_KAFKA_PURGE_F_NON_BLOCKING);
        rd_kafka_destroy(s->rk);
    }
    if (s->reaper_running)
        pthread_join(s->reaper, NULL);
    /* Only now: the producers wrote to it from their own threads. */
    ad_kafka_wake_destroy(s->wake);
    if (s->unacked)
        AD_WARN_KV("Kafka sink destroyed with alerts unacknowledged",
                   AD_KV_STR("topic", s->settings->topic), AD_KV_INT("alerts", s->unacked));
    for (struct alert *a = s->oldest, *next; a; a = next) {
        next = a->next;
        free(a);
    }
    free(s->ready.items);
    free(s->delayed.items);
    free(s);
}

void ad_kafka_sink_status(const struct ad_kafka_sink *s, json_t *out)
{
    double oldest = s->oldest ? ad_clock_mono_seconds() - s->oldest->sent_s : 0;
    json_object_set_new(out, "topic", json_string(s->settings->topic));
    json_object_set_new(out, "unacknowledged", json_integer((json_int_t)s->unacked));
    json_object_set_new(out, "in_flight", json_integer((json_int_t)s->in_flight));
    json_object_set_new(out, "waiting", json_integer((json_int_t)s->ready.len));
    json_object_set_new(out, "backing_off", json_integer((json_int_t)s->delayed.len));
    json_object_set_new(out, "bound", json_integer((json_int_t)s->bound));
    json_object_set_new(out, "full", json_boolean(ad_kafka_sink_full(s)));
    json_object_set_new(out, "oldest_unacknowledged_seconds", json_real(oldest));
    json_object_set_new(out, "delivered", json_integer((json_int_t)s->counts.delivered));
    json_object_set_new(out, "retried", json_integer((json_int_t)s->counts.retried));
    json_object_set_new(out, "failed", json_integer((json_int_t)s->counts.failed));
    json_object_set_new(out, "producer_restarts", json_integer((json_int_t)s->counts.restarts));
    json_object_set_new(out, "client_errors", json_integer((json_int_t)s->counts.client_errors));
    json_object_set_new(out, "last_error",
                        s->last_error[0] ? json_string(s->last_error) : json_null());
    json_object_set_new(out, "stopping", json_boolean(s->stopping));
}
