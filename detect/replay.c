#include "detect/replay.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/file.h"
#include "base/metrics.h"
#include "detect/routing.h"
#include "detect/serving.h"
#include "gpu/model.h"
#include "gpu/scorer.h"
#include "stream/csv.h"
#include "stream/line_reader.h"
#include "stream/log_rules.h"
#include "windows/bucket.h"
#include "windows/window_store.h"

#define AD_LOG_MODULE "replay"
#include "base/log.h"

/* A CSV row is one bucket of one entity: a time, the key and a few numbers. */
#define CSV_MAX_LINE    ((size_t)64 * 1024)
#define CSV_MAX_COLUMNS (1 + AD_LOG_MAX_LABELS + AD_WINDOW_MAX_FEATURES)
#define CSV_TIME        "time_ms"

/* Why an input line was not used: the log rules' reasons, then CSV's own. */
enum { REASON_MALFORMED_CSV = AD_REJECT_COUNT, N_REASONS };
/* What a detector could not use of an accepted line. */
enum { DROP_LATE, DROP_TOO_FAR, DROP_KEY_TOO_LONG, DROP_NO_MEMORY, N_DROPS };
static const char *const drop_names[N_DROPS] = {"late", "too_far", "key_too_long", "no_memory"};

struct input {
    const char *path; /* as given */
    int fd;           /* -1: not open */
    bool csv;
    struct ad_line_reader *lines;
    /* CSV: where the header put each column. */
    size_t n_columns;
    size_t time_column;
    size_t key_column[AD_LOG_MAX_LABELS];
    size_t feature_column[AD_WINDOW_MAX_FEATURES];
};

struct detector {
    struct replay *owner;
    size_t index; /* in the settings */
    const struct ad_settings_detector *settings;
    struct ad_route route; /* JSON lines: what it takes from the source */
    struct ad_window_store *store;
    struct ad_serving *serving;
    unsigned long long windows, firing, resolved, dropped[N_DROPS];
};

struct replay {
    const struct ad_replay_options *opts;
    /* The config's settings as a replay runs them: no window export (that file belongs to
     * the daemon), the CPU backend, and no store when a model folder is given. The copies
     * point into the config for everything else. */
    struct ad_settings settings;
    struct ad_settings_detector *detector_settings;
    /* JSON lines: the source whose rules read them, with its bounds against the wall clock
     * lifted, since a replay has none. */
    struct ad_settings_source source;
    struct ad_log_rules *rules;
    struct detector *detectors;
    size_t n_detectors;
    struct ad_metrics *metrics;
    struct ad_scorer *scorer;
    struct input *inputs;
    const struct input *reading;
    char *csv_buf;
    int64_t watermark, oldest; /* the newest and oldest event times accepted */
    unsigned long long lines, blank, accepted, filtered, rejected[N_REASONS];
    bool reason_logged[N_REASONS], drop_logged[N_DROPS];
    int write_errno;     /* the output failed: stop */
    bool scoring_failed; /* a batch came back unscored */
    bool halted;         /* waiting for the scorer failed: stop */
};

static const char *reason_name(size_t reason)
{
    return reason == REASON_MALFORMED_CSV ? "malformed_csv"
                                          : ad_reject_reason_name((enum ad_reject_reason)reason);
}

/* ---- choosing what to replay (usage errors) ---- */

static const char *format_name(const struct input *in)
{
    return in->csv ? "CSV" : "JSON lines";
}

static bool is_csv(const char *path)
{
    size_t n = strlen(path);
    return n >= 4 && strcasecmp(path + n - 4, ".csv") == 0;
}

static ssize_t find_detector(const struct ad_settings *s, const char *name)
{
    for (size_t d = 0; d < s->n_detectors; d++)
        if (strcmp(s->detectors[d].name, name) == 0)
            return (ssize_t)d;
    return -1;
}

static void add_detector(struct replay *r, size_t index, const struct ad_route *route)
{
    struct detector *det = &r->detectors[r->n_detectors++];
    det->owner = r;
    det->index = index;
    det->settings = &r->settings.detectors[index];
    if (route)
        det->route = *route;
}

