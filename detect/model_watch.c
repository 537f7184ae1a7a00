#include "detect/model_watch.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/file.h"
#include "base/fs_events.h"
#include "base/units.h"
#include "stream/http_fetch.h"

#define AD_LOG_MODULE "model_watch"
#include "base/log.h"

/* A version name and its NUL (longer names are refused as CURRENT's content). */
#define VERSION_SIZE 256
/* CURRENT holds one short line; more is not a CURRENT file. */
#define CURRENT_MAX_BYTES 4096
/* The loader's limits (gpu/model.c): a larger download would only be refused after it. */
#define MANIFEST_MAX_BYTES (16u << 20)
#define WEIGHTS_MAX_BYTES  (1024u << 20)
/* The weights may be large: their transfer is bounded by a stall check (less than 1 KiB/s for
 * the store's timeout) and by this. */
#define WEIGHTS_TIMEOUT_MS (60 * 60 * 1000)
#define DEFAULT_POLL_MS    30000
#define ERROR_SIZE         4608

enum check_result { CHECK_UNCHANGED, CHECK_NEW_VERSION, CHECK_MISSING, CHECK_ERROR, N_CHECKS };
static const char *const check_names[N_CHECKS] = {"unchanged", "new_version", "missing", "error"};

enum reason {
    REASON_READ,        /* CURRENT exists but cannot be read */
    REASON_BAD_CURRENT, /* CURRENT does not hold a version name */
    REASON_INCOMPLETE,  /* a file of the version named is not there (yet) */
    REASON_CONNECT,
    REASON_TIMEOUT,
    REASON_HTTP_STATUS,
    REASON_NOT_FOUND, /* 404 for a file of the version CURRENT names */
    REASON_TRUNCATED,
    REASON_TOO_LARGE,
    REASON_MALFORMED,
    REASON_INTERNAL,
    N_REASONS
};
static const char *const reason_names[N_REASONS] = {
    "read",      "bad_current", "incomplete", "connect",   "timeout",  "http_status",
    "not_found", "truncated",   "too_large",  "malformed", "internal",
};

enum announcement { ANN_ACCEPTED, ANN_UNKNOWN_MODEL, ANN_MALFORMED, N_ANN };
static const char *const ann_names[N_ANN] = {"accepted", "unknown_model", "malformed"};

/* Where a model's check is: at most one step in flight per model. */
enum stage { STAGE_IDLE, STAGE_CURRENT, STAGE_MANIFEST, STAGE_WEIGHTS, STAGE_LOADING };

/* The store as seen from one model, for logging once per change. */
enum health { HEALTH_UNKNOWN, HEALTH_OK, HEALTH_MISSING, HEALTH_ERROR };
static const char *const health_names[] = {"unknown", "ok", "missing", "error"};

/* What identifies one writing of a CURRENT file: a rename over it makes a new inode. */
struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct entry {
    struct ad_model_watch *w;
    char *name;
    bool has_expect;
    struct ad_strlist features; /* the copy expect.features points to */
    struct ad_model_expect expect;
    int wd; /* inotify watch on <store>/<name>; -1: none */

    bool want, force; /* a check is due; an explicit one */
    enum stage stage;

    /* CURRENT as last read, and how many times it was written since the start. */
    char current[VERSION_SIZE];
    bool have_id;
    struct file_id id;
    char *etag;
    uint64_t gen;

    char serving[VERSION_SIZE]; /* ad_model_watch_set_serving */
    /* The last version loaded and reported, and whether it was refused (at which gen). */
    char handled[VERSION_SIZE];
    bool handled_refused;
    uint64_t handled_gen;
    char refusal[ERROR_SIZE];

    /* The version in flight, the CURRENT gen it was read at, and the manifest fetched. */
    char pending[VERSION_SIZE];
    uint64_t pending_gen;
    /* The last version found, at which gen: retries after store errors are not news. */
    char found_version[VERSION_SIZE];
    uint64_t found_gen;
    bool pending_forced;
    struct ad_http_transfer *xfer;
    uint8_t *manifest;
    size_t manifest_len;

    enum health health;
    enum reason reason;
    char last_error[ERROR_SIZE];
    int64_t last_error_at, last_check_at; /* wall ms; 0: never */

    struct ad_counter *found, *refused;
};

/* One load on the worker thread: the version's files by path, or their fetched bytes. */
struct job {
    struct job *next;
    struct entry *e; /* only e->name and e->expect are read off the loop: both immutable */
    char *dir;
    char version[VERSION_SIZE];
    uint64_t gen;
    uint8_t *manifest, *weights; /* NULL: read from dir */
    size_t manifest_len, weights_len;
    /* The outcome. */
    struct ad_model *model;
    bool incomplete;
    char error[ERROR_SIZE];
    double seconds;
};

struct ad_model_watch {
    struct event_base *base;
    char *path, *url; /* exactly one; url without trailing slashes */
    char *display;    /* path, or url without a password */
    int64_t poll_ms;
    char poll_text[32]; /* "30s" */
    struct ad_model_watch_handler h;
    struct entry *entries;
    size_t n_entries;
    struct event *poll_timer, *kick;

    int ino_fd;
    struct event *ino_ev;
    int store_wd;
    bool watch_failed_logged;

    struct ad_http_fetch *http;
    int64_t stall_ms; /* the store's timeout, as the weights' stall limit */

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    struct job *todo, *done; /* todo: FIFO; done: LIFO, reversed when taken */
    int pipe_r, pipe_w;
    struct event *done_ev;

