#include "stream/alertmanager_sink.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/grow.h"
#include "base/template.h"
#include "stream/http_fetch.h"
#include "windows/entity_index.h"

#define AD_LOG_MODULE "alertmanager"
#include "base/log.h"

/* Alerts per request: Alertmanager takes any number, but a small batch keeps a request (and
 * what one failure sends again) short. */
#define BATCH        64
#define MIN_RETRY_MS 100
#define MAX_RETRY_MS 30000
/* endsAt of a firing alert: this many resend intervals ahead, as Prometheus does. */
#define ENDS_AHEAD 4
/* Error bodies are kept this long at most, for /status and the log. */
#define ERROR_TEXT 200

/* A queued notification. Entry seq = head_seq + its index from the head. */
struct entry {
    uint64_t token;
    json_t *alert; /* Alertmanager's alert object, endsAt set when sent if firing */
    bool firing;
    int64_t starts_ms;
};

/* The firing alert of one (detector, entity), resent every interval. id = index + 1. */
struct firing {
    char *key; /* detector NUL entity */
    size_t key_len;
    uint64_t hash;
    json_t *alert; /* NULL: a free slot */
    int64_t starts_ms;
};

struct peer {
    struct ad_alertmanager_sink *s;
    char *url;             /* <base>/api/v2/alerts */
    char *shown;           /* the base URL without a password */
    uint64_t done_through; /* every entry with a lower seq has been accepted */
    struct ad_http_transfer *t;
    size_t in_batch;      /* notifications in the request in flight */
    bool resend_due;      /* a resend cycle is under way */
    uint32_t resend_from; /* the firing ids above this are still to be resent in it */
    uint32_t resend_last; /* the highest id in the resend in flight */
    bool resending;       /* the request in flight is a resend */
    double sent_at;
    unsigned failures;
    struct event *retry;
    bool up;
    char last_error[ERROR_TEXT + 64];
    int64_t last_error_at;
    bool error_logged;
    uint64_t accepted, resent, failed_requests;
    struct ad_counter *ok_notify, *ok_resend, *err_notify, *err_resend, *alerts_notify,
        *alerts_resend;
    struct ad_gauge *up_g;
};

struct ad_alertmanager_sink {
    struct event_base *base;
    struct ad_http_fetch *http;
    char *severity;
    struct ad_strmap labels;       /* copies */
    struct ad_template *generator; /* NULL: no generatorURL */
    int64_t resend_ms;
    size_t queue_limit;
    ad_sink_ack_fn ack;
    void *ack_arg;

    struct peer *peers;
    size_t n_peers;

    struct entry *q; /* from q_head, q_len of them */
    size_t q_head, q_len, q_cap;
    uint64_t head_seq;

    struct firing *firing;
    size_t n_slots, cap_slots, n_firing;
    struct ad_entity_index *index;
    struct event *resend_timer;
    unsigned rng;

    bool stopping, stop_finished, flushed;
    void (*stop_done)(void *arg, bool flushed);
    void *stop_arg;
    struct event *stop_timer, *done_timer;

    uint64_t refused; /* documents that were not alerts */
    struct ad_gauge *queue_g, *firing_g;
    struct ad_histogram *duration;
};

static void pump(struct peer *p);