/* JSON lines: the source that reads them, and the detectors it feeds. */
static int choose_for_logs(struct replay *r, char *errstr, size_t errstr_size)
{
    const struct ad_settings *s = &r->settings;
    const char *want = r->opts->source;
    ssize_t si = -1;
    for (size_t i = 0; i < s->n_sources && si < 0; i++)
        if (want ? strcmp(s->sources[i].name, want) == 0 : s->sources[i].type == AD_SOURCE_KAFKA)
            si = (ssize_t)i;
    if (si < 0) {
        if (want)
            ad_errstr_set(errstr, errstr_size, "--source %s: the config has no source of that name",
                          want);
        else
            ad_errstr_set(errstr, errstr_size,
                          "JSON lines are read as a Kafka source reads them, and the "
                          "config has no Kafka source");
        return -1;
    }
    const struct ad_settings_source *src = &s->sources[si];
    if (src->type != AD_SOURCE_KAFKA) {
        ad_errstr_set(errstr, errstr_size,
                      "--source %s is a Prometheus source: replay its series from a CSV file",
                      src->name);
        return -1;
    }
    if (src->kafka.time.format == AD_TIME_KAFKA) {
        ad_errstr_set(
            errstr, errstr_size,
            "source %s takes event times from Kafka message timestamps, which a line of a "
            "file does not have",
            src->name);
        return -1;
    }
    r->source = *src;
    r->source.kafka.time.max_past = INT64_MAX / 4;
    r->source.kafka.time.max_future = INT64_MAX / 4;

    struct ad_route *routes = calloc(s->n_detectors ? s->n_detectors : 1, sizeof *routes);
    int rc = -1;
    if (!routes) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto out;
    }
    size_t n = ad_routing_build(s, (size_t)si, routes);
    ssize_t only = r->opts->detector ? find_detector(s, r->opts->detector) : -1;
    for (size_t i = 0; i < n; i++)
        if (!r->opts->detector || routes[i].detector == (size_t)only)
            add_detector(r, routes[i].detector, &routes[i]);
    if (r->n_detectors == 0) {
        if (r->opts->detector)
            ad_errstr_set(errstr, errstr_size, "detector %s takes no feature from source %s",
                          r->opts->detector, src->name);
        else
            ad_errstr_set(errstr, errstr_size, "no detector takes a feature from source %s",
                          src->name);
        goto out;
    }
    rc = 0;
out:
    free(routes);
    return rc;
}

/* CSV: the one detector whose features the columns are. */
static int choose_for_rows(struct replay *r, char *errstr, size_t errstr_size)
{
    const struct ad_settings *s = &r->settings;
    if (r->opts->source) {
        ad_errstr_set(errstr, errstr_size,
                      "--source names the Kafka source of JSON lines; a CSV file "
                      "holds a detector's features");
        return -1;
    }
    if (!r->opts->detector && s->n_detectors != 1) {
        ad_errstr_set(errstr, errstr_size,
                      "the config has %zu detectors: name the one the CSV file is for with "
                      "--detector",
                      s->n_detectors);
        return -1;
    }
    add_detector(r, r->opts->detector ? (size_t)find_detector(s, r->opts->detector) : 0, NULL);
    return 0;
}

/* Copies the settings as a replay runs them and picks the detectors. */
static int choose(struct replay *r, char *errstr, size_t errstr_size)
{
    const struct ad_replay_options *o = r->opts;
    const struct ad_settings *cs = ad_config_settings(o->config);
    r->settings = *cs;
    r->detector_settings = calloc(cs->n_detectors ? cs->n_detectors : 1, sizeof *cs->detectors);
    r->detectors = calloc(cs->n_detectors ? cs->n_detectors : 1, sizeof *r->detectors);
    if (!r->detector_settings || !r->detectors) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (size_t d = 0; d < cs->n_detectors; d++) {
        r->detector_settings[d] = cs->detectors[d];
        r->detector_settings[d].export_path = NULL;
    }
    r->settings.detectors = r->detector_settings;
    r->settings.scoring.backend = AD_BACKEND_CPU;
    if (o->model_dir)
        r->settings.model_store.path = NULL;

    if (o->detector && find_detector(cs, o->detector) < 0) {
        ad_errstr_set(errstr, errstr_size, "--detector %s: the config has no detector of that name",
                      o->detector);
        return -1;
    }
    bool csv = is_csv(o->inputs[0]);
    for (size_t i = 1; i < o->n_inputs; i++) {
        if (is_csv(o->inputs[i]) != csv) {
            ad_errstr_set(errstr, errstr_size,
                          "%s and %s: the inputs of one replay are all CSV or all JSON lines",
                          o->inputs[0], o->inputs[i]);
            return -1;
        }
    }
    if ((csv ? choose_for_rows(r, errstr, errstr_size) : choose_for_logs(r, errstr, errstr_size)) <
        0)
        return -1;
    if (o->model_dir && r->n_detectors > 1) {
        ad_errstr_set(errstr, errstr_size,
                      "--model-dir is one model version, and source %s feeds %zu detectors: name "
                      "one with --detector",
                      r->source.name, r->n_detectors);
        return -1;
    }
    if (!o->model_dir && !cs->model_store.path) {
        ad_errstr_set(errstr, errstr_size,
                      "the model store is not a folder: give the version to replay "
                      "with --model-dir");
        return -1;
    }
    return 0;
}

