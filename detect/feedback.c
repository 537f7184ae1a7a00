#include "detect/feedback.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/file.h"
#include "base/grow.h"

#define AD_LOG_MODULE "feedback"
#include "base/log.h"

/* A marks file larger than this is refused at start rather than read into memory. */
#define MAX_FILE (256u * 1024 * 1024)
#define OPEN     INT64_MAX

/* A notification remembered. */
struct note {
    char id[AD_ALERT_ID_LEN + 1];
    char *key;
    size_t key_len;
    int64_t starts_ms; /* the alert's starts_at: the same in each of its notifications */
    int64_t ends_ms;   /* a resolution's ends_at; OPEN otherwise */
    json_t *doc;       /* entity, labels, fingerprint, model, model_version, starts_at */
};

/* A mark of one alert (key, starts_ms); the last line of its id in the file. */
struct mark {
    char *id;
    char *key; /* NULL: its labels do not make a key of this detector */
    size_t key_len;
    int64_t starts_ms, from_ms, through_ms;
    enum ad_feedback_verdict verdict;
    json_t *record;
};

struct ad_feedback {
    char *detector, *model, *path; /* path NULL: not kept */
    char **keys;
    size_t n_keys;
    int64_t step_ms, for_windows;
    struct note *notes; /* a ring of `recent` */
    size_t recent, next, n_notes;
    struct mark *marks;
    size_t n_marks, cap_marks;
    uint64_t skipped_lines;
};

static const char *const verdict_names[] = {"false_positive", "true_positive"};

const char *ad_feedback_verdict_name(enum ad_feedback_verdict v)
{
    return verdict_names[v == AD_FEEDBACK_TRUE_POSITIVE];
}

int ad_feedback_verdict_parse(const char *name)
{
    for (int i = 0; name && i < 2; i++)
        if (strcmp(name, verdict_names[i]) == 0)
            return i;
    return -1;
}

/* ---- keys and times ---- */

/* The entity key (label values in key order, NUL-separated) of a labels object; NULL when a
 * key label is missing. */
static char *key_of(const struct ad_feedback *fb, json_t *labels, size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < fb->n_keys; i++) {
        const char *v = json_string_value(json_object_get(labels, fb->keys[i]));
        if (!v)
            return NULL;
        total += strlen(v) + 1;
    }
    char *key = malloc(total ? total : 1), *p = key;
    if (!key)
        return NULL;
    for (size_t i = 0; i < fb->n_keys; i++) {
        const char *v = json_string_value(json_object_get(labels, fb->keys[i]));
        size_t n = strlen(v);
        memcpy(p, v, n);
        p += n;
        if (i + 1 < fb->n_keys)
            *p++ = '\0';
    }
    *len = (size_t)(p - key);
    return key;
}

static int64_t time_field(json_t *doc, const char *name, int64_t fallback)
{
    int64_t ms;
    const char *text = json_string_value(json_object_get(doc, name));
    return text && ad_clock_parse(text, &ms) == 0 ? ms : fallback;
}

static json_t *time_json(int64_t ms)
{
    char text[40];
    if (ms == OPEN || ms == INT64_MIN)
        return json_null();
    ad_clock_format(ms, text, sizeof text);
    return json_string(text);
}

static json_t *ms_json(int64_t ms)
{
    return ms == OPEN || ms == INT64_MIN ? json_null() : json_integer((json_int_t)ms);
}

/* ---- marks in memory ---- */

static void free_mark(struct mark *m)
{
    free(m->id);
    free(m->key);
    json_decref(m->record);
}

static struct mark *mark_of_episode(struct ad_feedback *fb, const char *key, size_t len,
                                    int64_t starts_ms)
{
    for (size_t i = 0; i < fb->n_marks; i++) {
        struct mark *m = &fb->marks[i];
        if (m->key && m->key_len == len && memcmp(m->key, key, len) == 0 &&
            m->starts_ms == starts_ms)
            return m;
    }
    return NULL;
}

static struct mark *mark_of_id(const struct ad_feedback *fb, const char *id)
{
    for (size_t i = 0; i < fb->n_marks; i++)
        if (strcmp(fb->marks[i].id, id) == 0)
            return &fb->marks[i];
    return NULL;
}

/* Takes record (a reference) as the mark it describes: replaces the mark of the same alert or
 * id, or adds one. 0, or -1 when the record is not a mark of this detector. */
