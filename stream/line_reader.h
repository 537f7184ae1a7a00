#ifndef AD_LINE_READER_H
#define AD_LINE_READER_H

/*
 * The lines of a file (an offline replay's input), read in large blocks and handed out one at
 * a time. A line ends at '\n', and a '\r' before it is dropped; the last line may lack its
 * '\n'. NUL bytes are part of a line, as they would be of a Kafka message. A line longer than
 * the bound is skipped without being held in memory, so a file without line breaks cannot
 * exhaust it; its length is still reported.
 */

#include <stddef.h>
#include <stdint.h>

struct ad_line_reader;

/* Reads fd (borrowed: the caller closes it) with lines of at most max_line bytes. NULL when
 * out of memory. */
struct ad_line_reader *ad_line_reader_new(int fd, size_t max_line);
void ad_line_reader_destroy(struct ad_line_reader *r);

enum ad_line_result {
    AD_LINE_OK,
    AD_LINE_TOO_LONG, /* *len bytes, more than max_line: *line is NULL */
    AD_LINE_END,
    AD_LINE_ERROR /* a read failed: errno says why */
};

/* The next line: *line (valid until the next call, not NUL-terminated) and its *len. */
enum ad_line_result ad_line_reader_next(struct ad_line_reader *r, const char **line, size_t *len);

/* The number of the line last handed out, from 1 (too long ones count). */
uint64_t ad_line_reader_number(const struct ad_line_reader *r);

#endif