/* ---- inputs ---- */

/* Where the CSV header's column `name` goes: the time, a key or a feature of the detector. */
static int place_column(struct input *in, const struct ad_settings_detector *d, size_t column,
                        const char *name, bool *seen, char *errstr, size_t errstr_size)
{
    size_t role = SIZE_MAX; /* 0: the time, 1 + k: key k, 1 + keys + f: feature f */
    if (strcmp(name, CSV_TIME) == 0)
        role = 0;
    for (size_t k = 0; k < d->keys.len && role == SIZE_MAX; k++)
        if (strcmp(name, d->keys.items[k]) == 0)
            role = 1 + k;
    for (size_t f = 0; f < d->features.len && role == SIZE_MAX; f++)
        if (strcmp(name, d->features.items[f]) == 0)
            role = 1 + d->keys.len + f;
    if (role == SIZE_MAX) {
        ad_errstr_set(errstr, errstr_size,
                      "%s: column \"%s\" is not " CSV_TIME ", a key or a feature of detector %s",
                      in->path, name, d->name);
        return -1;
    }
    if (seen[role]) {
        ad_errstr_set(errstr, errstr_size, "%s: column \"%s\" appears twice", in->path, name);
        return -1;
    }
    seen[role] = true;
    if (role == 0)
        in->time_column = column;
    else if (role <= d->keys.len)
        in->key_column[role - 1] = column;
    else
        in->feature_column[role - 1 - d->keys.len] = column;
    return 0;
}

static int read_header(struct replay *r, struct input *in, char *errstr, size_t errstr_size)
{
    const struct ad_settings_detector *d = r->detectors[0].settings;
    const char *line, *fields[CSV_MAX_COLUMNS];
    size_t len, lens[CSV_MAX_COLUMNS];
    bool seen[CSV_MAX_COLUMNS] = {false};
    char name[256];

    enum ad_line_result got = ad_line_reader_next(in->lines, &line, &len);
    if (got != AD_LINE_OK) {
        ad_errstr_set(errstr, errstr_size, "%s: %s", in->path,
                      got == AD_LINE_END     ? "empty: a CSV file starts with its header"
                      : got == AD_LINE_ERROR ? strerror(errno)
                                             : "the header line is too long");
        return -1;
    }
    /* A UTF-8 byte order mark, as spreadsheets write it, is not part of the first name. */
    if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        len -= 3;
    }
    ssize_t n = ad_csv_split(line, len, r->csv_buf, fields, lens, CSV_MAX_COLUMNS);
    if (n < 0 || (size_t)n > CSV_MAX_COLUMNS) {
        ad_errstr_set(errstr, errstr_size, "%s:1: %s", in->path,
                      n < 0 ? "a quoted column name does not end" : "too many columns");
        return -1;
    }
    in->n_columns = (size_t)n;
    for (size_t c = 0; c < in->n_columns; c++) {
        snprintf(name, sizeof name, "%.*s", (int)lens[c], fields[c]);
        if (place_column(in, d, c, name, seen, errstr, errstr_size) < 0)
            return -1;
    }
    size_t roles = 1 + d->keys.len + d->features.len;
    for (size_t role = 0; role < roles; role++) {
        if (seen[role])
            continue;
        const char *missing = role == 0             ? CSV_TIME
                              : role <= d->keys.len ? d->keys.items[role - 1]
                                                    : d->features.items[role - 1 - d->keys.len];
        ad_errstr_set(errstr, errstr_size,
                      "%s:1: no column \"%s\": the header names " CSV_TIME
                      ", every key and every feature of detector %s",
                      in->path, missing, d->name);
        return -1;
    }
    return 0;
}

/* Opens every input before anything is read, so that a typo fails at once rather than after
 * an hour of replay; CSV headers are checked then too. */
