#include "config/expr.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config/jpath.h"

struct cursor {
    const char *text;
    const char *p;
    const char *error;
    size_t offset;
};

static int fail(struct cursor *c, const char *at, const char *why)
{
    c->error = why;
    c->offset = (size_t)(at - c->text);
    return -1;
}

static void skip_space(struct cursor *c)
{
    while (isspace((unsigned char)*c->p))
        c->p++;
}

/* A path runs to the next blank outside ["..."], or to an operator character. */
static int read_path(struct cursor *c, char **out)
{
    const char *start = c->p, *s = c->p;
    struct ad_jpath parsed;
    const char *jerr;
    size_t joff;

    while (*s && !isspace((unsigned char)*s) && !strchr("=!<>", *s)) {
        if (*s == '[' && (s[1] == '"' || s[1] == '\'')) {
            char quote = s[1];
            for (s += 2; *s && !(*s == quote && s[1] == ']'); s++)
                if (*s == '\\' && s[1])
                    s++;
            if (*s)
                s += 2;
            continue;
        }
        s++;
    }
    if (s == start)
        return fail(c, start, "expected a JSON path");
    *out = strndup(start, (size_t)(s - start));
    if (!*out)
        return fail(c, start, "out of memory");
    if (ad_jpath_parse(*out, &parsed, &jerr, &joff) < 0) {
        free(*out);
        *out = NULL;
        return fail(c, start + joff, jerr);
    }
    ad_jpath_free(&parsed);
    c->p = s;
    return 0;
}

static int read_literal(struct cursor *c, struct ad_predicate *out)
{
    const char *s = c->p;
    if (*s == '"' || *s == '\'') {
        char quote = *s++;
        size_t cap = strlen(s) + 1, len = 0;
        char *buf = malloc(cap);
        if (!buf)
            return fail(c, s, "out of memory");
        while (*s && *s != quote) {
            if (*s == '\\' && s[1])
                s++;
            buf[len++] = *s++;
        }
        if (*s != quote) {
            free(buf);
            return fail(c, c->p, "unterminated string");
        }
        buf[len] = '\0';
        out->type = AD_LITERAL_STRING;
        out->string = buf;
        c->p = s + 1;
        return 0;
    }

    const char *start = s;
    while (*s && !isspace((unsigned char)*s))
        s++;
    if (s == start)
        return fail(c, start, "expected a value after the operator");
    size_t n = (size_t)(s - start);
    char *word = strndup(start, n);
    if (!word)
        return fail(c, start, "out of memory");
    char *end;
    double num = strtod(word, &end);
    if (*end == '\0' && isfinite(num)) {
        out->type = AD_LITERAL_NUMBER;
        out->number = num;
        free(word);
    } else if (strcmp(word, "true") == 0 || strcmp(word, "false") == 0) {
        out->type = AD_LITERAL_BOOL;
        out->boolean = word[0] == 't';
        free(word);
    } else if (strcmp(word, "null") == 0) {
        out->type = AD_LITERAL_NULL;
        free(word);
    } else {
        out->type = AD_LITERAL_STRING;
        out->string = word;
    }
    c->p = s;
    return 0;
}

