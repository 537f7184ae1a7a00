#ifndef AD_DIAG_H
#define AD_DIAG_H

/*
 * A list of config diagnostics, each "file:line:column: message", printed the way compilers
 * and promtool print them so editors can jump to the spot. Line and column are 1-based; 0
 * means the message is about the whole file.
 */

#include <stddef.h>
#include <stdio.h>

/* After this many, further errors are dropped and one line says so: a hostile file must not
 * make the loader allocate without bound. */
#define AD_DIAG_MAX 100

struct ad_diag;

struct ad_diag *ad_diag_new(void);
void ad_diag_destroy(struct ad_diag *d);

void ad_diag_add(struct ad_diag *d, const char *file, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

size_t ad_diag_count(const struct ad_diag *d);
/* The i-th message, "file:line:column: text" (borrowed; valid until the next add or destroy). */
const char *ad_diag_message(const struct ad_diag *d, size_t i);
int ad_diag_line(const struct ad_diag *d, size_t i);
int ad_diag_column(const struct ad_diag *d, size_t i);
/* The text alone, without the position. */
const char *ad_diag_text(const struct ad_diag *d, size_t i);

/* How many errors were dropped past AD_DIAG_MAX. */
size_t ad_diag_dropped(const struct ad_diag *d);

/* Orders messages by position (file order), keeping the order of equal positions. */
void ad_diag_sort(struct ad_diag *d);
void ad_diag_clear(struct ad_diag *d);
/* Prints every message, one per line, each prefixed with "error: " after the position. */
void ad_diag_print(const struct ad_diag *d, FILE *out);

#endif