static void timer_add_ms(struct event *ev, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* ---- documents to Alertmanager's alerts ---- */

/* Label names as Prometheus allows them: anything else becomes '_', and a leading digit gets
 * one in front, so that one odd key cannot make Alertmanager refuse a whole request. */
static char *label_name(const char *name)
{
    size_t n = strlen(name);
    char *out = malloc(n + 2), *o = out;
    if (!out)
        return NULL;
    if (!n || isdigit((unsigned char)name[0]))
        *o++ = '_';
    for (size_t i = 0; i < n; i++)
        *o++ = isalnum((unsigned char)name[i]) ? name[i] : '_';
    *o = '\0';
    return out;
}

static int set_string(json_t *obj, const char *key, const char *value)
{
    return value ? json_object_set_new(obj, key, json_string(value)) : 0;
}

/* A number of the document as annotation text; absent (null) numbers are left out. */
static void set_number(json_t *obj, const char *key, json_t *value)
{
    char text[32];
    if (!json_is_number(value))
        return;
    snprintf(text, sizeof text, "%.6g", json_number_value(value));
    json_object_set_new(obj, key, json_string(text));
}

static const char *doc_string(json_t *doc, const char *key)
{
    return json_string_value(json_object_get(doc, key));
}

/* "app.errors 61.2%, app.latency_p99 25.4%". */
static char *top_features_text(json_t *features)
{
    char *out = NULL;
    size_t len = 0, cap = 0, i;
    json_t *f;
    json_array_foreach (features, i, f) {
        const char *name = doc_string(f, "feature");
        json_t *share = json_object_get(f, "share");
        char item[300];
        if (!name || !json_is_number(share))
            continue;
        int n = snprintf(item, sizeof item, "%s%s %.1f%%", len ? ", " : "", name,
                         100.0 * json_number_value(share));
        if (n < 0 || (size_t)n >= sizeof item || ad_grow(&out, &cap, len + (size_t)n + 1, 1) < 0)
            continue;
        memcpy(out + len, item, (size_t)n + 1);
        len += (size_t)n;
    }
    return out;
}

struct lookup_ctx {
    json_t *doc;
    char numbers[4][24];
};

static const char *ms_of(struct lookup_ctx *c, int slot, const char *key)
{
    int64_t ms;
    const char *text = doc_string(c->doc, key);
    if (!text || ad_clock_parse(text, &ms) < 0)
        return NULL;
    snprintf(c->numbers[slot], sizeof c->numbers[slot], "%lld", (long long)ms);
    return c->numbers[slot];
}

static const char *lookup(void *arg, const char *name)
{
    struct lookup_ctx *c = arg;
    if (strncmp(name, "labels.", 7) == 0)
        return json_string_value(json_object_get(json_object_get(c->doc, "labels"), name + 7));
    if (strcmp(name, "starts_at_ms") == 0)
        return ms_of(c, 0, "starts_at");
    if (strcmp(name, "ends_at_ms") == 0)
        return ms_of(c, 1, "ends_at");
    if (strcmp(name, "window_start_ms") == 0)
        return ms_of(c, 2, "window_start");
    if (strcmp(name, "window_end_ms") == 0)
        return ms_of(c, 3, "window_end");
    return doc_string(c->doc, name); /* detector, entity, id, fingerprint, state */
}

/*
 * Alertmanager's alert for the alert document doc: labels, annotations, startsAt, endsAt (a
 * resolution's; a firing alert's is set as it is sent) and generatorURL. NULL when doc is not
 * an alert, or memory runs short.
 */
static json_t *convert(struct ad_alertmanager_sink *s, json_t *doc, bool *firing,
                       int64_t *starts_ms)
{
    const char *detector = doc_string(doc, "detector"), *state = doc_string(doc, "state");
    const char *starts_at = doc_string(doc, "starts_at"), *ends_at = doc_string(doc, "ends_at");
    json_t *entity_labels = json_object_get(doc, "labels");
    json_t *alert = json_object(), *labels = json_object(), *notes = json_object();
    const char *key;
    json_t *value;
    if (!alert || !labels || !notes || !detector || !state || !json_is_object(entity_labels) ||
        (strcmp(state, "firing") != 0 && strcmp(state, "resolved") != 0))
        goto fail;
    *firing = strcmp(state, "firing") == 0;
    if (!starts_at || ad_clock_parse(starts_at, starts_ms) < 0 ||
        (!*firing && (!ends_at || ad_clock_parse(ends_at, &(int64_t){0}) < 0)))
        goto fail;

    /* Static labels first, so that the entity's own win; alertname and severity last. */
    for (size_t i = 0; i < s->labels.len; i++)
        set_string(labels, s->labels.keys[i], s->labels.values[i]);
    json_object_foreach (entity_labels, key, value) {
        char *name = label_name(key);
        if (!name)
            goto fail;
        /* A key that would take the place of alertname or severity keeps its value aside. */
        if (strcmp(name, "alertname") == 0 || strcmp(name, "severity") == 0) {
            char aside[64];
            snprintf(aside, sizeof aside, "entity_%s", name);
            json_object_set(labels, aside, value);
        } else {
            json_object_set(labels, name, value);
        }
        free(name);
    }
    set_string(labels, "alertname", detector);
    set_string(labels, "severity", s->severity);

    set_string(notes, "summary", doc_string(doc, "summary"));
    set_number(notes, "surprise", json_object_get(doc, "surprise"));
    set_number(notes, "score", json_object_get(doc, "score"));
    set_number(notes, "likelihood", json_object_get(doc, "likelihood"));
    set_number(notes, "seasonal_score", json_object_get(doc, "seasonal_score"));
    set_string(notes, "stream", doc_string(doc, "stream"));
    char *top = top_features_text(json_object_get(doc, "top_features"));
    set_string(notes, "top_features", top);
    free(top);
    set_string(notes, "model", doc_string(doc, "model"));
    set_string(notes, "model_version", doc_string(doc, "model_version"));
    set_string(notes, "alert_id", doc_string(doc, "id"));
    set_string(notes, "fingerprint", doc_string(doc, "fingerprint"));
    set_string(notes, "entity", doc_string(doc, "entity"));
    set_string(notes, "reason", doc_string(doc, "reason"));
    set_string(notes, "window_start", doc_string(doc, "window_start"));
    set_string(notes, "window_end", doc_string(doc, "window_end"));

    json_object_set_new(alert, "labels", labels);
    labels = NULL;
    json_object_set_new(alert, "annotations", notes);
    notes = NULL;
    set_string(alert, "startsAt", starts_at);
    if (!*firing)
        set_string(alert, "endsAt", ends_at);
    if (s->generator) {
        struct lookup_ctx ctx = {.doc = doc};
        char *url = ad_template_expand(s->generator, lookup, &ctx);
        if (!url)
            goto fail;
        set_string(alert, "generatorURL", url);
        free(url);
    }
    return alert;
fail:
    json_decref(alert);
    json_decref(labels);
    json_decref(notes);
    return NULL;
}

/* A firing alert's endsAt as it is sent: ENDS_AHEAD intervals from now (never before it
 * starts, which Alertmanager refuses). */
static void set_ends_at(const struct ad_alertmanager_sink *s, json_t *alert, int64_t starts_ms)
{
    char text[40];
    int64_t now = ad_clock_wall_ms();
    ad_clock_format((now > starts_ms ? now : starts_ms) + ENDS_AHEAD * s->resend_ms, text,
                    sizeof text);
    json_object_set_new(alert, "endsAt", json_string(text));
}

/* ---- the firing alerts ---- */

static const char *firing_key(void *arg, uint32_t id, size_t *len)
{
    struct ad_alertmanager_sink *s = arg;
    *len = s->firing[id - 1].key_len;
    return s->firing[id - 1].key;
}

static char *make_key(const char *detector, const char *entity, size_t *len)
{
    size_t a = strlen(detector), b = strlen(entity);
    char *key = malloc(a + b + 2);
    if (key) {
        memcpy(key, detector, a + 1);
        memcpy(key + a + 1, entity, b + 1);
        *len = a + 1 + b;
    }
    return key;
}

static void forget_firing(struct ad_alertmanager_sink *s, const char *key, size_t len)
{
    uint64_t hash = ad_entity_hash(key, len);
    uint32_t id = ad_entity_index_find(s->index, key, len, hash);
    if (!id)
        return;
    struct firing *f = &s->firing[id - 1];
    ad_entity_index_remove(s->index, id, hash);
    json_decref(f->alert);
    free(f->key);
    *f = (struct firing){0};
    s->n_firing--;
    ad_gauge_set(s->firing_g, (double)s->n_firing);
}

/* Keeps alert (a reference is taken) as the firing alert of key. */
static int remember_firing(struct ad_alertmanager_sink *s, const char *key, size_t len,
                           json_t *alert, int64_t starts_ms)
{
    uint64_t hash = ad_entity_hash(key, len);
    uint32_t id = ad_entity_index_find(s->index, key, len, hash);
    if (id) {
        json_decref(s->firing[id - 1].alert);
        s->firing[id - 1].alert = json_incref(alert);
        s->firing[id - 1].starts_ms = starts_ms;
        return 0;
    }
    size_t slot = 0;
    while (slot < s->n_slots && s->firing[slot].alert)
        slot++;
    if (slot == s->n_slots) {
        if (ad_grow(&s->firing, &s->cap_slots, s->n_slots + 1, sizeof *s->firing) < 0)
            return -1;
        s->firing[s->n_slots++] = (struct firing){0};
    }
    struct firing *f = &s->firing[slot];
    if (!(f->key = malloc(len + 1)))
        return -1;
    memcpy(f->key, key, len);
    f->key[len] = '\0';
    f->key_len = len;
    f->hash = hash;
    f->alert = json_incref(alert);
    f->starts_ms = starts_ms;
    if (ad_entity_index_insert(s->index, (uint32_t)slot + 1, hash) < 0) {
        json_decref(f->alert);
        free(f->key);
        *f = (struct firing){0};
        return -1;
    }
    s->n_firing++;
    ad_gauge_set(s->firing_g, (double)s->n_firing);
    return 0;
}

/* ---- stopping ---- */

static void finish_stop(struct ad_alertmanager_sink *s, bool flushed)
{
    if (!s->stopping || s->stop_finished)
        return;
    s->stop_finished = true;
    s->flushed = flushed;
    evtimer_del(s->stop_timer);
    timer_add_ms(s->done_timer, 0); /* from the loop, so that done may destroy the sink */
}

static void on_done_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ad_alertmanager_sink *s = arg;
    (void)fd;
    (void)what;
    if (s->stop_done)
        s->stop_done(s->stop_arg, s->flushed);
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ad_alertmanager_sink *s = arg;
    (void)fd;
    (void)what;
    if (s->q_len)
        AD_WARN_KV("alertmanager sink stopped with alerts not accepted everywhere",
                   AD_KV_INT("queued", s->q_len));
    finish_stop(s, s->q_len == 0);
}