    struct ad_counter *checks[N_CHECKS], *errors[N_REASONS], *announcements[N_ANN];
    struct ad_histogram *load_seconds;
    struct ad_log_ratelimit announce_log;
};

static void run_checks(struct ad_model_watch *w);

static void kick(struct ad_model_watch *w)
{
    event_active(w->kick, EV_TIMEOUT, 1);
}

static void want_all(struct ad_model_watch *w, bool force)
{
    for (size_t i = 0; i < w->n_entries; i++) {
        w->entries[i].want = true;
        w->entries[i].force |= force;
    }
}

static struct entry *find_entry(struct ad_model_watch *w, const char *name, size_t len)
{
    for (size_t i = 0; i < w->n_entries; i++)
        if (strlen(w->entries[i].name) == len && memcmp(w->entries[i].name, name, len) == 0)
            return &w->entries[i];
    return NULL;
}

/* Letters, digits, '.', '_', '-', and not "." or "..": what the loader takes as a version. */
static bool valid_name(const char *s, size_t len)
{
    if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
            return false;
    return true;
}

/* ---- the store's state, logged once per change ---- */

static void note_error(struct entry *e, enum reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note_error(struct entry *e, enum reason reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->last_error, sizeof e->last_error, fmt, ap);
    va_end(ap);
    e->last_error_at = ad_clock_wall_ms();
    ad_counter_inc(e->w->errors[reason]);
    if (e->health != HEALTH_ERROR || e->reason != reason)
        AD_WARN_KV("cannot check the model store; retrying at the next poll",
                   AD_KV_STR("model", e->name), AD_KV_STR("reason", reason_names[reason]),
                   AD_KV_STR("error", e->last_error), AD_KV_STR("retry_in", e->w->poll_text));
    else
        AD_DEBUG_KV("the model store still fails", AD_KV_STR("model", e->name),
                    AD_KV_STR("reason", reason_names[reason]), AD_KV_STR("error", e->last_error));
    e->health = HEALTH_ERROR;
    e->reason = reason;
}

static void note_healthy(struct entry *e)
{
    if (e->health == HEALTH_ERROR)
        AD_INFO_KV("the model store can be checked again", AD_KV_STR("model", e->name),
                   AD_KV_STR("after", reason_names[e->reason]));
    e->health = HEALTH_OK;
}

static void note_missing(struct entry *e, const char *what)
{
    if (e->health != HEALTH_MISSING)
        AD_INFO_KV("no model published yet", AD_KV_STR("model", e->name),
                   AD_KV_STR("waiting_for", what));
    snprintf(e->last_error, sizeof e->last_error, "%s", what);
    e->health = HEALTH_MISSING;
    e->current[0] = '\0';
    e->have_id = false;
    free(e->etag);
    e->etag = NULL;
}

static void count_check(struct entry *e, enum check_result r)
{
    e->last_check_at = ad_clock_wall_ms();
    ad_counter_inc(e->w->checks[r]);
}

/* First line of text, trimmed, as a version name; -1 with err when it is none. */
static int parse_current(const char *text, size_t len, char *version, char *errstr,
                         size_t errstr_size)
{
    size_t n = 0;
    while (n < len && text[n] != '\n' && text[n] != '\r')
        n++;
    size_t a = 0;
    while (a < n && isspace((unsigned char)text[a]))
        a++;
    while (n > a && isspace((unsigned char)text[n - 1]))
        n--;
    if (n == a) {
        ad_errstr_set(errstr, errstr_size, "it is empty");
        return -1;
    }
    if (n - a >= VERSION_SIZE || !valid_name(text + a, n - a)) {
        ad_errstr_set(errstr, errstr_size,
                      "its first line is not a version name (letters, digits, '.', '_', '-', at "
                      "most %d)",
                      VERSION_SIZE - 1);
        return -1;
    }
    memcpy(version, text + a, n - a);
    version[n - a] = '\0';
    return 0;
}

/* ---- the worker thread ---- */

static bool file_missing(const char *dir, const char *file, char *errstr, size_t errstr_size)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (stat(path, &st) == 0 || errno != ENOENT)
        return false;
    ad_errstr_set(errstr, errstr_size, "%s: %s", path, strerror(ENOENT));
    return true;
}

static void run_job(struct job *j)
{
    const struct entry *e = j->e;
    const struct ad_model_expect *expect = e->has_expect ? &e->expect : NULL;
    double start = ad_clock_mono_seconds();

    if (!j->manifest) {
        /* A version whose files are not all there is not refused: the trainer (or a volume
         * that syncs) may still be writing it. */
        if (file_missing(j->dir, "manifest.json", j->error, sizeof j->error) ||
            file_missing(j->dir, "model.safetensors", j->error, sizeof j->error))
            j->incomplete = true;
        else
            j->model = ad_model_load(j->dir, expect, j->error, sizeof j->error);
    } else {
        j->model = ad_model_parse(j->dir, j->manifest, j->manifest_len, j->weights, j->weights_len,
                                  expect, j->error, sizeof j->error);
    }
    free(j->manifest);
    free(j->weights);
    j->manifest = j->weights = NULL;
    /* Versions are told apart by name: a manifest that names another one would be served
     * and shown under a name CURRENT does not give. */
    if (j->model && (strcmp(ad_model_name(j->model), e->name) != 0 ||
                     strcmp(ad_model_version(j->model), j->version) != 0)) {
        snprintf(j->error, sizeof j->error,
                 "%s/manifest.json: names model \"%s\" version \"%s\", but CURRENT names model "
                 "\"%s\" version \"%s\"",
                 j->dir, ad_model_name(j->model), ad_model_version(j->model), e->name, j->version);
        ad_model_unref(j->model);
        j->model = NULL;
    }
    j->seconds = ad_clock_mono_seconds() - start;
}

