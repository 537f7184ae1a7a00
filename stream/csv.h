#ifndef AD_CSV_H
#define AD_CSV_H

/*
 * One CSV record as RFC 4180 writes it, which is also the default dialect of Python's csv
 * module: fields separated by commas; a field that starts with a double quote runs to the
 * next lone one, may hold commas, and writes a double quote inside as two. A record is one
 * line (the line reader's): quoted line breaks are not supported.
 */

#include <stddef.h>
#include <sys/types.h>

/*
 * Splits line (len bytes, without its line break) into fields. fields[i] and lens[i] get the
 * first max fields: unquoted ones point into line, quoted ones are unescaped into buf, which
 * needs room for len bytes. Returns the number of fields in the record (which may be more
 * than max), or -1 when a quoted field does not end, or text follows its closing quote.
 */
ssize_t ad_csv_split(const char *line, size_t len, char *buf, const char **fields, size_t *lens,
                     size_t max);

#endif
