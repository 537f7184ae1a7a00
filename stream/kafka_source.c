#include "stream/kafka_source.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/grow.h"
#include "config/kafka_source_rules.h"
#include "stream/kafka_conf.h"
#include "stream/kafka_wake.h"

#define AD_LOG_MODULE "kafka"
#include "base/log.h"

#define DEFAULT_BUDGET_MESSAGES 1000
#define DEFAULT_BUDGET_MS       10
/* Polls even without a wake-up, and stores the offsets that became safe, this often. */
#define SAFETY_INTERVAL_MS 500
/* How long a stop waits for the dead-letter topic to acknowledge what is in flight. */
#define DLQ_FLUSH_MS    5000
#define LOG_INTERVAL_MS 10000
/* How long a new assignment waits for the lookup of its commits before it starts without. */
#define LOOKUP_TIMEOUT_MS          10000
#define DEFAULT_COMMIT_INTERVAL_MS 5000
/* librdkafka's default max.poll.interval.ms, the longest a group join may take. */
#define DEFAULT_JOIN_BOUND_MS 300000

struct hold {
    size_t detector; /* n_detectors: a dead letter, held until acknowledged */
    int64_t bucket;  /* the dead letter's own offset for a dead letter */
    int64_t first_offset;
};

struct partition {
    ad_kafka_input input;
    size_t topic;
    int32_t partition;
    bool assigned;          /* handed to librdkafka (after its commit was looked up) */
    bool ahead;             /* paused by watermark alignment */
    int64_t last_processed; /* -1: nothing yet */
    /* The group's commit when the partition was assigned (-1: none): never committed below. */
    int64_t floor;
    /* Offsets below are read again to rebuild windows (-1: no replay), with the "done" times
     * of the commit they came from (n_detectors entries, NULL without replay). */
    int64_t replay_end;
    int64_t *replay_done_ms;
    struct hold *holds; /* buckets not yet done */
    size_t n_holds, cap_holds;
    /* Done buckets still within their detector's rebuild history: where a restart starts. */
    struct hold *history;
    size_t n_history, cap_history;
    int64_t committed;    /* the offset of the last commit sent, -1: none */
    char *committed_meta; /* and its metadata */
    /* Offsets out of range (docs/windows.md, "Offsets out of range"): how often, whether the
     * partition stopped on one (auto.offset.reset=error) or was reset and has read nothing
     * since (a partition behind retention resets again and again), and the last report. */
    uint64_t offset_resets;
    bool reset_unread, stopped_out_of_range;
    int64_t last_error_at; /* wall clock, ms; 0: none */
    char last_error[256];
    struct ad_log_ratelimit reset_log;
};

struct dead_letter {
    struct ad_kafka_source *source;
    ad_kafka_input input;
    int64_t offset;
};

struct ad_kafka_source {
    struct event_base *base;
    const struct ad_settings_source *settings;
    const char *group_id;
    const char *reset_policy; /* auto.offset.reset as the consumer has it */
    size_t n_detectors;
    struct ad_kafka_source_detector *detectors; /* NULL: no rebuild points */
    int64_t *released_through;                  /* per detector: bucket index, INT64_MIN */
    struct ad_kafka_source_handler handler;
    struct ad_log_rules *rules;
    size_t budget_messages;
    int64_t budget_ms;
    int64_t commit_interval_ms, next_commit;

    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    rd_kafka_queue_t *lookups;  /* answers to the commit lookups of new assignments */
    struct ad_kafka_wake *wake; /* queue and lookups */
    struct event *safety_timer;
    /* An assignment waiting for its commits to be looked up (NULL: none). */
    rd_kafka_topic_partition_list_t *assigning;

    rd_kafka_t *dlq;
    rd_kafka_queue_t *dlq_queue;
    struct ad_kafka_wake *dlq_wake;
    size_t dlq_in_flight;

    struct partition *partitions;
    size_t n_partitions, cap_partitions;

    bool stopping, paused;
    /* Subscribed (or to be, once ad_kafka_source_start is called), and waiting for the group
     * to assign partitions and for their commits: since when (wall clock, ms; INT64_MIN: not
     * waiting), and for how long at most (the group's rebalance timeout). */
    bool subscribed;
    int64_t joining_since, join_bound_ms;
    int64_t stop_deadline;
    void (*stop_done)(void *);
    void *stop_done_arg;

    struct ad_log_ratelimit reject_log[AD_REJECT_COUNT];
    struct ad_log_ratelimit error_log;

    struct {
        uint64_t accepted, filtered, rejected, errors, dead_letters, dead_letters_failed;
        uint64_t replayed, offset_resets;
    } counts;
    struct ad_counter *accepted_total, *filtered_total, *rejected_total;
    struct ad_counter *rejected_by_reason[AD_REJECT_COUNT];
    struct ad_counter *errors_total, *commits_ok, *commits_failed;
    struct ad_counter *dead_letters_ok, *dead_letters_failed;
    struct ad_counter *assigned_total, *revoked_total;
    struct ad_counter *replayed_total, *lookups_failed, *ahead_total, *offset_resets_total;
    struct ad_gauge *partitions_gauge, *paused_gauge, *ahead_gauge;
};

/* ---- partitions and holds ---- */

static struct partition *find_partition(struct ad_kafka_source *s, ad_kafka_input input)
{
    for (size_t i = 0; i < s->n_partitions; i++)
        if (s->partitions[i].input == input)
            return &s->partitions[i];
    return NULL;
}

static ssize_t topic_index(const struct ad_kafka_source *s, const char *topic)
{
    const struct ad_strlist *topics = &s->settings->kafka.topics;
    for (size_t i = 0; i < topics->len; i++)
        if (strcmp(topics->items[i], topic) == 0)
            return (ssize_t)i;
    return -1;
}

static struct partition *partition_of(struct ad_kafka_source *s, const char *topic, int32_t p)
{
    ssize_t t = topic_index(s, topic);
    return t < 0 ? NULL : find_partition(s, AD_KAFKA_INPUT((int32_t)t, p));
}

/* A list of the partitions handed to librdkafka (but those alignment holds, with
 * skip_ahead). */
static rd_kafka_topic_partition_list_t *assigned_list(struct ad_kafka_source *s, bool skip_ahead)
{
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(s->n_partitions ? (int)s->n_partitions : 1);
    const struct ad_strlist *topics = &s->settings->kafka.topics;
    for (size_t i = 0; i < s->n_partitions; i++)
        if (s->partitions[i].assigned && !(skip_ahead && s->partitions[i].ahead))
            rd_kafka_topic_partition_list_add(parts, topics->items[s->partitions[i].topic],
                                              s->partitions[i].partition);
    return parts;
}

void ad_kafka_source_pause(struct ad_kafka_source *s, bool paused)
{
    if (!s || s->paused == paused || s->stopping)
        return;
    rd_kafka_topic_partition_list_t *parts = assigned_list(s, !paused);
    rd_kafka_resp_err_t err =
        paused ? rd_kafka_pause_partitions(s->rk, parts) : rd_kafka_resume_partitions(s->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        AD_ERROR_KV(paused ? "cannot pause fetching" : "cannot resume fetching",
                    AD_KV_STR("source", s->settings->name),
                    AD_KV_STR("error", rd_kafka_err2str(err)));
        return;
    }
    s->paused = paused;
    ad_gauge_set(s->paused_gauge, paused ? 1 : 0);
    AD_DEBUG_KV(paused ? "fetching paused: scoring or a sink is behind, or a stop"
                       : "fetching resumed",
                AD_KV_STR("source", s->settings->name));
}

