#ifndef AD_JSON_EXTRACT_H
#define AD_JSON_EXTRACT_H

/*
 * Extracts a fixed set of JSON paths (jpath.h) from one JSON log event per call: the hot path of
 * the Kafka source. Two engines behind one interface: simdjson's On-Demand API (the default;
 * C++ inside json_extract_simdjson.cpp) and jansson (the reference, and the peer the ingest
 * benchmark compares against). Both give the same answers on every valid document.
 *
 * The paths are compiled once into a tree, so one pass over the document finds all of them and
 * skips everything else. An extractor is not thread-safe; use one per thread.
 */

#include <stdbool.h>
#include <stddef.h>

#include "config/jpath.h"

#ifdef __cplusplus
extern "C" {
#endif

enum ad_extract_engine { AD_EXTRACT_SIMDJSON, AD_EXTRACT_JANSSON };

enum ad_json_type {
    AD_JSON_ABSENT, /* the path is not in the document */
    AD_JSON_NULL,
    AD_JSON_BOOL,
    AD_JSON_NUMBER,
    AD_JSON_STRING,
    AD_JSON_OBJECT,
    AD_JSON_ARRAY
};

struct ad_json_value {
    enum ad_json_type type;
    bool boolean;
    double number;      /* AD_JSON_NUMBER; integers beyond 2^53 lose precision */
    const char *string; /* AD_JSON_STRING: unescaped, NOT NUL-terminated; valid until the next
                           ad_extractor_run on this extractor */
    size_t string_len;
};

enum ad_extract_result {
    AD_EXTRACT_OK,
    AD_EXTRACT_MALFORMED,  /* not valid JSON (or not valid UTF-8) */
    AD_EXTRACT_NOT_OBJECT, /* valid JSON whose top level is not an object */
    AD_EXTRACT_TOO_LARGE   /* larger than the extractor's max_bytes */
};

struct ad_extractor;

/*
 * Compiles n paths (borrowed only during the call). max_bytes bounds one document. Returns NULL
 * with errstr filled on failure (e.g. the simdjson engine is not built in).
 */
struct ad_extractor *ad_extractor_new(enum ad_extract_engine engine, const struct ad_jpath *paths,
                                      size_t n, size_t max_bytes, char *errstr, size_t errstr_size);
void ad_extractor_destroy(struct ad_extractor *x);

/*
 * Parses json (len bytes, need not be NUL-terminated or padded) and fills values[i] for
 * paths[i]. A path through a non-object (or a missing index) is AD_JSON_ABSENT. When a key
 * appears twice in one object, the first occurrence counts. On a result other than
 * AD_EXTRACT_OK the values are all AD_JSON_ABSENT.
 */
enum ad_extract_result ad_extractor_run(struct ad_extractor *x, const char *json, size_t len,
                                        struct ad_json_value *values);

const char *ad_extract_result_name(enum ad_extract_result r);

#ifdef __cplusplus
}
#endif

#endif