/* ---- the queue ---- */

static struct entry *entry_at(const struct ad_alertmanager_sink *s, uint64_t seq)
{
    return &s->q[s->q_head + (size_t)(seq - s->head_seq)];
}

/* Acknowledges and drops the entries every Alertmanager has accepted (always a prefix: each
 * takes the queue in order). */
static void ack_done(struct ad_alertmanager_sink *s)
{
    uint64_t all = UINT64_MAX;
    for (size_t i = 0; i < s->n_peers; i++)
        if (s->peers[i].done_through < all)
            all = s->peers[i].done_through;
    while (s->q_len && s->head_seq < all) {
        struct entry *e = &s->q[s->q_head];
        uint64_t token = e->token;
        json_decref(e->alert);
        s->q_head++;
        s->q_len--;
        s->head_seq++;
        if (s->ack)
            s->ack(s->ack_arg, token);
    }
    if (!s->q_len)
        s->q_head = 0;
    ad_gauge_set(s->queue_g, (double)s->q_len);
    if (s->q_len == 0)
        finish_stop(s, true);
}

/* ---- requests ---- */

static void note_error(struct peer *p, const char *kind, const char *text)
{
    snprintf(p->last_error, sizeof p->last_error, "%s", text);
    for (char *c = p->last_error; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f)
            *c = ' ';
    p->last_error_at = ad_clock_wall_ms();
    p->failed_requests++;
    if (!p->error_logged) {
        AD_WARN_KV("alertmanager request failed; retrying", AD_KV_STR("alertmanager", p->shown),
                   AD_KV_STR("kind", kind), AD_KV_STR("error", p->last_error),
                   AD_KV_INT("queued", p->s->q_len));
        p->error_logged = true;
    }
}