static void update_ahead_gauge(struct ad_kafka_source *s)
{
    size_t ahead = 0;
    for (size_t i = 0; i < s->n_partitions; i++)
        ahead += s->partitions[i].ahead;
    ad_gauge_set(s->ahead_gauge, (double)ahead);
}

void ad_kafka_source_pause_partition(struct ad_kafka_source *s, ad_kafka_input input, bool paused)
{
    struct partition *ps = find_partition(s, input);
    if (!ps || ps->ahead == paused)
        return;
    ps->ahead = paused;
    update_ahead_gauge(s);
    if (paused)
        ad_counter_inc(s->ahead_total);
    if (!ps->assigned || s->paused || s->stopping)
        return; /* the back-pressure pause, or the assignment, decides for now */
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, s->settings->kafka.topics.items[ps->topic],
                                      ps->partition);
    rd_kafka_resp_err_t err =
        paused ? rd_kafka_pause_partitions(s->rk, parts) : rd_kafka_resume_partitions(s->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err)
        AD_ERROR_KV(paused ? "cannot pause a partition" : "cannot resume a partition",
                    AD_KV_STR("source", s->settings->name), AD_KV_INT("partition", ps->partition),
                    AD_KV_STR("error", rd_kafka_err2str(err)));
    AD_DEBUG_KV(paused ? "a partition is too far ahead of the others: paused"
                       : "a partition is close enough again: resumed",
                AD_KV_STR("source", s->settings->name), AD_KV_INT("partition", ps->partition));
}

const char *ad_kafka_source_topic(const struct ad_kafka_source *s, ad_kafka_input input)
{
    size_t t = (size_t)(input >> 20);
    return t < s->settings->kafka.topics.len ? s->settings->kafka.topics.items[t] : "?";
}

static size_t assigned_count(const struct ad_kafka_source *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_partitions; i++)
        n += s->partitions[i].assigned;
    return n;
}

static struct partition *add_partition(struct ad_kafka_source *s, size_t topic, int32_t p)
{
    ad_kafka_input input = AD_KAFKA_INPUT((int32_t)topic, p);
    struct partition *ps = find_partition(s, input);
    if (ps)
        return ps;
    if (ad_grow(&s->partitions, &s->cap_partitions, s->n_partitions + 1, sizeof *s->partitions) < 0)
        return NULL;
    ps = &s->partitions[s->n_partitions++];
    *ps = (struct partition){.input = input,
                             .topic = topic,
                             .partition = p,
                             .last_processed = -1,
                             .floor = -1,
                             .replay_end = -1,
                             .committed = -1,
                             .reset_log = {.interval_ms = LOG_INTERVAL_MS}};
    return ps;
}

static void remove_partition(struct ad_kafka_source *s, struct partition *ps)
{
    free(ps->holds);
    free(ps->history);
    free(ps->replay_done_ms);
    free(ps->committed_meta);
    *ps = s->partitions[--s->n_partitions];
}

/* Appends to a hold array; false when out of memory. */
static bool push_hold(struct hold **holds, size_t *n, size_t *cap, struct hold h)
{
    if (ad_grow(holds, cap, *n + 1, sizeof **holds) < 0)
        return false;
    (*holds)[(*n)++] = h;
    return true;
}

static void add_hold(struct partition *ps, size_t detector, int64_t bucket, int64_t offset)
{
    for (size_t i = 0; i < ps->n_holds; i++)
        if (ps->holds[i].detector == detector && ps->holds[i].bucket == bucket)
            return; /* offsets only grow: the first one stays the earliest */
    if (!push_hold(&ps->holds, &ps->n_holds, &ps->cap_holds,
                   (struct hold){detector, bucket, offset}))
        AD_ERROR("out of memory holding an offset; it may be committed early");
}

/* The offset to restart from: the earliest message something still depends on, else the one
 * after the last processed; never below what the group had committed. */
static int64_t commit_offset(const struct partition *ps)
{
    int64_t safe = ps->last_processed + 1;
    for (size_t i = 0; i < ps->n_holds; i++)
        if (ps->holds[i].first_offset < safe)
            safe = ps->holds[i].first_offset;
    return safe > ps->floor ? safe : ps->floor;
}

/* The offset to read again from after a restart: the earliest message of a bucket not yet done
 * or still within its detector's rebuild history. */
static int64_t replay_offset(const struct partition *ps, int64_t commit)
{
    int64_t from = commit;
    for (size_t i = 0; i < ps->n_holds; i++)
        if (ps->holds[i].first_offset < from)
            from = ps->holds[i].first_offset;
    for (size_t i = 0; i < ps->n_history; i++)
        if (ps->history[i].first_offset < from)
            from = ps->history[i].first_offset;
    return from;
}

/* Kafka's default bound on a commit's metadata (offset.metadata.max.bytes). */
#define METADATA_MAX 4096

/* The "done" part of every partition's metadata (docs/delivery.md): per detector, the end of
 * the newest bucket whose alerts were all acknowledged. The same for every partition of a
 * commit, so made once per commit. Returns a string to free; NULL without detectors to name,
 * when there are too many of them to fit the metadata (a restart then rebuilds windows but may
 * notify again what it had notified; the sinks' ids make that visible), or out of memory. */
static char *done_json(const struct ad_kafka_source *s)
{
    json_t *done = json_object();
    for (size_t d = 0; s->detectors && d < s->n_detectors; d++)
        if (s->released_through[d] != INT64_MIN)
            json_object_set_new(
                done, s->detectors[d].name,
                json_integer((json_int_t)((s->released_through[d] + 1) * s->detectors[d].step)));
    char *text = json_object_size(done) ? json_dumps(done, JSON_COMPACT) : NULL;
    json_decref(done);
    if (text && strlen(text) > METADATA_MAX - 64) {
        free(text);
        text = NULL;
    }
    return text;
}

/* A partition's metadata: {"anomalyd":1,"replay_from":N,"done":{...}}. Returns a string to
 * free, or NULL when out of memory. */
static char *commit_metadata(const struct partition *ps, int64_t commit, const char *done)
{
    char text[METADATA_MAX];
    int n =
        snprintf(text, sizeof text, "{\"anomalyd\":1,\"replay_from\":%lld%s%s}",
                 (long long)replay_offset(ps, commit), done ? ",\"done\":" : "", done ? done : "");
    return n > 0 && (size_t)n < sizeof text ? strdup(text) : NULL;
}

static bool in_list(const rd_kafka_topic_partition_list_t *list, const char *topic, int32_t p)
{
    return rd_kafka_topic_partition_list_find(list, topic, p) != NULL;
}

/* Commits, for each assigned partition (or each of only's), the offset to restart from and its
 * rebuild point, when either changed since the last commit. Asynchronous: on_commit has the
 * outcome. */
