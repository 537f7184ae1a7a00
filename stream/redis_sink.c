#include "stream/redis_sink.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "stream/redis_conn.h"

#define AD_LOG_MODULE "redis"
#include "base/log.h"

/* How long a dedup key lives: longer than any replay after a restart can reach back (Kafka's
 * default retention is 7 days), short enough that the keys stay a small, bounded set. */
#define DEDUP_TTL_S "604800"
/* Commands written and not yet answered, at most: enough to keep a link busy, few enough that
 * the output buffer stays small and a server error is answered before much more is sent. */
#define MAX_IN_FLIGHT 1024
#define MIN_RETRY_MS  100
#define MAX_RETRY_MS  30000

/*
 * KEYS: the dedup key, the stream, the hash. ARGV: id, detector, entity, alert JSON, the
 * stream's MAXLEN, the hash field, the channel, the dedup key's TTL in seconds.
 *
 * Redis does not roll a script back when a command in it fails, so everything that could fail
 * is checked before the first write: the key types here, and memory by SET itself (past
 * maxmemory only a script's first write is refused). After the SET nothing can fail, so an
 * alert is either written completely or not at all.
 */
static const char script[] =
    "local t = redis.call('TYPE', KEYS[2]).ok\n"
    "if t ~= 'stream' and t ~= 'none' then\n"
    "  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. t .. ', not a stream')\n"
    "end\n"
    "t = redis.call('TYPE', KEYS[3]).ok\n"
    "if t ~= 'hash' and t ~= 'none' then\n"
    "  return redis.error_reply('WRONGTYPE ' .. KEYS[3] .. ' holds a ' .. t .. ', not a hash')\n"
    "end\n"
    "if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[8]) then\n"
    "  return 0\n"
    "end\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'id', ARGV[1], 'detector', "
    "ARGV[2], 'entity', ARGV[3], 'alert', ARGV[4])\n"
    "redis.call('HSET', KEYS[3], ARGV[6], ARGV[4])\n"
    "redis.call('PUBLISH', ARGV[7], ARGV[4])\n"
    "return 1\n";

enum entry_state { ENTRY_PENDING, ENTRY_IN_FLIGHT, ENTRY_DONE };

/* Error replies by kind, a bounded set of label values. */
enum error_kind {
    ERROR_NOSCRIPT,
    ERROR_READONLY,
    ERROR_OOM,
    ERROR_BUSY,
    ERROR_LOADING,
    ERROR_NOPERM,
    ERROR_WRONGTYPE,
    ERROR_OTHER,
    N_ERROR_KINDS
};

static const char *const error_names[N_ERROR_KINDS] = {
    "noscript", "readonly", "oom", "busy", "loading", "noperm", "wrongtype", "other",
};

/* One queued alert; its strings follow it in the same allocation. */
struct entry {
    struct entry *next;
    struct ad_redis_sink *sink;
    uint64_t token;
    enum entry_state state;
    double sent_at; /* monotonic seconds */
    const char *id, *detector, *entity, *json, *key, *field;
    size_t json_len, key_len, field_len;
    char data[];
};

struct ad_redis_sink {
    struct event_base *base;
    struct ad_redis_conn *conn;
    char *stream, *hash, *channel;
    char maxlen[24];
    size_t queue_limit;
    ad_sink_ack_fn ack;
    void *ack_arg;

    /* Oldest first. Before cursor, unless stalled, every entry is in flight or done. */
    struct entry *head, *tail, *cursor;
    size_t queued, in_flight;

    bool script_ready; /* SCRIPT LOAD answered on this connection */
    bool use_eval;     /* no usable SHA: send the script itself */
    char sha[41];

    /* After an error reply: nothing more is sent until the replies in flight are in. */
    bool stalled;
    bool stall_noscript; /* only NOSCRIPT: resend with EVAL at once */
    unsigned error_streak;
    struct event *retry_timer;