static void back_off(struct peer *p)
{
    struct ad_alertmanager_sink *s = p->s;
    int64_t wait = MIN_RETRY_MS;
    for (unsigned i = 1; i < p->failures && wait < MAX_RETRY_MS; i++)
        wait *= 2;
    if (wait > MAX_RETRY_MS)
        wait = MAX_RETRY_MS;
    /* ±20%, so that sinks and replicas that failed together do not retry in lockstep. */
    s->rng = s->rng * 1103515245u + 12345u;
    wait = wait * (80 + (int64_t)((s->rng >> 8) % 41)) / 100;
    timer_add_ms(p->retry, wait);
}

static void on_response(void *arg, struct ad_http_response *r)
{
    struct peer *p = arg;
    struct ad_alertmanager_sink *s = p->s;
    bool resend = p->resending;
    p->t = NULL;
    ad_histogram_observe(s->duration, ad_clock_mono_seconds() - p->sent_at);
    if (r->result == AD_HTTP_OK && r->status == 200) {
        if (p->error_logged)
            AD_INFO_KV("alertmanager accepts alerts again", AD_KV_STR("alertmanager", p->shown));
        p->error_logged = false;
        p->failures = 0;
        p->up = true;
        ad_gauge_set(p->up_g, 1);
        if (resend) {
            ad_counter_inc(p->ok_resend);
            ad_counter_add(p->alerts_resend, (double)p->in_batch);
            p->resent += p->in_batch;
            p->resend_from = p->resend_last;
        } else {
            ad_counter_inc(p->ok_notify);
            ad_counter_add(p->alerts_notify, (double)p->in_batch);
            p->accepted += p->in_batch;
            p->done_through += p->in_batch;
            ack_done(s);
        }
        p->in_batch = 0;
        pump(p);
        return;
    }
    char text[ERROR_TEXT + 64];
    if (r->result == AD_HTTP_OK)
        snprintf(text, sizeof text, "HTTP status %ld: %.*s", r->status, ERROR_TEXT,
                 r->body ? (const char *)r->body : "");
    else
        snprintf(text, sizeof text, "%s: %s", ad_http_result_name(r->result), r->error);
    ad_counter_inc(resend ? p->err_resend : p->err_notify);
    note_error(p, resend ? "resend" : "notify", text);
    p->up = false;
    ad_gauge_set(p->up_g, 0);
    p->failures++;
    p->in_batch = 0;
    back_off(p);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

static int post(struct peer *p, json_t *batch, size_t n, bool resend)
{
    struct ad_alertmanager_sink *s = p->s;
    char err[256];
    char *body = json_dumps(batch, JSON_COMPACT);
    if (!body)
        return -1;
    struct ad_http_request req = {.url = p->url,
                                  .accept = "application/json",
                                  .max_body = 1 << 20,
                                  .body = body,
                                  .body_len = strlen(body),
                                  .content_type = "application/json"};
    p->t = ad_http_fetch_post(s->http, &req, on_response, p, err, sizeof err);
    free(body);
    if (!p->t) {
        note_error(p, resend ? "resend" : "notify", err);
        return -1;
    }
    p->in_batch = n;
    p->resending = resend;
    p->sent_at = ad_clock_mono_seconds();
    return 0;
}

/* Sends this Alertmanager what it needs next, if nothing is in flight: the queue first, in
 * order; once it has everything queued, the resend cycle's next batch. */
static void pump(struct peer *p)
{
    struct ad_alertmanager_sink *s = p->s;
    if (p->t || evtimer_pending(p->retry, NULL))
        return;
    json_t *batch = json_array();
    size_t n = 0;
    bool resend = false;
    if (!batch)
        goto fail;
    uint64_t end = s->head_seq + s->q_len;
    for (uint64_t seq = p->done_through; seq < end && n < BATCH; seq++, n++) {
        struct entry *e = entry_at(s, seq);
        json_t *alert = json_copy(e->alert); /* shallow: endsAt is this send's */
        if (!alert)
            goto fail;
        if (e->firing)
            set_ends_at(s, alert, e->starts_ms);
        json_array_append_new(batch, alert);
    }
    if (n == 0 && p->resend_due) {
        resend = true;
        for (size_t i = p->resend_from; i < s->n_slots && n < BATCH; i++) {
            struct firing *f = &s->firing[i];
            if (!f->alert)
                continue;
            json_t *alert = json_copy(f->alert);
            if (!alert)
                goto fail;
            set_ends_at(s, alert, f->starts_ms);
            json_array_append_new(batch, alert);
            p->resend_last = (uint32_t)i + 1;
            n++;
        }
        if (n == 0)
            p->resend_due = false; /* the cycle is complete */
    }
    if (n && post(p, batch, n, resend) < 0)
        goto fail;
    json_decref(batch);
    return;
fail:
    json_decref(batch);
    p->failures++;
    back_off(p);
}

static void pump_all(struct ad_alertmanager_sink *s)
{
    for (size_t i = 0; i < s->n_peers; i++)
        pump(&s->peers[i]);
}

/* A resend cycle for every Alertmanager: each goes through the firing alerts once it has the
 * queue. */
static void start_resends(struct ad_alertmanager_sink *s)
{
    for (size_t i = 0; i < s->n_peers; i++) {
        struct peer *p = &s->peers[i];
        if (!p->resend_due) {
            p->resend_due = true;
            p->resend_from = 0;
        }
    }
    pump_all(s);
}

static void on_resend_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ad_alertmanager_sink *s = arg;
    (void)fd;
    (void)what;
    if (s->n_firing)
        start_resends(s);
}