static void commit_offsets(struct ad_kafka_source *s, const rd_kafka_topic_partition_list_t *only)
{
    rd_kafka_topic_partition_list_t *list = NULL;
    const struct ad_strlist *topics = &s->settings->kafka.topics;
    char *done = done_json(s);
    for (size_t i = 0; i < s->n_partitions; i++) {
        struct partition *ps = &s->partitions[i];
        const char *topic = topics->items[ps->topic];
        if (!ps->assigned || (only && !in_list(only, topic, ps->partition)))
            continue;
        int64_t offset = commit_offset(ps);
        if (offset <= 0)
            continue; /* nothing read yet, nothing committed before */
        char *meta = commit_metadata(ps, offset, done);
        if (!meta)
            continue;
        if (offset == ps->committed && ps->committed_meta &&
            strcmp(meta, ps->committed_meta) == 0) {
            free(meta);
            continue;
        }
        if (!list)
            list = rd_kafka_topic_partition_list_new((int)s->n_partitions);
        rd_kafka_topic_partition_t *elem =
            rd_kafka_topic_partition_list_add(list, topic, ps->partition);
        elem->offset = offset;
        free(ps->committed_meta);
        ps->committed_meta = strdup(meta);
        ps->committed = ps->committed_meta ? offset : -1;
        elem->metadata = meta; /* the list frees it */
        elem->metadata_size = strlen(meta);
    }
    free(done);
    if (!list)
        return;
    rd_kafka_resp_err_t err = rd_kafka_commit(s->rk, list, 1);
    if (err) {
        ad_counter_inc(s->commits_failed);
        AD_WARN_KV("cannot commit offsets", AD_KV_STR("source", s->settings->name),
                   AD_KV_STR("error", rd_kafka_err2str(err)));
        for (int i = 0; i < list->cnt; i++) {
            struct partition *ps = partition_of(s, list->elems[i].topic, list->elems[i].partition);
            if (ps)
                ps->committed = -1; /* the next round tries again */
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
}

void ad_kafka_source_hold(struct ad_kafka_source *s, ad_kafka_input input, int64_t offset,
                          size_t detector, int64_t bucket)
{
    struct partition *ps = find_partition(s, input);
    if (ps)
        add_hold(ps, detector, bucket, offset);
}

void ad_kafka_source_release(struct ad_kafka_source *s, size_t detector, int64_t bucket)
{
    if (detector < s->n_detectors && bucket > s->released_through[detector])
        s->released_through[detector] = bucket;
    int64_t keep_after = INT64_MIN;
    if (s->detectors && detector < s->n_detectors)
        keep_after = s->released_through[detector] - s->detectors[detector].history_buckets;
    for (size_t i = 0; i < s->n_partitions; i++) {
        struct partition *ps = &s->partitions[i];
        for (size_t h = 0; h < ps->n_holds;) {
            struct hold held = ps->holds[h];
            if (held.detector == detector && held.bucket <= bucket) {
                ps->holds[h] = ps->holds[--ps->n_holds];
                /* Without room for its history, a restart rebuilds a shorter one. */
                if (held.bucket > keep_after)
                    push_hold(&ps->history, &ps->n_history, &ps->cap_history, held);
            } else {
                h++;
            }
        }
        for (size_t h = 0; h < ps->n_history;) {
            if (ps->history[h].detector == detector && ps->history[h].bucket <= keep_after)
                ps->history[h] = ps->history[--ps->n_history];
            else
                h++;
        }
    }
}

static void release_dead_letter(struct ad_kafka_source *s, ad_kafka_input input, int64_t offset)
{
    struct partition *ps = find_partition(s, input);
    if (!ps)
        return;
    for (size_t h = 0; h < ps->n_holds; h++) {
        if (ps->holds[h].detector == s->n_detectors && ps->holds[h].bucket == offset) {
            ps->holds[h] = ps->holds[--ps->n_holds];
            return;
        }
    }
}

/* ---- librdkafka callbacks (all served by polls on the loop thread) ---- */

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct ad_kafka_source *s = opaque;
    uint64_t held;
    (void)rk;
    s->counts.errors++;
    ad_counter_inc(s->errors_total);
    if (ad_log_ratelimit_allow(&s->error_log, ad_clock_mono_ms(), &held))
        AD_WARN_KV("Kafka client error", AD_KV_STR("source", s->settings->name),
                   AD_KV_STR("error", rd_kafka_err2name((rd_kafka_resp_err_t)err)),
                   AD_KV_STR("reason", reason), AD_KV_INT("suppressed", held));
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    struct ad_kafka_source *s = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return; /* nothing to commit */
    bool failed = err != RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        if (!offsets->elems[i].err)
            continue;
        failed = true;
        if (!err)
            err = offsets->elems[i].err;
        struct partition *ps =
            partition_of(s, offsets->elems[i].topic, offsets->elems[i].partition);
        if (ps)
            ps->committed = -1; /* the next round commits it again */
    }
    if (failed) {
        ad_counter_inc(s->commits_failed);
        AD_WARN_KV("offset commit failed", AD_KV_STR("source", s->settings->name),
                   AD_KV_STR("error", rd_kafka_err2str(err)));
    } else {
        ad_counter_inc(s->commits_ok);
    }
}

/* ---- offsets out of range ---- */

/* librdkafka asked for an offset the broker no longer (or not yet) has: a partition behind
 * retention, a commit past the end. It resets the offset per auto.offset.reset, or with
 * "error" stops fetching the partition (stopped) until it is assigned again. ps is NULL when
 * the partition is not known here. */
static void note_reset(struct ad_kafka_source *s, struct partition *ps, const char *topic,
                       int32_t partition, int64_t offset, const char *why, bool stopped)
{
    uint64_t held = 0;
    s->counts.offset_resets++;
    ad_counter_inc(s->offset_resets_total);
    if (ps) {
        ps->offset_resets++;
        ps->reset_unread = !stopped;
        ps->stopped_out_of_range = stopped;
        ps->last_error_at = ad_clock_wall_ms();
        snprintf(ps->last_error, sizeof ps->last_error, "%s", why);
    }
    /* One line per partition per interval: a partition behind retention resets every
     * second or so, and librdkafka's own line for each is left out (on_client_log). */
    struct ad_log_ratelimit *rl = ps ? &ps->reset_log : &s->error_log;
    if (!ad_log_ratelimit_allow(rl, ad_clock_mono_ms(), &held))
        return;
    if (stopped)
        AD_ERROR_KV("offset out of range: the partition stopped (auto.offset.reset is error) "
                    "until it is assigned again",
                    AD_KV_STR("source", s->settings->name), AD_KV_STR("topic", topic),
                    AD_KV_INT("partition", partition), AD_KV_INT("offset", offset),
                    AD_KV_INT("resets", ps ? ps->offset_resets : 0), AD_KV_STR("reason", why),
                    AD_KV_INT("suppressed", held));
    else
        AD_WARN_KV("offset out of range: the partition's offset was reset; what lay between "
                   "was not read",
                   AD_KV_STR("source", s->settings->name), AD_KV_STR("topic", topic),
                   AD_KV_INT("partition", partition), AD_KV_INT("offset", offset),
                   AD_KV_STR("auto_offset_reset", s->reset_policy),
                   AD_KV_INT("resets", ps ? ps->offset_resets : 0), AD_KV_STR("reason", why),
                   AD_KV_INT("suppressed", held));
}

/* librdkafka 2.0.2 reports a reset it made after an error only as a log line (facility
 * OFFSET): "[thrd:main]: TOPIC [P]: offset reset (at offset N, broker B) to ...: REASON".
 * Returns whether buf was one, and notes it. */
static bool offset_reset_line(struct ad_kafka_source *s, const char *buf)
{
    static const char marker[] = "]: offset reset (at ";
    const char *mark = strstr(buf, marker);
    if (!mark)
        return false;
    const char *open = mark;
    while (open > buf && open[-1] != '[')
        open--;
    if (open == buf || open - 1 == buf || open[-2] != ' ')
        return false;
    const char *topic_end = open - 2, *topic_start = topic_end;
    while (topic_start > buf && topic_start[-1] != ' ')
        topic_start--;
    char topic[256];
    size_t len = (size_t)(topic_end - topic_start);
    if (len == 0 || len >= sizeof topic)
        return false;
    memcpy(topic, topic_start, len);
    topic[len] = '\0';
    char *end;
    long p = strtol(open, &end, 10);
    if (end != mark || p < 0 || p > INT32_MAX)
        return false;
    const char *at = mark + sizeof marker - 1;
    int64_t offset = strncmp(at, "offset ", 7) == 0 ? strtoll(at + 7, NULL, 10) : -1;
    note_reset(s, partition_of(s, topic, (int32_t)p), topic, (int32_t)p, offset, mark + 3, false);
    return true;
}