static int open_inputs(struct replay *r, char *errstr, size_t errstr_size)
{
    const struct ad_replay_options *o = r->opts;
    bool stdin_used = false;
    r->inputs = calloc(o->n_inputs, sizeof *r->inputs);
    r->csv_buf = malloc(CSV_MAX_LINE + 1);
    if (!r->inputs || !r->csv_buf) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < o->n_inputs; i++)
        r->inputs[i].fd = -1;
    for (size_t i = 0; i < o->n_inputs; i++) {
        struct input *in = &r->inputs[i];
        in->path = o->inputs[i];
        in->csv = is_csv(in->path);
        if (strcmp(in->path, "-") == 0) {
            if (stdin_used) {
                ad_errstr_set(errstr, errstr_size,
                              "--input -: standard input can be read only once");
                return -1;
            }
            stdin_used = true;
            in->fd = STDIN_FILENO;
        } else {
            /* A regular file, or a named pipe (/dev/stdin, <(...)), which waits for its
             * writer as a shell's < does; directories and devices are refused at once. */
            char why[256];
            in->fd = ad_file_open(in->path, AD_FILE_FIFO_OK, NULL, why, sizeof why);
            if (in->fd < 0) {
                ad_errstr_set(errstr, errstr_size, "%s: %s", in->path, why);
                return -1;
            }
        }
        if (!in->csv)
            continue; /* its reader is made when it is read: it may need a large buffer */
        in->lines = ad_line_reader_new(in->fd, CSV_MAX_LINE);
        if (!in->lines) {
            ad_errstr_set(errstr, errstr_size, "out of memory");
            return -1;
        }
        if (read_header(r, in, errstr, errstr_size) < 0)
            return -1;
    }
    return 0;
}

static void close_input(struct input *in)
{
    ad_line_reader_destroy(in->lines);
    in->lines = NULL;
    if (in->fd > STDIN_FILENO)
        close(in->fd);
    in->fd = -1;
}

/* ---- alerts and scoring ---- */

static size_t publish(void *arg, const struct ad_alert *alert, uint64_t seq)
{
    struct detector *det = arg;
    struct replay *r = det->owner;
    (void)seq;
    if (strcmp(alert->state, "firing") == 0)
        det->firing++;
    else
        det->resolved++;
    if (!r->write_errno &&
        (fwrite(alert->json, 1, alert->json_len, r->opts->out) != alert->json_len ||
         putc('\n', r->opts->out) == EOF))
        r->write_errno = errno ? errno : EIO;
    return 0; /* nothing to acknowledge */
}

static void scored(void *arg, const char *json, size_t len)
{
    struct detector *det = arg;
    struct replay *r = det->owner;
    if (!r->write_errno &&
        (fwrite(json, 1, len, r->opts->scores) != len || putc('\n', r->opts->scores) == EOF))
        r->write_errno = errno ? errno : EIO;
}

/* Waits for every batch submitted: the next event must not be read before the windows that
 * closed ahead of it have made their alerts, so that they run in the daemon's order. */
static void drain(struct replay *r)
{
    struct pollfd pfd = {.fd = ad_scorer_fd(r->scorer), .events = POLLIN};
    while (ad_scorer_pending(r->scorer) > 0 && !r->halted) {
        struct ad_score_job *job = ad_scorer_take(r->scorer);
        if (job) {
            r->scoring_failed |= job->model && job->error[0];
            ad_serving_finish(ad_serving_of(job), job);
        } else if (poll(&pfd, 1, -1) < 0 && errno != EINTR) {
            AD_ERROR_KV("cannot wait for the scorer", AD_KV_STR("error", strerror(errno)));
            r->scoring_failed = r->halted = true;
        }
    }
}

static void on_batch(void *arg, struct ad_window_batch *batch)
{
    struct detector *det = arg;
    struct replay *r = det->owner;
    det->windows += batch->n_windows + batch->skipped_no_data;
    /* A bucket closes in the daemon when its watermark passes the bucket's end plus the
     * lateness: the event time at which the alerts could first be made. */
    ad_serving_set_notified_at(det->serving,
                               batch->bucket_start + batch->step + det->settings->allowed_lateness);
    ad_serving_submit(det->serving, batch);
    drain(r);
}

/* ---- events ---- */

static void log_line(struct replay *r, const char *msg, const char *what, const char *name)
{
    const struct input *in = r->reading;
    AD_WARN_KV(msg, AD_KV_STR("file", in->path),
               AD_KV_INT("line", ad_line_reader_number(in->lines)), AD_KV_STR(what, name));
}

static void reject(struct replay *r, size_t reason)
{
    r->rejected[reason]++;
    if (r->reason_logged[reason])
        return;
    r->reason_logged[reason] = true;
    log_line(r, "input line rejected; more for this reason are counted in the summary", "reason",
             reason_name(reason));
}

static void drop(struct detector *det, size_t what)
{
    struct replay *r = det->owner;
    det->dropped[what]++;
    if (r->drop_logged[what])
        return;
    r->drop_logged[what] = true;
    log_line(r,
             what == DROP_LATE
                 ? "event late: its bucket had closed; more are counted in the summary"
                 : "event not used; more for this reason are counted in the summary",
             "reason", drop_names[what]);
}

/* An accepted event at t: the grid moves to it first, as the daemon's does, so that the event
 * finds closed what the watermark has passed. */