/* ---- the interface ---- */

static json_t *parse(const struct ad_alert_msg *msg)
{
    json_error_t error;
    return json_loadb(msg->json, msg->json_len, 0, &error);
}

int ad_alertmanager_sink_send(struct ad_alertmanager_sink *s, const struct ad_alert_msg *msg,
                              uint64_t token)
{
    json_t *doc = parse(msg), *alert = NULL;
    char *key = NULL;
    size_t key_len = 0;
    bool firing = false;
    int64_t starts_ms = 0;
    int rc = -1;
    if (!doc || !(alert = convert(s, doc, &firing, &starts_ms))) {
        s->refused++;
        AD_ERROR_KV("an alert that is not an alert document; not sent",
                    AD_KV_STR("detector", msg->detector), AD_KV_STR("id", msg->id));
        goto out;
    }
    if (!(key = make_key(msg->detector, msg->entity, &key_len)) ||
        ad_grow(&s->q, &s->q_cap, s->q_head + s->q_len + 1, sizeof *s->q) < 0)
        goto out;
    if (firing ? remember_firing(s, key, key_len, alert, starts_ms) < 0
               : (forget_firing(s, key, key_len), 0))
        goto out;
    s->q[s->q_head + s->q_len++] =
        (struct entry){.token = token, .alert = alert, .firing = firing, .starts_ms = starts_ms};
    alert = NULL;
    ad_gauge_set(s->queue_g, (double)s->q_len);
    pump_all(s);
    rc = 0;
out:
    json_decref(doc);
    json_decref(alert);
    free(key);
    return rc;
}

