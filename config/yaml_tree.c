#include "config/yaml_tree.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "base/number.h"

struct reader {
    const char *file;
    yaml_document_t *doc;
    json_t *index;
    struct ad_diag *diag;
    size_t nodes;
    bool failed;
};

static bool is_bare_key(const char *key)
{
    if (!*key)
        return false;
    for (; *key; key++)
        if (!isalnum((unsigned char)*key) && *key != '_' && *key != '-')
            return false;
    return true;
}

int ad_yaml_path_key(char *out, size_t size, const char *parent, const char *key)
{
    size_t used;
    int n;

    if (is_bare_key(key)) {
        n = snprintf(out, size, "%s%s%s", parent, *parent ? "." : "", key);
        return n < 0 || (size_t)n >= size ? -1 : 0;
    }
    n = snprintf(out, size, "%s[\"", parent);
    if (n < 0 || (size_t)n >= size)
        return -1;
    used = (size_t)n;
    for (; *key; key++) {
        if (used + 4 >= size)
            return -1;
        if (*key == '"' || *key == '\\')
            out[used++] = '\\';
        out[used++] = *key;
    }
    if (used + 3 > size)
        return -1;
    memcpy(out + used, "\"]", 3);
    return 0;
}

int ad_yaml_path_index(char *out, size_t size, const char *parent, size_t index)
{
    int n = snprintf(out, size, "%s[%zu]", parent, index);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int ad_yaml_position(json_t *index, const char *path, struct ad_yaml_pos *out)
{
    json_t *e = json_object_get(index, path);
    if (!json_is_array(e) || json_array_size(e) != 6)
        return -1;
    out->key_line = (int)json_integer_value(json_array_get(e, 0));
    out->key_column = (int)json_integer_value(json_array_get(e, 1));
    out->line = (int)json_integer_value(json_array_get(e, 2));
    out->column = (int)json_integer_value(json_array_get(e, 3));
    out->style = (enum ad_yaml_style)json_integer_value(json_array_get(e, 4));
    out->raw = json_string_value(json_array_get(e, 5));
    return 0;
}

static void error_at(struct reader *r, yaml_mark_t mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void error_at(struct reader *r, yaml_mark_t mark, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ad_diag_add(r->diag, r->file, (int)mark.line + 1, (int)mark.column + 1, "%s", msg);
    r->failed = true;
}

static void record(struct reader *r, const char *path, yaml_mark_t key_mark, yaml_node_t *node,
                   enum ad_yaml_style style)
{
    json_t *raw = json_null();
    if (node->type == YAML_SCALAR_NODE) {
        raw = json_stringn_nocheck((const char *)node->data.scalar.value, node->data.scalar.length);
    }
    json_object_set_new(r->index, path,
                        json_pack("[IIIIIo]", (json_int_t)key_mark.line + 1,
                                  (json_int_t)key_mark.column + 1,
                                  (json_int_t)node->start_mark.line + 1,
                                  (json_int_t)node->start_mark.column + 1, (json_int_t)style, raw));
}

static bool matches_any(const char *s, const char *const *options)
{
    for (; *options; options++)
        if (strcmp(s, *options) == 0)
            return true;
    return false;
}

/* The nearest double of an integer literal parse_int found too large (digits after the sign
 * and base prefix, in base). */
static double approximate(const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    int base = p[0] == '0' && (p[1] == 'x' || p[1] == 'o') ? (p[1] == 'x' ? 16 : 8) : 10;
    double v = 0;
    for (p += base == 10 ? 0 : 2; *p; p++)
        v = v * base +
            (isdigit((unsigned char)*p) ? *p - '0' : tolower((unsigned char)*p) - 'a' + 10);
    return *s == '-' ? -v : v;
}

static bool parse_int(const char *s, json_int_t *out, bool *overflow)
{
    const char *p = s;
    int base = 10;
    bool negative = false;

    *overflow = false;
    if (*p == '-' || *p == '+') {
        negative = *p == '-';
        p++;
    }
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o') && p == s) {
        base = p[1] == 'x' ? 16 : 8;
        p += 2;
    }
    if (!*p)
        return false;
    for (const char *q = p; *q; q++) {
        bool ok = base == 16 ? isxdigit((unsigned char)*q)
                             : (*q >= '0' && *q <= '7') || (base == 10 && isdigit(*q));
        if (!ok)
            return false;
    }
    errno = 0;
    unsigned long long v = strtoull(p, NULL, base);
    if (errno == ERANGE || v > (unsigned long long)INT64_MAX + (negative ? 1u : 0u)) {
        *overflow = true;
        return true;
    }
    *out = negative ? (json_int_t)(0 - v) : (json_int_t)v;
    return true;
}

/* YAML 1.2 core schema resolution of a plain scalar. */
static json_t *resolve_plain(const char *text)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    json_int_t i;
    double d;
    bool overflow;

    if (matches_any(text, nulls))
        return json_null();
    if (matches_any(text, trues))
        return json_true();
    if (matches_any(text, falses))
        return json_false();
    if (parse_int(text, &i, &overflow)) {
        /* Too large for 64 bits: kept as the nearest double, not refused here, so that the
         * decoder names the key where it wants an integer and goes on checking the rest
         * (its text stays in the index, for a key that takes a float or a string). */
        if (overflow)
            return json_real(approximate(text));
        return json_integer(i);
    }
    /* .inf and .nan stay strings: jansson holds finite numbers only, and no setting takes
     * an infinite one. */
    if (ad_number_parse(text, strlen(text), &d) && isfinite(d))
        return json_real(d);
    return json_string(text);
}

