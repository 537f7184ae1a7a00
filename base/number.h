#ifndef AD_NUMBER_H
#define AD_NUMBER_H

/*
 * Numbers written as text by someone else (a config file, a Prometheus sample, a log field
 * that holds "12.5"). strtod alone takes more than a decimal number (hex, "inf", "nan(...)",
 * leading blanks, a locale's digits), so the syntax is checked first, in one place.
 */

#include <stdbool.h>
#include <stddef.h>

/* Whether the len bytes at s are exactly a decimal number: an optional sign, digits with an
 * optional fraction (".5" and "5." included, at least one digit), an optional exponent. */
bool ad_number_syntax(const char *s, size_t len);

/* ad_number_syntax, then its value: ±HUGE_VAL (infinite) when it is beyond a double's range,
 * which the caller may refuse. Returns false, *out untouched, when the syntax is not a
 * number's. */
bool ad_number_parse(const char *s, size_t len, double *out);

#endif