void ad_alertmanager_sink_restore(struct ad_alertmanager_sink *s, const struct ad_alert_msg *msg)
{
    json_t *doc = parse(msg), *alert = NULL;
    size_t key_len = 0;
    char *key = make_key(msg->detector, msg->entity, &key_len);
    bool firing = false;
    int64_t starts_ms = 0;
    if (doc && key && (alert = convert(s, doc, &firing, &starts_ms))) {
        if (!firing) {
            forget_firing(s, key, key_len);
        } else if (remember_firing(s, key, key_len, alert, starts_ms) == 0) {
            /* The previous process's endsAt may be close: do not wait a whole interval. */
            start_resends(s);
        }
    }
    json_decref(doc);
    json_decref(alert);
    free(key);
}

bool ad_alertmanager_sink_full(const struct ad_alertmanager_sink *s)
{
    return s->q_len >= s->queue_limit;
}

size_t ad_alertmanager_sink_queued(const struct ad_alertmanager_sink *s)
{
    return s->q_len;
}

void ad_alertmanager_sink_stop(struct ad_alertmanager_sink *s, int64_t deadline_ms,
                               void (*done)(void *arg, bool flushed), void *arg)
{
    s->stopping = true;
    s->stop_done = done;
    s->stop_arg = arg;
    if (s->q_len == 0) {
        finish_stop(s, true);
        return;
    }
    timer_add_ms(s->stop_timer, deadline_ms - ad_clock_mono_ms());
}