static void move_to(struct replay *r, int64_t t)
{
    r->accepted++;
    if (t < r->oldest)
        r->oldest = t;
    if (t <= r->watermark)
        return;
    r->watermark = t;
    for (size_t d = 0; d < r->n_detectors; d++)
        ad_window_store_advance(r->detectors[d].store, t);
}

static void add(struct detector *det, const char *key, size_t len, int64_t t, const double *values,
                uint64_t present)
{
    switch (ad_window_store_add(det->store, key, len, t, values, present)) {
    case AD_WINDOW_ADDED:
        break;
    case AD_WINDOW_LATE:
        drop(det, DROP_LATE);
        break;
    case AD_WINDOW_TOO_FAR:
        drop(det, DROP_TOO_FAR);
        break;
    case AD_WINDOW_NO_ENTITY:
        drop(det, DROP_NO_MEMORY);
        break;
    }
}

static void log_event(struct replay *r, const char *line, size_t len)
{
    struct ad_log_event ev;
    char key[AD_ROUTING_MAX_KEY];
    double values[AD_WINDOW_MAX_FEATURES];
    size_t key_len;
    uint64_t present;

    if (len > (size_t)r->source.kafka.max_message_bytes) {
        reject(r, AD_REJECT_TOO_LARGE);
        return;
    }
    /* No Kafka timestamp, and a "now" that the lifted bounds make irrelevant. */
    switch (ad_log_rules_apply(r->rules, line, len, -1, 0, &ev)) {
    case AD_LOG_FILTERED:
        r->filtered++;
        return;
    case AD_LOG_REJECTED:
        reject(r, ev.reason);
        return;
    case AD_LOG_ACCEPTED:
        break;
    }
    move_to(r, ev.time);
    for (size_t d = 0; d < r->n_detectors; d++) {
        struct detector *det = &r->detectors[d];
        switch (ad_routing_log_event(&det->route, det->settings, &ev, key, &key_len, values,
                                     &present)) {
        case AD_ROUTING_OK:
            add(det, key, key_len, ev.time, values, present);
            break;
        case AD_ROUTING_KEY_TOO_LONG:
            drop(det, DROP_KEY_TOO_LONG);
            break;
        case AD_ROUTING_NO_FEATURES:
            break;
        }
    }
}

/* A cell as a C string in text (size bytes); false when it is empty, too long for a number,
 * or holds a NUL. */
static bool cell_text(const char *s, size_t n, char *text, size_t size)
{
    if (n == 0 || n >= size || memchr(s, '\0', n))
        return false;
    memcpy(text, s, n);
    text[n] = '\0';
    return true;
}

/* A whole cell as a number; false when it is not one. */
static bool parse_double(const char *s, size_t n, double *out)
{
    char text[128], *end;
    if (!cell_text(s, n, text, sizeof text))
        return false;
    *out = strtod(text, &end);
    return end == text + n;
}

/* A whole cell as an integer; false when it is not one, or out of range. */
static bool parse_int64(const char *s, size_t n, int64_t *out)
{
    char text[32], *end;
    if (!cell_text(s, n, text, sizeof text))
        return false;
    errno = 0;
    *out = strtoll(text, &end, 10);
    return errno == 0 && end == text + n;
}

static void csv_row(struct replay *r, const struct input *in, const char *line, size_t len)
{
    struct detector *det = &r->detectors[0];
    const struct ad_settings_detector *d = det->settings;
    const char *fields[CSV_MAX_COLUMNS];
    size_t lens[CSV_MAX_COLUMNS];
    char key[AD_ROUTING_MAX_KEY];
    double values[AD_WINDOW_MAX_FEATURES];
    size_t key_len = 0;
    uint64_t present = 0;
    int64_t t;

    ssize_t n = ad_csv_split(line, len, r->csv_buf, fields, lens, CSV_MAX_COLUMNS);
    if (n < 0 || (size_t)n != in->n_columns) {
        reject(r, REASON_MALFORMED_CSV);
        return;
    }
    size_t tc = in->time_column;
    if (lens[tc] == 0 || !parse_int64(fields[tc], lens[tc], &t)) {
        reject(r, lens[tc] == 0 ? AD_REJECT_TIME_MISSING : AD_REJECT_TIME_INVALID);
        return;
    }
    for (size_t k = 0; k < d->keys.len && key_len != SIZE_MAX; k++) {
        size_t c = in->key_column[k];
        if (memchr(fields[c], '\0', lens[c])) {
            reject(r, AD_REJECT_LABEL_INVALID);
            return;
        }
        key_len = ad_routing_key_append(key, key_len, k, fields[c], lens[c]);
    }
    for (size_t f = 0; f < d->features.len; f++) {
        size_t c = in->feature_column[f];
        if (lens[c] == 0)
            continue; /* no data for the feature in this bucket */
        if (!parse_double(fields[c], lens[c], &values[f])) {
            reject(r, AD_REJECT_WRONG_TYPE);
            return;
        }
        if (!isfinite(values[f])) {
            reject(r, AD_REJECT_NOT_FINITE);
            return;
        }
        present |= 1ULL << f;
    }
    move_to(r, t);
    if (key_len == SIZE_MAX)
        drop(det, DROP_KEY_TOO_LONG);
    else if (present)
        add(det, key, key_len, t, values, present);
}

