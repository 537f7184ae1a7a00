#ifndef AD_UTF8_H
#define AD_UTF8_H

/*
 * UTF-8 as RFC 3629 defines it: no overlong forms, no surrogates, nothing past U+10FFFF. Text
 * from outside (label values from log lines, a file quoted in an error) goes into JSON
 * documents, log lines and Prometheus scrapes, each of which is refused whole if one byte is
 * not UTF-8.
 */

#include <stdbool.h>
#include <stddef.h>

/* The length (1 to 4) of the valid UTF-8 sequence that starts at s, reading at most left
 * bytes, or 0 when none starts there. A NUL-terminated s may pass SIZE_MAX: a NUL ends every
 * sequence before it is passed. */
size_t ad_utf8_sequence(const char *s, size_t left);

/* Whether the len bytes at s are all valid UTF-8. */
bool ad_utf8_valid(const char *s, size_t len);

#endif