static int add_peer(struct ad_alertmanager_sink *s, struct ad_metrics *m, const char *base,
                    char *errstr, size_t errstr_size)
{
    static const char requests_help[] = "Requests to Alertmanager, by kind (notify: queued "
                                        "alerts; resend: firing alerts sent again) and result.";
    static const char alerts_help[] = "Alerts Alertmanager accepted, by kind.";
    struct peer *p = &s->peers[s->n_peers];
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    p->s = s;
    p->url = malloc(n + sizeof "/api/v2/alerts");
    p->shown = ad_http_redact_url(base);
    p->retry = evtimer_new(s->base, on_retry, p);
    if (!p->url || !p->shown || !p->retry)
        return ad_errstr_set(errstr, errstr_size, "out of memory");
    memcpy(p->url, base, n);
    memcpy(p->url + n, "/api/v2/alerts", sizeof "/api/v2/alerts");
    s->n_peers++;
    const char *am = p->shown;
    p->ok_notify = ad_metrics_counter(m, "anomalyd_alertmanager_requests_total", requests_help,
                                      "alertmanager", am, "kind", "notify", "result", "ok", NULL);
    p->err_notify =
        ad_metrics_counter(m, "anomalyd_alertmanager_requests_total", requests_help, "alertmanager",
                           am, "kind", "notify", "result", "error", NULL);
    p->ok_resend = ad_metrics_counter(m, "anomalyd_alertmanager_requests_total", requests_help,
                                      "alertmanager", am, "kind", "resend", "result", "ok", NULL);
    p->err_resend =
        ad_metrics_counter(m, "anomalyd_alertmanager_requests_total", requests_help, "alertmanager",
                           am, "kind", "resend", "result", "error", NULL);
    p->alerts_notify = ad_metrics_counter(m, "anomalyd_alertmanager_alerts_total", alerts_help,
                                          "alertmanager", am, "kind", "notify", NULL);
    p->alerts_resend = ad_metrics_counter(m, "anomalyd_alertmanager_alerts_total", alerts_help,
                                          "alertmanager", am, "kind", "resend", NULL);
    p->up_g = ad_metrics_gauge(m, "anomalyd_alertmanager_up",
                               "1 while the last request to this Alertmanager succeeded.",
                               "alertmanager", am, NULL);
    return 0;
}

struct ad_alertmanager_sink *ad_alertmanager_sink_new(
    struct event_base *base, const struct ad_settings_alertmanager_sink *settings,
    struct ad_metrics *metrics, ad_sink_ack_fn ack, void *ack_arg, char *errstr, size_t errstr_size)
{
    struct ad_alertmanager_sink *s = calloc(1, sizeof *s);
    char err[256];
    if (!s) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->base = base;
    s->ack = ack;
    s->ack_arg = ack_arg;
    s->resend_ms = settings->resend_interval > 0 ? settings->resend_interval : 60000;
    s->queue_limit = settings->queue_limit > 0 ? (size_t)settings->queue_limit : 10000;
    s->rng = (unsigned)ad_clock_mono_ms();
    s->http = ad_http_fetch_new(base, &settings->http, err, sizeof err);
    if (!s->http) {
        ad_errstr_set(errstr, errstr_size, "alertmanager sink: %s", err);
        goto fail;
    }
    if (settings->generator_url &&
        !(s->generator = ad_template_parse(settings->generator_url, NULL, err, sizeof err))) {
        ad_errstr_set(errstr, errstr_size, "alertmanager sink: generator_url: %s", err);
        goto fail;
    }
    s->severity = strdup(settings->severity ? settings->severity : "warning");
    s->labels.keys = calloc(settings->labels.len + 1, sizeof *s->labels.keys);
    s->labels.values = calloc(settings->labels.len + 1, sizeof *s->labels.values);
    s->peers = calloc(settings->urls.len + 1, sizeof *s->peers);
    s->index = ad_entity_index_new(firing_key, s);
    s->resend_timer = event_new(base, -1, EV_PERSIST, on_resend_timer, s);
    s->stop_timer = evtimer_new(base, on_stop_timer, s);
    s->done_timer = evtimer_new(base, on_done_timer, s);
    if (!s->severity || !s->labels.keys || !s->labels.values || !s->peers || !s->index ||
        !s->resend_timer || !s->stop_timer || !s->done_timer)
        goto oom;
    for (size_t i = 0; i < settings->labels.len; i++, s->labels.len++)
        if (!(s->labels.keys[i] = strdup(settings->labels.keys[i])) ||
            !(s->labels.values[i] = strdup(settings->labels.values[i])))
            goto oom;
    for (size_t i = 0; i < settings->urls.len; i++)
        if (add_peer(s, metrics, settings->urls.items[i], errstr, errstr_size) < 0)
            goto fail;
    s->queue_g = ad_metrics_gauge(metrics, "anomalyd_alertmanager_queue_alerts",
                                  "Alerts not yet accepted by every Alertmanager.", NULL);
    s->firing_g = ad_metrics_gauge(metrics, "anomalyd_alertmanager_firing_alerts",
                                   "Firing alerts the Alertmanager sink resends.", NULL);
    s->duration =
        ad_metrics_histogram(metrics, "anomalyd_alertmanager_request_duration_seconds",
                             "Time of one request to an Alertmanager.", ad_metrics_latency_buckets,
                             ad_metrics_latency_buckets_len, NULL);
    ad_gauge_set(s->queue_g, 0);
    ad_gauge_set(s->firing_g, 0);
    struct timeval every = {.tv_sec = (time_t)(s->resend_ms / 1000),
                            .tv_usec = (suseconds_t)(s->resend_ms % 1000) * 1000};
    if (event_add(s->resend_timer, &every) < 0) {
        ad_errstr_set(errstr, errstr_size, "alertmanager sink: cannot add its timer");
        goto fail;
    }
    return s;
oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
fail:
    ad_alertmanager_sink_destroy(s);
    return NULL;
}

