/*
 * libFuzzer target: arbitrary bytes as a JSON log event, through both extractor engines. Neither
 * may crash, leak or read out of bounds; both must reach the same result (ok, malformed, not an
 * object); where both accept, every path must have the same value (types, numbers bit for bit,
 * strings byte for byte). The event time parsers read the extracted "ts" and the raw bytes.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "stream/event_time.h"
#include "stream/json_extract.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const path_texts[] = {
    "ts",      "level",    "service",     "status",    "latency_ms",
    "a.b",     "$[0]",     "items[1].ms", "[\"a.b\"]", "k8s.labels[\"app\"]",
    "x[0][0]", "\xc3\xa9", "a",           "[\"\"]",
};
#define N_PATHS (sizeof path_texts / sizeof path_texts[0])

static struct ad_extractor *extractors[2];

static void setup(void)
{
    struct ad_jpath paths[N_PATHS];
    char errstr[256];
    const char *err;
    size_t off;
    for (size_t i = 0; i < N_PATHS; i++) {
        /* "é" is not a bare key: written as a quoted one. */
        const char *text = strcmp(path_texts[i], "\xc3\xa9") ? path_texts[i] : "[\"\xc3\xa9\"]";
        if (ad_jpath_parse(text, &paths[i], &err, &off) < 0)
            __builtin_trap();
    }
    extractors[0] =
        ad_extractor_new(AD_EXTRACT_SIMDJSON, paths, N_PATHS, 1 << 20, errstr, sizeof errstr);
    extractors[1] =
        ad_extractor_new(AD_EXTRACT_JANSSON, paths, N_PATHS, 1 << 20, errstr, sizeof errstr);
    if (!extractors[0] || !extractors[1])
        __builtin_trap();
    for (size_t i = 0; i < N_PATHS; i++)
        ad_jpath_free(&paths[i]);
}

static bool same(const struct ad_json_value *a, const struct ad_json_value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case AD_JSON_BOOL:
        return a->boolean == b->boolean;
    case AD_JSON_NUMBER:
        return memcmp(&a->number, &b->number, sizeof a->number) == 0 ||
               (a->number != a->number && b->number != b->number);
    case AD_JSON_STRING:
        return a->string_len == b->string_len &&
               (a->string_len == 0 || memcmp(a->string, b->string, a->string_len) == 0);
    default:
        return true;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ad_json_value values[2][N_PATHS];
    enum ad_extract_result r[2];
    int64_t ms;

    if (!extractors[0])
        setup();
    for (int e = 0; e < 2; e++)
        r[e] = ad_extractor_run(extractors[e], (const char *)data, size, values[e]);
    if (r[0] != r[1]) {
        fprintf(stderr, "results differ: simdjson %s, jansson %s\n", ad_extract_result_name(r[0]),
                ad_extract_result_name(r[1]));
        __builtin_trap();
    }
    for (size_t i = 0; i < N_PATHS; i++) {
        if (!same(&values[0][i], &values[1][i])) {
            fprintf(stderr, "path %s differs: types %d and %d\n", path_texts[i],
                    (int)values[0][i].type, (int)values[1][i].type);
            __builtin_trap();
        }
        if (r[0] != AD_EXTRACT_OK && values[0][i].type != AD_JSON_ABSENT)
            __builtin_trap();
    }
    const enum ad_time_format formats[] = {AD_TIME_RFC3339, AD_TIME_UNIX_S, AD_TIME_UNIX_MS,
                                           AD_TIME_UNIX_US};
    for (size_t f = 0; f < sizeof formats / sizeof formats[0]; f++) {
        enum ad_time_status s = ad_event_time(&values[0][0], formats[f], &ms);
        if (s == AD_TIME_OK && (ms < -62135596800000LL || ms > 253402300799999LL))
            __builtin_trap();
    }
    if (ad_time_parse_rfc3339((const char *)data, size, &ms) == 0 &&
        (ms < -62135596800000LL - 86400000LL || ms > 253402300799999LL + 86400000LL))
        __builtin_trap();
    return 0;
}
