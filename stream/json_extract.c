#include "stream/json_extract.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/errstr.h"
#include "stream/json_extract_engine.h"

struct ad_extractor {
    enum ad_extract_engine engine;
    size_t n;
    size_t max_bytes;
    struct ad_extract_node root;
    uint64_t run; /* counts runs, so a node knows whether it matched in this one */
    struct ad_extract_simdjson *simdjson;
    /* jansson: the last document (its strings are handed out) and, for documents with
       duplicate keys, the leaves decoded from the text */
    json_t *doc;
    json_t **held;
    size_t n_held;
};

/* Every number is read as a double, as simdjson does: jansson would refuse integers beyond
   int64 otherwise. */
#define JANSSON_FLAGS (JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL)

static void node_free(struct ad_extract_node *node)
{
    for (size_t i = 0; i < node->n_children; i++)
        node_free(&node->children[i]);
    free(node->children);
    free(node->slots);
    free(node->key);
}

static struct ad_extract_node *node_child(struct ad_extract_node *parent,
                                          const struct ad_jpath_segment *seg)
{
    for (size_t i = 0; i < parent->n_children; i++) {
        struct ad_extract_node *c = &parent->children[i];
        if (c->type == seg->type &&
            (seg->type == AD_JPATH_KEY ? strcmp(c->key, seg->key) == 0 : c->index == seg->index))
            return c;
    }
    struct ad_extract_node *children =
        realloc(parent->children, (parent->n_children + 1) * sizeof *children);
    if (!children)
        return NULL;
    parent->children = children;
    struct ad_extract_node *c = &children[parent->n_children];
    memset(c, 0, sizeof *c);
    c->type = seg->type;
    if (seg->type == AD_JPATH_KEY) {
        c->key = strdup(seg->key);
        if (!c->key)
            return NULL;
        c->key_len = strlen(c->key);
        parent->has_keys = true;
    } else {
        c->index = seg->index;
        parent->has_indexes = true;
    }
    parent->n_children++;
    return c;
}

static int node_add_path(struct ad_extract_node *root, const struct ad_jpath *path, size_t slot)
{
    struct ad_extract_node *node = root;
    for (size_t i = 0; i < path->len; i++) {
        node = node_child(node, &path->segments[i]);
        if (!node)
            return -1;
    }
    size_t *slots = realloc(node->slots, (node->n_slots + 1) * sizeof *slots);
    if (!slots)
        return -1;
    node->slots = slots;
    node->slots[node->n_slots++] = slot;
    return 0;
}

struct ad_extractor *ad_extractor_new(enum ad_extract_engine engine, const struct ad_jpath *paths,
                                      size_t n, size_t max_bytes, char *errstr, size_t errstr_size)
{
    struct ad_extractor *x = calloc(1, sizeof *x);
    if (!x)
        goto oom;
    x->engine = engine;
    x->n = n;
    x->max_bytes = max_bytes;
    for (size_t i = 0; i < n; i++)
        if (node_add_path(&x->root, &paths[i], i) < 0)
            goto oom;
    switch (engine) {
    case AD_EXTRACT_SIMDJSON:
        x->simdjson = ad_extract_simdjson_new(max_bytes, errstr, errstr_size);
        if (!x->simdjson)
            goto err;
        break;
    case AD_EXTRACT_JANSSON:
        x->held = calloc(n ? n : 1, sizeof *x->held);
        if (!x->held)
            goto oom;
        break;
    default:
        ad_errstr_set(errstr, errstr_size, "unknown JSON engine %d", (int)engine);
        goto err;
    }
    return x;

oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
err:
    ad_extractor_destroy(x);
    return NULL;
}

static void release_jansson(struct ad_extractor *x)
{
    json_decref(x->doc);
    x->doc = NULL;
    for (size_t i = 0; i < x->n_held; i++)
        json_decref(x->held[i]);
    x->n_held = 0;
}

void ad_extractor_destroy(struct ad_extractor *x)
{
    if (!x)
        return;
    release_jansson(x);
    free(x->held);
    ad_extract_simdjson_destroy(x->simdjson);
    node_free(&x->root);
    free(x);
}