static int take_record(struct ad_feedback *fb, json_t *record)
{
    const char *id = json_string_value(json_object_get(record, "id"));
    const char *detector = json_string_value(json_object_get(record, "detector"));
    int verdict = ad_feedback_verdict_parse(json_string_value(json_object_get(record, "verdict")));
    json_t *from = json_object_get(record, "from_ms"),
           *through = json_object_get(record, "through_ms");
    if (!id || !detector || strcmp(detector, fb->detector) != 0 || verdict < 0 ||
        !json_is_integer(from) || !(json_is_integer(through) || json_is_null(through))) {
        json_decref(record);
        return -1;
    }
    struct mark m = {.verdict = (enum ad_feedback_verdict)verdict,
                     .from_ms = json_integer_value(from),
                     .through_ms = json_is_null(through) ? OPEN : json_integer_value(through),
                     .starts_ms = time_field(record, "starts_at", INT64_MIN),
                     .record = record};
    m.id = strdup(id);
    m.key = key_of(fb, json_object_get(record, "labels"), &m.key_len);
    struct mark *old = m.key ? mark_of_episode(fb, m.key, m.key_len, m.starts_ms) : NULL;
    if (!old)
        old = mark_of_id(fb, id);
    if (!m.id) {
        free_mark(&m);
        return -1;
    }
    if (old) {
        free_mark(old);
        *old = m;
        return 0;
    }
    if (ad_grow(&fb->marks, &fb->cap_marks, fb->n_marks + 1, sizeof *fb->marks) < 0) {
        free_mark(&m);
        return -1;
    }
    fb->marks[fb->n_marks++] = m;
    return 0;
}

/* ---- the file ---- */

static int load(struct ad_feedback *fb, char *errstr, size_t errstr_size)
{
    char why[256];
    size_t len;
    char *text = ad_file_read(fb->path, MAX_FILE, &len, NULL, why, sizeof why);
    if (!text)
        return errno == ENOENT ? 0 : ad_errstr_set(errstr, errstr_size, "%s: %s", fb->path, why);
    size_t lineno = 0;
    for (char *line = text, *end; line < text + len; line = end + 1) {
        end = memchr(line, '\n', (size_t)(text + len - line));
        if (!end)
            end = text + len; /* a last line cut short by a crash is tried as it is */
        lineno++;
        if (end == line)
            continue;
        json_error_t error;
        json_t *record = json_loadb(line, (size_t)(end - line), 0, &error);
        const char *detector = json_string_value(json_object_get(record, "detector"));
        if (detector && strcmp(detector, fb->detector) != 0) {
            json_decref(record); /* another detector's, on the same model */
            continue;
        }
        if (!record || take_record(fb, record) < 0) {
            fb->skipped_lines++;
            AD_WARN_KV("a line of the marks file is not a mark; skipped",
                       AD_KV_STR("path", fb->path), AD_KV_INT("line", (long long)lineno));
        }
    }
    free(text);
    return 0;
}

