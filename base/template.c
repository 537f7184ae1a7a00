#include "base/template.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/errstr.h"
#include "base/grow.h"

/* Literal text and placeholders alternate: literal[0] name[0] literal[1] ... literal[n]. */
struct ad_template {
    char **literals; /* n_names + 1 */
    char **names;
    size_t n_names, cap_names, n_literals, cap_literals;
};

static char *copy(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static int add_literal(struct ad_template *t, const char *p, size_t n)
{
    if (ad_grow(&t->literals, &t->cap_literals, t->n_literals + 1, sizeof *t->literals) < 0)
        return -1;
    if (!(t->literals[t->n_literals] = copy(p, n)))
        return -1;
    t->n_literals++;
    return 0;
}

struct ad_template *ad_template_parse(const char *text, size_t *offset, char *errstr,
                                      size_t errstr_size)
{
    struct ad_template *t = calloc(1, sizeof *t);
    const char *p = text;
    if (!t)
        goto oom;
    for (;;) {
        const char *open = strstr(p, "{{");
        if (add_literal(t, p, open ? (size_t)(open - p) : strlen(p)) < 0)
            goto oom;
        if (!open)
            break;
        const char *q = open + 2, *close = strstr(q, "}}");
        if (!close) {
            if (offset)
                *offset = (size_t)(open - text);
            ad_errstr_set(errstr, errstr_size, "\"{{\" without \"}}\"");
            goto fail;
        }
        while (q < close && *q == ' ')
            q++;
        const char *e = close;
        while (e > q && e[-1] == ' ')
            e--;
        bool ok = e > q;
        for (const char *c = q; c < e; c++)
            ok = ok && (isalnum((unsigned char)*c) || *c == '_' || *c == '.');
        if (!ok) {
            if (offset)
                *offset = (size_t)(open - text);
            ad_errstr_set(errstr, errstr_size,
                          "a placeholder is {{name}}: letters, digits, '_' and '.'");
            goto fail;
        }
        if (ad_grow(&t->names, &t->cap_names, t->n_names + 1, sizeof *t->names) < 0 ||
            !(t->names[t->n_names] = copy(q, (size_t)(e - q))))
            goto oom;
        t->n_names++;
        p = close + 2;
    }
    return t;
oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
fail:
    ad_template_free(t);
    return NULL;
}

void ad_template_free(struct ad_template *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_names; i++)
        free(t->names[i]);
    for (size_t i = 0; i < t->n_literals; i++)
        free(t->literals[i]);
    free(t->names);
    free(t->literals);
    free(t);
}

size_t ad_template_names(const struct ad_template *t, const char *const **names)
{
    *names = (const char *const *)t->names;
    return t->n_names;
}

struct out {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void put(struct out *o, const char *p, size_t n)
{
    if (o->failed || ad_grow(&o->buf, &o->cap, o->len + n + 1, 1) < 0) {
        o->failed = true;
        return;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void put_escaped(struct out *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            put(o, (const char *)&c, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            put(o, e, 3);
        }
    }
}

char *ad_template_expand(const struct ad_template *t,
                         const char *(*lookup)(void *arg, const char *name), void *arg)
{
    struct out o = {0};
    put(&o, "", 0);
    for (size_t i = 0; i <= t->n_names; i++) {
        put(&o, t->literals[i], strlen(t->literals[i]));
        if (i < t->n_names)
            put_escaped(&o, lookup(arg, t->names[i]));
    }
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    return o.buf;
}
