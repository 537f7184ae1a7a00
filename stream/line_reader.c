#include "stream/line_reader.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bytes read at once, beyond the longest line the buffer must hold. */
#define BLOCK ((size_t)64 * 1024)

struct ad_line_reader {
    int fd;
    size_t max_line;
    char *buf;
    size_t cap;
    size_t start, end; /* the bytes not handed out yet */
    size_t scanned;    /* bytes after start known to hold no '\n' */
    bool eof;
    size_t skipped; /* > 0: inside a line too long, this many bytes of it dropped */
    uint64_t number;
};

struct ad_line_reader *ad_line_reader_new(int fd, size_t max_line)
{
    struct ad_line_reader *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->fd = fd;
    r->max_line = max_line;
    r->cap = max_line + BLOCK;
    r->buf = malloc(r->cap);
    if (!r->buf) {
        free(r);
        return NULL;
    }
    return r;
}

void ad_line_reader_destroy(struct ad_line_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    free(r);
}

/* Hands out n bytes at start as a line, consuming them and the line break (if any) after. */
static enum ad_line_result emit(struct ad_line_reader *r, size_t n, size_t consumed,
                                const char **line, size_t *len)
{
    const char *text = r->buf + r->start;
    r->start += consumed;
    r->scanned = 0;
    r->number++;
    if (r->skipped) {
        *len = r->skipped + n;
        *line = NULL;
        r->skipped = 0;
        return AD_LINE_TOO_LONG;
    }
    if (n > 0 && text[n - 1] == '\r')
        n--;
    *line = text;
    *len = n;
    return AD_LINE_OK;
}

enum ad_line_result ad_line_reader_next(struct ad_line_reader *r, const char **line, size_t *len)
{
    for (;;) {
        size_t have = r->end - r->start;
        const char *nl = memchr(r->buf + r->start + r->scanned, '\n', have - r->scanned);
        if (nl) {
            size_t n = (size_t)(nl - (r->buf + r->start));
            if (!r->skipped && n > r->max_line) {
                r->skipped = n;
                return emit(r, 0, n + 1, line, len);
            }
            return emit(r, n, n + 1, line, len);
        }
        r->scanned = have;
        if (r->skipped || have > r->max_line) {
            /* Too long already: drop what is here and look for the line's end. */
            r->skipped += have;
            r->start = r->end = r->scanned = 0;
            have = 0;
        }
        if (r->eof) {
            if (have == 0 && !r->skipped)
                return AD_LINE_END;
            return emit(r, have, have, line, len);
        }
        if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, have);
            r->start = 0;
            r->end = have;
        }
        ssize_t got = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return AD_LINE_ERROR;
        r->eof = got == 0;
        r->end += (size_t)got;
    }
}

uint64_t ad_line_reader_number(const struct ad_line_reader *r)
{
    return r->number;
}
