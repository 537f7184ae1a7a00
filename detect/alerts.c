#include "detect/alerts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/sha256.h"
#include "base/utf8.h"
#include "detect/entity_table.h"

/* A flapping entity settles once its share of changes is at most this part of the threshold,
 * so an entity that hovers at the threshold does not toggle between flapping and not. */
#define SETTLE_RATIO 0.75

enum state { INACTIVE, PENDING, FIRING };

static const char firing_state[] = "firing", resolved_state[] = "resolved";

/* What a window did to the state machine. */
enum step { STEP_NONE, STEP_FIRED, STEP_RESOLVED };

struct entity {
    uint8_t state;
    bool anomalous;   /* the flag of the newest window */
    bool flapping;    /* notifications are held back */
    bool outstanding; /* the last notification was "firing" */
    uint32_t run;     /* consecutive anomalous windows (inactive, pending) or normal (firing) */
    uint32_t flip_words;
    uint64_t *flips; /* a shift register, bit 0 the newest window: 1 where the flag changed */
    int64_t last_start, last_end;
    int64_t starts_at;          /* the window end at which it last went firing */
    int64_t notified_starts_at; /* starts_at of the outstanding alert */
    int64_t notified_end;       /* event time of the last notification */
};

struct ad_alerts {
    char *detector;
    struct ad_settings_alert settings;
    struct ad_strlist labels, features;
    struct ad_entity_table *table; /* key -> struct entity */
    char *model, *version;         /* the newest window's, for alerts made by expiry */
    struct ad_alerts_counts counts;
};

/* What a notification says beyond the entity. */
struct note {
    const char *state;
    const char *reason;
    bool flapping;
    int64_t end_ms;                  /* the event time: the id's, and ends_at of a resolution */
    int64_t starts_at;               /* INT64_MIN: none */
    const struct ad_alert_window *w; /* NULL: made by expiry */
    const char *version;
    int64_t now_ms;
};

/* ---- ids ---- */

static void put_u64(struct ad_sha256 *h, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    ad_sha256_update(h, b, sizeof b);
}

/* Each field length-prefixed, so no two different tuples hash the same bytes. */
static void put_bytes(struct ad_sha256 *h, const void *p, size_t len)
{
    put_u64(h, len);
    ad_sha256_update(h, p, len);
}

static void to_hex(const uint8_t *digest, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[2 * n] = '\0';
}

void ad_alert_id(const char *detector, const char *key, size_t key_len, int64_t end_ms,
                 const char *version, char id[AD_ALERT_ID_LEN + 1])
{
    struct ad_sha256 h;
    uint8_t digest[32];
    version = version ? version : "";
    ad_sha256_init(&h);
    put_bytes(&h, detector, strlen(detector));
    put_bytes(&h, key, key_len);
    put_u64(&h, (uint64_t)end_ms);
    put_bytes(&h, version, strlen(version));
    ad_sha256_final(&h, digest);
    to_hex(digest, AD_ALERT_ID_LEN / 2, id);
}

/* Stable per (detector, entity), like Alertmanager's fingerprint of a label set. */
static void fingerprint(const char *detector, const char *key, size_t key_len, char hex[17])
{
    struct ad_sha256 h;
    uint8_t digest[32];
    ad_sha256_init(&h);
    put_bytes(&h, detector, strlen(detector));
    put_bytes(&h, key, key_len);
    ad_sha256_final(&h, digest);
    to_hex(digest, 8, hex);
}

/* ---- the table ---- */

static struct entity *entity(const struct ad_alerts *a, uint32_t id)
{
    return ad_entity_table_record(a->table, id);
}

static int copy_strlist(struct ad_strlist *dst, const struct ad_strlist *src)
{
    dst->len = 0;
    dst->items = calloc(src->len ? src->len : 1, sizeof *dst->items);
    if (!dst->items)
        return -1;
    for (size_t i = 0; i < src->len; i++) {
        dst->items[i] = strdup(src->items[i]);
        if (!dst->items[i])
            return -1;
        dst->len++;
    }
    return 0;
}

static void free_strlist(struct ad_strlist *l)
{
    for (size_t i = 0; i < l->len; i++)
        free(l->items[i]);
    free(l->items);
}

static uint32_t flap_window(const struct ad_alerts *a)
{
    int64_t n = a->settings.flap_window;
    return n < 1 ? 1 : n > 1000000 ? 1000000 : (uint32_t)n;
}