static void *worker_main(void *arg)
{
    struct ad_model_watch *w = arg;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && !w->todo)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        struct job *j = w->todo;
        w->todo = j->next;
        pthread_mutex_unlock(&w->mu);

        run_job(j);

        pthread_mutex_lock(&w->mu);
        j->next = w->done;
        w->done = j;
        /* A full pipe already holds a wake-up: nothing is lost when this write fails. */
        ssize_t n = write(w->pipe_w, "", 1);
        (void)n;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void free_job(struct job *j)
{
    if (!j)
        return;
    ad_model_unref(j->model);
    free(j->manifest);
    free(j->weights);
    free(j->dir);
    free(j);
}

/* Hands a load to the worker; takes manifest and weights (NULL: read from dir). */
static void start_load(struct entry *e, char *dir, uint8_t *manifest, size_t manifest_len,
                       uint8_t *weights, size_t weights_len)
{
    struct ad_model_watch *w = e->w;
    struct job *j = calloc(1, sizeof *j);
    if (!j || !dir) {
        free(j);
        free(dir);
        free(manifest);
        free(weights);
        e->stage = STAGE_IDLE;
        note_error(e, REASON_INTERNAL, "out of memory starting a load");
        return;
    }
    j->e = e;
    j->dir = dir;
    snprintf(j->version, sizeof j->version, "%s", e->pending);
    j->gen = e->pending_gen;
    j->manifest = manifest;
    j->manifest_len = manifest_len;
    j->weights = weights;
    j->weights_len = weights_len;
    e->stage = STAGE_LOADING;

    pthread_mutex_lock(&w->mu);
    struct job **tail = &w->todo;
    while (*tail)
        tail = &(*tail)->next;
    *tail = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* A load came back to the loop: report it. */
static void finish_job(struct ad_model_watch *w, struct job *j)
{
    struct entry *e = j->e;

    e->stage = STAGE_IDLE;
    ad_histogram_observe(w->load_seconds, j->seconds);
    if (j->incomplete) {
        note_error(e, REASON_INCOMPLETE, "%s (the version is not complete yet)", j->error);
        return;
    }
    note_healthy(e);
    snprintf(e->handled, sizeof e->handled, "%s", j->version);
    e->handled_gen = j->gen;
    if (j->model) {
        e->handled_refused = false;
        e->refusal[0] = '\0';
        AD_INFO_KV("a model version was loaded and validated", AD_KV_STR("model", e->name),
                   AD_KV_STR("version", j->version), AD_KV_DOUBLE("seconds", j->seconds));
        struct ad_model *m = j->model;
        j->model = NULL;
        if (w->h.on_model)
            w->h.on_model(w->h.arg, e->name, m);
        else
            ad_model_unref(m);
        return;
    }
    e->handled_refused = true;
    snprintf(e->refusal, sizeof e->refusal, "%s", j->error);
    ad_counter_inc(e->refused);
    AD_ERROR_KV("a model version was refused", AD_KV_STR("model", e->name),
                AD_KV_STR("version", j->version), AD_KV_STR("error", j->error));
    if (w->h.on_refused)
        w->h.on_refused(w->h.arg, e->name, j->version, j->error);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct ad_model_watch *w = arg;
    char buf[64];
    (void)what;

    while (read(fd, buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&w->mu);
    struct job *list = w->done, *fifo = NULL;
    w->done = NULL;
    pthread_mutex_unlock(&w->mu);
    while (list) {
        struct job *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        struct job *j = fifo;
        fifo = j->next;
        finish_job(w, j);
        free_job(j);
    }
    /* Triggers that came during the loads run now. */
    run_checks(w);
}

/* ---- deciding ---- */

/*
 * CURRENT names version; rewritten says whether CURRENT was written again since the last
 * check. Returns true when a load is to start.
 */
static bool is_new(struct entry *e, const char *version, bool rewritten, bool forced)
{
    if (rewritten)
        e->gen++;
    if (strcmp(version, e->serving) == 0)
        return false;
    if (strcmp(version, e->handled) == 0) {
        if (!e->handled_refused)
            return false; /* reported already: the callee has it */
        if (!forced && e->handled_gen == e->gen)
            return false; /* refused, and CURRENT has not been written since */
    }
    return true;
}

static void found(struct entry *e, const char *version, bool forced)
{
    count_check(e, CHECK_NEW_VERSION);
    snprintf(e->pending, sizeof e->pending, "%s", version);
    e->pending_gen = e->gen;
    e->pending_forced = forced;
    if (!forced && e->found_gen == e->gen && strcmp(version, e->found_version) == 0) {
        AD_DEBUG_KV("loading a model version again after a store error",
                    AD_KV_STR("model", e->name), AD_KV_STR("version", version));
        return;
    }
    snprintf(e->found_version, sizeof e->found_version, "%s", version);
    e->found_gen = e->gen;
    ad_counter_inc(e->found);
    AD_INFO_KV("a new model version was found", AD_KV_STR("model", e->name),
               AD_KV_STR("version", version), AD_KV_STR("store", e->w->display));
}

static void unchanged(struct entry *e)
{
    note_healthy(e);
    count_check(e, CHECK_UNCHANGED);
}

/* ---- a folder store ---- */

static char *version_dir(const struct entry *e, const char *base)
{
    char *dir = NULL;
    if (asprintf(&dir, "%s/%s/%s", base, e->name, e->pending) < 0)
        return NULL;
    return dir;
}

/* The first missing part of <store>/<model>/CURRENT, for the "no model yet" line. */
static void describe_missing(const struct entry *e, char *out, size_t size)
{
    const char *store = e->w->path;
    struct stat st;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", store, e->name);
    if (stat(store, &st) < 0 || !S_ISDIR(st.st_mode))
        snprintf(out, size, "the store %s (it does not exist)", store);
    else if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        snprintf(out, size, "%s (it does not exist)", path);
    else
        snprintf(out, size, "%s/CURRENT (it does not exist)", path);
}

static void check_folder(struct entry *e, bool forced)
{
    struct ad_model_watch *w = e->w;
    char path[4200], version[VERSION_SIZE], why[4400];
    struct stat st;
    size_t len = 0;

    snprintf(path, sizeof path, "%s/%s/CURRENT", w->path, e->name);
    /* Without blocking, and only a regular file: a FIFO put there must not stall the loop. */
    char *text = ad_file_read(path, CURRENT_MAX_BYTES, &len, &st, why, sizeof why);
    if (!text) {
        if (errno == ENOENT || errno == ENOTDIR) {
            describe_missing(e, why, sizeof why);
            note_missing(e, why);
            count_check(e, CHECK_MISSING);
        } else {
            note_error(e, errno == EINVAL || errno == EFBIG ? REASON_BAD_CURRENT : REASON_READ,
                       "%s: %s", path, why);
            count_check(e, CHECK_ERROR);
        }
        return;
    }
    int parsed = parse_current(text, len, version, why, sizeof why);
    free(text);
    if (parsed < 0) {
        note_error(e, REASON_BAD_CURRENT, "%s: %s", path, why);
        count_check(e, CHECK_ERROR);
        return;
    }

    struct file_id id = {st.st_dev, st.st_ino, st.st_size, st.st_mtim};
    bool rewritten = !e->have_id || id.dev != e->id.dev || id.ino != e->id.ino ||
                     id.size != e->id.size || id.mtime.tv_sec != e->id.mtime.tv_sec ||
                     id.mtime.tv_nsec != e->id.mtime.tv_nsec || strcmp(version, e->current) != 0;
    e->id = id;
    e->have_id = true;
    snprintf(e->current, sizeof e->current, "%s", version);
    if (!is_new(e, version, rewritten, forced)) {
        unchanged(e);
        return;
    }
    found(e, version, forced);
    start_load(e, version_dir(e, w->path), NULL, 0, NULL, 0);
}

/* ---- inotify ---- */

#define MODEL_EVENTS                                                                        \
    (IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | \
     IN_ONLYDIR)
#define STORE_EVENTS (IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

static int add_watch(struct ad_model_watch *w, const char *path, uint32_t mask)
{
    int wd = inotify_add_watch(w->ino_fd, path, mask);
    if (wd < 0 && errno != ENOENT && errno != ENOTDIR && !w->watch_failed_logged) {
        /* ENOSPC: fs.inotify.max_user_watches is spent. The poll still finds everything. */
        w->watch_failed_logged = true;
        AD_WARN_KV("cannot watch a model folder with inotify; relying on the poll",
                   AD_KV_STR("path", path), AD_KV_STR("error", strerror(errno)),
                   AD_KV_STR("poll_interval", w->poll_text));
    }
    return wd;
}

/* Watches what exists of the store and the model folders; called before every round of checks,
 * so folders that appear (or come back) are watched before they are read. */
static void add_watches(struct ad_model_watch *w)
{
    char path[4200];
    if (w->ino_fd < 0)
        return;
    if (w->store_wd < 0)
        w->store_wd = add_watch(w, w->path, STORE_EVENTS);
    for (size_t i = 0; i < w->n_entries; i++) {
        struct entry *e = &w->entries[i];
        if (e->wd >= 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", w->path, e->name);
        e->wd = add_watch(w, path, MODEL_EVENTS);
    }
}

static void on_inotify_event(const struct inotify_event *ev, void *arg)
{
    struct ad_model_watch *w = arg;
    if (ev->mask & IN_Q_OVERFLOW) {
        want_all(w, false);
        return;
    }
    /* A watched folder that moved away is watched no more: its path is watched again. */
    bool gone = ev->mask & (IN_IGNORED | IN_MOVE_SELF | IN_DELETE_SELF);
    if (ev->wd == w->store_wd) {
        if (gone) {
            if (!(ev->mask & IN_IGNORED))
                inotify_rm_watch(w->ino_fd, ev->wd);
            w->store_wd = -1;
            want_all(w, false);
        } else if (ev->len) {
            struct entry *e = find_entry(w, ev->name, strnlen(ev->name, ev->len));
            if (e)
                e->want = true;
        }
    }
    for (size_t i = 0; i < w->n_entries; i++) {
        struct entry *e = &w->entries[i];
        if (e->wd != ev->wd)
            continue;
        if (gone) {
            if (!(ev->mask & IN_IGNORED))
                inotify_rm_watch(w->ino_fd, ev->wd);
            e->wd = -1;
        }
        /* Any change in the model folder: CURRENT renamed over, written, or (Kubernetes'
         * atomic writer) the ..data link swapped. Reading CURRENT is cheap; the check decides. */
        e->want = true;
    }
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    ad_fs_events_drain(fd, on_inotify_event, arg);
    kick(arg);
}

/* ---- an HTTP store ---- */

static enum reason http_reason(enum ad_http_result r)
{
    switch (r) {
    case AD_HTTP_TIMEOUT:
        return REASON_TIMEOUT;
    case AD_HTTP_TOO_LARGE:
        return REASON_TOO_LARGE;
    case AD_HTTP_TRUNCATED:
    case AD_HTTP_RESET: /* either way the file did not arrive whole */
        return REASON_TRUNCATED;
    case AD_HTTP_MALFORMED:
        return REASON_MALFORMED;
    case AD_HTTP_INTERNAL:
        return REASON_INTERNAL;
    default:
        return REASON_CONNECT;
    }
}

/* Notes a failed transfer or an error status; returns true when the answer is a 200. */
static bool http_ok(struct entry *e, const struct ad_http_response *r, const char *url)
{
    if (r->result != AD_HTTP_OK) {
        note_error(e, http_reason(r->result), "GET %s: %s", url, r->error);
        return false;
    }
    if (r->status == 200)
        return true;
    note_error(e, r->status == 404 ? REASON_NOT_FOUND : REASON_HTTP_STATUS,
               "GET %s: HTTP status %ld", url, r->status);
    return false;
}

static int fetch(struct entry *e, const char *file, const char *etag, size_t max_body,
                 int64_t timeout_ms, int64_t stall_ms, ad_http_fetch_cb cb);

static void after_http(struct entry *e)
{
    if (e->stage == STAGE_IDLE && e->want)
        kick(e->w);
}

static void on_weights(void *arg, struct ad_http_response *r)
{
    struct entry *e = arg;
    struct ad_model_watch *w = e->w;
    char url[4200];

    e->xfer = NULL;
    e->stage = STAGE_IDLE;
    snprintf(url, sizeof url, "%s/%s/%s/model.safetensors", w->display, e->name, e->pending);
    if (!http_ok(e, r, url)) {
        free(e->manifest);
        e->manifest = NULL;
        after_http(e);
        return;
    }
    uint8_t *weights = r->body;
    r->body = NULL;
    uint8_t *manifest = e->manifest;
    e->manifest = NULL;
    start_load(e, version_dir(e, w->display), manifest, e->manifest_len, weights, r->body_len);
    after_http(e);
}

static void on_manifest(void *arg, struct ad_http_response *r)
{
    struct entry *e = arg;
    struct ad_model_watch *w = e->w;
    char url[4200], file[VERSION_SIZE + 32];

    e->xfer = NULL;
    e->stage = STAGE_IDLE;
    snprintf(url, sizeof url, "%s/%s/%s/manifest.json", w->display, e->name, e->pending);
    if (!http_ok(e, r, url)) {
        after_http(e);
        return;
    }
    e->manifest = r->body;
    e->manifest_len = r->body_len;
    r->body = NULL;
    snprintf(file, sizeof file, "%s/model.safetensors", e->pending);
    /* Large files may take long: a transfer that stops moving is ended sooner. */
    if (fetch(e, file, NULL, WEIGHTS_MAX_BYTES, WEIGHTS_TIMEOUT_MS, w->stall_ms, on_weights) == 0)
        e->stage = STAGE_WEIGHTS;
    else {
        free(e->manifest);
        e->manifest = NULL;
    }
    after_http(e);
}

static void on_current(void *arg, struct ad_http_response *r)
{
    struct entry *e = arg;
    struct ad_model_watch *w = e->w;
    char url[4200], version[VERSION_SIZE], why[4400], file[VERSION_SIZE + 32];
    bool forced = e->pending_forced;

    e->xfer = NULL;
    e->stage = STAGE_IDLE;
    snprintf(url, sizeof url, "%s/%s/CURRENT", w->display, e->name);
    if (r->result == AD_HTTP_OK && r->status == 404) {
        snprintf(why, sizeof why, "%s (HTTP 404)", url);
        note_missing(e, why);
        count_check(e, CHECK_MISSING);
        goto out;
    }
    if (r->result == AD_HTTP_OK && r->status == 304) {
        if (!e->current[0]) {
            /* Only an ETag of ours brings a 304, and it is kept with what it named. */
            free(e->etag);
            e->etag = NULL;
            note_error(e, REASON_MALFORMED, "GET %s: HTTP status 304 to a request without an ETag",
                       url);
            count_check(e, CHECK_ERROR);
            goto out;
        }
        snprintf(version, sizeof version, "%s", e->current);
    } else if (!http_ok(e, r, url)) {
        count_check(e, CHECK_ERROR);
        goto out;
    } else if (parse_current((const char *)r->body, r->body_len, version, why, sizeof why) < 0) {
        note_error(e, REASON_BAD_CURRENT, "%s: %s", url, why);
        count_check(e, CHECK_ERROR);
        goto out;
    }

    /* Without ETags a rewrite that names the same version cannot be told. */
    bool rewritten = r->status == 200 && (strcmp(version, e->current) != 0 ||
                                          (r->etag && (!e->etag || strcmp(r->etag, e->etag))));
    if (r->status == 200) {
        free(e->etag);
        e->etag = r->etag ? strdup(r->etag) : NULL;
        snprintf(e->current, sizeof e->current, "%s", version);
    }
    if (!is_new(e, version, rewritten, forced)) {
        unchanged(e);
        goto out;
    }
    found(e, version, forced);
    snprintf(file, sizeof file, "%s/manifest.json", version);
    if (fetch(e, file, NULL, MANIFEST_MAX_BYTES, 0, 0, on_manifest) == 0)
        e->stage = STAGE_MANIFEST;
out:
    after_http(e);
}

/* Starts GET <url>/<model>/<file>; returns 0, or -1 having noted the error. */
static int fetch(struct entry *e, const char *file, const char *etag, size_t max_body,
                 int64_t timeout_ms, int64_t stall_ms, ad_http_fetch_cb cb)
{
    struct ad_model_watch *w = e->w;
    char *url = NULL, err[512];
    if (asprintf(&url, "%s/%s/%s", w->url, e->name, file) < 0) {
        note_error(e, REASON_INTERNAL, "out of memory");
        return -1;
    }
    struct ad_http_request req = {
        .url = url,
        .if_none_match = etag,
        .max_body = max_body,
        .timeout_ms = timeout_ms,
        .stall_timeout_ms = stall_ms,
    };
    e->xfer = ad_http_fetch_get(w->http, &req, cb, e, err, sizeof err);
    free(url);
    if (!e->xfer) {
        note_error(e, REASON_INTERNAL, "%s", err);
        return -1;
    }
    return 0;
}

static void check_http(struct entry *e, bool forced)
{
    e->pending_forced = forced;
    /* An explicit check asks for CURRENT whole: an ETag made of mtime and size (nginx) stays
     * the same for a rewrite of the same length within one second. */
    if (fetch(e, "CURRENT", forced ? NULL : e->etag, CURRENT_MAX_BYTES, 0, 0, on_current) == 0)
        e->stage = STAGE_CURRENT;
    else
        count_check(e, CHECK_ERROR);
}

/* ---- the rounds of checks ---- */

static void run_checks(struct ad_model_watch *w)
{
    if (w->path)
        add_watches(w);
    for (size_t i = 0; i < w->n_entries; i++) {
        struct entry *e = &w->entries[i];
        if (!e->want || e->stage != STAGE_IDLE)
            continue; /* a busy model checks again when it is done */
        bool forced = e->force;
        e->want = e->force = false;
        if (w->path)
            check_folder(e, forced);
        else
            check_http(e, forced);
    }
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run_checks(arg);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct ad_model_watch *w = arg;
    (void)fd;
    (void)what;
    want_all(w, false);
    run_checks(w);
}

/* ---- the API ---- */

void ad_model_watch_check(struct ad_model_watch *w)
{
    want_all(w, true);
    kick(w);
}

void ad_model_watch_announce(struct ad_model_watch *w, const char *payload, size_t len)
{
    json_error_t jerr;
    json_t *doc = json_loadb(payload, len, 0, &jerr);
    json_t *model = json_object_get(doc, "model"), *version = json_object_get(doc, "version");
    const char *why = NULL;
    char text[256];

    if (!doc) {
        snprintf(text, sizeof text, "not JSON: %s", jerr.text);
        why = text;
    } else if (!json_is_object(doc))
        why = "not a JSON object";
    else if (!json_is_string(model) ||
             !valid_name(json_string_value(model), json_string_length(model)))
        why = "\"model\" is missing or not a model name";
    else if (version && (!json_is_string(version) || json_string_length(version) >= VERSION_SIZE ||
                         !valid_name(json_string_value(version), json_string_length(version))))
        why = "\"version\" is not a version name";

    if (why) {
        uint64_t held = 0;
        ad_counter_inc(w->announcements[ANN_MALFORMED]);
        if (ad_log_ratelimit_allow(&w->announce_log, ad_clock_mono_ms(), &held))
            AD_WARN_KV("a malformed model announcement; checking every model",
                       AD_KV_STR("error", why), AD_KV_INT("suppressed", held));
        want_all(w, false);
    } else {
        struct entry *e = find_entry(w, json_string_value(model), json_string_length(model));
        if (!e) {
            ad_counter_inc(w->announcements[ANN_UNKNOWN_MODEL]);
            AD_DEBUG_KV("a model announcement for a model not watched here",
                        AD_KV_STR("model", json_string_value(model)));
        } else {
            ad_counter_inc(w->announcements[ANN_ACCEPTED]);
            AD_INFO_KV("a model version was announced; checking the store",
                       AD_KV_STR("model", e->name),
                       AD_KV_STR("version", version ? json_string_value(version) : ""));
            e->want = e->force = true;
        }
    }
    json_decref(doc);
    kick(w);
}

void ad_model_watch_set_serving(struct ad_model_watch *w, const char *model, const char *version)
{
    struct entry *e = model ? find_entry(w, model, strlen(model)) : NULL;
    if (e)
        snprintf(e->serving, sizeof e->serving, "%s", version ? version : "");
}

static json_t *maybe_string(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

void ad_model_watch_status(const struct ad_model_watch *w, json_t *out)
{
    static const char *const stage_names[] = {"idle", "fetching CURRENT", "fetching the manifest",
                                              "fetching the weights", "loading"};
    char when[64];
    json_t *models = json_object();

    json_object_set_new(out, "store", json_string(w->display));
    json_object_set_new(out, "type", json_string(w->path ? "folder" : "http"));
    json_object_set_new(out, "inotify", json_boolean(w->ino_fd >= 0));
    json_object_set_new(out, "poll_interval_seconds", json_real((double)w->poll_ms / 1000.0));
    for (size_t i = 0; i < w->n_entries; i++) {
        const struct entry *e = &w->entries[i];
        json_t *o = json_object();
        json_object_set_new(o, "current", maybe_string(e->current));
        json_object_set_new(o, "serving", maybe_string(e->serving));
        json_object_set_new(o, "state", json_string(health_names[e->health]));
        json_object_set_new(o, "activity", json_string(stage_names[e->stage]));
        if (e->stage != STAGE_IDLE && e->stage != STAGE_CURRENT)
            json_object_set_new(o, "loading", json_string(e->pending));
        if (e->health == HEALTH_MISSING)
            json_object_set_new(o, "waiting_for", json_string(e->last_error));
        if (e->health == HEALTH_ERROR) {
            json_object_set_new(o, "error_reason", json_string(reason_names[e->reason]));
            json_object_set_new(o, "error", json_string(e->last_error));
            ad_clock_format(e->last_error_at, when, sizeof when);
            json_object_set_new(o, "error_at", json_string(when));
        }
        if (e->handled[0] && !e->handled_refused)
            json_object_set_new(o, "last_reported", json_string(e->handled));
        if (e->handled[0] && e->handled_refused)
            json_object_set_new(
                o, "refused", json_pack("{s:s, s:s}", "version", e->handled, "error", e->refusal));
        if (e->last_check_at) {
            ad_clock_format(e->last_check_at, when, sizeof when);
            json_object_set_new(o, "last_check", json_string(when));
        }
        json_object_set_new(models, e->name, o);
    }
    json_object_set_new(out, "models", models);
}

/* ---- construction ---- */

static void register_metrics(struct ad_model_watch *w, struct ad_metrics *m)
{
    static const char checks_help[] = "Checks of a model's CURRENT in the model store, by result.";
    static const char errors_help[] =
        "Model store checks and fetches that failed, by reason; each is retried at the next poll.";
    static const char ann_help[] = "Model announcements received from Redis, by result.";
    for (int i = 0; i < N_CHECKS; i++)
        w->checks[i] = ad_metrics_counter(m, "anomalyd_model_store_checks_total", checks_help,
                                          "result", check_names[i], NULL);
    for (int i = 0; i < N_REASONS; i++)
        w->errors[i] = ad_metrics_counter(m, "anomalyd_model_store_errors_total", errors_help,
                                          "reason", reason_names[i], NULL);
    for (int i = 0; i < N_ANN; i++)
        w->announcements[i] = ad_metrics_counter(m, "anomalyd_model_announcements_total", ann_help,
                                                 "result", ann_names[i], NULL);
    w->load_seconds =
        ad_metrics_histogram(m, "anomalyd_model_load_duration_seconds",
                             "Time to load and validate one model version on the watcher's thread.",
                             ad_metrics_seconds_buckets, ad_metrics_seconds_buckets_len, NULL);
    for (size_t i = 0; i < w->n_entries; i++) {
        struct entry *e = &w->entries[i];
        e->found = ad_metrics_counter(m, "anomalyd_model_versions_found_total",
                                      "New model versions found in the store and loaded.", "model",
                                      e->name, NULL);
        e->refused = ad_metrics_counter(m, "anomalyd_model_versions_refused_total",
                                        "Model versions the watcher refused (validation failed).",
                                        "model", e->name, NULL);
    }
}

static int copy_expect(struct entry *e, const struct ad_model_expect *x)
{
    e->has_expect = true;
    e->expect = *x;
    if (!x->features)
        return 0;
    e->features.items = calloc(x->features->len ? x->features->len : 1, sizeof(char *));
    if (!e->features.items)
        return -1;
    for (size_t i = 0; i < x->features->len; i++) {
        e->features.items[i] = strdup(x->features->items[i]);
        if (!e->features.items[i])
            return -1;
        e->features.len++;
    }
    e->expect.features = &e->features;
    return 0;
}

struct ad_model_watch *ad_model_watch_new_with(const struct ad_model_watch_options *o, char *errstr,
                                               size_t errstr_size)
{
    const struct ad_settings_model_store *s = o->store;
    struct ad_model_watch *w = NULL;

    if (!o->base || !s || (!s->path && !s->url)) {
        ad_errstr_set(errstr, errstr_size,
                      "the model watcher needs a loop and a store (path or url)");
        return NULL;
    }
    w = calloc(1, sizeof *w);
    if (!w)
        goto oom;
    w->base = o->base;
    w->h = o->handler;
    w->ino_fd = w->pipe_r = w->pipe_w = -1;
    w->store_wd = -1;
    w->poll_ms = s->poll_interval > 0 ? s->poll_interval : DEFAULT_POLL_MS;
    ad_duration_format(w->poll_ms, w->poll_text, sizeof w->poll_text);
    w->announce_log.interval_ms = 60000;
    if (pthread_mutex_init(&w->mu, NULL) != 0 || pthread_cond_init(&w->cv, NULL) != 0) {
        free(w);
        ad_errstr_set(errstr, errstr_size, "cannot create a mutex");
        return NULL;
    }
    if (s->path) {
        w->path = strdup(s->path);
        w->display = strdup(s->path);
        if (!w->path || !w->display)
            goto oom;
        for (size_t n = strlen(w->path); n > 1 && w->path[n - 1] == '/'; n--)
            w->path[n - 1] = '\0';
    } else {
        w->url = strdup(s->url);
        if (!w->url)
            goto oom;
        for (size_t n = strlen(w->url); n > 0 && w->url[n - 1] == '/'; n--)
            w->url[n - 1] = '\0';
        w->display = ad_http_redact_url(w->url);
        if (!w->display)
            goto oom;
        /* curl writes a bare host with a "/" path: paths are appended to it with their own. */
        for (size_t n = strlen(w->display); n > 0 && w->display[n - 1] == '/'; n--)
            w->display[n - 1] = '\0';
        w->stall_ms = s->http.timeout;
        w->http = ad_http_fetch_new(w->base, &s->http, errstr, errstr_size);
        if (!w->http)
            goto fail;
    }

    w->entries = calloc(o->n_models ? o->n_models : 1, sizeof *w->entries);
    if (!w->entries)
        goto oom;
    for (size_t i = 0; i < o->n_models; i++) {
        struct entry *e = &w->entries[i];
        const char *name = o->models[i];
        e->w = w;
        e->wd = -1;
        if (!name || !valid_name(name, strlen(name)) || find_entry(w, name, strlen(name))) {
            ad_errstr_set(errstr, errstr_size, "model \"%s\": %s", name ? name : "(null)",
                          name && valid_name(name, strlen(name)) ? "listed twice"
                                                                 : "not a model name");
            goto fail;
        }
        w->n_entries++;
        e->name = strdup(name);
        if (!e->name || (o->expect && copy_expect(e, &o->expect[i]) < 0))
            goto oom;
        e->want = true;
    }
    register_metrics(w, o->metrics);

    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot create a pipe: %s", strerror(errno));
        goto fail;
    }
    w->pipe_r = fds[0];
    w->pipe_w = fds[1];
    w->done_ev = event_new(w->base, w->pipe_r, EV_READ | EV_PERSIST, on_done, w);
    w->kick = event_new(w->base, -1, 0, on_kick, w);
    w->poll_timer = event_new(w->base, -1, EV_PERSIST, on_poll, w);
    if (!w->done_ev || !w->kick || !w->poll_timer)
        goto oom;
    struct timeval tv = {.tv_sec = w->poll_ms / 1000, .tv_usec = (w->poll_ms % 1000) * 1000};
    if (event_add(w->done_ev, NULL) < 0 || event_add(w->poll_timer, &tv) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot add the watcher's events to the loop");
        goto fail;
    }
    if (w->path && !o->no_inotify) {
        w->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->ino_fd < 0)
            AD_WARN_KV("inotify is not available; relying on the poll",
                       AD_KV_STR("error", strerror(errno)));
        else if (!(w->ino_ev =
                       event_new(w->base, w->ino_fd, EV_READ | EV_PERSIST, on_inotify, w)) ||
                 event_add(w->ino_ev, NULL) < 0)
            goto oom;
    }
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
        ad_errstr_set(errstr, errstr_size, "cannot start the model loading thread: %s",
                      strerror(rc));
        goto fail;
    }
    w->thread_started = true;

    AD_INFO_KV("watching the model store", AD_KV_STR("store", w->display),
               AD_KV_STR("type", w->path ? "folder" : "http"), AD_KV_INT("models", w->n_entries),
               AD_KV_STR("inotify", w->ino_fd >= 0 ? "on" : "off"),
               AD_KV_STR("poll_interval", w->poll_text));
    kick(w);
    return w;

oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
fail:
    ad_model_watch_destroy(w);
    return NULL;
}

struct ad_model_watch *ad_model_watch_new(struct event_base *base,
                                          const struct ad_settings_model_store *store,
                                          const char *const *models, size_t n_models,
                                          const struct ad_model_watch_handler *h,
                                          struct ad_metrics *metrics, char *errstr,
                                          size_t errstr_size)
{
    struct ad_model_watch_options o = {
        .base = base,
        .store = store,
        .models = models,
        .n_models = n_models,
        .handler = h ? *h : (struct ad_model_watch_handler){0},
        .metrics = metrics,
    };
    return ad_model_watch_new_with(&o, errstr, errstr_size);
}

void ad_model_watch_destroy(struct ad_model_watch *w)
{
    if (!w)
        return;
    if (w->thread_started) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
    }
    for (struct job *j; (j = w->todo);) {
        w->todo = j->next;
        free_job(j);
    }
    for (struct job *j; (j = w->done);) {
        w->done = j->next;
        free_job(j);
    }
    /* Transfers in flight point at entries: they go first. */
    ad_http_fetch_destroy(w->http);
    if (w->done_ev)
        event_free(w->done_ev);
    if (w->kick)
        event_free(w->kick);
    if (w->poll_timer)
        event_free(w->poll_timer);
    if (w->ino_ev)
        event_free(w->ino_ev);
    if (w->ino_fd >= 0)
        close(w->ino_fd);
    if (w->pipe_r >= 0)
        close(w->pipe_r);
    if (w->pipe_w >= 0)
        close(w->pipe_w);
    for (size_t i = 0; i < w->n_entries; i++) {
        struct entry *e = &w->entries[i];
        free(e->name);
        free(e->etag);
        free(e->manifest);
        for (size_t k = 0; k < e->features.len; k++)
            free(e->features.items[k]);
        free(e->features.items);
    }
    free(w->entries);
    free(w->path);
    free(w->url);
    free(w->display);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