static json_t *convert(struct reader *r, yaml_node_t *node, const char *path, yaml_mark_t key_mark,
                       int depth);

static json_t *convert_scalar(struct reader *r, yaml_node_t *node, const char *path,
                              yaml_mark_t key_mark)
{
    const char *text = (const char *)node->data.scalar.value;
    size_t len = node->data.scalar.length;
    yaml_scalar_style_t style = node->data.scalar.style;
    enum ad_yaml_style ad_style = AD_YAML_PLAIN;
    json_t *v;

    if (memchr(text, '\0', len)) {
        error_at(r, node->start_mark, "NUL characters are not allowed in values");
        return NULL;
    }
    if (style == YAML_SINGLE_QUOTED_SCALAR_STYLE || style == YAML_DOUBLE_QUOTED_SCALAR_STYLE)
        ad_style = AD_YAML_QUOTED;
    else if (style == YAML_LITERAL_SCALAR_STYLE || style == YAML_FOLDED_SCALAR_STYLE)
        ad_style = AD_YAML_BLOCK;

    v = ad_style == AD_YAML_PLAIN ? resolve_plain(text) : json_stringn(text, len);
    if (!v) {
        if (!r->failed)
            error_at(r, node->start_mark, "value is not valid UTF-8");
        return NULL;
    }
    record(r, path, key_mark, node, ad_style);
    return v;
}

static json_t *convert_sequence(struct reader *r, yaml_node_t *node, const char *path,
                                yaml_mark_t key_mark, int depth)
{
    json_t *array = json_array();
    char child[AD_YAML_PATH_MAX];
    size_t i = 0;

    if (!array)
        return NULL;
    record(r, path, key_mark, node, AD_YAML_COLLECTION);
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *item = yaml_document_get_node(r->doc, *it);
        if (ad_yaml_path_index(child, sizeof child, path, i) < 0) {
            error_at(r, item->start_mark, "path too long");
            break;
        }
        json_t *v = convert(r, item, child, item->start_mark, depth + 1);
        if (!v)
            break;
        json_array_append_new(array, v);
    }
    if (r->failed) {
        json_decref(array);
        return NULL;
    }
    return array;
}

static json_t *convert_mapping(struct reader *r, yaml_node_t *node, const char *path,
                               yaml_mark_t key_mark, int depth)
{
    json_t *object = json_object();
    char child[AD_YAML_PATH_MAX];

    if (!object)
        return NULL;
    record(r, path, key_mark, node, AD_YAML_COLLECTION);
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top && !r->failed; pair++) {
        yaml_node_t *key = yaml_document_get_node(r->doc, pair->key);
        yaml_node_t *value = yaml_document_get_node(r->doc, pair->value);
        if (key->type != YAML_SCALAR_NODE) {
            error_at(r, key->start_mark, "mapping keys must be plain strings");
            break;
        }
        const char *name = (const char *)key->data.scalar.value;
        if (key->data.scalar.length == 0 || memchr(name, '\0', key->data.scalar.length)) {
            error_at(r, key->start_mark, "mapping keys must be non-empty text");
            break;
        }
        if (strcmp(name, "<<") == 0 && key->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
            error_at(r, key->start_mark, "YAML merge keys (<<) are not supported");
            break;
        }
        if (ad_yaml_path_key(child, sizeof child, path, name) < 0) {
            error_at(r, key->start_mark, "path too long");
            break;
        }
        if (json_object_get(object, name)) {
            struct ad_yaml_pos first;
            ad_yaml_position(r->index, child, &first);
            error_at(r, key->start_mark, "duplicate key \"%s\" (first given at line %d)", name,
                     first.key_line);
            break;
        }
        json_t *v = convert(r, value, child, key->start_mark, depth + 1);
        if (!v)
            break;
        json_object_set_new(object, name, v);
    }
    if (r->failed) {
        json_decref(object);
        return NULL;
    }
    return object;
}