static uint32_t words_for(uint32_t bits)
{
    return (bits + 63) / 64;
}

struct ad_alerts *ad_alerts_new(const char *detector, const struct ad_settings_alert *settings,
                                const struct ad_strlist *key_labels,
                                const struct ad_strlist *features, size_t max_entities)
{
    struct ad_alerts *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->detector = strdup(detector);
    a->settings = *settings;
    a->table = ad_entity_table_new(sizeof(struct entity), max_entities);
    if (!a->detector || !a->table || copy_strlist(&a->labels, key_labels) < 0 ||
        copy_strlist(&a->features, features) < 0)
        goto fail;
    return a;
fail:
    ad_alerts_destroy(a);
    return NULL;
}

void ad_alerts_configure(struct ad_alerts *a, const struct ad_settings_alert *settings)
{
    /* Flap registers grow on each entity's next window, when it needs them. */
    a->settings = *settings;
}

void ad_alerts_destroy(struct ad_alerts *a)
{
    if (!a)
        return;
    for (uint32_t id = 0; a->table && (id = ad_entity_table_next(a->table, id));)
        free(entity(a, id)->flips);
    ad_entity_table_destroy(a->table);
    free_strlist(&a->labels);
    free_strlist(&a->features);
    free(a->detector);
    free(a->model);
    free(a->version);
    free(a);
}

/* Adds (sign 1) or takes away (sign −1) what e contributes to the counts. */
static void account(struct ad_alerts *a, const struct entity *e, int sign)
{
    struct ad_alerts_counts *c = &a->counts;
    c->tracked += (size_t)sign;
    c->pending += (size_t)(sign * (e->state == PENDING));
    c->firing += (size_t)(sign * (e->state == FIRING));
    c->flapping += (size_t)(sign * e->flapping);
    c->outstanding += (size_t)(sign * e->outstanding);
}

/* A new entity for key: its id, or 0 when out of memory. */
static uint32_t add(struct ad_alerts *a, const char *key, size_t len)
{
    uint32_t id = ad_entity_table_add(a->table, key, len);
    if (!id)
        return 0;
    struct entity *e = entity(a, id);
    uint32_t words = words_for(flap_window(a));
    *e = (struct entity){.flip_words = words,
                         .flips = calloc(words, sizeof(uint64_t)),
                         .last_start = INT64_MIN,
                         .last_end = INT64_MIN,
                         .starts_at = INT64_MIN,
                         .notified_starts_at = INT64_MIN,
                         .notified_end = INT64_MIN};
    if (!e->flips) {
        ad_entity_table_remove(a->table, id);
        return 0;
    }
    account(a, e, 1);
    return id;
}

static void drop(struct ad_alerts *a, uint32_t id)
{
    struct entity *e = entity(a, id);
    account(a, e, -1);
    free(e->flips);
    ad_entity_table_remove(a->table, id);
}

/* ---- the state machine ---- */

static enum step step(const struct ad_alerts *a, struct entity *e, bool anomalous, int64_t end)
{
    const struct ad_settings_alert *s = &a->settings;
    if (e->state == FIRING) {
        if (anomalous) {
            e->run = 0;
            return STEP_NONE;
        }
        if (++e->run < (uint64_t)(s->resolve_for > 1 ? s->resolve_for : 1))
            return STEP_NONE;
        e->state = INACTIVE;
        e->run = 0;
        return STEP_RESOLVED;
    }
    if (!anomalous) {
        e->state = INACTIVE;
        e->run = 0;
        return STEP_NONE;
    }
    if (++e->run < (uint64_t)(s->for_windows > 1 ? s->for_windows : 1)) {
        e->state = PENDING;
        return STEP_NONE;
    }
    e->state = FIRING;
    e->run = 0;
    e->starts_at = end;
    return STEP_FIRED;
}

/* Shifts the window's change bit into the register and returns the changes within the flap
 * window; bits past it are cleared, so a later, longer window finds no stale changes. */
static uint32_t shift_flips(struct entity *e, bool changed, uint32_t bits)
{
    uint64_t *w = e->flips;
    for (uint32_t i = e->flip_words; i-- > 1;)
        w[i] = (w[i] << 1) | (w[i - 1] >> 63);
    w[0] = (w[0] << 1) | (uint64_t)changed;
    uint32_t full = bits / 64, rest = bits % 64;
    if (rest)
        w[full++] &= (UINT64_C(1) << rest) - 1;
    for (uint32_t i = full; i < e->flip_words; i++)
        w[i] = 0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < e->flip_words; i++)
        n += (uint32_t)__builtin_popcountll(w[i]);
    return n;
}