    bool stopping, stop_finished, flushed;
    void (*stop_done)(void *arg, bool flushed);
    void *stop_arg;
    struct event *stop_timer, *done_timer;

    uint64_t written, duplicates, errors;
    char last_error[256];
    int64_t last_error_at;
    bool error_logged;
    char logged_error[256];

    struct ad_counter *written_c, *duplicates_c, *errors_c[N_ERROR_KINDS];
    struct ad_gauge *queue_g;
    struct ad_histogram *duration;
};

static void pump(struct ad_redis_sink *s);

static void timer_add_ms(struct event *ev, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* ---- stop ---- */

static void finish_stop(struct ad_redis_sink *s, bool flushed)
{
    if (!s->stopping || s->stop_finished)
        return;
    s->stop_finished = true;
    s->flushed = flushed;
    evtimer_del(s->stop_timer);
    /* From the loop, so that done may destroy the sink. */
    timer_add_ms(s->done_timer, 0);
}

static void on_done_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ad_redis_sink *s = arg;
    (void)fd;
    (void)what;
    if (s->stop_done)
        s->stop_done(s->stop_arg, s->flushed);
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ad_redis_sink *s = arg;
    (void)fd;
    (void)what;
    if (s->queued)
        AD_WARN_KV("redis sink stopped with alerts not written",
                   AD_KV_STR("address", ad_redis_conn_address(s->conn)),
                   AD_KV_INT("queued", s->queued));
    finish_stop(s, s->queued == 0);
}

/* ---- acknowledgements ---- */

/* Acknowledges, in order, every entry at the head whose reply has come. */
static void ack_done(struct ad_redis_sink *s)
{
    while (s->head && s->head->state == ENTRY_DONE) {
        struct entry *e = s->head;
        s->head = e->next;
        if (!s->head)
            s->tail = NULL;
        if (s->cursor == e)
            s->cursor = e->next;
        s->queued--;
        uint64_t token = e->token;
        free(e);
        ad_gauge_add(s->queue_g, -1);
        if (s->ack)
            s->ack(s->ack_arg, token);
    }
    if (s->queued == 0)
        finish_stop(s, true);
}

/* ---- errors ---- */

static bool has_prefix(const redisReply *r, const char *prefix)
{
    size_t n = strlen(prefix);
    return r->len >= n && strncmp(r->str, prefix, n) == 0 && (r->len == n || r->str[n] == ' ');
}

static enum error_kind classify(const redisReply *r)
{
    static const struct {
        const char *prefix;
        enum error_kind kind;
    } kinds[] = {
        {"NOSCRIPT", ERROR_NOSCRIPT},   {"READONLY", ERROR_READONLY}, {"OOM", ERROR_OOM},
        {"BUSY", ERROR_BUSY},           {"LOADING", ERROR_LOADING},   {"NOPERM", ERROR_NOPERM},
        {"WRONGTYPE", ERROR_WRONGTYPE},
    };
    if (r->type != REDIS_REPLY_ERROR)
        return ERROR_OTHER;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (has_prefix(r, kinds[i].prefix))
            return kinds[i].kind;
    return ERROR_OTHER;
}

/* Errors that another connection may not have: a replica promoted elsewhere, a master that
 * lost its own, a server restarted with a password. */
static bool needs_reconnect(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR &&
           (has_prefix(r, "READONLY") || has_prefix(r, "MASTERDOWN") || has_prefix(r, "NOAUTH"));
}

