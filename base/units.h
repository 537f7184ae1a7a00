#ifndef AD_UNITS_H
#define AD_UNITS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Parses a duration written as Prometheus writes them: one or more <integer><unit> with units
 * w, d, h, m, s, ms, each at most once and in that order ("1h30m", "250ms", "0s"). Stores
 * milliseconds in *ms. Returns 0, or -1 when malformed or beyond about 290 million years.
 */
int ad_duration_parse(const char *s, int64_t *ms);

/* Writes ms as the shortest such duration ("1m30s"; "0s" for zero). */
void ad_duration_format(int64_t ms, char *buf, size_t size);

/*
 * Parses a byte size: an integer optionally followed by B, KB, MB, GB (powers of 1000) or
 * KiB, MiB, GiB (powers of 1024). Returns 0, or -1 when malformed or over INT64_MAX.
 */
int ad_size_parse(const char *s, int64_t *bytes);

#endif