/* Reads one input to its end. Returns 0, or -1 when reading (or the output) failed. */
static int read_input(struct replay *r, struct input *in)
{
    const char *line;
    size_t len;
    int rc = -1;
    if (!in->lines) {
        in->lines = ad_line_reader_new(in->fd, (size_t)r->source.kafka.max_message_bytes);
        if (!in->lines) {
            AD_ERROR_KV("out of memory", AD_KV_STR("file", in->path));
            goto out;
        }
    }
    r->reading = in;
    AD_INFO_KV("reading", AD_KV_STR("file", in->path), AD_KV_STR("format", format_name(in)));
    for (;;) {
        enum ad_line_result got = ad_line_reader_next(in->lines, &line, &len);
        if (got == AD_LINE_END)
            break;
        if (got == AD_LINE_ERROR) {
            AD_ERROR_KV("cannot read an input", AD_KV_STR("file", in->path),
                        AD_KV_STR("error", strerror(errno)));
            goto out;
        }
        r->lines++;
        if (got == AD_LINE_TOO_LONG) {
            reject(r, in->csv ? REASON_MALFORMED_CSV : AD_REJECT_TOO_LARGE);
            continue;
        }
        /* Blank lines, as editors and concatenations leave them, carry nothing. */
        size_t i = 0;
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i == len) {
            r->blank++;
            continue;
        }
        if (in->csv)
            csv_row(r, in, line, len);
        else
            log_event(r, line, len);
        if (r->write_errno || r->halted)
            goto out;
    }
    rc = 0;
out:
    close_input(in);
    return rc;
}

/* At the end of the input nothing more can come: every bucket up to the newest event's
 * closes, as the daemon's would once its watermark passed them. */
static void close_all(struct replay *r)
{
    if (r->watermark == INT64_MIN)
        return;
    for (size_t d = 0; d < r->n_detectors; d++) {
        struct detector *det = &r->detectors[d];
        const struct ad_settings_detector *s = det->settings;
        ad_window_store_advance(det->store,
                                ad_bucket_end(r->watermark, s->step) + s->allowed_lateness);
    }
}

/* ---- building ---- */

/* The model each detector scores with; -1 when one has none (logged). */
static int load_models(struct replay *r)
{
    char err[4608];
    for (size_t d = 0; d < r->n_detectors; d++) {
        struct detector *det = &r->detectors[d];
        const struct ad_settings_detector *s = det->settings;
        err[0] = '\0';
        if (r->opts->model_dir) {
            struct ad_model_expect expect = {
                .features = &s->features, .window = s->window_len, .step_ms = s->step};
            struct ad_model *m = ad_model_load(r->opts->model_dir, &expect, err, sizeof err);
            if (m)
                ad_serving_offer_model(det->serving, m); /* takes m; refuses a misfit */
        }
        if (ad_serving_model(det->serving))
            continue;
        if (!err[0]) {
            /* The serving side kept why: no CURRENT, a version that failed, a misfit. */
            json_t *status = json_object();
            ad_serving_status(det->serving, status);
            const char *why =
                json_string_value(json_object_get(json_object_get(status, "model"), "error"));
            snprintf(err, sizeof err, "%s", why ? why : "no model");
            json_decref(status);
        }
        AD_ERROR_KV("cannot replay: the detector has no model to score with",
                    AD_KV_STR("detector", s->name), AD_KV_STR("error", err));
        return -1;
    }
    return 0;
}