/* The consumer's log lines, on the loop thread like the daemon's own (log.queue). */
static void on_client_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct ad_kafka_source *s = rd_kafka_opaque(rk);
    if (s && level <= 4 && strcmp(fac, "OFFSET") == 0 && offset_reset_line(s, buf))
        return;
    ad_kafka_conf_log(rk, level, fac, buf);
}

/* ---- assignments and their rebuild points ---- */

/* Reads a commit's metadata into ps; false when it is not ours or not for a replay. */
static bool read_rebuild_point(struct ad_kafka_source *s, struct partition *ps, int64_t committed,
                               const void *metadata, size_t size, int64_t *replay_from)
{
    if (!s->detectors || committed <= 0 || !metadata || size == 0)
        return false;
    json_t *meta = json_loadb(metadata, size, 0, NULL);
    json_t *from = json_object_get(meta, "replay_from");
    json_t *done = json_object_get(meta, "done");
    bool ok = json_integer_value(json_object_get(meta, "anomalyd")) == 1 && json_is_integer(from) &&
              json_integer_value(from) >= 0 && json_integer_value(from) < committed;
    if (ok) {
        free(ps->replay_done_ms);
        ps->replay_done_ms = malloc(s->n_detectors * sizeof *ps->replay_done_ms);
        ok = ps->replay_done_ms != NULL;
    }
    if (ok) {
        for (size_t d = 0; d < s->n_detectors; d++) {
            json_t *end = json_object_get(done, s->detectors[d].name);
            ps->replay_done_ms[d] = json_is_integer(end) ? json_integer_value(end) : INT64_MIN;
        }
        *replay_from = json_integer_value(from);
    }
    json_decref(meta);
    return ok;
}

/* Hands the assignment waiting in s->assigning to librdkafka, each partition starting at its
 * rebuild point, its commit, or (found NULL: the lookup failed) wherever librdkafka would. */
static void finish_assign(struct ad_kafka_source *s, const rd_kafka_topic_partition_list_t *found)
{
    rd_kafka_topic_partition_list_t *parts = s->assigning;
    size_t replaying = 0;
    s->assigning = NULL;
    s->joining_since = INT64_MIN;
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *elem = &parts->elems[i];
        struct partition *ps = partition_of(s, elem->topic, elem->partition);
        const rd_kafka_topic_partition_t *commit =
            found ? rd_kafka_topic_partition_list_find(found, elem->topic, elem->partition) : NULL;
        if (!ps)
            continue;
        ps->assigned = true;
        ps->stopped_out_of_range = false; /* fetching starts over */
        ps->reset_unread = false;
        bool known = commit && !commit->err && commit->offset >= 0;
        if (ps->last_processed >= 0) {
            /* Back after a revocation (a rebalance, a lost session): what it read before is in
             * the windows still, held where its buckets are not done; read on after it. */
            elem->offset = ps->last_processed + 1;
            if (known) {
                ps->floor = commit->offset;
                if (commit->offset > elem->offset)
                    elem->offset = commit->offset; /* another consumer read on meanwhile */
            }
            AD_INFO_KV("a partition came back; reading on where this consumer left it",
                       AD_KV_STR("source", s->settings->name), AD_KV_STR("topic", elem->topic),
                       AD_KV_INT("partition", elem->partition), AD_KV_INT("from", elem->offset));
            continue;
        }
        if (!known)
            continue; /* librdkafka looks the commit up itself, or starts per auto.offset.reset */
        int64_t from;
        ps->floor = commit->offset;
        elem->offset = commit->offset;
        if (read_rebuild_point(s, ps, commit->offset, commit->metadata, commit->metadata_size,
                               &from)) {
            ps->replay_end = commit->offset;
            elem->offset = from;
            replaying++;
            AD_INFO_KV("reading a partition again from its rebuild point",
                       AD_KV_STR("source", s->settings->name), AD_KV_STR("topic", elem->topic),
                       AD_KV_INT("partition", elem->partition), AD_KV_INT("from", from),
                       AD_KV_INT("committed", commit->offset));
        }
    }
    /* The eager protocol (docs/delivery.md, "Rebalances"): parts is the whole assignment. */
    rd_kafka_resp_err_t err = rd_kafka_assign(s->rk, parts);
    if (err)
        AD_ERROR_KV("cannot take the assigned partitions", AD_KV_STR("source", s->settings->name),
                    AD_KV_STR("error", rd_kafka_err2str(err)));
    else if (s->paused) /* new partitions wait with the others */
        rd_kafka_pause_partitions(s->rk, parts);
    AD_INFO_KV("partitions assigned", AD_KV_STR("source", s->settings->name),
               AD_KV_INT("partitions", parts->cnt), AD_KV_INT("replaying", replaying),
               AD_KV_INT("assigned_now", assigned_count(s)));
    ad_gauge_set(s->partitions_gauge, (double)assigned_count(s));
    rd_kafka_topic_partition_list_destroy(parts);
}

/* Asks the group coordinator for the commits of the assignment waiting in s->assigning; the
 * answer comes to the lookups queue. */
