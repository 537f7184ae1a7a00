#include "config/schema.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/units.h"
#include "config/settings.h"
#include "config/yaml_tree.h"

#define AT(obj, offset)  ((void *)((char *)(obj) + (offset)))
#define CAT(obj, offset) ((const void *)((const char *)(obj) + (offset)))

/* Secrets are small; a larger file is almost certainly the wrong file. */
#define SECRET_FILE_MAX (64 * 1024)

/* ---- positions and errors ---- */

/* Length of the parent of path: "a.b[2]" -> "a.b", "a" -> "". */
static size_t parent_len(const char *path)
{
    size_t last = 0;
    for (size_t i = 0; path[i]; i++) {
        if (path[i] == '.') {
            last = i;
        } else if (path[i] == '[') {
            last = i;
            if (path[i + 1] == '"') {
                for (i += 2; path[i] && path[i] != '"'; i++)
                    if (path[i] == '\\' && path[i + 1])
                        i++;
            }
        }
    }
    return last;
}

/* Finds the position of path or of its nearest written parent. Returns true on an exact hit. */
static bool locate(struct ad_schema_ctx *ctx, const char *path, struct ad_yaml_pos *pos)
{
    char buf[AD_YAML_PATH_MAX];
    bool exact = true;

    snprintf(buf, sizeof buf, "%s", path);
    for (;;) {
        if (ad_yaml_position(ctx->index, buf, pos) == 0)
            return exact;
        if (!buf[0])
            break;
        buf[parent_len(buf)] = '\0';
        exact = false;
    }
    memset(pos, 0, sizeof *pos);
    return false;
}

enum where { AT_VALUE, AT_KEY };

static void report(struct ad_schema_ctx *ctx, const char *path, enum where where, long offset,
                   const char *fmt, va_list ap)
{
    struct ad_yaml_pos pos;
    char msg[768];
    int line, column;

    vsnprintf(msg, sizeof msg, fmt, ap);
    bool exact = locate(ctx, path, &pos);
    if (where == AT_KEY && exact) {
        line = pos.key_line;
        column = pos.key_column;
    } else {
        line = pos.line;
        column = pos.column;
    }
    if (offset >= 0 && exact && (pos.style == AD_YAML_PLAIN || pos.style == AD_YAML_QUOTED))
        column += (int)offset + (pos.style == AD_YAML_QUOTED);
    ctx->errors++;
    if (*path)
        ad_diag_add(ctx->diag, ctx->file, line, column, "%s: %s", path, msg);
    else
        ad_diag_add(ctx->diag, ctx->file, line, column, "%s", msg);
}

void ad_schema_error(struct ad_schema_ctx *ctx, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report(ctx, path, AT_VALUE, -1, fmt, ap);
    va_end(ap);
}

void ad_schema_error_key(struct ad_schema_ctx *ctx, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report(ctx, path, AT_KEY, -1, fmt, ap);
    va_end(ap);
}

void ad_schema_error_offset(struct ad_schema_ctx *ctx, const char *path, size_t offset,
                            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report(ctx, path, AT_VALUE, (long)offset, fmt, ap);
    va_end(ap);
}