static void note_error(struct ad_redis_sink *s, enum error_kind kind, const char *text)
{
    s->errors++;
    ad_counter_inc(s->errors_c[kind]);
    snprintf(s->last_error, sizeof s->last_error, "%s", text);
    for (char *p = s->last_error; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            *p = ' ';
    s->last_error_at = ad_clock_wall_ms();
    /* Once per change: every alert of a pipeline gets the same error. */
    if (!s->error_logged || strcmp(s->last_error, s->logged_error) != 0) {
        AD_WARN_KV("redis alert write failed", AD_KV_STR("address", ad_redis_conn_address(s->conn)),
                   AD_KV_STR("kind", error_names[kind]), AD_KV_STR("error", s->last_error),
                   AD_KV_INT("queued", s->queued));
        s->error_logged = true;
        snprintf(s->logged_error, sizeof s->logged_error, "%s", s->last_error);
    }
}

/* The replies in flight are in after an error: send again what was not written. */
static void recover(struct ad_redis_sink *s)
{
    if (s->stall_noscript) {
        s->stalled = s->stall_noscript = false;
        s->cursor = s->head;
        pump(s);
        return;
    }
    s->error_streak++;
    int64_t wait = MIN_RETRY_MS;
    for (unsigned i = 1; i < s->error_streak && wait < MAX_RETRY_MS; i++)
        wait *= 2;
    timer_add_ms(s->retry_timer, wait < MAX_RETRY_MS ? wait : MAX_RETRY_MS);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ad_redis_sink *s = arg;
    (void)fd;
    (void)what;
    s->stalled = s->stall_noscript = false;
    s->cursor = s->head;
    pump(s);
}

/* ---- replies ---- */

static void on_alert_reply(void *arg, const redisReply *r)
{
    struct entry *e = arg;
    struct ad_redis_sink *s = e->sink;

    s->in_flight--;
    ad_histogram_observe(s->duration, ad_clock_mono_seconds() - e->sent_at);
    if (r->type == REDIS_REPLY_INTEGER && (r->integer == 0 || r->integer == 1)) {
        e->state = ENTRY_DONE;
        if (r->integer) {
            s->written++;
            ad_counter_inc(s->written_c);
        } else {
            s->duplicates++;
            ad_counter_inc(s->duplicates_c);
        }
        if (s->error_logged && !s->stalled) {
            AD_INFO_KV("redis alert writes recovered",
                       AD_KV_STR("address", ad_redis_conn_address(s->conn)));
            s->error_logged = false;
        }
        s->error_streak = 0;
        ack_done(s);
    } else {
        enum error_kind kind = classify(r);
        char text[256];
        if (r->type == REDIS_REPLY_ERROR)
            snprintf(text, sizeof text, "%.*s", (int)r->len, r->str);
        else
            snprintf(text, sizeof text, "unexpected reply of type %d to the alert script", r->type);
        e->state = ENTRY_PENDING;
        note_error(s, kind, text);
        if (needs_reconnect(r)) {
            /* on_lost runs inside and puts every entry in flight back. */
            ad_redis_conn_reset(s->conn, text);
            return;
        }
        if (kind == ERROR_NOSCRIPT) {
            /* The script cache was flushed (SCRIPT FLUSH, a restart behind a proxy): send
             * the script itself from now on; the next connection loads it again. */
            s->use_eval = true;
            if (!s->stalled)
                s->stall_noscript = true;
        } else {
            s->stall_noscript = false;
        }
        s->stalled = true;
    }
    if (s->stalled) {
        if (s->in_flight == 0 && !evtimer_pending(s->retry_timer, NULL))
            recover(s);
        return;
    }
    pump(s);
}

/* ---- sending ---- */

static int send_entry(struct ad_redis_sink *s, struct entry *e)
{
    const char *argv[14] = {
        s->use_eval ? "EVAL" : "EVALSHA",
        s->use_eval ? script : s->sha,
        "3",
        e->key,
        s->stream,
        s->hash,
        e->id,
        e->detector,
        e->entity,
        e->json,
        s->maxlen,
        e->field,
        s->channel,
        DEDUP_TTL_S,
    };
    size_t lens[14];
    for (int i = 0; i < 14; i++)
        lens[i] = strlen(argv[i]);
    lens[3] = e->key_len;
    lens[9] = e->json_len; /* the JSON may hold anything, NUL included */
    lens[11] = e->field_len;
    if (ad_redis_conn_command(s->conn, on_alert_reply, e, 14, argv, lens) != 0)
        return -1;
    e->state = ENTRY_IN_FLIGHT;
    e->sent_at = ad_clock_mono_seconds();
    s->in_flight++;
    return 0;
}

static void pump(struct ad_redis_sink *s)
{
    if (!s->script_ready || s->stalled || !ad_redis_conn_ready(s->conn))
        return;
    while (s->cursor && s->in_flight < MAX_IN_FLIGHT) {
        struct entry *e = s->cursor;
        if (e->state == ENTRY_PENDING && send_entry(s, e) != 0) {
            /* Out of memory in hiredis: try again after a pause. */
            note_error(s, ERROR_OTHER, "cannot queue a command (out of memory)");
            s->stalled = true;
            if (s->in_flight == 0)
                recover(s);
            return;
        }
        s->cursor = e->next;
    }
}

/* ---- the connection ---- */

static void on_script_loaded(void *arg, const redisReply *r)
{
    struct ad_redis_sink *s = arg;
    if (r->type == REDIS_REPLY_STRING && r->len == 40) {
        memcpy(s->sha, r->str, 40);
        s->sha[40] = '\0';
        s->use_eval = false;
    } else {
        char text[256];
        snprintf(text, sizeof text, "SCRIPT LOAD failed, sending the script with EVAL: %.*s",
                 r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
        note_error(s, classify(r), text);
        s->use_eval = true;
    }
    s->script_ready = true;
    s->cursor = s->head;
    pump(s);
}

static void on_ready(void *arg)
{
    struct ad_redis_sink *s = arg;
    const char *argv[] = {"SCRIPT", "LOAD", script};

    s->script_ready = false;
    s->stalled = s->stall_noscript = false;
    evtimer_del(s->retry_timer);
    if (ad_redis_conn_command(s->conn, on_script_loaded, s, 3, argv, NULL) != 0) {
        s->use_eval = true;
        s->script_ready = true;
        s->cursor = s->head;
        pump(s);
    }
}

static void on_lost(void *arg, const char *reason)
{
    struct ad_redis_sink *s = arg;
    (void)reason;
    /* Their replies will not come: all of them go again on the next connection, where the
     * dedup key makes those already written harmless. */
    for (struct entry *e = s->head; e; e = e->next)
        if (e->state == ENTRY_IN_FLIGHT)
            e->state = ENTRY_PENDING;
    s->in_flight = 0;
    s->script_ready = false;
    s->stalled = s->stall_noscript = false;
    evtimer_del(s->retry_timer);
    s->cursor = s->head;
}

/* ---- set-up ---- */

static void register_metrics(struct ad_redis_sink *s, struct ad_metrics *m)
{
    static const char alerts_help[] =
        "Alerts the Redis sink wrote, or found already written (a resend or a replay).";
    if (!m)
        return;
    s->written_c = ad_metrics_counter(m, "anomalyd_redis_alerts_total", alerts_help, "result",
                                      "written", NULL);
    s->duplicates_c = ad_metrics_counter(m, "anomalyd_redis_alerts_total", alerts_help, "result",
                                         "duplicate", NULL);
    for (int k = 0; k < N_ERROR_KINDS; k++)
        s->errors_c[k] = ad_metrics_counter(
            m, "anomalyd_redis_command_errors_total",
            "Error replies to the Redis sink's alert writes, by kind; each alert is retried.",
            "error", error_names[k], NULL);
    s->queue_g = ad_metrics_gauge(m, "anomalyd_redis_queue_alerts",
                                  "Alerts queued for Redis and not yet acknowledged.", NULL);
    s->duration =
        ad_metrics_histogram(m, "anomalyd_redis_command_duration_seconds",
                             "Time from sending an alert's write to Redis to its reply.",
                             ad_metrics_seconds_buckets, ad_metrics_seconds_buckets_len, NULL);
}

struct ad_redis_sink *ad_redis_sink_new(struct event_base *base,
                                        const struct ad_settings_redis_sink *settings,
                                        struct ad_metrics *metrics, ad_sink_ack_fn ack,
                                        void *ack_arg, char *errstr, size_t errstr_size)
{
    struct ad_redis_sink *s = NULL;

    if (!base || !settings || !settings->stream || !settings->hash || !settings->channel ||
        settings->stream_maxlen <= 0 || settings->queue_limit <= 0) {
        ad_errstr_set(errstr, errstr_size,
                      "the Redis sink needs a loop, a stream, a hash, a channel, a positive "
                      "stream_maxlen and queue_limit");
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->base = base;
    s->ack = ack;
    s->ack_arg = ack_arg;
    s->queue_limit = (size_t)settings->queue_limit;
    snprintf(s->maxlen, sizeof s->maxlen, "%" PRId64, settings->stream_maxlen);
    if (!(s->stream = strdup(settings->stream)) || !(s->hash = strdup(settings->hash)) ||
        !(s->channel = strdup(settings->channel)))
        goto oom;
    s->retry_timer = evtimer_new(base, on_retry_timer, s);
    s->stop_timer = evtimer_new(base, on_stop_timer, s);
    s->done_timer = evtimer_new(base, on_done_timer, s);
    if (!s->retry_timer || !s->stop_timer || !s->done_timer)
        goto oom;
    register_metrics(s, metrics);

    struct ad_redis_conn_options opts = {
        .base = base,
        .settings = settings,
        .name = "sink",
        .metrics = metrics,
        .handler = {.on_ready = on_ready, .on_lost = on_lost, .arg = s},
    };
    s->conn = ad_redis_conn_new(&opts, errstr, errstr_size);
    if (!s->conn)
        goto err;
    AD_INFO_KV("redis sink started", AD_KV_STR("address", ad_redis_conn_address(s->conn)),
               AD_KV_STR("stream", s->stream), AD_KV_STR("hash", s->hash),
               AD_KV_STR("channel", s->channel), AD_KV_INT("queue_limit", s->queue_limit));
    return s;

oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
err:
    ad_redis_sink_destroy(s);
    return NULL;
}

void ad_redis_sink_destroy(struct ad_redis_sink *s)
{
    if (!s)
        return;
    /* First, so that no reply callback can reach the entries freed below. */
    ad_redis_conn_destroy(s->conn);
    while (s->head) {
        struct entry *next = s->head->next;
        free(s->head);
        s->head = next;
    }
    /* A gauge shared with a sink that replaces this one on a reload: take out our part. */
    ad_gauge_add(s->queue_g, -(double)s->queued);
    if (s->retry_timer)
        event_free(s->retry_timer);
    if (s->stop_timer)
        event_free(s->stop_timer);
    if (s->done_timer)
        event_free(s->done_timer);
    free(s->stream);
    free(s->hash);
    free(s->channel);
    free(s);
}

/* ---- use ---- */

/* Copies len bytes and a NUL to *p, moves *p past them, returns where they start. */
static const char *put(char **p, const char *src, size_t len)
{
    char *start = *p;
    memcpy(start, src, len);
    start[len] = '\0';
    *p += len + 1;
    return start;
}

int ad_redis_sink_send(struct ad_redis_sink *s, const struct ad_alert_msg *msg, uint64_t token)
{
    const char *id = msg->id ? msg->id : "", *det = msg->detector ? msg->detector : "";
    const char *ent = msg->entity ? msg->entity : "";
    size_t id_len = strlen(id), det_len = strlen(det), ent_len = strlen(ent);
    size_t json_len = msg->json ? msg->json_len : 0, stream_len = strlen(s->stream);
    size_t key_len = stream_len + 4 + id_len, field_len = det_len + 1 + ent_len;
    struct entry *e =
        malloc(sizeof *e + id_len + det_len + ent_len + json_len + key_len + field_len + 6);
    if (!e)
        return -1;
    char *p = e->data;

    memset(e, 0, sizeof *e);
    e->sink = s;
    e->token = token;
    e->state = ENTRY_PENDING;
    e->id = put(&p, id, id_len);
    e->detector = put(&p, det, det_len);
    e->entity = put(&p, ent, ent_len);
    e->json = put(&p, msg->json ? msg->json : "", json_len);
    e->json_len = json_len;
    e->key = p; /* <stream>:id:<id> */
    p += sprintf(p, "%s:id:%s", s->stream, id) + 1;
    e->key_len = key_len;
    e->field = p; /* <detector>|<entity> */
    sprintf(p, "%s|%s", det, ent);
    e->field_len = field_len;

    if (s->tail)
        s->tail->next = e;
    else
        s->head = e;
    s->tail = e;
    if (!s->cursor)
        s->cursor = e;
    s->queued++;
    ad_gauge_add(s->queue_g, 1);
    pump(s);
    return 0;
}

bool ad_redis_sink_full(const struct ad_redis_sink *s)
{
    return s->queued >= s->queue_limit;
}

size_t ad_redis_sink_queued(const struct ad_redis_sink *s)
{
    return s->queued;
}

void ad_redis_sink_unacked(const struct ad_redis_sink *s, ad_sink_unacked_fn fn, void *arg)
{
    for (const struct entry *e = s->head; e; e = e->next) {
        struct ad_alert_msg msg = {.id = e->id,
                                   .detector = e->detector,
                                   .entity = e->entity,
                                   .json = e->json,
                                   .json_len = e->json_len};
        fn(arg, &msg, e->token);
    }
}

void ad_redis_sink_stop(struct ad_redis_sink *s, int64_t deadline_ms,
                        void (*done)(void *arg, bool flushed), void *arg)
{
    s->stopping = true;
    s->stop_done = done;
    s->stop_arg = arg;
    if (s->queued == 0) {
        finish_stop(s, true);
        return;
    }
    timer_add_ms(s->stop_timer, deadline_ms - ad_clock_mono_ms());
}

void ad_redis_sink_status(const struct ad_redis_sink *s, json_t *out)
{
    char when[64];
    json_t *conn = json_object();

    json_object_set_new(out, "address", json_string(ad_redis_conn_address(s->conn)));
    json_object_set_new(out, "connected", json_boolean(ad_redis_conn_ready(s->conn)));
    json_object_set_new(out, "stream", json_string(s->stream));
    json_object_set_new(out, "hash", json_string(s->hash));
    json_object_set_new(out, "channel", json_string(s->channel));
    json_object_set_new(out, "queued", json_integer((json_int_t)s->queued));
    json_object_set_new(out, "queue_limit", json_integer((json_int_t)s->queue_limit));
    json_object_set_new(out, "in_flight", json_integer((json_int_t)s->in_flight));
    json_object_set_new(out, "full", json_boolean(ad_redis_sink_full(s)));
    json_object_set_new(out, "written", json_integer((json_int_t)s->written));
    json_object_set_new(out, "duplicates", json_integer((json_int_t)s->duplicates));
    json_object_set_new(out, "errors", json_integer((json_int_t)s->errors));
    json_object_set_new(out, "script", json_string(s->use_eval ? "eval" : "evalsha"));
    json_t *err = s->last_error_at ? json_string(s->last_error) : json_null();
    json_object_set_new(out, "last_error", err ? err : json_string("(not UTF-8)"));
    if (s->last_error_at) {
        ad_clock_format(s->last_error_at, when, sizeof when);
        json_object_set_new(out, "last_error_at", json_string(when));
    }
    if (conn) {
        ad_redis_conn_status(s->conn, conn);
        json_object_set_new(out, "connection", conn);
    }
}