static void look_up_commits(struct ad_kafka_source *s)
{
    char why[256];
    rd_kafka_AdminOptions_t *options =
        rd_kafka_AdminOptions_new(s->rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
    rd_kafka_ListConsumerGroupOffsets_t *request =
        rd_kafka_ListConsumerGroupOffsets_new(s->group_id, s->assigning);
    if (!options || !request ||
        rd_kafka_AdminOptions_set_request_timeout(options, LOOKUP_TIMEOUT_MS, why, sizeof why)) {
        if (request)
            rd_kafka_ListConsumerGroupOffsets_destroy(request);
        if (options)
            rd_kafka_AdminOptions_destroy(options);
        ad_counter_inc(s->lookups_failed);
        finish_assign(s, NULL);
        return;
    }
    rd_kafka_ListConsumerGroupOffsets(s->rk, &request, 1, options, s->lookups);
    rd_kafka_ListConsumerGroupOffsets_destroy(request);
    rd_kafka_AdminOptions_destroy(options);
}

static void on_lookup(struct ad_kafka_source *s, rd_kafka_event_t *ev)
{
    const rd_kafka_ListConsumerGroupOffsets_result_t *result =
        rd_kafka_event_ListConsumerGroupOffsets_result(ev);
    const rd_kafka_topic_partition_list_t *found = NULL;
    const char *error = rd_kafka_event_error(ev) ? rd_kafka_event_error_string(ev) : NULL;
    size_t n = 0;
    const rd_kafka_group_result_t **groups =
        result ? rd_kafka_ListConsumerGroupOffsets_result_groups(result, &n) : NULL;
    if (!error && n == 1) {
        const rd_kafka_error_t *group_error = rd_kafka_group_result_error(groups[0]);
        if (group_error)
            error = rd_kafka_error_string(group_error);
        else
            found = rd_kafka_group_result_partitions(groups[0]);
    }
    if (!s->assigning)
        return;
    if (!found) {
        /* Without the rebuild points the partitions start at their commits, as librdkafka
         * looks them up: nothing is lost, only the windows start empty. */
        ad_counter_inc(s->lookups_failed);
        AD_WARN_KV("cannot look up the committed offsets; windows are not rebuilt",
                   AD_KV_STR("source", s->settings->name),
                   AD_KV_STR("error", error ? error : "no answer for the group"));
    }
    finish_assign(s, found);
}

static void poll_lookups(struct ad_kafka_source *s)
{
    rd_kafka_event_t *ev;
    while (s->lookups && (ev = rd_kafka_queue_poll(s->lookups, 0))) {
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_LISTCONSUMERGROUPOFFSETS_RESULT)
            on_lookup(s, ev);
        rd_kafka_event_destroy(ev);
    }
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct ad_kafka_source *s = opaque;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            ssize_t t = topic_index(s, parts->elems[i].topic);
            if (t < 0 || !add_partition(s, (size_t)t, parts->elems[i].partition))
                continue;
            ad_counter_inc(s->assigned_total);
            if (s->handler.on_assign)
                s->handler.on_assign(s->handler.arg,
                                     AD_KAFKA_INPUT((int32_t)t, parts->elems[i].partition));
        }
        /* librdkafka waits for the assign call (the group does not move on meanwhile), so the
         * partitions can start where their rebuild points say, once the lookup answers. */
        if (s->assigning)
            rd_kafka_topic_partition_list_destroy(s->assigning);
        s->assigning = rd_kafka_topic_partition_list_copy(parts);
        if (s->detectors && parts->cnt > 0)
            look_up_commits(s);
        else
            finish_assign(s, NULL);
        return;
    }
    /* The eager protocol revokes the whole assignment, including one still waiting for its
     * lookup (never handed to librdkafka, so not in parts): that one is void now. */
    rd_kafka_topic_partition_list_t *pending = s->assigning;
    s->assigning = NULL;
    /* The eager protocol assigns again once every member has rejoined. */
    if (!s->stopping)
        s->joining_since = ad_clock_wall_ms();
    /* Commit what is safe first: these partitions may be read by another consumer next. */
    commit_offsets(s, parts);
    const struct ad_strlist *topics = &s->settings->kafka.topics;
    for (size_t i = 0; i < s->n_partitions; i++) {
        struct partition *ps = &s->partitions[i];
        const char *topic = topics->items[ps->topic];
        if (!ps->assigned && !in_list(parts, topic, ps->partition) &&
            !(pending && in_list(pending, topic, ps->partition)))
            continue;
        ad_counter_inc(s->revoked_total);
        if (s->handler.on_revoke)
            s->handler.on_revoke(s->handler.arg, ps->input);
        /* The record stays: its holds still guard the buckets its events fed, and should the
         * partition come back, what was read need not be read again. */
        ps->assigned = false;
        ps->replay_end = -1;
        ps->ahead = false; /* alignment starts over if it comes back */
    }
    if (pending)
        rd_kafka_topic_partition_list_destroy(pending);
    rd_kafka_resp_err_t unassigned = rd_kafka_assign(rk, NULL);
    if (unassigned)
        AD_ERROR_KV("rebalance failed", AD_KV_STR("source", s->settings->name),
                    AD_KV_STR("error", rd_kafka_err2str(unassigned)));
    ad_gauge_set(s->partitions_gauge, (double)assigned_count(s));
    update_ahead_gauge(s);
    AD_INFO_KV("partitions revoked", AD_KV_STR("source", s->settings->name),
               AD_KV_INT("partitions", parts->cnt), AD_KV_INT("assigned_now", assigned_count(s)));
}

static void on_dead_letter(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct ad_kafka_source *s = opaque;
    struct dead_letter *dl = m->_private;
    (void)rk;
    if (m->err) {
        s->counts.dead_letters_failed++;
        ad_counter_inc(s->dead_letters_failed);
        AD_ERROR_KV("dead letter not delivered; the event is lost",
                    AD_KV_STR("source", s->settings->name),
                    AD_KV_STR("error", rd_kafka_err2str(m->err)));
    } else {
        s->counts.dead_letters++;
        ad_counter_inc(s->dead_letters_ok);
    }
    if (dl) {
        release_dead_letter(s, dl->input, dl->offset);
        free(dl);
    }
    s->dlq_in_flight--;
}

/* ---- messages ---- */

static void dead_letter(struct ad_kafka_source *s, const rd_kafka_message_t *m,
                        struct partition *ps, enum ad_reject_reason reason)
{
    struct dead_letter *dl = malloc(sizeof *dl);
    char partition[16], offset[24];
    if (!dl)
        return;
    *dl = (struct dead_letter){s, ps->input, m->offset};
    snprintf(partition, sizeof partition, "%d", (int)m->partition);
    snprintf(offset, sizeof offset, "%lld", (long long)m->offset);
    const char *reason_name = ad_reject_reason_name(reason);
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        s->dlq, RD_KAFKA_V_TOPIC(s->settings->kafka.dead_letter_topic),
        RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_KEY(m->key, m->key_len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADER("anomalyd-reason", reason_name, -1),
        RD_KAFKA_V_HEADER("anomalyd-source", s->settings->name, -1),
        RD_KAFKA_V_HEADER("anomalyd-topic", topic, -1),
        RD_KAFKA_V_HEADER("anomalyd-partition", partition, -1),
        RD_KAFKA_V_HEADER("anomalyd-offset", offset, -1), RD_KAFKA_V_OPAQUE(dl), RD_KAFKA_V_END);
    if (err) {
        free(dl);
        s->counts.dead_letters_failed++;
        ad_counter_inc(s->dead_letters_failed);
        AD_ERROR_KV("cannot produce a dead letter", AD_KV_STR("source", s->settings->name),
                    AD_KV_STR("error", rd_kafka_err2str(err)));
        return;
    }
    s->dlq_in_flight++;
    add_hold(ps, s->n_detectors, m->offset, m->offset);
}

static void reject(struct ad_kafka_source *s, const rd_kafka_message_t *m, struct partition *ps,
                   enum ad_reject_reason reason)
{
    uint64_t held;
    s->counts.rejected++;
    ad_counter_inc(s->rejected_total);
    ad_counter_inc(s->rejected_by_reason[reason]);
    if (ad_log_ratelimit_allow(&s->reject_log[reason], ad_clock_mono_ms(), &held))
        AD_WARN_KV("event rejected", AD_KV_STR("source", s->settings->name),
                   AD_KV_STR("reason", ad_reject_reason_name(reason)),
                   AD_KV_STR("topic", rd_kafka_topic_name(m->rkt)),
                   AD_KV_INT("partition", m->partition), AD_KV_INT("offset", m->offset),
                   AD_KV_INT("suppressed", held));
    if (s->dlq)
        dead_letter(s, m, ps, reason);
}

/* A message read again to rebuild windows: handed on with its rebuild point, and counted
 * apart, since it was counted (and, if rejected, dead-lettered) the first time. */
static void replay(struct ad_kafka_source *s, rd_kafka_message_t *m, struct partition *ps)
{
    struct ad_log_event ev;
    s->counts.replayed++;
    ad_counter_inc(s->replayed_total);
    if (m->len <= (size_t)s->settings->kafka.max_message_bytes) {
        rd_kafka_timestamp_type_t type;
        int64_t ts = rd_kafka_message_timestamp(m, &type);
        if (ad_log_rules_apply(s->rules, m->payload ? m->payload : "", m->len, ts,
                               ad_clock_wall_ms(), &ev) == AD_LOG_ACCEPTED)
            s->handler.on_event(s->handler.arg, ps->input, m->offset, &ev, ps->replay_done_ms);
    }
}