/* Appends record as one line and makes it durable. */
static int append(struct ad_feedback *fb, json_t *record, char *errstr, size_t errstr_size)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", fb->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return ad_errstr_set(errstr, errstr_size, "cannot make %s: %s", dir, strerror(errno));
    char *line = json_dumps(record, JSON_COMPACT);
    if (!line)
        return ad_errstr_set(errstr, errstr_size, "out of memory");
    size_t n = strlen(line);
    line[n] = '\n'; /* json_dumps' NUL becomes the line's end; nothing reads past it */
    int fd = open(fb->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    int rc = -1;
    if (fd < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot open %s: %s", fb->path, strerror(errno));
        goto out;
    }
    /* O_APPEND writes of a line are not interleaved with another writer's (a second detector
     * of the same model); fsync makes the mark survive a crash right after it is answered. */
    if (write(fd, line, n + 1) != (ssize_t)(n + 1) || fsync(fd) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot write %s: %s", fb->path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    free(line);
    return rc;
}

/* ---- the interface ---- */

struct ad_feedback *ad_feedback_new(const struct ad_feedback_options *o, char *errstr,
                                    size_t errstr_size)
{
    struct ad_feedback *fb = calloc(1, sizeof *fb);
    if (!fb)
        goto oom;
    fb->detector = strdup(o->detector);
    fb->model = strdup(o->model);
    fb->recent = o->recent ? o->recent : 1;
    fb->notes = calloc(fb->recent, sizeof *fb->notes);
    fb->keys = calloc(o->keys->len + 1, sizeof *fb->keys);
    fb->step_ms = o->step_ms;
    fb->for_windows = o->for_windows > 1 ? o->for_windows : 1;
    if (!fb->detector || !fb->model || !fb->notes || !fb->keys)
        goto oom;
    for (; fb->n_keys < o->keys->len; fb->n_keys++)
        if (!(fb->keys[fb->n_keys] = strdup(o->keys->items[fb->n_keys])))
            goto oom;
    if (o->folder && asprintf(&fb->path, "%s/%s/feedback.jsonl", o->folder, o->model) < 0) {
        fb->path = NULL;
        goto oom;
    }
    if (fb->path && load(fb, errstr, errstr_size) < 0)
        goto fail;
    return fb;
oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
fail:
    ad_feedback_destroy(fb);
    return NULL;
}

static void free_note(struct note *n)
{
    free(n->key);
    json_decref(n->doc);
    *n = (struct note){0};
}

void ad_feedback_destroy(struct ad_feedback *fb)
{
    if (!fb)
        return;
    for (size_t i = 0; fb->notes && i < fb->recent; i++)
        free_note(&fb->notes[i]);
    for (size_t i = 0; i < fb->n_marks; i++)
        free_mark(&fb->marks[i]);
    for (size_t i = 0; i < fb->n_keys; i++)
        free(fb->keys[i]);
    free(fb->keys);
    free(fb->notes);
    free(fb->marks);
    free(fb->detector);
    free(fb->model);
    free(fb->path);
    free(fb);
}

static const struct note *note_of(const struct ad_feedback *fb, const char *id)
{
    for (size_t i = 0; i < fb->n_notes; i++)
        if (strcmp(fb->notes[i].id, id) == 0)
            return &fb->notes[i];
    return NULL;
}

/* The resolution of the alert (key, starts_ms), when remembered: its ends_at; OPEN otherwise. */
static int64_t resolution(const struct ad_feedback *fb, const char *key, size_t len,
                          int64_t starts_ms)
{
    for (size_t i = 0; i < fb->n_notes; i++) {
        const struct note *n = &fb->notes[i];
        if (n->ends_ms != OPEN && n->starts_ms == starts_ms && n->key_len == len &&
            memcmp(n->key, key, len) == 0)
            return n->ends_ms;
    }
    return OPEN;
}

void ad_feedback_notified(struct ad_feedback *fb, const struct ad_alert *alert, const char *key,
                          size_t len)
{
    json_error_t error;
    json_t *doc = json_loadb(alert->json, alert->json_len, 0, &error);
    struct note n = {.ends_ms = OPEN};
    if (!doc)
        return;
    snprintf(n.id, sizeof n.id, "%s", alert->id);
    n.starts_ms = time_field(doc, "starts_at", INT64_MIN);
    if (strcmp(alert->state, "resolved") == 0)
        n.ends_ms = time_field(doc, "ends_at", alert->end_ms);
    n.doc = json_object();
    n.key = malloc(len ? len : 1);
    if (!n.doc || !n.key) {
        free_note(&n);
        json_decref(doc);
        return;
    }
    memcpy(n.key, key, len);
    n.key_len = len;
    static const char *const kept[] = {"entity", "labels",        "fingerprint",
                                       "model",  "model_version", "starts_at"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        json_t *v = json_object_get(doc, kept[i]);
        if (v)
            json_object_set(n.doc, kept[i], v);
    }
    json_decref(doc);
    free_note(&fb->notes[fb->next]);
    fb->notes[fb->next] = n;
    fb->next = (fb->next + 1) % fb->recent;
    if (fb->n_notes < fb->recent)
        fb->n_notes++;

    /* A resolution closes the open mark of its alert. */
    struct mark *m = n.ends_ms != OPEN ? mark_of_episode(fb, key, len, n.starts_ms) : NULL;
    if (m && m->through_ms == OPEN) {
        char err[256];
        json_t *record = json_deep_copy(m->record);
        if (!record)
            return;
        json_object_set_new(record, "through_ms", ms_json(n.ends_ms));
        json_object_set_new(record, "through", time_json(n.ends_ms));
        if (fb->path && append(fb, record, err, sizeof err) < 0)
            AD_ERROR_KV("cannot keep the end of a marked alert", AD_KV_STR("error", err));
        m->through_ms = n.ends_ms;
        json_decref(m->record);
        m->record = record;
    }
}

bool ad_feedback_knows(const struct ad_feedback *fb, const char *id)
{
    return note_of(fb, id) || mark_of_id(fb, id);
}

enum ad_feedback_error ad_feedback_mark(struct ad_feedback *fb, const char *id,
                                        enum ad_feedback_verdict verdict, const char *comment,
                                        const char *by, int64_t now_ms, json_t **record,
                                        struct ad_feedback_span *span, char *errstr,
                                        size_t errstr_size)
{
    const struct note *n = note_of(fb, id);
    struct mark *old = mark_of_id(fb, id);
    json_t *r = NULL;
    *record = NULL;
    if (!n && !old)
        return AD_FEEDBACK_UNKNOWN;
    if (!fb->path) {
        ad_errstr_set(errstr, errstr_size,
                      "marks are kept in feedback.path or model_store.path; neither is a folder");
        return AD_FEEDBACK_NOT_KEPT;
    }
    if (n) {
        if (!old)
            old = mark_of_episode(fb, n->key, n->key_len, n->starts_ms);
        r = json_deep_copy(n->doc);
        if (!r)
            goto oom;
        int64_t from = n->starts_ms - (fb->for_windows - 1) * fb->step_ms;
        int64_t through =
            n->ends_ms != OPEN ? n->ends_ms : resolution(fb, n->key, n->key_len, n->starts_ms);
        json_object_set_new(r, "from_ms", ms_json(from));
        json_object_set_new(r, "through_ms", ms_json(through));
        json_object_set_new(r, "from", time_json(from));
        json_object_set_new(r, "through", time_json(through));
    } else {
        r = json_deep_copy(old->record); /* an alert older than the notifications remembered */
        if (!r)
            goto oom;
    }
    char marked_at[40];
    ad_clock_format(now_ms, marked_at, sizeof marked_at);
    json_object_set_new(r, "id", json_string(id));
    json_object_set_new(r, "detector", json_string(fb->detector));
    json_object_set_new(r, "model", json_string(fb->model));
    json_object_set_new(r, "step_ms", json_integer((json_int_t)fb->step_ms));
    json_object_set_new(r, "verdict", json_string(ad_feedback_verdict_name(verdict)));
    json_object_set_new(r, "comment", comment ? json_string(comment) : json_null());
    json_object_set_new(r, "by", json_string(by ? by : "unknown"));
    json_object_set_new(r, "marked_at", json_string(marked_at));
    if (append(fb, r, errstr, errstr_size) < 0) {
        json_decref(r);
        return AD_FEEDBACK_NOT_KEPT;
    }
    if (take_record(fb, json_incref(r)) < 0) {
        json_decref(r);
        goto oom;
    }
    struct mark *m = mark_of_id(fb, id);
    *span = (struct ad_feedback_span){
        .key = m->key, .key_len = m->key_len, .from_ms = m->from_ms, .through_ms = m->through_ms};
    *record = r;
    AD_INFO_KV("alert marked", AD_KV_STR("detector", fb->detector), AD_KV_STR("id", id),
               AD_KV_STR("verdict", ad_feedback_verdict_name(verdict)),
               AD_KV_STR("by", by ? by : "unknown"));
    return AD_FEEDBACK_OK;
oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
    return AD_FEEDBACK_NOT_KEPT;
}

bool ad_feedback_false_positive(const struct ad_feedback *fb, const char *key, size_t len,
                                int64_t end_ms)
{
    for (size_t i = 0; fb && i < fb->n_marks; i++) {
        const struct mark *m = &fb->marks[i];
        if (m->verdict == AD_FEEDBACK_FALSE_POSITIVE && m->key && m->key_len == len &&
            end_ms >= m->from_ms && end_ms <= m->through_ms && memcmp(m->key, key, len) == 0)
            return true;
    }
    return false;
}

json_t *ad_feedback_get(const struct ad_feedback *fb, const char *id)
{
    const struct mark *m = mark_of_id(fb, id);
    const struct note *n = m ? NULL : note_of(fb, id);
    for (size_t i = 0; n && !m && i < fb->n_marks; i++) {
        const struct mark *c = &fb->marks[i];
        if (c->key && c->key_len == n->key_len && c->starts_ms == n->starts_ms &&
            memcmp(c->key, n->key, n->key_len) == 0)
            m = c;
    }
    return m ? json_incref(m->record) : NULL;
}

void ad_feedback_status(const struct ad_feedback *fb, json_t *out)
{
    size_t fp = 0, tp = 0, open = 0;
    for (size_t i = 0; i < fb->n_marks; i++) {
        fp += fb->marks[i].verdict == AD_FEEDBACK_FALSE_POSITIVE;
        tp += fb->marks[i].verdict == AD_FEEDBACK_TRUE_POSITIVE;
        open += fb->marks[i].through_ms == OPEN;
    }
    json_object_set_new(out, "false_positives", json_integer((json_int_t)fp));
    json_object_set_new(out, "true_positives", json_integer((json_int_t)tp));
    json_object_set_new(out, "open", json_integer((json_int_t)open));
    json_object_set_new(out, "notifications_remembered", json_integer((json_int_t)fb->n_notes));
    json_object_set_new(out, "path", fb->path ? json_string(fb->path) : json_null());
    if (fb->skipped_lines)
        json_object_set_new(out, "lines_skipped", json_integer((json_int_t)fb->skipped_lines));
}