static int parse_predicate(struct cursor *c, struct ad_predicate *out)
{
    static const struct {
        const char *text;
        enum ad_cmp_op op;
    } ops[] = {{"==", AD_OP_EQ}, {"!=", AD_OP_NE}, {"<=", AD_OP_LE},
               {">=", AD_OP_GE}, {"<", AD_OP_LT},  {">", AD_OP_GT}};

    memset(out, 0, sizeof *out);
    skip_space(c);
    if (read_path(c, &out->path) < 0)
        return -1;
    skip_space(c);
    if (strncmp(c->p, "exists", 6) == 0 && (c->p[6] == '\0' || isspace((unsigned char)c->p[6]))) {
        out->op = AD_OP_EXISTS;
        c->p += 6;
    } else {
        size_t i, n = sizeof ops / sizeof ops[0];
        for (i = 0; i < n; i++)
            if (strncmp(c->p, ops[i].text, strlen(ops[i].text)) == 0)
                break;
        if (i == n)
            return fail(c, c->p, "expected an operator: ==, !=, <, <=, >, >= or exists");
        char after = c->p[strlen(ops[i].text)];
        if (after && strchr("=!<>", after))
            return fail(c, c->p, "unknown operator; use ==, !=, <, <=, >, >= or exists");
        out->op = ops[i].op;
        c->p += strlen(ops[i].text);
        skip_space(c);
        const char *literal_at = c->p;
        if (read_literal(c, out) < 0)
            return -1;
        bool ordering = out->op != AD_OP_EQ && out->op != AD_OP_NE;
        if (ordering && out->type != AD_LITERAL_NUMBER)
            return fail(c, literal_at, "<, <=, > and >= compare with a number");
    }
    skip_space(c);
    if (*c->p)
        return fail(c, c->p, "unexpected text after the expression");
    return 0;
}

int ad_expr_parse_predicate(const char *text, struct ad_predicate *out, const char **error,
                            size_t *offset)
{
    struct cursor c = {.text = text, .p = text};
    if (parse_predicate(&c, out) < 0) {
        ad_expr_free_predicate(out);
        *error = c.error;
        *offset = c.offset;
        return -1;
    }
    return 0;
}

int ad_expr_parse_feature(const char *text, struct ad_settings_feature *out, const char **error,
                          size_t *offset)
{
    static const struct {
        const char *word;
        enum ad_feature_kind kind;
    } kinds[] = {{"count_if", AD_FEATURE_COUNT_IF}, {"count", AD_FEATURE_COUNT},
                 {"sum", AD_FEATURE_SUM},           {"mean", AD_FEATURE_MEAN},
                 {"min", AD_FEATURE_MIN},           {"max", AD_FEATURE_MAX},
                 {"last", AD_FEATURE_LAST}};
    struct cursor c = {.text = text, .p = text};
    size_t i, n = sizeof kinds / sizeof kinds[0];

    out->path = NULL;
    memset(&out->predicate, 0, sizeof out->predicate);
    skip_space(&c);
    for (i = 0; i < n; i++) {
        size_t len = strlen(kinds[i].word);
        if (strncmp(c.p, kinds[i].word, len) == 0 &&
            (c.p[len] == '\0' || isspace((unsigned char)c.p[len])))
            break;
    }
    if (i == n) {
        fail(&c, c.p, "expected count, count_if, sum, mean, min, max or last");
        goto err;
    }
    out->kind = kinds[i].kind;
    c.p += strlen(kinds[i].word);
    skip_space(&c);

    if (out->kind == AD_FEATURE_COUNT) {
        if (*c.p) {
            fail(&c, c.p, "count takes no argument; use count_if to count matching events");
            goto err;
        }
    } else if (out->kind == AD_FEATURE_COUNT_IF) {
        if (!*c.p) {
            fail(&c, c.p, "count_if needs a condition such as: level == \"error\"");
            goto err;
        }
        if (parse_predicate(&c, &out->predicate) < 0)
            goto err;
    } else {
        if (read_path(&c, &out->path) < 0)
            goto err;
        skip_space(&c);
        if (*c.p) {
            fail(&c, c.p, "unexpected text after the path");
            goto err;
        }
    }
    return 0;

err:
    ad_expr_free_predicate(&out->predicate);
    free(out->path);
    out->path = NULL;
    *error = c.error;
    *offset = c.offset;
    return -1;
}

void ad_expr_free_predicate(struct ad_predicate *p)
{
    free(p->path);
    free(p->string);
    p->path = p->string = NULL;
}

void ad_expr_free_feature(struct ad_settings_feature *f)
{
    free(f->name);
    free(f->path);
    free(f->query);
    ad_expr_free_predicate(&f->predicate);
    f->name = f->path = f->query = NULL;
}