int ad_schema_present(struct ad_schema_ctx *ctx, const char *path)
{
    struct ad_yaml_pos pos;
    return ad_yaml_position(ctx->index, path, &pos) == 0;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[64];

    if (la >= 64 || lb >= 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *ad_schema_suggest(const char *word, const char *const *candidates)
{
    size_t len = strlen(word);
    size_t limit = len < 5 ? 1 : (len < 10 ? 2 : 3);
    const char *best = NULL;
    size_t best_distance = SIZE_MAX;

    for (; *candidates; candidates++) {
        size_t d = edit_distance(word, *candidates);
        if (d < best_distance) {
            best_distance = d;
            best = *candidates;
        }
    }
    return best_distance <= limit ? best : NULL;
}

/* ---- scalars ---- */

static const char *json_type_name(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "a mapping";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

/* The text of a scalar as written: strings as they are, numbers and booleans as in the file. */
static const char *scalar_text(struct ad_schema_ctx *ctx, json_t *v, const char *path)
{
    struct ad_yaml_pos pos;
    if (json_is_string(v))
        return json_string_value(v);
    if (!json_is_number(v) && !json_is_boolean(v))
        return NULL;
    if (ad_yaml_position(ctx->index, path, &pos) == 0 && pos.raw)
        return pos.raw;
    /* Not from YAML (a default): only booleans reach this. */
    return json_is_true(v) ? "true" : (json_is_false(v) ? "false" : NULL);
}

/* A relative path from the file, made relative to the config file's folder as Prometheus
 * does, so that the daemon's working directory does not matter. */
static char *resolve_path(struct ad_schema_ctx *ctx, const char *path)
{
    if (path[0] == '/' || !ctx->base_dir || !ctx->base_dir[0])
        return strdup(path);
    size_t n = strlen(ctx->base_dir) + strlen(path) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", ctx->base_dir, path);
    return out;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void describe_duration_bounds(const struct ad_schema_field *f, char *buf, size_t size)
{
    char lo[32], hi[32];
    ad_duration_format((int64_t)f->min, lo, sizeof lo);
    ad_duration_format((int64_t)f->max, hi, sizeof hi);
    snprintf(buf, size, "between %s and %s", lo, hi);
}

static bool has_bounds(const struct ad_schema_field *f)
{
    return f->min < f->max;
}

static bool check_bounds(struct ad_schema_ctx *ctx, const struct ad_schema_field *f,
                         const char *path, double v)
{
    char range[96];
    if (!has_bounds(f) || (v >= f->min && v <= f->max))
        return true;
    if (f->kind == AD_SCHEMA_DURATION)
        describe_duration_bounds(f, range, sizeof range);
    else
        snprintf(range, sizeof range, "between %.17g and %.17g", f->min, f->max);
    ad_schema_error(ctx, path, "must be %s", range);
    return false;
}

static void enum_error(struct ad_schema_ctx *ctx, const struct ad_schema_field *f, const char *path,
                       const char *got)
{
    char list[256] = "";
    size_t used = 0;
    for (const char *const *v = f->values; *v; v++) {
        int n = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", *v);
        if (n < 0 || (size_t)n >= sizeof list - used)
            break;
        used += (size_t)n;
    }
    const char *hint = ad_schema_suggest(got, f->values);
    if (hint)
        ad_schema_error(ctx, path, "expected one of %s; got \"%s\" (did you mean \"%s\"?)", list,
                        got, hint);
    else
        ad_schema_error(ctx, path, "expected one of %s; got \"%s\"", list, got);
}

/* Decodes a scalar kind from its text form (a default, or a string from the file). */
static bool decode_text(struct ad_schema_ctx *ctx, const struct ad_schema_field *f,
                        const char *path, const char *text, void *dst)
{
    char *end;
    switch (f->kind) {
    case AD_SCHEMA_STRING:
        *(char **)dst = strdup(text);
        return true;
    case AD_SCHEMA_BOOL:
        if (strcmp(text, "true") && strcmp(text, "false"))
            break;
        *(bool *)dst = strcmp(text, "true") == 0;
        return true;
    case AD_SCHEMA_INT: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno || *end || end == text)
            break;
        *(int64_t *)dst = v;
        return check_bounds(ctx, f, path, (double)v);
    }
    case AD_SCHEMA_FLOAT: {
        double v = strtod(text, &end);
        if (*end || end == text || !isfinite(v))
            break;
        *(double *)dst = v;
        return check_bounds(ctx, f, path, v);
    }
    case AD_SCHEMA_DURATION: {
        int64_t ms;
        if (ad_duration_parse(text, &ms) < 0) {
            ad_schema_error(ctx, path, "expected a duration such as 30s, 5m or 1h30m; got \"%s\"",
                            text);
            return false;
        }
        *(int64_t *)dst = ms;
        return check_bounds(ctx, f, path, (double)ms);
    }
    case AD_SCHEMA_SIZE: {
        int64_t bytes;
        if (ad_size_parse(text, &bytes) < 0) {
            ad_schema_error(ctx, path,
                            "expected a size such as 1048576, 512KiB or 1MiB; got \"%s\"", text);
            return false;
        }
        *(int64_t *)dst = bytes;
        return check_bounds(ctx, f, path, (double)bytes);
    }
    case AD_SCHEMA_ENUM:
        for (int i = 0; f->values[i]; i++) {
            if (strcmp(f->values[i], text) == 0) {
                *(int *)dst = i;
                return true;
            }
        }
        enum_error(ctx, f, path, text);
        return false;
    default:
        break;
    }
    ad_schema_error(ctx, path, "cannot read \"%s\"", text);
    return false;
}

/* Whether text is an integer literal as YAML's core schema reads one. */
static bool integer_literal(const char *text)
{
    const char *p = text + (*text == '-' || *text == '+');
    int base = p[0] == '0' && (p[1] == 'x' || p[1] == 'o') ? (p[1] == 'x' ? 16 : 8) : 10;
    p += base == 10 ? 0 : 2;
    if (!*p)
        return false;
    for (; *p; p++)
        if (!(base == 16 ? isxdigit((unsigned char)*p)
                         : *p >= '0' && *p <= (base == 8 ? '7' : '9')))
            return false;
    return true;
}

/* An integer literal too large for 64 bits (the YAML reader keeps it as the nearest double)
 * where an integer is wanted: reported with the key's path and bounds. */
static bool integer_out_of_range(struct ad_schema_ctx *ctx, const struct ad_schema_field *f,
                                 json_t *v, const char *path)
{
    struct ad_yaml_pos pos;
    if (!json_is_real(v) || ad_yaml_position(ctx->index, path, &pos) < 0 || !pos.raw ||
        !integer_literal(pos.raw))
        return false;
    if (has_bounds(f))
        ad_schema_error(ctx, path, "integer %s is out of range: must be between %.17g and %.17g",
                        pos.raw, f->min, f->max);
    else
        ad_schema_error(ctx, path, "integer %s is out of range (more than 64 bits)", pos.raw);
    return true;
}

static bool decode_scalar(struct ad_schema_ctx *ctx, const struct ad_schema_field *f, json_t *v,
                          const char *path, void *dst)
{
    switch (f->kind) {
    case AD_SCHEMA_STRING: {
        const char *text = scalar_text(ctx, v, path);
        if (!text) {
            ad_schema_error(ctx, path, "expected a string, got %s", json_type_name(v));
            return false;
        }
        if ((f->flags & AD_SCHEMA_NONEMPTY) && !*text) {
            ad_schema_error(ctx, path, "must not be empty");
            return false;
        }
        *(char **)dst = (f->flags & AD_SCHEMA_PATH) ? resolve_path(ctx, text) : strdup(text);
        return true;
    }
    case AD_SCHEMA_BOOL:
        if (!json_is_boolean(v)) {
            ad_schema_error(ctx, path, "expected true or false, got %s", json_type_name(v));
            return false;
        }
        *(bool *)dst = json_is_true(v);
        return true;
    case AD_SCHEMA_INT:
        if (integer_out_of_range(ctx, f, v, path))
            return false;
        if (!json_is_integer(v)) {
            ad_schema_error(ctx, path, "expected an integer, got %s", json_type_name(v));
            return false;
        }
        *(int64_t *)dst = json_integer_value(v);
        return check_bounds(ctx, f, path, (double)json_integer_value(v));
    case AD_SCHEMA_FLOAT:
        if (!json_is_number(v)) {
            ad_schema_error(ctx, path, "expected a number, got %s", json_type_name(v));
            return false;
        }
        *(double *)dst = json_number_value(v);
        return check_bounds(ctx, f, path, json_number_value(v));
    case AD_SCHEMA_DURATION:
        if (json_is_integer(v) && json_integer_value(v) == 0) {
            *(int64_t *)dst = 0;
            return check_bounds(ctx, f, path, 0);
        }
        if (!json_is_string(v)) {
            ad_schema_error(ctx, path, "expected a duration such as 30s, 5m or 1h30m; got %s",
                            json_type_name(v));
            return false;
        }
        return decode_text(ctx, f, path, json_string_value(v), dst);
    case AD_SCHEMA_SIZE:
        if (integer_out_of_range(ctx, f, v, path))
            return false;
        if (json_is_integer(v)) {
            if (json_integer_value(v) < 0) {
                ad_schema_error(ctx, path, "must not be negative");
                return false;
            }
            *(int64_t *)dst = json_integer_value(v);
            return check_bounds(ctx, f, path, (double)json_integer_value(v));
        }
        if (!json_is_string(v)) {
            ad_schema_error(ctx, path, "expected a size such as 1048576 or 1MiB; got %s",
                            json_type_name(v));
            return false;
        }
        return decode_text(ctx, f, path, json_string_value(v), dst);
    case AD_SCHEMA_ENUM: {
        const char *text = scalar_text(ctx, v, path);
        if (!text) {
            ad_schema_error(ctx, path, "expected a string, got %s", json_type_name(v));
            return false;
        }
        return decode_text(ctx, f, path, text, dst);
    }
    default:
        return false;
    }
}

/* ---- secrets ---- */

static char *read_secret_file(struct ad_schema_ctx *ctx, const char *path, const char *file)
{
    char why[256];
    size_t len = 0;
    /* Without blocking, and only a regular file: a FIFO there must not stall a reload. */
    char *buf = ad_file_read(file, SECRET_FILE_MAX, &len, NULL, why, sizeof why);

    if (!buf && errno == EFBIG) {
        ad_schema_error(ctx, path, "secret file %s is larger than %d bytes", file, SECRET_FILE_MAX);
        return NULL;
    }
    if (!buf) {
        ad_schema_error(ctx, path, "cannot read secret file %s: %s", file, why);
        return NULL;
    }
    /* Files written by editors and `echo` end in a newline that is not part of the secret. */
    size_t size = len;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (memchr(buf, '\0', len)) {
        ad_schema_error(ctx, path, "secret file %s holds a NUL byte", file);
        memset(buf, 0, size);
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static bool decode_secret(struct ad_schema_ctx *ctx, json_t *v, const char *path,
                          struct ad_secret *out)
{
    char child[AD_YAML_PATH_MAX];
    const char *text = scalar_text(ctx, v, path);

    if (text) {
        out->value = strdup(text);
        out->origin = strdup("inline");
        return true;
    }
    if (!json_is_object(v) || json_object_size(v) != 1) {
        ad_schema_error(ctx, path, "expected a string, {file: PATH} or {env: NAME}");
        return false;
    }
    const char *how = json_object_iter_key(json_object_iter(v));
    json_t *arg = json_object_iter_value(json_object_iter(v));
    ad_yaml_path_key(child, sizeof child, path, how);
    if (strcmp(how, "file") && strcmp(how, "env")) {
        ad_schema_error_key(ctx, child, "unknown secret source \"%s\"; use file or env", how);
        return false;
    }
    if (!json_is_string(arg) || !*json_string_value(arg)) {
        ad_schema_error(ctx, child, "expected a %s",
                        strcmp(how, "file") ? "variable name" : "file path");
        return false;
    }
    const char *name = json_string_value(arg);
    char origin[AD_YAML_PATH_MAX];
    snprintf(origin, sizeof origin, "%s:%s", how, name);
    if (strcmp(how, "file") == 0) {
        char *file = resolve_path(ctx, name);
        out->value = file ? read_secret_file(ctx, child, file) : NULL;
        free(file);
    } else {
        const char *env = getenv(name);
        if (!env)
            ad_schema_error(ctx, child, "environment variable %s is not set", name);
        out->value = dup_or_null(env);
    }
    if (!out->value)
        return false;
    out->origin = strdup(origin);
    return true;
}

static void free_secret(struct ad_secret *s)
{
    if (s->value) {
        memset(s->value, 0, strlen(s->value));
        free(s->value);
    }
    free(s->origin);
    s->value = s->origin = NULL;
}

/* ---- lists and maps ---- */

static bool push_string(struct ad_strlist *l, const char *s, size_t n)
{
    char **items = realloc(l->items, (l->len + 1) * sizeof *items);
    if (!items)
        return false;
    l->items = items;
    l->items[l->len] = strndup(s, n);
    return l->items[l->len++] != NULL;
}

static bool decode_string_list(struct ad_schema_ctx *ctx, const struct ad_schema_field *f,
                               json_t *v, const char *path, struct ad_strlist *out)
{
    char child[AD_YAML_PATH_MAX];
    bool ok = true;

    if (json_is_string(v) && (f->flags & AD_SCHEMA_COMMA_LIST)) {
        const char *s = json_string_value(v);
        while (*s) {
            const char *comma = strchr(s, ',');
            size_t n = comma ? (size_t)(comma - s) : strlen(s);
            const char *start = s;
            while (n > 0 && *start == ' ')
                start++, n--;
            while (n > 0 && start[n - 1] == ' ')
                n--;
            if (n == 0) {
                ad_schema_error_offset(ctx, path, (size_t)(s - json_string_value(v)),
                                       "empty item in the list");
                return false;
            }
            push_string(out, start, n);
            s = comma ? comma + 1 : s + strlen(s);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach (v, i, item) {
            ad_yaml_path_index(child, sizeof child, path, i);
            const char *text = scalar_text(ctx, item, child);
            if (!text) {
                ad_schema_error(ctx, child, "expected a string, got %s", json_type_name(item));
                ok = false;
                continue;
            }
            if (!*text) {
                ad_schema_error(ctx, child, "must not be empty");
                ok = false;
                continue;
            }
            push_string(out, text, strlen(text));
        }
    } else {
        ad_schema_error(ctx, path, "expected a list of strings%s, got %s",
                        (f->flags & AD_SCHEMA_COMMA_LIST) ? " (or one \"a,b\" string)" : "",
                        json_type_name(v));
        return false;
    }
    return ok;
}

/* Decodes one value of a map into dst; false after reporting an error. */
typedef bool (*map_value_fn)(struct ad_schema_ctx *ctx, json_t *v, const char *path, void *dst);

static bool string_value(struct ad_schema_ctx *ctx, json_t *v, const char *path, void *dst)
{
    const char *text = scalar_text(ctx, v, path);
    if (!text) {
        ad_schema_error(ctx, path, "expected a string, got %s", json_type_name(v));
        return false;
    }
    *(char **)dst = strdup(text);
    return true;
}

static bool secret_value(struct ad_schema_ctx *ctx, json_t *v, const char *path, void *dst)
{
    return decode_secret(ctx, v, path, dst);
}

/* An ordered map: keys[i] -> values[i], values of value_size bytes each. */
static bool decode_map(struct ad_schema_ctx *ctx, json_t *v, const char *path,
                       map_value_fn decode_value, size_t value_size, char ***keys, void **values,
                       size_t *len)
{
    char child[AD_YAML_PATH_MAX];
    const char *key;
    json_t *item;
    bool ok = true;

    if (!json_is_object(v)) {
        ad_schema_error(ctx, path, "expected a mapping, got %s", json_type_name(v));
        return false;
    }
    size_t n = json_object_size(v);
    *keys = calloc(n ? n : 1, sizeof(char *));
    *values = calloc(n ? n : 1, value_size);
    if (!*keys || !*values)
        return false;
    json_object_foreach (v, key, item) {
        ad_yaml_path_key(child, sizeof child, path, key);
        if (!decode_value(ctx, item, child, (char *)*values + *len * value_size)) {
            ok = false;
            continue;
        }
        (*keys)[(*len)++] = strdup(key);
    }
    return ok;
}

static bool decode_string_map(struct ad_schema_ctx *ctx, json_t *v, const char *path,
                              struct ad_strmap *out)
{
    return decode_map(ctx, v, path, string_value, sizeof(char *), &out->keys, (void **)&out->values,
                      &out->len);
}

static bool decode_secret_map(struct ad_schema_ctx *ctx, json_t *v, const char *path,
                              struct ad_secretmap *out)
{
    return decode_map(ctx, v, path, secret_value, sizeof(struct ad_secret), &out->keys,
                      (void **)&out->values, &out->len);
}

/* ---- sections ---- */

static void decode_fields(struct ad_schema_ctx *ctx, const struct ad_schema_section *section,
                          json_t *node, const char *path, void *obj);

static void decode_section(struct ad_schema_ctx *ctx, const struct ad_schema_section *section,
                           json_t *node, const char *path, void *obj);

static size_t count_names(const struct ad_schema_section *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_fields; i++)
        n += s->fields[i].name ? 1 : count_names(s->fields[i].section);
    return n;
}

static void collect_names(const struct ad_schema_section *s, const char **out, size_t *n)
{
    for (size_t i = 0; i < s->n_fields; i++) {
        if (s->fields[i].name)
            out[(*n)++] = s->fields[i].name;
        else
            collect_names(s->fields[i].section, out, n);
    }
}

static void check_unknown_keys(struct ad_schema_ctx *ctx, const struct ad_schema_section *section,
                               json_t *node, const char *path)
{
    size_t n = 0, total = count_names(section);
    const char **names = calloc(total + 1, sizeof *names);
    const char *key;
    json_t *item;
    char child[AD_YAML_PATH_MAX];

    if (!names)
        return;
    collect_names(section, names, &n);
    json_object_foreach (node, key, item) {
        bool known = false;
        for (size_t i = 0; i < n && !known; i++)
            known = strcmp(names[i], key) == 0;
        if (known)
            continue;
        ad_yaml_path_key(child, sizeof child, path, key);
        const char *hint = ad_schema_suggest(key, names);
        if (hint)
            ad_schema_error_key(ctx, child, "unknown key \"%s\" (did you mean \"%s\"?)", key, hint);
        else
            ad_schema_error_key(ctx, child, "unknown key \"%s\" in %s", key,
                                *path ? path : "the top level");
    }
    free(names);
}

static void decode_list(struct ad_schema_ctx *ctx, const struct ad_schema_field *f, json_t *v,
                        const char *path, void *obj)
{
    const struct ad_schema_section *sub = f->section;
    char child[AD_YAML_PATH_MAX];
    size_t i;
    json_t *item;

    if (!json_is_array(v)) {
        ad_schema_error(ctx, path, "expected a list of mappings, got %s", json_type_name(v));
        return;
    }
    size_t n = json_array_size(v);
    char *items = calloc(n ? n : 1, sub->size);
    if (!items)
        return;
    *(void **)AT(obj, f->offset) = items;
    *(size_t *)AT(obj, f->count_offset) = n;
    json_array_foreach (v, i, item) {
        ad_yaml_path_index(child, sizeof child, path, i);
        if (!json_is_object(item)) {
            ad_schema_error(ctx, child, "expected a mapping, got %s", json_type_name(item));
            continue;
        }
        decode_section(ctx, sub, item, child, items + i * sub->size);
    }
}

static void apply_default(struct ad_schema_ctx *ctx, const struct ad_schema_field *f,
                          const char *path, void *obj)
{
    void *dst = AT(obj, f->offset);
    if (f->kind == AD_SCHEMA_FLOAT)
        *(double *)dst = NAN;
    if (f->kind == AD_SCHEMA_SECTION)
        decode_fields(ctx, f->section, NULL, path, dst);
    else if (f->def)
        decode_text(ctx, f, path, f->def, dst);
}

static void decode_field(struct ad_schema_ctx *ctx, const struct ad_schema_field *f, json_t *node,
                         const char *path, void *obj)
{
    char child[AD_YAML_PATH_MAX];
    json_t *v = node ? json_object_get(node, f->name) : NULL;
    void *dst = AT(obj, f->offset);

    ad_yaml_path_key(child, sizeof child, path, f->name);
    if (!v || json_is_null(v)) {
        if (node && (f->flags & AD_SCHEMA_REQUIRED)) {
            if (v)
                ad_schema_error_key(ctx, child, "needs a value");
            else
                ad_schema_error(ctx, path, "missing required key \"%s\"", f->name);
        }
        apply_default(ctx, f, child, obj);
        return;
    }
    switch (f->kind) {
    case AD_SCHEMA_STRING_LIST:
        if (decode_string_list(ctx, f, v, child, dst) && (f->flags & AD_SCHEMA_NONEMPTY) &&
            ((struct ad_strlist *)dst)->len == 0)
            ad_schema_error(ctx, child, "must list at least one item");
        break;
    case AD_SCHEMA_STRING_MAP:
        if (decode_string_map(ctx, v, child, dst) && (f->flags & AD_SCHEMA_NONEMPTY) &&
            ((struct ad_strmap *)dst)->len == 0)
            ad_schema_error(ctx, child, "must have at least one entry");
        break;
    case AD_SCHEMA_SECRET:
        decode_secret(ctx, v, child, dst);
        break;
    case AD_SCHEMA_SECRET_MAP:
        decode_secret_map(ctx, v, child, dst);
        break;
    case AD_SCHEMA_SECTION:
        if (!json_is_object(v)) {
            ad_schema_error(ctx, child, "expected a mapping, got %s", json_type_name(v));
            apply_default(ctx, f, child, obj);
            break;
        }
        decode_section(ctx, f->section, v, child, dst);
        break;
    case AD_SCHEMA_SECTION_LIST:
        decode_list(ctx, f, v, child, obj);
        if ((f->flags & AD_SCHEMA_NONEMPTY) && *(size_t *)AT(obj, f->count_offset) == 0)
            ad_schema_error(ctx, child, "must list at least one item");
        break;
    default:
        if (!decode_scalar(ctx, f, v, child, dst))
            apply_default(ctx, f, child, obj);
    }
}

/* Decodes every field of section from node (NULL: absent, defaults only) without checking
 * unknown keys, which the caller does once for a mapping and the sections inlined into it. */
static void decode_fields(struct ad_schema_ctx *ctx, const struct ad_schema_section *section,
                          json_t *node, const char *path, void *obj)
{
    size_t decode_errors_before = ctx->errors - ctx->check_errors;

    for (size_t i = 0; i < section->n_fields; i++) {
        const struct ad_schema_field *f = &section->fields[i];
        if (!f->name)
            decode_fields(ctx, f->section, node, path, AT(obj, f->offset));
        else
            decode_field(ctx, f, node, path, obj);
    }
    /* A check assumes its fields decoded well; after a decode error it would only add noise.
     * Problems other checks found below do not stop it. */
    if (node && section->check && ctx->errors - ctx->check_errors == decode_errors_before) {
        size_t before = ctx->errors;
        section->check(ctx, path, obj);
        ctx->check_errors += ctx->errors - before;
    }
}

static void decode_section(struct ad_schema_ctx *ctx, const struct ad_schema_section *section,
                           json_t *node, const char *path, void *obj)
{
    check_unknown_keys(ctx, section, node, path);
    decode_fields(ctx, section, node, path, obj);
}

size_t ad_schema_decode(struct ad_schema_ctx *ctx, const struct ad_schema_section *section,
                        json_t *node, const char *path, void *obj)
{
    size_t before = ctx->errors;
    if (node && json_is_null(node))
        node = NULL;
    if (node && !json_is_object(node)) {
        ad_schema_error(ctx, path, "expected a mapping, got %s", json_type_name(node));
        node = NULL;
    }
    if (node)
        decode_section(ctx, section, node, path, obj);
    else
        decode_fields(ctx, section, NULL, path, obj);
    return ctx->errors - before;
}

/* ---- freeing ---- */

static void free_strlist(struct ad_strlist *l)
{
    for (size_t i = 0; i < l->len; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->len = 0;
}

void ad_schema_free(const struct ad_schema_section *section, void *obj)
{
    for (size_t i = 0; i < section->n_fields; i++) {
        const struct ad_schema_field *f = &section->fields[i];
        void *p = AT(obj, f->offset);
        switch (f->kind) {
        case AD_SCHEMA_STRING:
            free(*(char **)p);
            *(char **)p = NULL;
            break;
        case AD_SCHEMA_STRING_LIST:
            free_strlist(p);
            break;
        case AD_SCHEMA_STRING_MAP: {
            struct ad_strmap *m = p;
            for (size_t j = 0; j < m->len; j++) {
                free(m->keys[j]);
                free(m->values[j]);
            }
            free(m->keys);
            free(m->values);
            memset(m, 0, sizeof *m);
            break;
        }
        case AD_SCHEMA_SECRET:
            free_secret(p);
            break;
        case AD_SCHEMA_SECRET_MAP: {
            struct ad_secretmap *m = p;
            for (size_t j = 0; j < m->len; j++) {
                free(m->keys[j]);
                free_secret(&m->values[j]);
            }
            free(m->keys);
            free(m->values);
            memset(m, 0, sizeof *m);
            break;
        }
        case AD_SCHEMA_SECTION:
            ad_schema_free(f->section, p);
            break;
        case AD_SCHEMA_SECTION_LIST: {
            char *items = *(char **)p;
            size_t n = *(size_t *)AT(obj, f->count_offset);
            for (size_t j = 0; items && j < n; j++)
                ad_schema_free(f->section, items + j * f->section->size);
            free(items);
            *(char **)p = NULL;
            *(size_t *)AT(obj, f->count_offset) = 0;
            break;
        }
        default:
            break;
        }
    }
    if (section->free_derived)
        section->free_derived(obj);
}

/* ---- comparing ---- */

static bool str_equal(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool section_equal(const struct ad_schema_section *s, const void *a, const void *b);

static bool field_equal(const struct ad_schema_field *f, const void *a_obj, const void *b_obj)
{
    const void *a = CAT(a_obj, f->offset), *b = CAT(b_obj, f->offset);
    switch (f->kind) {
    case AD_SCHEMA_STRING:
        return str_equal(*(char *const *)a, *(char *const *)b);
    case AD_SCHEMA_BOOL:
        return *(const bool *)a == *(const bool *)b;
    case AD_SCHEMA_INT:
    case AD_SCHEMA_DURATION:
    case AD_SCHEMA_SIZE:
        return *(const int64_t *)a == *(const int64_t *)b;
    case AD_SCHEMA_FLOAT: {
        double x = *(const double *)a, y = *(const double *)b;
        return x == y || (isnan(x) && isnan(y));
    }
    case AD_SCHEMA_ENUM:
        return *(const int *)a == *(const int *)b;
    case AD_SCHEMA_STRING_LIST: {
        const struct ad_strlist *x = a, *y = b;
        if (x->len != y->len)
            return false;
        for (size_t i = 0; i < x->len; i++)
            if (strcmp(x->items[i], y->items[i]))
                return false;
        return true;
    }
    case AD_SCHEMA_STRING_MAP: {
        const struct ad_strmap *x = a, *y = b;
        if (x->len != y->len)
            return false;
        for (size_t i = 0; i < x->len; i++)
            if (strcmp(x->keys[i], y->keys[i]) || strcmp(x->values[i], y->values[i]))
                return false;
        return true;
    }
    case AD_SCHEMA_SECRET:
        return str_equal(((const struct ad_secret *)a)->value,
                         ((const struct ad_secret *)b)->value);
    case AD_SCHEMA_SECRET_MAP: {
        const struct ad_secretmap *x = a, *y = b;
        if (x->len != y->len)
            return false;
        for (size_t i = 0; i < x->len; i++)
            if (strcmp(x->keys[i], y->keys[i]) ||
                !str_equal(x->values[i].value, y->values[i].value))
                return false;
        return true;
    }
    case AD_SCHEMA_SECTION:
        return section_equal(f->section, a, b);
    case AD_SCHEMA_SECTION_LIST: {
        size_t n = *(const size_t *)CAT(a_obj, f->count_offset);
        if (n != *(const size_t *)CAT(b_obj, f->count_offset))
            return false;
        const char *x = *(char *const *)a, *y = *(char *const *)b;
        for (size_t i = 0; i < n; i++)
            if (!section_equal(f->section, x + i * f->section->size, y + i * f->section->size))
                return false;
        return true;
    }
    }
    return false;
}

static bool section_equal(const struct ad_schema_section *s, const void *a, const void *b)
{
    for (size_t i = 0; i < s->n_fields; i++)
        if (!field_equal(&s->fields[i], a, b))
            return false;
    return true;
}

bool ad_schema_field_equal(const struct ad_schema_section *section, const char *name, const void *a,
                           const void *b)
{
    const char *dot = strchr(name, '.');
    size_t len = dot ? (size_t)(dot - name) : strlen(name);
    for (size_t i = 0; i < section->n_fields; i++) {
        const struct ad_schema_field *f = &section->fields[i];
        if (!f->name || strlen(f->name) != len || strncmp(f->name, name, len) != 0)
            continue;
        if (!dot)
            return field_equal(f, a, b);
        /* A key inside a section: "sinks.kafka". */
        return f->kind == AD_SCHEMA_SECTION &&
               ad_schema_field_equal(f->section, dot + 1, CAT(a, f->offset), CAT(b, f->offset));
    }
    return false;
}

static bool section_has_restart(const struct ad_schema_section *s)
{
    for (size_t i = 0; i < s->n_fields; i++) {
        const struct ad_schema_field *f = &s->fields[i];
        if ((f->flags & AD_SCHEMA_RESTART) ||
            ((f->kind == AD_SCHEMA_SECTION || f->kind == AD_SCHEMA_SECTION_LIST) &&
             section_has_restart(f->section)))
            return true;
    }
    return false;
}

/* Calls fn with the path of every key whose value differs, or only of RESTART keys. */
static void changes(const struct ad_schema_section *section, const void *a, const void *b,
                    const char *path, bool restart_only, void (*fn)(const char *path, void *arg),
                    void *arg)
{
    char child[AD_YAML_PATH_MAX];

    for (size_t i = 0; i < section->n_fields; i++) {
        const struct ad_schema_field *f = &section->fields[i];
        if (!f->name) {
            changes(f->section, CAT(a, f->offset), CAT(b, f->offset), path, restart_only, fn, arg);
            continue;
        }
        ad_yaml_path_key(child, sizeof child, path, f->name);
        if (f->kind == AD_SCHEMA_SECTION && !(f->flags & AD_SCHEMA_RESTART)) {
            changes(f->section, CAT(a, f->offset), CAT(b, f->offset), child, restart_only, fn, arg);
        } else if (f->kind == AD_SCHEMA_SECTION_LIST && !(f->flags & AD_SCHEMA_RESTART)) {
            if (restart_only && !section_has_restart(f->section))
                continue;
            size_t n = *(const size_t *)CAT(a, f->count_offset);
            if (n != *(const size_t *)CAT(b, f->count_offset)) {
                fn(child, arg);
                continue;
            }
            const char *x = *(char *const *)CAT(a, f->offset);
            const char *y = *(char *const *)CAT(b, f->offset);
            for (size_t j = 0; j < n; j++) {
                char item[AD_YAML_PATH_MAX];
                ad_yaml_path_index(item, sizeof item, child, j);
                changes(f->section, x + j * f->section->size, y + j * f->section->size, item,
                        restart_only, fn, arg);
            }
        } else if ((!restart_only || (f->flags & AD_SCHEMA_RESTART)) && !field_equal(f, a, b)) {
            fn(child, arg);
        }
    }
}

void ad_schema_restart_changes(const struct ad_schema_section *section, const void *a,
                               const void *b, const char *path,
                               void (*fn)(const char *path, void *arg), void *arg)
{
    changes(section, a, b, path, true, fn, arg);
}

void ad_schema_changes(const struct ad_schema_section *section, const void *a, const void *b,
                       const char *path, void (*fn)(const char *path, void *arg), void *arg)
{
    changes(section, a, b, path, false, fn, arg);
}

/* ---- reference ---- */

static void describe_type(const struct ad_schema_field *f, char *buf, size_t size)
{
    char bounds[128] = "";
    if (has_bounds(f)) {
        if (f->kind == AD_SCHEMA_DURATION) {
            char range[96];
            describe_duration_bounds(f, range, sizeof range);
            snprintf(bounds, sizeof bounds, ", %s", range);
        } else {
            snprintf(bounds, sizeof bounds, ", %.17g to %.17g", f->min, f->max);
        }
    }
    switch (f->kind) {
    case AD_SCHEMA_STRING:
        snprintf(buf, size, "string");
        break;
    case AD_SCHEMA_BOOL:
        snprintf(buf, size, "boolean");
        break;
    case AD_SCHEMA_INT:
        snprintf(buf, size, "integer%s", bounds);
        break;
    case AD_SCHEMA_FLOAT:
        snprintf(buf, size, "number%s", bounds);
        break;
    case AD_SCHEMA_DURATION:
        snprintf(buf, size, "duration%s", bounds);
        break;
    case AD_SCHEMA_SIZE:
        snprintf(buf, size, "size%s", bounds);
        break;
    case AD_SCHEMA_ENUM: {
        size_t used = (size_t)snprintf(buf, size, "one of");
        for (const char *const *v = f->values; *v && used < size; v++)
            used +=
                (size_t)snprintf(buf + used, size - used, "%s `%s`", v == f->values ? "" : ",", *v);
        break;
    }
    case AD_SCHEMA_STRING_LIST:
        snprintf(buf, size, "list of strings%s",
                 (f->flags & AD_SCHEMA_COMMA_LIST) ? " or one comma-separated string" : "");
        break;
    case AD_SCHEMA_STRING_MAP:
        snprintf(buf, size, "mapping of strings");
        break;
    case AD_SCHEMA_SECRET:
        snprintf(buf, size, "secret");
        break;
    case AD_SCHEMA_SECRET_MAP:
        snprintf(buf, size, "mapping of strings or secrets");
        break;
    case AD_SCHEMA_SECTION:
        snprintf(buf, size, "mapping");
        break;
    case AD_SCHEMA_SECTION_LIST:
        snprintf(buf, size, "list of mappings");
        break;
    }
}

static void write_rows(FILE *out, const struct ad_schema_section *section, const char *path)
{
    char type[256];
    for (size_t i = 0; i < section->n_fields; i++) {
        const struct ad_schema_field *f = &section->fields[i];
        if (!f->name) {
            write_rows(out, f->section, path);
            continue;
        }
        describe_type(f, type, sizeof type);
        const char *reload = (f->flags & AD_SCHEMA_RESTART) ? "restart" : "live";
        if (f->kind == AD_SCHEMA_SECTION || f->kind == AD_SCHEMA_SECTION_LIST)
            reload = section_has_restart(f->section) ? "see below" : "live";
        fprintf(out, "| `%s` | %s | %s%s%s | %s | %s%s |\n", f->name, type, f->def ? "`" : "",
                f->def ? f->def : ((f->flags & AD_SCHEMA_REQUIRED) ? "required" : "—"),
                f->def ? "`" : "", reload, f->doc ? f->doc : "",
                (f->kind == AD_SCHEMA_SECTION || f->kind == AD_SCHEMA_SECTION_LIST)
                    ? " (keys below)"
                    : "");
    }
}

static void write_subsections(FILE *out, const struct ad_schema_section *section, const char *path)
{
    char child[AD_YAML_PATH_MAX];
    for (size_t i = 0; i < section->n_fields; i++) {
        const struct ad_schema_field *f = &section->fields[i];
        if (!f->name) {
            write_subsections(out, f->section, path);
            continue;
        }
        if (f->kind != AD_SCHEMA_SECTION && f->kind != AD_SCHEMA_SECTION_LIST)
            continue;
        snprintf(child, sizeof child, "%s%s%s%s", path, *path ? "." : "", f->name,
                 f->kind == AD_SCHEMA_SECTION_LIST ? "[]" : "");
        ad_schema_write_reference(out, f->section, child);
    }
}

void ad_schema_write_reference(FILE *out, const struct ad_schema_section *section, const char *path)
{
    fprintf(out, "### `%s`\n\n", *path ? path : "(top level)");
    if (section->doc)
        fprintf(out, "%s\n\n", section->doc);
    fprintf(out, "| Key | Type | Default | Reload | Description |\n");
    fprintf(out, "| --- | --- | --- | --- | --- |\n");
    write_rows(out, section, path);
    fprintf(out, "\n");
    write_subsections(out, section, path);
}