static json_t *convert(struct reader *r, yaml_node_t *node, const char *path, yaml_mark_t key_mark,
                       int depth)
{
    if (depth > AD_YAML_MAX_DEPTH) {
        error_at(r, node->start_mark, "nested deeper than %d levels", AD_YAML_MAX_DEPTH);
        return NULL;
    }
    if (++r->nodes > AD_YAML_MAX_NODES) {
        error_at(r, node->start_mark, "more than %d nodes (aliases included)", AD_YAML_MAX_NODES);
        return NULL;
    }
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return convert_scalar(r, node, path, key_mark);
    case YAML_SEQUENCE_NODE:
        return convert_sequence(r, node, path, key_mark, depth);
    case YAML_MAPPING_NODE:
        return convert_mapping(r, node, path, key_mark, depth);
    default:
        error_at(r, node->start_mark, "empty node");
        return NULL;
    }
}

/* Line and column of a byte offset, for reader errors that carry no mark. */
static yaml_mark_t mark_of_offset(const char *buf, size_t len, size_t offset)
{
    yaml_mark_t m = {0, 0, 0};
    for (size_t i = 0; i < offset && i < len; i++) {
        if (buf[i] == '\n') {
            m.line++;
            m.column = 0;
        } else {
            m.column++;
        }
    }
    return m;
}

static void parser_error(struct reader *r, yaml_parser_t *p, const char *buf, size_t len)
{
    if (p->error == YAML_READER_ERROR) {
        error_at(r, mark_of_offset(buf, len, p->problem_offset),
                 "the file is not valid UTF-8 "
                 "(%s)",
                 p->problem ? p->problem : "unreadable text");
    } else if (p->error == YAML_MEMORY_ERROR) {
        ad_diag_add(r->diag, r->file, 0, 0, "out of memory reading YAML");
        r->failed = true;
    } else if (p->context) {
        error_at(r, p->problem_mark, "YAML syntax error: %s (%s at line %zu, column %zu)",
                 p->problem ? p->problem : "unknown", p->context, p->context_mark.line + 1,
                 p->context_mark.column + 1);
    } else {
        error_at(r, p->problem_mark, "YAML syntax error: %s", p->problem ? p->problem : "unknown");
    }
}

json_t *ad_yaml_read(const char *file, const char *buf, size_t len, json_t *index,
                     struct ad_diag *diag)
{
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    struct reader r = {.file = file, .doc = &doc, .index = index, .diag = diag};
    json_t *root = NULL;

    if (!yaml_parser_initialize(&parser)) {
        ad_diag_add(diag, file, 0, 0, "out of memory reading YAML");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc)) {
        parser_error(&r, &parser, buf, len);
        goto out;
    }

    yaml_node_t *top = yaml_document_get_root_node(&doc);
    if (!top) {
        ad_diag_add(diag, file, 0, 0, "the file holds no YAML document");
    } else {
        root = convert(&r, top, "", top->start_mark, 0);
        if (root && !yaml_parser_load(&parser, &extra)) {
            parser_error(&r, &parser, buf, len);
        } else if (root) {
            yaml_node_t *second = yaml_document_get_root_node(&extra);
            if (second)
                error_at(&r, second->start_mark,
                         "only one YAML document is allowed; remove everything after '---'");
            yaml_document_delete(&extra);
        }
        if (r.failed) {
            json_decref(root);
            root = NULL;
        }
    }
    yaml_document_delete(&doc);
out:
    yaml_parser_delete(&parser);
    return root;
}