static int build(struct replay *r)
{
    char err[512];
    r->metrics = ad_metrics_new();
    if (!r->metrics) {
        AD_ERROR("out of memory");
        return -1;
    }
    if (r->source.name) {
        r->rules = ad_log_rules_new(&r->source, AD_EXTRACT_SIMDJSON, err, sizeof err);
        if (!r->rules) {
            AD_ERROR_KV("cannot compile the source's rules", AD_KV_STR("error", err));
            return -1;
        }
    }
    r->scorer = ad_scorer_new(&r->settings.scoring, r->metrics, err, sizeof err);
    if (!r->scorer) {
        AD_ERROR_KV("cannot start the scorer", AD_KV_STR("error", err));
        return -1;
    }
    for (size_t d = 0; d < r->n_detectors; d++) {
        struct detector *det = &r->detectors[d];
        enum ad_agg aggs[AD_WINDOW_MAX_FEATURES];
        enum ad_fill_policy fills[AD_WINDOW_MAX_FEATURES];
        struct ad_window_spec spec;
        ad_routing_window_spec(&r->settings, det->index, (size_t)r->settings.scoring.max_batch,
                               &spec, aggs, fills);
        det->store = ad_window_store_new(&spec, r->metrics, on_batch, det, err, sizeof err);
        struct ad_serving_outlet outlet = {
            .publish = publish, .scored = r->opts->scores ? scored : NULL, .arg = det};
        if (det->store)
            det->serving = ad_serving_new(&r->settings, det->index, r->scorer, &outlet, r->metrics,
                                          det, err, sizeof err);
        if (!det->serving) {
            AD_ERROR_KV("cannot build the detector", AD_KV_STR("detector", det->settings->name),
                        AD_KV_STR("error", err));
            return -1;
        }
    }
    return load_models(r);
}

/* ---- the run ---- */

struct totals {
    unsigned long long windows, scored, anomalous, no_data, no_history, failed, firing, resolved;
    unsigned long long dropped[N_DROPS];
};

static unsigned long long count_at(json_t *object, const char *key)
{
    return (unsigned long long)json_integer_value(json_object_get(object, key));
}

static void add_totals(const struct detector *det, struct totals *t)
{
    json_t *status = json_object();
    ad_serving_status(det->serving, status);
    json_t *scoring = json_object_get(status, "scoring");
    json_t *unscored = json_object_get(scoring, "windows_unscored");
    t->windows += det->windows;
    t->scored += count_at(scoring, "windows_scored");
    t->anomalous += count_at(scoring, "windows_anomalous");
    t->no_data += count_at(unscored, "no_data");
    t->no_history += count_at(unscored, "no_history");
    t->failed += count_at(unscored, "failed");
    t->firing += det->firing;
    t->resolved += det->resolved;
    for (size_t i = 0; i < N_DROPS; i++)
        t->dropped[i] += det->dropped[i];
    json_decref(status);
}

/* Appends the totals' fields to f (room for 16); returns the new count. */
static size_t totals_fields(const struct totals *t, struct ad_log_field *f, size_t n)
{
    f[n++] = (struct ad_log_field)AD_KV_INT("late", t->dropped[DROP_LATE]);
    f[n++] = (struct ad_log_field)AD_KV_INT("too_far", t->dropped[DROP_TOO_FAR]);
    f[n++] = (struct ad_log_field)AD_KV_INT("key_too_long", t->dropped[DROP_KEY_TOO_LONG]);
    if (t->dropped[DROP_NO_MEMORY])
        f[n++] = (struct ad_log_field)AD_KV_INT("no_memory", t->dropped[DROP_NO_MEMORY]);
    f[n++] = (struct ad_log_field)AD_KV_INT("windows", t->windows);
    f[n++] = (struct ad_log_field)AD_KV_INT("scored", t->scored);
    f[n++] = (struct ad_log_field)AD_KV_INT("anomalous", t->anomalous);
    f[n++] = (struct ad_log_field)AD_KV_INT("unscored_no_data", t->no_data);
    f[n++] = (struct ad_log_field)AD_KV_INT("unscored_no_history", t->no_history);
    f[n++] = (struct ad_log_field)AD_KV_INT("unscored_failed", t->failed);
    f[n++] = (struct ad_log_field)AD_KV_INT("alerts", t->firing + t->resolved);
    f[n++] = (struct ad_log_field)AD_KV_INT("alerts_firing", t->firing);
    f[n++] = (struct ad_log_field)AD_KV_INT("alerts_resolved", t->resolved);
    return n;
}

/* One line with everything; with several detectors, one line per detector before it. The
 * summary is the replay's result, not chatter: it is written whatever the log level, so that
 * --log-level warn leaves the problems and the result. */