static void fill(struct ad_json_value *v, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        v->type = AD_JSON_OBJECT;
        break;
    case JSON_ARRAY:
        v->type = AD_JSON_ARRAY;
        break;
    case JSON_STRING:
        v->type = AD_JSON_STRING;
        v->string = json_string_value(j);
        v->string_len = json_string_length(j);
        break;
    case JSON_INTEGER: /* not with JSON_DECODE_INT_AS_REAL, but cheap to get right */
    case JSON_REAL:
        v->type = AD_JSON_NUMBER;
        v->number = json_number_value(j);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        v->type = AD_JSON_BOOL;
        v->boolean = json_is_true(j);
        break;
    case JSON_NULL:
        v->type = AD_JSON_NULL;
        break;
    }
}

static void fill_slots(const struct ad_extract_node *node, const json_t *j,
                       struct ad_json_value *values)
{
    for (size_t i = 0; i < node->n_slots; i++)
        fill(&values[node->slots[i]], j);
}

/* The usual case: a document without duplicate keys, looked up in jansson's tree. */
static void walk_tree(const struct ad_extract_node *node, const json_t *j,
                      struct ad_json_value *values)
{
    fill_slots(node, j, values);
    for (size_t i = 0; i < node->n_children; i++) {
        const struct ad_extract_node *c = &node->children[i];
        const json_t *v = NULL;
        if (c->type == AD_JPATH_KEY && json_is_object(j))
            v = json_object_getn(j, c->key, c->key_len);
        else if (c->type == AD_JPATH_INDEX && json_is_array(j))
            v = json_array_get(j, c->index);
        if (v)
            walk_tree(c, v, values);
    }
}

/*
 * Documents with duplicate keys: jansson's tree keeps the last occurrence, so the paths are
 * looked up again in the text, which jansson has already accepted as valid JSON.
 */
static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end && *p != '"'; p++)
        if (*p == '\\')
            p++;
    return p < end ? p + 1 : end;
}

static const char *skip_value(const char *p, const char *end)
{
    size_t depth = 0;
    do {
        if (*p == '"') {
            p = skip_string(p, end);
        } else if (*p == '{' || *p == '[') {
            depth++;
            p++;
        } else if (*p == '}' || *p == ']') {
            depth--;
            p++;
        } else if (depth > 0) {
            p++;
        } else {
            while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
                   *p != '\n' && *p != '\r')
                p++;
        }
    } while (depth > 0 && p < end);
    return p;
}

/* The child of node named by the JSON string from key to end (quotes included). */
static struct ad_extract_node *key_child(struct ad_extract_node *node, const char *key,
                                         const char *end)
{
    const char *k = key + 1;
    size_t len = (size_t)(end - key) - 2;
    json_t *decoded = NULL;
    if (memchr(k, '\\', len)) {
        decoded = json_loadb(key, (size_t)(end - key), JANSSON_FLAGS, NULL);
        if (!json_is_string(decoded)) {
            json_decref(decoded);
            return NULL;
        }
        k = json_string_value(decoded);
        len = json_string_length(decoded);
    }
    struct ad_extract_node *found = NULL;
    for (size_t i = 0; i < node->n_children && !found; i++) {
        struct ad_extract_node *c = &node->children[i];
        if (c->type == AD_JPATH_KEY && c->key_len == len && memcmp(c->key, k, len) == 0)
            found = c;
    }
    json_decref(decoded);
    return found;
}

static struct ad_extract_node *index_child(struct ad_extract_node *node, size_t index)
{
    for (size_t i = 0; i < node->n_children; i++)
        if (node->children[i].type == AD_JPATH_INDEX && node->children[i].index == index)
            return &node->children[i];
    return NULL;
}

static void scan_fill(struct ad_extractor *x, const struct ad_extract_node *node, const char *p,
                      const char *end, struct ad_json_value *values)
{
    if (*p == '{' || *p == '[') {
        for (size_t i = 0; i < node->n_slots; i++)
            values[node->slots[i]].type = *p == '{' ? AD_JSON_OBJECT : AD_JSON_ARRAY;
        return;
    }
    json_t *j = json_loadb(p, (size_t)(skip_value(p, end) - p), JANSSON_FLAGS, NULL);
    if (!j)
        return;
    x->held[x->n_held++] = j; /* at most one per node with slots: at most n */
    fill_slots(node, j, values);
}

