#include "config/diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"

struct diag_entry {
    int line;
    int column;
    size_t seq;
    char *full; /* "file:line:col: text" */
    const char *text;
};

struct ad_diag {
    struct diag_entry *entries;
    size_t len;
    size_t cap;
    size_t dropped;
};

struct ad_diag *ad_diag_new(void)
{
    return calloc(1, sizeof(struct ad_diag));
}

void ad_diag_clear(struct ad_diag *d)
{
    for (size_t i = 0; i < d->len; i++)
        free(d->entries[i].full);
    d->len = 0;
    d->dropped = 0;
}

void ad_diag_destroy(struct ad_diag *d)
{
    if (!d)
        return;
    ad_diag_clear(d);
    free(d->entries);
    free(d);
}

void ad_diag_add(struct ad_diag *d, const char *file, int line, int column, const char *fmt, ...)
{
    char text[1024];
    char prefix[512];
    va_list ap;

    if (d->len >= AD_DIAG_MAX) {
        d->dropped++;
        return;
    }
    if (ad_grow(&d->entries, &d->cap, d->len + 1, sizeof *d->entries) < 0)
        return;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(prefix, sizeof prefix, "%s:%d:%d: ", file, line, column);
    else
        snprintf(prefix, sizeof prefix, "%s: ", file);

    size_t plen = strlen(prefix), tlen = strlen(text);
    char *full = malloc(plen + tlen + 1);
    if (!full)
        return;
    memcpy(full, prefix, plen);
    memcpy(full + plen, text, tlen + 1);
    d->entries[d->len] = (struct diag_entry){
        .line = line, .column = column, .seq = d->len, .full = full, .text = full + plen};
    d->len++;
}

size_t ad_diag_count(const struct ad_diag *d)
{
    return d->len;
}

size_t ad_diag_dropped(const struct ad_diag *d)
{
    return d->dropped;
}

const char *ad_diag_message(const struct ad_diag *d, size_t i)
{
    return i < d->len ? d->entries[i].full : NULL;
}

const char *ad_diag_text(const struct ad_diag *d, size_t i)
{
    return i < d->len ? d->entries[i].text : NULL;
}

int ad_diag_line(const struct ad_diag *d, size_t i)
{
    return i < d->len ? d->entries[i].line : 0;
}

int ad_diag_column(const struct ad_diag *d, size_t i)
{
    return i < d->len ? d->entries[i].column : 0;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct diag_entry *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->column != y->column)
        return x->column < y->column ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

void ad_diag_sort(struct ad_diag *d)
{
    if (d->len > 1)
        qsort(d->entries, d->len, sizeof d->entries[0], entry_cmp);
}

void ad_diag_print(const struct ad_diag *d, FILE *out)
{
    for (size_t i = 0; i < d->len; i++) {
        const struct diag_entry *e = &d->entries[i];
        fprintf(out, "%.*serror: %s\n", (int)(e->text - e->full), e->full, e->text);
    }
    if (d->dropped)
        fprintf(out, "error: %zu more errors not shown\n", d->dropped);
}