/* Makes room for a flap window that a reload lengthened. */
static int grow_flips(struct entity *e, uint32_t bits)
{
    uint32_t words = words_for(bits);
    if (words <= e->flip_words)
        return 0;
    uint64_t *grown = realloc(e->flips, words * sizeof *grown);
    if (!grown)
        return -1;
    memset(grown + e->flip_words, 0, (words - e->flip_words) * sizeof *grown);
    e->flips = grown;
    e->flip_words = words;
    return 0;
}

/* ---- documents ---- */

/* A JSON string of s; bytes that are not UTF-8 (a label value from a log line, say) become
 * U+FFFD rather than losing the whole value. NULL only when out of memory. */
static json_t *text(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (j)
        return j;
    char *clean = malloc(3 * len + 1);
    if (!clean)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = ad_utf8_sequence(s + i, len - i);
        if (n) {
            memcpy(clean + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(clean + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(clean, o);
    free(clean);
    return j;
}

static json_t *text0(const char *s)
{
    return s ? text(s, strlen(s)) : json_null();
}

/* Non-finite numbers are not JSON: they become null. */
static json_t *number(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* Scores are computed in single precision: 7 significant digits are all they hold, and the
 * float's binary tail would only be noise in the document. */
static double float_digits(double v)
{
    char buf[32];
    if (!isfinite(v))
        return v;
    snprintf(buf, sizeof buf, "%.7g", v);
    return strtod(buf, NULL);
}

/* RFC 3339 in UTC, always with milliseconds, so every timestamp has the same shape. */
static json_t *timestamp(int64_t ms)
{
    char buf[48];
    ad_clock_format(ms, buf, sizeof buf);
    size_t n = strlen(buf);
    if (!strchr(buf, '.') && n > 0 && n + 4 < sizeof buf)
        memcpy(buf + n - 1, ".000Z", 6);
    return json_string(buf);
}

/* The next value of a NUL-separated key, or false at its end. */
static bool next_value(const char **p, const char *end, const char **value, size_t *len)
{
    if (!*p)
        return false;
    const char *nul = memchr(*p, '\0', (size_t)(end - *p));
    *value = *p;
    *len = (size_t)((nul ? nul : end) - *p);
    *p = nul ? nul + 1 : NULL;
    return true;
}

/* "label=value,label=value", with '\', ',' and '=' in values escaped by a backslash so that
 * two entities never share a string. */
static char *entity_string(const struct ad_alerts *a, const char *key, size_t len)
{
    size_t size = 1;
    for (size_t k = 0; k < a->labels.len; k++)
        size += strlen(a->labels.items[k]) + 2;
    char *out = malloc(size + 2 * len);
    if (!out)
        return NULL;
    const char *p = key, *v;
    size_t o = 0, vlen;
    for (size_t k = 0; k < a->labels.len && next_value(&p, key + len, &v, &vlen); k++) {
        if (k)
            out[o++] = ',';
        size_t n = strlen(a->labels.items[k]);
        memcpy(out + o, a->labels.items[k], n);
        o += n;
        out[o++] = '=';
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] == '\\' || v[i] == ',' || v[i] == '=')
                out[o++] = '\\';
            out[o++] = v[i];
        }
    }
    out[o] = '\0';
    return out;
}

static json_t *labels_object(const struct ad_alerts *a, const char *key, size_t len)
{
    json_t *labels = json_object();
    const char *p = key, *v;
    size_t vlen;
    for (size_t k = 0; labels && k < a->labels.len && next_value(&p, key + len, &v, &vlen); k++) {
        if (json_object_set_new(labels, a->labels.items[k], text(v, vlen)) < 0) {
            json_decref(labels);
            return NULL;
        }
    }
    return labels;
}

/* The features with the largest shares, at most 3, largest first (ties: feature order). */
static json_t *top_features(const struct ad_alerts *a, const float *shares)
{
    enum { TOP = 3 };
    json_t *top = json_array();
    size_t best[TOP], n = 0;
    if (!top || !shares)
        return top;
    for (size_t f = 0; f < a->features.len; f++) {
        if (!isfinite(shares[f]) || shares[f] <= 0)
            continue;
        size_t i = n < TOP ? n++ : TOP;
        while (i > 0 && shares[best[i - 1]] < shares[f]) {
            if (i < TOP)
                best[i] = best[i - 1];
            i--;
        }
        if (i < TOP)
            best[i] = f;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_object();
        /* Four decimals: a share is a part of a whole, not a measurement. */
        double share = round((double)shares[best[i]] * 1e4) / 1e4;
        if (!item || json_array_append_new(top, item) < 0 ||
            json_object_set_new(item, "feature", text0(a->features.items[best[i]])) < 0 ||
            json_object_set_new(item, "share", json_real(share)) < 0) {
            json_decref(top);
            return NULL;
        }
    }
    return top;
}

static json_t *summary(const struct ad_alerts *a, const char *entity, const struct note *n)
{
    char *s = NULL;
    int len;
    if (!n->w)
        len = asprintf(&s, "%s: %s resolved, no windows since it went idle", a->detector, entity);
    else if (n->state == resolved_state)
        len = asprintf(&s, "%s: %s back to normal", a->detector, entity);
    else if (isfinite(n->w->surprise) && n->w->stream)
        len = asprintf(&s, "%s: %s anomalous, surprise %.3g (%s)", a->detector, entity,
                       n->w->surprise, n->w->stream);
    else
        len = asprintf(&s, "%s: %s anomalous", a->detector, entity);
    if (len < 0)
        return NULL;
    json_t *j = text(s, (size_t)len);
    free(s);
    return j;
}

/* Sets key to value (stolen); false when value is NULL or setting failed. */
static bool put(json_t *obj, const char *key, json_t *value)
{
    return value && json_object_set_new(obj, key, value) == 0;
}

/* A notification of entity e, whose key is key (len bytes). */
/* A likelihood of docs/scoring.md's earlier versions, from a surprise: 1 − 10^−surprise. */
static double likelihood_of(double surprise)
{
    return 1.0 - pow(10.0, -surprise);
}

/* The fields that say how a window was judged (all null for an expiry, w NULL). */
static bool put_judgement(json_t *doc, const struct ad_alert_window *w)
{
    return put(doc, "score", w ? number(float_digits(w->score)) : json_null()) &&
           put(doc, "seasonal_score", w ? number(float_digits(w->seasonal_score)) : json_null()) &&
           put(doc, "surprise", w ? number(w->surprise) : json_null()) &&
           put(doc, "stream", text0(w ? w->stream : NULL)) &&
           put(doc, "recurring", w ? json_boolean(w->recurring) : json_null()) &&
           put(doc, "likelihood", w ? number(likelihood_of(w->surprise)) : json_null()) &&
           put(doc, "surprise_threshold", w ? number(w->surprise_threshold) : json_null()) &&
           put(doc, "likelihood_threshold",
               w ? number(likelihood_of(w->surprise_threshold)) : json_null()) &&
           put(doc, "score_threshold", w ? number(w->score_threshold) : json_null());
}

static struct ad_alert *make_alert(const struct ad_alerts *a, const char *key, size_t len,
                                   const struct entity *e, const struct note *n)
{
    struct ad_alert *alert = calloc(1, sizeof *alert);
    json_t *doc = json_object();
    const struct ad_alert_window *w = n->w;
    char fp[17];
    if (!alert || !doc)
        goto fail;
    ad_alert_id(a->detector, key, len, n->end_ms, n->version, alert->id);
    alert->state = n->state;
    alert->end_ms = n->end_ms;
    alert->entity = entity_string(a, key, len);
    alert->key = malloc(len ? len : 1);
    if (!alert->entity || !alert->key)
        goto fail;
    memcpy(alert->key, key, len);
    alert->key_len = len;
    fingerprint(a->detector, key, len, fp);

    bool ok =
        put(doc, "id", json_string(alert->id)) && put(doc, "fingerprint", json_string(fp)) &&
        put(doc, "detector", text0(a->detector)) && put(doc, "entity", text0(alert->entity)) &&
        put(doc, "labels", labels_object(a, key, len)) &&
        put(doc, "state", json_string(n->state)) && put(doc, "reason", json_string(n->reason)) &&
        put(doc, "flapping", json_boolean(n->flapping)) &&
        put(doc, "starts_at", n->starts_at == INT64_MIN ? json_null() : timestamp(n->starts_at));
    if (ok && n->state == resolved_state)
        ok = put(doc, "ends_at", timestamp(n->end_ms));
    ok = ok && put(doc, "window_start", timestamp(w ? w->start_ms : e->last_start)) &&
         put(doc, "window_end", timestamp(w ? w->end_ms : e->last_end)) && put_judgement(doc, w) &&
         put(doc, "anomalous", w ? json_boolean(w->anomalous) : json_null()) &&
         put(doc, "model", text0(w ? w->model : a->model)) &&
         put(doc, "model_version", text0(n->version)) &&
         put(doc, "top_features", top_features(a, w ? w->shares : NULL)) &&
         put(doc, "summary", summary(a, alert->entity, n)) &&
         put(doc, "notified_at", timestamp(n->now_ms));
    if (!ok)
        goto fail;
    alert->json = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(10));
    if (!alert->json)
        goto fail;
    alert->json_len = strlen(alert->json);
    json_decref(doc);
    return alert;
fail:
    json_decref(doc);
    ad_alert_free(alert);
    return NULL;
}