static void process(struct ad_kafka_source *s, rd_kafka_message_t *m)
{
    if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET) {
        /* auto.offset.reset=error: librdkafka has stopped fetching the partition. */
        const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "";
        s->counts.errors++;
        ad_counter_inc(s->errors_total);
        note_reset(s, partition_of(s, topic, m->partition), topic, m->partition, m->offset,
                   rd_kafka_message_errstr(m), true);
        return;
    }
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            on_error(s->rk, m->err, rd_kafka_message_errstr(m), s);
        return;
    }
    ssize_t t = topic_index(s, rd_kafka_topic_name(m->rkt));
    struct partition *ps =
        t < 0 ? NULL : find_partition(s, AD_KAFKA_INPUT((int32_t)t, m->partition));
    if (!ps || !ps->assigned)
        return; /* from a partition revoked meanwhile */
    ps->reset_unread = false;

    if (m->offset < ps->replay_end) {
        replay(s, m, ps);
    } else {
        if (ps->replay_end >= 0) {
            AD_INFO_KV("partition rebuilt; reading new events",
                       AD_KV_STR("source", s->settings->name),
                       AD_KV_STR("topic", rd_kafka_topic_name(m->rkt)),
                       AD_KV_INT("partition", m->partition), AD_KV_INT("from", ps->replay_end));
            ps->replay_end = -1;
        }
        struct ad_log_event ev;
        enum ad_log_result result;
        if (m->len > (size_t)s->settings->kafka.max_message_bytes) {
            ev.reason = AD_REJECT_TOO_LARGE;
            result = AD_LOG_REJECTED;
        } else {
            rd_kafka_timestamp_type_t type;
            int64_t ts = rd_kafka_message_timestamp(m, &type);
            result = ad_log_rules_apply(s->rules, m->payload ? m->payload : "", m->len, ts,
                                        ad_clock_wall_ms(), &ev);
        }
        switch (result) {
        case AD_LOG_ACCEPTED:
            s->counts.accepted++;
            ad_counter_inc(s->accepted_total);
            s->handler.on_event(s->handler.arg, ps->input, m->offset, &ev, NULL);
            break;
        case AD_LOG_FILTERED:
            s->counts.filtered++;
            ad_counter_inc(s->filtered_total);
            break;
        case AD_LOG_REJECTED:
            reject(s, m, ps, ev.reason);
            break;
        }
    }
    /* The handler may have revoked nothing, but look the partition up again to be safe. */
    ps = find_partition(s, AD_KAFKA_INPUT((int32_t)t, m->partition));
    if (ps)
        ps->last_processed = m->offset;
}

static void finish_stop(struct ad_kafka_source *s);

/* Polls until the queue is empty or the budget is spent; then comes back later. */
static void poll_consumer(struct ad_kafka_source *s)
{
    int64_t deadline = ad_clock_mono_ms() + s->budget_ms;
    size_t n = 0;
    bool more = false;

    while (true) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(s->rk, 0);
        if (!m)
            break;
        process(s, m);
        rd_kafka_message_destroy(m);
        if (++n >= s->budget_messages || ((n & 63) == 0 && ad_clock_mono_ms() >= deadline)) {
            more = true;
            break;
        }
    }
    if (more)
        ad_kafka_wake_again(s->wake);
    poll_lookups(s);
    if (s->stopping && rd_kafka_consumer_closed(s->rk))
        finish_stop(s);
}

static void on_wake(void *arg)
{
    poll_consumer(arg);
}

static void poll_dlq(struct ad_kafka_source *s)
{
    if (s->dlq)
        while (rd_kafka_poll(s->dlq, 0) > 0)
            ;
}

static void on_dlq_wake(void *arg)
{
    poll_dlq(arg);
}

static void on_safety(evutil_socket_t fd, short what, void *arg)
{
    struct ad_kafka_source *s = arg;
    (void)fd;
    (void)what;
    poll_consumer(s);
    poll_dlq(s);
    int64_t now = ad_clock_mono_ms();
    if (!s->stopping && now >= s->next_commit) {
        s->next_commit = now + s->commit_interval_ms;
        commit_offsets(s, NULL);
    }
}

/* ---- stopping ---- */

static void finish_stop(struct ad_kafka_source *s)
{
    /* Wait for the dead-letter topic (bounded), then report. */
    if (s->dlq && s->dlq_in_flight > 0 && ad_clock_mono_ms() < s->stop_deadline)
        return; /* the safety timer comes back */
    if (!s->stop_done)
        return;
    void (*done)(void *) = s->stop_done;
    s->stop_done = NULL;
    AD_INFO_KV("consumer closed", AD_KV_STR("source", s->settings->name),
               AD_KV_INT("dead_letters_unacknowledged", s->dlq_in_flight));
    done(s->stop_done_arg);
}

void ad_kafka_source_stop(struct ad_kafka_source *s, void (*done)(void *), void *done_arg)
{
    s->stopping = true;
    s->joining_since = INT64_MIN;
    s->stop_done = done;
    s->stop_done_arg = done_arg;
    s->stop_deadline = ad_clock_mono_ms() + DLQ_FLUSH_MS;
    /* librdkafka would wait for an assignment still waiting for its lookup: take it as it is
     * (nothing of it was read, so nothing is lost). */
    if (s->assigning)
        finish_assign(s, NULL);
    commit_offsets(s, NULL);
    /* The asynchronous close: its rebalance (which commits what became safe since) and the
     * commits' answers are served by the loop's polls; the close waits for the commits. */
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(s->rk, s->queue);
    if (error) {
        AD_ERROR_KV("cannot close the consumer", AD_KV_STR("source", s->settings->name),
                    AD_KV_STR("error", rd_kafka_error_string(error)));
        rd_kafka_error_destroy(error);
        finish_stop(s);
        return;
    }
    poll_consumer(s);
}

/* ---- construction ---- */

static bool user_set(const struct ad_settings_kafka *k, const char *name)
{
    for (size_t i = 0; i < k->properties.len; i++)
        if (strcmp(k->properties.keys[i], name) == 0)
            return true;
    return false;
}