static void scan_tree(struct ad_extractor *x, struct ad_extract_node *node, const char *p,
                      const char *end, struct ad_json_value *values)
{
    if (node->n_slots)
        scan_fill(x, node, p, end, values);
    if (*p == '{' && node->has_keys) {
        p = skip_ws(p + 1, end);
        while (p < end && *p == '"') {
            const char *key = p;
            p = skip_string(p, end);
            struct ad_extract_node *c = key_child(node, key, p);
            p = skip_ws(skip_ws(p, end) + 1, end); /* past the ':' */
            if (c && c->seen != x->run) {
                c->seen = x->run;
                scan_tree(x, c, p, end, values);
            }
            p = skip_ws(skip_value(p, end), end);
            if (p < end && *p == ',')
                p = skip_ws(p + 1, end);
        }
    } else if (*p == '[' && node->has_indexes) {
        p = skip_ws(p + 1, end);
        for (size_t i = 0; p < end && *p != ']'; i++) {
            struct ad_extract_node *c = index_child(node, i);
            if (c)
                scan_tree(x, c, p, end, values);
            p = skip_ws(skip_value(p, end), end);
            if (p < end && *p == ',')
                p = skip_ws(p + 1, end);
        }
    }
}

static enum ad_extract_result run_jansson(struct ad_extractor *x, const char *json, size_t len,
                                          struct ad_json_value *values)
{
    json_error_t error;
    bool duplicates = false;
    /*
     * A raw NUL byte is never valid JSON, but jansson drops one that follows a number or a
     * literal (it reads it ahead, puts it back, and takes the NUL for "nothing put back").
     */
    if (memchr(json, '\0', len))
        return AD_EXTRACT_MALFORMED;
    /* Refusing duplicates costs a lookup per key, but tells us when the tree is not enough. */
    x->doc = json_loadb(json, len, JANSSON_FLAGS | JSON_REJECT_DUPLICATES, &error);
    if (!x->doc && json_error_code(&error) == json_error_duplicate_key) {
        duplicates = true;
        x->doc = json_loadb(json, len, JANSSON_FLAGS, &error);
    }
    if (!x->doc)
        return AD_EXTRACT_MALFORMED;
    if (!json_is_object(x->doc))
        return AD_EXTRACT_NOT_OBJECT;
    if (duplicates)
        scan_tree(x, &x->root, skip_ws(json, json + len), json + len, values);
    else
        walk_tree(&x->root, x->doc, values);
    return AD_EXTRACT_OK;
}

enum ad_extract_result ad_extractor_run(struct ad_extractor *x, const char *json, size_t len,
                                        struct ad_json_value *values)
{
    enum ad_extract_result r;
    for (size_t i = 0; i < x->n; i++)
        values[i] = (struct ad_json_value){.type = AD_JSON_ABSENT};
    release_jansson(x);
    if (len > x->max_bytes)
        return AD_EXTRACT_TOO_LARGE;
    if (!json) {
        json = "";
        len = 0;
    }
    x->run++;
    if (x->engine == AD_EXTRACT_SIMDJSON)
        r = ad_extract_simdjson_run(x->simdjson, &x->root, x->run, json, len, values);
    else
        r = run_jansson(x, json, len, values);
    if (r != AD_EXTRACT_OK)
        for (size_t i = 0; i < x->n; i++)
            values[i] = (struct ad_json_value){.type = AD_JSON_ABSENT};
    return r;
}

const char *ad_extract_result_name(enum ad_extract_result r)
{
    switch (r) {
    case AD_EXTRACT_OK:
        return "ok";
    case AD_EXTRACT_MALFORMED:
        return "malformed";
    case AD_EXTRACT_NOT_OBJECT:
        return "not_object";
    case AD_EXTRACT_TOO_LARGE:
        return "too_large";
    }
    return "unknown";
}