void ad_alert_free(struct ad_alert *alert)
{
    if (!alert)
        return;
    free(alert->entity);
    free(alert->key);
    free(alert->json);
    free(alert);
}

/* ---- windows ---- */

/* Keeps the newest model name and version, which alerts made by expiry carry. A failed copy
 * keeps the old ones: it only costs those alerts an older version. */
static void remember_model(struct ad_alerts *a, const struct ad_alert_window *w)
{
    const char *src[2] = {w->model, w->model_version};
    char **dst[2] = {&a->model, &a->version};
    for (int i = 0; i < 2; i++) {
        if (!src[i] || (*dst[i] && strcmp(*dst[i], src[i]) == 0))
            continue;
        char *copy = strdup(src[i]);
        if (copy) {
            free(*dst[i]);
            *dst[i] = copy;
        }
    }
}

/* Nothing to remember: the entity behaves exactly like one never seen. */
static bool quiet(const struct entity *e, uint32_t changes)
{
    return e->state == INACTIVE && !e->outstanding && !e->flapping && !e->anomalous && changes == 0;
}

int ad_alerts_observe(struct ad_alerts *a, const struct ad_alert_window *w, struct ad_alert **out)
{
    *out = NULL;
    uint32_t id = ad_entity_table_find(a->table, w->key, w->key_len);
    uint32_t bits = flap_window(a);

    remember_model(a, w);
    if (!id) {
        /* A normal window of an entity not tracked leaves it as quiet as it was. */
        if (!w->anomalous)
            return 0;
        if (ad_entity_table_count(a->table) >= ad_entity_table_max(a->table)) {
            a->counts.untracked++;
            return 0;
        }
        id = add(a, w->key, w->key_len);
        if (!id)
            return -1;
    }
    struct entity *e = entity(a, id);
    if (w->end_ms <= e->last_end) {
        a->counts.stale++;
        return 0;
    }
    if (grow_flips(e, bits) < 0)
        return -1;

    account(a, e, -1);
    bool was_flapping = e->flapping;
    uint32_t changes = shift_flips(e, w->anomalous != e->anomalous, bits);
    double threshold = a->settings.flap_threshold;
    e->anomalous = w->anomalous;
    e->last_start = w->start_ms;
    e->last_end = w->end_ms;
    enum step stepped = step(a, e, w->anomalous, w->end_ms);
    if (!e->flapping && (double)changes > threshold * bits)
        e->flapping = true;
    else if (e->flapping && (double)changes <= SETTLE_RATIO * threshold * bits)
        e->flapping = false;
    account(a, e, 1);

    /* Notifications follow the difference between the state and what was last notified, not
     * the step alone: a change held back while flapping, or lost to a failed allocation, is
     * sent by the next window that may send it. */
    bool settled = was_flapping && !e->flapping;
    struct note n = {.end_ms = w->end_ms, .w = w, .version = w->model_version, .now_ms = w->now_ms};
    if (e->flapping) {
        a->counts.held_back += stepped != STEP_NONE;
    } else if (e->state == FIRING && !e->outstanding) {
        n.state = firing_state;
        n.reason = settled ? "settled" : "anomalous";
        n.flapping = settled;
        n.starts_at = e->starts_at;
    } else if (e->state != FIRING && e->outstanding) {
        n.state = resolved_state;
        n.reason = settled ? "settled" : "normal";
        n.flapping = settled;
        n.starts_at = e->notified_starts_at;
    } else if (e->state == FIRING && a->settings.repeat_interval > 0 &&
               w->end_ms - e->notified_end >= a->settings.repeat_interval) {
        n.state = firing_state;
        n.reason = "repeat";
        n.starts_at = e->notified_starts_at;
    }

    if (n.state) {
        *out = make_alert(a, w->key, w->key_len, e, &n);
        if (!*out)
            return -1;
        account(a, e, -1);
        e->outstanding = n.state == firing_state;
        e->notified_starts_at = n.starts_at;
        e->notified_end = w->end_ms;
        account(a, e, 1);
        if (e->outstanding)
            a->counts.notified_firing++;
        else
            a->counts.notified_resolved++;
    }
    if (quiet(e, changes))
        drop(a, id);
    return *out ? 1 : 0;
}