static void summarize(struct replay *r, double seconds)
{
    struct ad_log_field f[28 + N_REASONS];
    char names[N_REASONS][48], from[40] = "", to[40] = "";
    struct totals all = {0};
    size_t n = 0;
    unsigned long long rejected = 0;

    for (size_t d = 0; d < r->n_detectors; d++) {
        struct totals one = {0};
        add_totals(&r->detectors[d], &one);
        add_totals(&r->detectors[d], &all);
        if (r->n_detectors == 1)
            continue;
        f[0] = (struct ad_log_field)AD_KV_STR("detector", r->detectors[d].settings->name);
        ad_log_fields(AD_LOG_INFO, AD_LOG_MODULE, "replay detector finished", f,
                      totals_fields(&one, f, 1));
    }
    for (size_t i = 0; i < N_REASONS; i++)
        rejected += r->rejected[i];
    f[n++] = (struct ad_log_field)AD_KV_INT("inputs", r->opts->n_inputs);
    f[n++] = (struct ad_log_field)AD_KV_INT("detectors", r->n_detectors);
    f[n++] = (struct ad_log_field)AD_KV_INT("lines", r->lines);
    f[n++] = (struct ad_log_field)AD_KV_INT("blank", r->blank);
    f[n++] = (struct ad_log_field)AD_KV_INT("events", r->accepted);
    f[n++] = (struct ad_log_field)AD_KV_INT("filtered", r->filtered);
    f[n++] = (struct ad_log_field)AD_KV_INT("rejected", rejected);
    for (size_t i = 0; i < N_REASONS; i++) {
        if (!r->rejected[i])
            continue;
        snprintf(names[i], sizeof names[i], "rejected_%s", reason_name(i));
        f[n++] = (struct ad_log_field)AD_KV_INT(names[i], r->rejected[i]);
    }
    n = totals_fields(&all, f, n);
    if (r->accepted) {
        ad_clock_format(r->oldest, from, sizeof from);
        ad_clock_format(r->watermark, to, sizeof to);
        f[n++] = (struct ad_log_field)AD_KV_STR("oldest_event", from);
        f[n++] = (struct ad_log_field)AD_KV_STR("newest_event", to);
    }
    /* How stream models scored (docs/scoring.md): steps, and warm-ups over a window. */
    json_t *scoring = json_object();
    if (r->scorer)
        ad_scorer_status(r->scorer, scoring);
    json_t *stream = json_object_get(scoring, "stream");
    f[n++] = (struct ad_log_field)AD_KV_INT(
        "stream_steps", (long long)json_integer_value(json_object_get(stream, "steps")));
    f[n++] = (struct ad_log_field)AD_KV_INT(
        "stream_warm_ups", (long long)json_integer_value(json_object_get(stream, "warm_ups")));
    f[n++] = (struct ad_log_field)AD_KV_DOUBLE("seconds", seconds);
    ad_log_fields(AD_LOG_INFO, AD_LOG_MODULE, "replay finished", f, n);
    json_decref(scoring);
}

static void replay_free(struct replay *r)
{
    for (size_t d = 0; r->detectors && d < r->n_detectors; d++) {
        ad_window_store_destroy(r->detectors[d].store);
        ad_serving_destroy(r->detectors[d].serving);
    }
    ad_scorer_destroy(r->scorer);
    ad_log_rules_destroy(r->rules);
    ad_metrics_destroy(r->metrics);
    for (size_t i = 0; r->inputs && i < r->opts->n_inputs; i++)
        close_input(&r->inputs[i]);
    free(r->inputs);
    free(r->csv_buf);
    free(r->detectors);
    free(r->detector_settings);
}

enum ad_replay_status ad_replay_run(const struct ad_replay_options *opts)
{
    struct replay r = {.opts = opts, .watermark = INT64_MIN, .oldest = INT64_MAX};
    enum ad_replay_status status = AD_REPLAY_USAGE;
    double started = ad_clock_mono_seconds();
    bool read_all = true;
    char err[1024];

    if (opts->n_inputs == 0) {
        AD_ERROR("cannot replay: no input");
        goto out;
    }
    if (choose(&r, err, sizeof err) < 0 || open_inputs(&r, err, sizeof err) < 0) {
        AD_ERROR_KV("cannot replay", AD_KV_STR("error", err));
        goto out;
    }
    status = AD_REPLAY_FAILED;
    if (build(&r) < 0)
        goto out;
    AD_INFO_KV("replay started", AD_KV_INT("inputs", opts->n_inputs),
               AD_KV_INT("detectors", r.n_detectors),
               AD_KV_STR("source", r.source.name ? r.source.name : "csv"));
    for (size_t i = 0; i < opts->n_inputs && read_all; i++)
        read_all = read_input(&r, &r.inputs[i]) == 0;
    if (read_all)
        close_all(&r);
    summarize(&r, ad_clock_mono_seconds() - started);
    if ((fflush(opts->out) != 0 || (opts->scores && fflush(opts->scores) != 0)) && !r.write_errno)
        r.write_errno = errno;
    if (r.write_errno) {
        AD_ERROR_KV("cannot write the output", AD_KV_STR("error", strerror(r.write_errno)));
        goto out;
    }
    if (!read_all)
        goto out;
    if (r.scoring_failed) {
        AD_ERROR("windows could not be scored (see above): the alerts they would have made "
                 "are missing");
        goto out;
    }
    status = AD_REPLAY_OK;
out:
    replay_free(&r);
    return status;
}