static void register_metrics(struct ad_kafka_source *s, struct ad_metrics *m)
{
    const char *name = s->settings->name;
    static const char events_help[] = "Log events read, by result.";
    s->accepted_total = ad_metrics_counter(m, "anomalyd_events_total", events_help, "source", name,
                                           "result", "accepted", NULL);
    s->filtered_total = ad_metrics_counter(m, "anomalyd_events_total", events_help, "source", name,
                                           "result", "filtered", NULL);
    s->rejected_total = ad_metrics_counter(m, "anomalyd_events_total", events_help, "source", name,
                                           "result", "rejected", NULL);
    for (int r = 1; r < AD_REJECT_COUNT; r++)
        s->rejected_by_reason[r] = ad_metrics_counter(
            m, "anomalyd_events_rejected_total", "Log events rejected, by reason.", "source", name,
            "reason", ad_reject_reason_name((enum ad_reject_reason)r), NULL);
    s->errors_total =
        ad_metrics_counter(m, "anomalyd_kafka_errors_total", "Errors reported by the Kafka client.",
                           "source", name, NULL);
    static const char commits_help[] = "Offset commits by result.";
    s->commits_ok = ad_metrics_counter(m, "anomalyd_kafka_commits_total", commits_help, "source",
                                       name, "result", "success", NULL);
    s->commits_failed = ad_metrics_counter(m, "anomalyd_kafka_commits_total", commits_help,
                                           "source", name, "result", "failure", NULL);
    static const char dlq_help[] = "Rejected events produced to the dead-letter topic.";
    s->dead_letters_ok = ad_metrics_counter(m, "anomalyd_dead_letters_total", dlq_help, "source",
                                            name, "result", "delivered", NULL);
    s->dead_letters_failed = ad_metrics_counter(m, "anomalyd_dead_letters_total", dlq_help,
                                                "source", name, "result", "failed", NULL);
    s->paused_gauge = ad_metrics_gauge(
        m, "anomalyd_kafka_source_paused",
        "1 while the source has stopped fetching: scoring or a sink is behind, or it is stopping.",
        "source", s->settings->name, NULL);
    static const char rebalance_help[] = "Partitions assigned to or revoked from this consumer.";
    s->assigned_total =
        ad_metrics_counter(m, "anomalyd_kafka_partition_changes_total", rebalance_help, "source",
                           name, "change", "assigned", NULL);
    s->revoked_total =
        ad_metrics_counter(m, "anomalyd_kafka_partition_changes_total", rebalance_help, "source",
                           name, "change", "revoked", NULL);
    s->partitions_gauge = ad_metrics_gauge(m, "anomalyd_kafka_assigned_partitions",
                                           "Partitions this consumer reads.", "source", name, NULL);
    s->replayed_total = ad_metrics_counter(
        m, "anomalyd_kafka_replayed_messages_total",
        "Messages read again from a partition's rebuild point to rebuild windows.", "source", name,
        NULL);
    s->ahead_total = ad_metrics_counter(
        m, "anomalyd_kafka_partition_pauses_total",
        "Times a partition was paused for running too far ahead of the others (watermark "
        "alignment).",
        "source", name, NULL);
    s->ahead_gauge = ad_metrics_gauge(
        m, "anomalyd_kafka_partitions_ahead",
        "Partitions paused now for running too far ahead of the others.", "source", name, NULL);
    ad_gauge_set(s->ahead_gauge, 0);
    s->offset_resets_total = ad_metrics_counter(
        m, "anomalyd_kafka_offset_resets_total",
        "Times a partition's offset was out of range (behind retention, past the end) and was "
        "reset per auto.offset.reset, or stopped the partition with auto.offset.reset=error.",
        "source", name, NULL);
    s->lookups_failed = ad_metrics_counter(
        m, "anomalyd_kafka_rebuild_lookups_failed_total",
        "Assignments that started without their rebuild points (the lookup failed).", "source",
        name, NULL);
}

static rd_kafka_t *create_dlq(struct ad_kafka_source *s, const struct ad_settings_kafka *k,
                              char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = ad_kafka_conf_new(k, NULL, NULL, errstr, errstr_size);
    if (!conf)
        return NULL;
    rd_kafka_conf_set_dr_msg_cb(conf, on_dead_letter);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, s);
    if (ad_kafka_conf_log_to_loop(conf, errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!rk) {
        ad_errstr_set(errstr, errstr_size, "dead-letter producer: %s", why);
        return NULL;
    }
    rd_kafka_set_log_queue(rk, NULL);
    return rk;
}

int ad_kafka_source_start(struct ad_kafka_source *s, char *errstr, size_t errstr_size)
{
    if (s->subscribed || s->stopping)
        return 0;
    const struct ad_strlist *names = &s->settings->kafka.topics;
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new((int)names->len);
    for (size_t i = 0; i < names->len; i++)
        rd_kafka_topic_partition_list_add(topics, names->items[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(s->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err)
        return ad_errstr_set(errstr, errstr_size, "subscribe: %s", rd_kafka_err2str(err));
    s->subscribed = true;
    s->joining_since = ad_clock_wall_ms();
    AD_INFO_KV("Kafka source subscribed", AD_KV_STR("source", s->settings->name),
               AD_KV_INT("topics", names->len),
               AD_KV_STR("dead_letter_topic", s->settings->kafka.dead_letter_topic
                                                  ? s->settings->kafka.dead_letter_topic
                                                  : ""));
    return 0;
}

int64_t ad_kafka_source_joining_until(const struct ad_kafka_source *s)
{
    if (!s || s->stopping || s->joining_since == INT64_MIN)
        return INT64_MIN;
    return s->joining_since + s->join_bound_ms;
}

/* A positive millisecond property of conf, or fallback when it is unset or not positive. */
static int64_t conf_ms(rd_kafka_conf_t *conf, const char *name, int64_t fallback)
{
    char value[32];
    size_t size = sizeof value;
    if (rd_kafka_conf_get(conf, name, value, &size) == RD_KAFKA_CONF_OK && atoll(value) > 0)
        return atoll(value);
    return fallback;
}

struct ad_kafka_source *ad_kafka_source_new(const struct ad_kafka_source_options *opts,
                                            char *errstr, size_t errstr_size)
{
    struct ad_kafka_source *s = calloc(1, sizeof *s);
    rd_kafka_conf_t *conf = NULL;
    char why[512];

    if (!s) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->base = opts->base;
    s->settings = opts->settings;
    s->group_id = opts->kafka->group_id;
    s->reset_policy = "earliest";
    for (size_t i = 0; i < opts->kafka->properties.len; i++)
        if (strcmp(opts->kafka->properties.keys[i], "auto.offset.reset") == 0 &&
            opts->kafka->properties.values[i].value)
            s->reset_policy = opts->kafka->properties.values[i].value;
    s->n_detectors = opts->n_detectors;
    s->released_through = malloc((s->n_detectors ? s->n_detectors : 1) * sizeof(int64_t));
    if (!s->released_through)
        goto oom;
    for (size_t d = 0; d < s->n_detectors; d++)
        s->released_through[d] = INT64_MIN;
    if (opts->detectors && s->n_detectors) {
        s->detectors = malloc(s->n_detectors * sizeof *s->detectors);
        if (!s->detectors)
            goto oom;
        memcpy(s->detectors, opts->detectors, s->n_detectors * sizeof *s->detectors);
    }
    s->handler = opts->handler;
    s->budget_messages =
        opts->poll_budget_messages ? opts->poll_budget_messages : DEFAULT_BUDGET_MESSAGES;
    s->budget_ms = opts->poll_budget_ms ? opts->poll_budget_ms : DEFAULT_BUDGET_MS;
    for (int r = 0; r < AD_REJECT_COUNT; r++)
        s->reject_log[r].interval_ms = LOG_INTERVAL_MS;
    s->error_log.interval_ms = LOG_INTERVAL_MS;
    register_metrics(s, opts->metrics);

    s->rules = ad_log_rules_new(opts->settings, opts->engine, errstr, errstr_size);
    if (!s->rules)
        goto err;

    conf = ad_kafka_conf_new(opts->kafka, opts->kafka->group_id, NULL, errstr, errstr_size);
    if (!conf)
        goto err;
    /* The eager assignors only: librdkafka 2.0.2's cooperative-sticky one aborts the process
     * when a consumer closes before its first assignment (kafka_source_rules.h). The loader
     * refuses it with the key's position; this catches settings that did not come through it.
     * A group without commits reads the topic from its start, so windows are rebuilt from
     * history (events older than max_past are rejected); operators of very long topics may
     * set auto.offset.reset: latest. */
    for (size_t i = 0; i < opts->kafka->properties.len; i++) {
        const char *conflict = ad_kafka_source_conflict(opts->kafka->properties.keys[i],
                                                        opts->kafka->properties.values[i].value);
        if (conflict) {
            ad_errstr_set(errstr, errstr_size, "kafka.properties.%s: %s",
                          opts->kafka->properties.keys[i], conflict);
            goto err;
        }
    }
    if ((!user_set(opts->kafka, "partition.assignment.strategy") &&
         ad_kafka_conf_set(conf, "partition.assignment.strategy", AD_KAFKA_SOURCE_ASSIGNORS, errstr,
                           errstr_size) < 0) ||
        (!user_set(opts->kafka, "auto.offset.reset") &&
         ad_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) < 0) ||
        ad_kafka_conf_set(conf, "enable.auto.offset.store", "false", errstr, errstr_size) < 0 ||
        ad_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, errstr_size) < 0 ||
        ad_kafka_conf_log_to_loop(conf, errstr, errstr_size) < 0)
        goto err;
    /* The source commits on librdkafka's own schedule: auto.commit.interval.ms. */
    s->commit_interval_ms = conf_ms(conf, "auto.commit.interval.ms", DEFAULT_COMMIT_INTERVAL_MS);
    s->next_commit = ad_clock_mono_ms() + s->commit_interval_ms;
    /* A join may take as long as the group's rebalance timeout, which librdkafka sends as
     * max.poll.interval.ms: the coordinator waits that long for every member to rejoin (and
     * for a killed one's session to end). */
    s->join_bound_ms = conf_ms(conf, "max.poll.interval.ms", DEFAULT_JOIN_BOUND_MS);
    s->joining_since = ad_clock_wall_ms();
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_client_log);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, on_commit);
    rd_kafka_conf_set_opaque(conf, s);
    s->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!s->rk) {
        ad_errstr_set(errstr, errstr_size, "Kafka consumer: %s", why);
        goto err; /* rd_kafka_new destroyed conf only on success */
    }
    conf = NULL;
    /* One queue for everything: messages, rebalances, logs and errors. */
    rd_kafka_poll_set_consumer(s->rk);
    rd_kafka_set_log_queue(s->rk, NULL);
    s->queue = rd_kafka_queue_get_consumer(s->rk);

    /* The commit lookups answer on a queue of their own and wake the same poll. */
    s->wake = ad_kafka_wake_new(s->base, on_wake, s, errstr, errstr_size);
    if (!s->wake)
        goto err;
    ad_kafka_wake_watch(s->wake, s->queue);
    s->lookups = rd_kafka_queue_new(s->rk);
    if (!s->lookups) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto err;
    }
    ad_kafka_wake_watch(s->wake, s->lookups);
    s->safety_timer = event_new(s->base, -1, EV_PERSIST, on_safety, s);
    struct timeval safety = {SAFETY_INTERVAL_MS / 1000, (SAFETY_INTERVAL_MS % 1000) * 1000};
    if (!s->safety_timer || event_add(s->safety_timer, &safety) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot register loop events");
        goto err;
    }

    if (s->settings->kafka.dead_letter_topic) {
        s->dlq = create_dlq(s, opts->kafka, errstr, errstr_size);
        if (!s->dlq)
            goto err;
        /* Another client: its queue is served by rd_kafka_poll on it, from a wake of its own. */
        s->dlq_wake = ad_kafka_wake_new(s->base, on_dlq_wake, s, errstr, errstr_size);
        if (!s->dlq_wake)
            goto err;
        s->dlq_queue = rd_kafka_queue_get_main(s->dlq);
        ad_kafka_wake_watch(s->dlq_wake, s->dlq_queue);
    }

    if (!opts->deferred && ad_kafka_source_start(s, errstr, errstr_size) < 0)
        goto err;
    return s;

oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
err:
    if (conf)
        rd_kafka_conf_destroy(conf);
    ad_kafka_source_destroy(s);
    return NULL;
}

void ad_kafka_source_destroy(struct ad_kafka_source *s)
{
    if (!s)
        return;
    if (s->safety_timer)
        event_free(s->safety_timer);
    if (s->queue)
        rd_kafka_queue_destroy(s->queue);
    if (s->lookups)
        rd_kafka_queue_destroy(s->lookups);
    if (s->assigning)
        rd_kafka_topic_partition_list_destroy(s->assigning);
    if (s->rk)
        rd_kafka_destroy_flags(
            s->rk, rd_kafka_consumer_closed(s->rk) ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (s->dlq_queue)
        rd_kafka_queue_destroy(s->dlq_queue);
    if (s->dlq)
        rd_kafka_destroy(s->dlq);
    /* Only now: the clients wrote to them from their own threads. */
    ad_kafka_wake_destroy(s->wake);
    ad_kafka_wake_destroy(s->dlq_wake);
    while (s->n_partitions)
        remove_partition(s, &s->partitions[s->n_partitions - 1]);
    free(s->partitions);
    free(s->detectors);
    free(s->released_through);
    ad_log_rules_destroy(s->rules);
    free(s);
}

/* What a partition is doing, for /status. */
static const char *partition_state(const struct ad_kafka_source *s, const struct partition *ps)
{
    if (!ps->assigned)
        return s->assigning && in_list(s->assigning, s->settings->kafka.topics.items[ps->topic],
                                       ps->partition)
                   ? "looking_up_commit"
                   : "revoked";
    if (ps->stopped_out_of_range)
        return "offset_out_of_range"; /* stopped until assigned again */
    if (ps->reset_unread)
        return "offset_reset"; /* nothing read since: behind retention, likely */
    return "reading";
}

void ad_kafka_source_status(const struct ad_kafka_source *s, json_t *out)
{
    json_t *parts = json_array();
    for (size_t i = 0; i < s->n_partitions; i++) {
        const struct partition *ps = &s->partitions[i];
        int64_t commit = commit_offset(ps);
        json_t *part =
            json_pack("{s:s, s:i, s:b, s:I, s:I, s:I, s:i}", "topic",
                      s->settings->kafka.topics.items[ps->topic], "partition", ps->partition,
                      "assigned", ps->assigned, "last_processed", (json_int_t)ps->last_processed,
                      "committable", (json_int_t)commit, "rebuild_from",
                      (json_int_t)replay_offset(ps, commit), "held_buckets", (int)ps->n_holds);
        if (part) {
            json_object_set_new(part, "state", json_string(partition_state(s, ps)));
            json_object_set_new(part, "offset_resets", json_integer((json_int_t)ps->offset_resets));
        }
        if (part && ps->last_error_at) {
            char at[40];
            ad_clock_format(ps->last_error_at, at, sizeof at);
            json_object_set_new(part, "last_error",
                                json_pack("{s:s, s:s}", "message", ps->last_error, "at", at));
        }
        if (part && ps->ahead)
            json_object_set_new(part, "paused_ahead", json_true());
        if (part && ps->replay_end >= 0)
            json_object_set_new(part, "replaying_until", json_integer((json_int_t)ps->replay_end));
        json_array_append_new(parts, part);
    }
    json_object_set_new(out, "partitions", parts);
    /* waiting: built by a reload, not yet in the group (the previous consumer is leaving it);
     * joining: waiting for the group to assign partitions, or for their commits. */
    const char *group = s->stopping                     ? "leaving"
                        : !s->subscribed                ? "waiting"
                        : s->joining_since != INT64_MIN ? "joining"
                                                        : "member";
    json_object_set_new(out, "group", json_string(group));
    json_object_set_new(out, "accepted", json_integer((json_int_t)s->counts.accepted));
    json_object_set_new(out, "filtered", json_integer((json_int_t)s->counts.filtered));
    json_object_set_new(out, "rejected", json_integer((json_int_t)s->counts.rejected));
    json_object_set_new(out, "replayed", json_integer((json_int_t)s->counts.replayed));
    json_object_set_new(out, "client_errors", json_integer((json_int_t)s->counts.errors));
    json_object_set_new(out, "offset_resets", json_integer((json_int_t)s->counts.offset_resets));
    if (s->dlq) {
        json_object_set_new(out, "dead_letters", json_integer((json_int_t)s->counts.dead_letters));
        json_object_set_new(out, "dead_letters_failed",
                            json_integer((json_int_t)s->counts.dead_letters_failed));
    }
}