int ad_alerts_expire(struct ad_alerts *a, int64_t oldest_end_ms, int64_t now_ms, ad_alert_fn emit,
                     void *arg)
{
    int forgotten = 0;
    bool failed = false;
    for (uint32_t id = 0; (id = ad_entity_table_next(a->table, id));) {
        struct entity *e = entity(a, id);
        if (e->last_end >= oldest_end_ms)
            continue;
        if (e->outstanding) {
            struct note n = {.state = resolved_state,
                             .reason = "expired",
                             .end_ms = oldest_end_ms,
                             .starts_at = e->notified_starts_at,
                             .version = a->version,
                             .now_ms = now_ms};
            size_t len;
            const char *key = ad_entity_table_key(a->table, id, &len);
            struct ad_alert *alert = make_alert(a, key, len, e, &n);
            if (!alert) {
                failed = true;
                continue;
            }
            a->counts.notified_resolved++;
            if (emit)
                emit(arg, alert);
            else
                ad_alert_free(alert);
        }
        drop(a, id);
        forgotten++;
    }
    return failed ? -1 : forgotten;
}

void ad_alerts_counts(const struct ad_alerts *a, struct ad_alerts_counts *out)
{
    *out = a->counts;
}

void ad_alerts_status(const struct ad_alerts *a, json_t *out)
{
    const struct ad_alerts_counts *c = &a->counts;
    const struct {
        const char *name;
        uint64_t value;
    } fields[] = {
        {"tracked", c->tracked},
        {"pending", c->pending},
        {"firing", c->firing},
        {"flapping", c->flapping},
        {"outstanding", c->outstanding},
        {"max_entities", ad_entity_table_max(a->table)},
        {"notified_firing", c->notified_firing},
        {"notified_resolved", c->notified_resolved},
        {"held_back", c->held_back},
        {"untracked", c->untracked},
        {"stale", c->stale},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        json_object_set_new(out, fields[i].name, json_integer((json_int_t)fields[i].value));
}

char *ad_alerts_window_json(const struct ad_alerts *a, const struct ad_alert_window *w,
                            bool warming_up, size_t *len)
{
    json_t *doc = json_object(), *shares = json_object();
    char *entity = entity_string(a, w->key, w->key_len), *out = NULL;
    bool ok = doc && shares && entity && put(doc, "detector", text0(a->detector)) &&
              put(doc, "entity", text0(entity)) &&
              put(doc, "labels", labels_object(a, w->key, w->key_len)) &&
              put(doc, "window_start", timestamp(w->start_ms)) &&
              put(doc, "window_end", timestamp(w->end_ms)) &&
              put(doc, "window_end_ms", json_integer((json_int_t)w->end_ms)) &&
              put_judgement(doc, w) && put(doc, "anomalous", json_boolean(w->anomalous)) &&
              put(doc, "warming_up", json_boolean(warming_up)) &&
              put(doc, "model", text0(w->model)) &&
              put(doc, "model_version", text0(w->model_version));
    /* Only in a maintenance window: other windows' documents stay as they were. */
    if (ok && w->maintenance)
        ok = put(doc, "maintenance", json_string(w->maintenance));
    for (size_t f = 0; ok && w->shares && f < a->features.len; f++)
        ok = put(shares, a->features.items[f], number(round(w->shares[f] * 1e4) / 1e4));
    if (ok && json_object_set(doc, "shares", shares) == 0)
        out = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(10));
    if (out)
        *len = strlen(out);
    json_decref(shares);
    json_decref(doc);
    free(entity);
    return out;
}
