#include "config/jpath.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static int is_bare_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '@';
}

static int push(struct ad_jpath *p, struct ad_jpath_segment seg)
{
    struct ad_jpath_segment *s = realloc(p->segments, (p->len + 1) * sizeof *s);
    if (!s)
        return -1;
    p->segments = s;
    p->segments[p->len++] = seg;
    return 0;
}

static int fail(const char *text, const char *at, const char *why, const char **error,
                size_t *error_offset)
{
    *error = why;
    *error_offset = (size_t)(at - text);
    return -1;
}

/* Parses the body of ["..."] or ['...'] starting at the quote; on success *end points past ']'. */
static char *parse_quoted(const char *s, const char **end)
{
    char quote = *s++;
    size_t cap = strlen(s) + 1, len = 0;
    char *key = malloc(cap);
    if (!key)
        return NULL;
    while (*s && *s != quote) {
        if (*s == '\\' && (s[1] == quote || s[1] == '\\'))
            s++;
        key[len++] = *s++;
    }
    if (*s != quote || s[1] != ']') {
        free(key);
        *end = s;
        return NULL;
    }
    key[len] = '\0';
    *end = s + 2;
    return key;
}

int ad_jpath_parse(const char *text, struct ad_jpath *out, const char **error, size_t *error_offset)
{
    const char *s = text;
    struct ad_jpath p = {NULL, 0};
    int expect_key = 1; /* at the start, and after '.', a bare key must follow */

    if (*s == '$') {
        s++;
        if (*s == '.')
            s++;
        else if (*s != '[' && *s != '\0')
            return fail(text, s, "expected '.' or '[' after '$'", error, error_offset);
        expect_key = *s != '[';
    }
    if (*s == '\0') {
        fail(text, s, "empty path", error, error_offset);
        goto err;
    }
    while (*s) {
        struct ad_jpath_segment seg = {.type = AD_JPATH_KEY};
        if (p.len == AD_JPATH_MAX_SEGMENTS) {
            fail(text, s, "too many segments (at most 32)", error, error_offset);
            goto err;
        }
        if (*s == '[') {
            const char *start = s;
            s++;
            if (*s == '"' || *s == '\'') {
                const char *end;
                seg.key = parse_quoted(s, &end);
                if (!seg.key) {
                    fail(text, start, "unterminated [\"key\"]", error, error_offset);
                    goto err;
                }
                s = end;
            } else if (isdigit((unsigned char)*s)) {
                size_t v = 0;
                for (; isdigit((unsigned char)*s); s++) {
                    if (v > 1000000) {
                        fail(text, start, "array index too large", error, error_offset);
                        goto err;
                    }
                    v = v * 10 + (size_t)(*s - '0');
                }
                if (*s != ']') {
                    fail(text, s, "expected ']' after the array index", error, error_offset);
                    goto err;
                }
                s++;
                seg.type = AD_JPATH_INDEX;
                seg.index = v;
            } else {
                fail(text, s, "expected a quoted key or an index after '['", error, error_offset);
                goto err;
            }
        } else if (expect_key || *s == '.') {
            if (!expect_key)
                s++;
            const char *start = s;
            while (is_bare_char(*s))
                s++;
            if (s == start) {
                fail(text, s, "expected a key", error, error_offset);
                goto err;
            }
            seg.key = strndup(start, (size_t)(s - start));
            if (!seg.key)
                goto oom;
        } else {
            fail(text, s, "unexpected character", error, error_offset);
            goto err;
        }
        if (push(&p, seg) < 0) {
            free(seg.key);
            goto oom;
        }
        expect_key = 0;
    }
    *out = p;
    return 0;

oom:
    fail(text, s, "out of memory", error, error_offset);
err:
    ad_jpath_free(&p);
    return -1;
}

void ad_jpath_free(struct ad_jpath *path)
{
    for (size_t i = 0; i < path->len; i++)
        free(path->segments[i].key);
    free(path->segments);
    path->segments = NULL;
    path->len = 0;
}

json_t *ad_jpath_get(const struct ad_jpath *path, json_t *root)
{
    json_t *v = root;
    for (size_t i = 0; i < path->len && v; i++) {
        const struct ad_jpath_segment *seg = &path->segments[i];
        if (seg->type == AD_JPATH_KEY)
            v = json_is_object(v) ? json_object_get(v, seg->key) : NULL;
        else
            v = json_is_array(v) ? json_array_get(v, seg->index) : NULL;
    }
    return v;
}