void ad_alertmanager_sink_destroy(struct ad_alertmanager_sink *s)
{
    if (!s)
        return;
    ad_http_fetch_destroy(s->http); /* aborts every request without its callback */
    for (size_t i = 0; i < s->n_peers; i++) {
        free(s->peers[i].url);
        free(s->peers[i].shown);
        if (s->peers[i].retry)
            event_free(s->peers[i].retry);
    }
    free(s->peers);
    for (size_t i = 0; i < s->q_len; i++)
        json_decref(s->q[s->q_head + i].alert);
    free(s->q);
    for (size_t i = 0; i < s->n_slots; i++) {
        json_decref(s->firing[i].alert);
        free(s->firing[i].key);
    }
    free(s->firing);
    ad_entity_index_destroy(s->index);
    for (size_t i = 0; i < s->labels.len; i++) {
        free(s->labels.keys[i]);
        free(s->labels.values[i]);
    }
    free(s->labels.keys);
    free(s->labels.values);
    free(s->severity);
    ad_template_free(s->generator);
    if (s->resend_timer)
        event_free(s->resend_timer);
    if (s->stop_timer)
        event_free(s->stop_timer);
    if (s->done_timer)
        event_free(s->done_timer);
    free(s);
}

void ad_alertmanager_sink_status(const struct ad_alertmanager_sink *s, json_t *out)
{
    json_object_set_new(out, "queued", json_integer((json_int_t)s->q_len));
    json_object_set_new(out, "queue_limit", json_integer((json_int_t)s->queue_limit));
    json_object_set_new(out, "full", json_boolean(ad_alertmanager_sink_full(s)));
    json_object_set_new(out, "firing", json_integer((json_int_t)s->n_firing));
    json_object_set_new(out, "resend_interval_seconds", json_real((double)s->resend_ms / 1000.0));
    json_object_set_new(out, "refused", json_integer((json_int_t)s->refused));
    json_t *peers = json_array();
    for (size_t i = 0; i < s->n_peers; i++) {
        const struct peer *p = &s->peers[i];
        json_t *part = json_object();
        json_object_set_new(part, "url", json_string(p->shown));
        json_object_set_new(part, "up", json_boolean(p->up));
        json_object_set_new(part, "behind",
                            json_integer((json_int_t)(s->head_seq + s->q_len - p->done_through)));
        json_object_set_new(part, "accepted", json_integer((json_int_t)p->accepted));
        json_object_set_new(part, "resent", json_integer((json_int_t)p->resent));
        json_object_set_new(part, "failed_requests", json_integer((json_int_t)p->failed_requests));
        json_object_set_new(part, "consecutive_failures", json_integer((json_int_t)p->failures));
        json_object_set_new(part, "in_flight", json_boolean(p->t != NULL));
        if (p->last_error[0]) {
            char when[40];
            ad_clock_format(p->last_error_at, when, sizeof when);
            json_object_set_new(part, "last_error", json_string(p->last_error));
            json_object_set_new(part, "last_error_at", json_string(when));
        }
        json_array_append_new(peers, part);
    }
    json_object_set_new(out, "alertmanagers", peers);
}
