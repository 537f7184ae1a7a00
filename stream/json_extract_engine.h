#ifndef AD_JSON_EXTRACT_ENGINE_H
#define AD_JSON_EXTRACT_ENGINE_H

/*
 * Private to json_extract.c and json_extract_simdjson.cpp: the compiled path tree both engines
 * walk, and the simdjson engine's C entry points.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream/json_extract.h"

#ifdef __cplusplus
extern "C" {
#endif

/* jansson refuses deeper documents (JSON_PARSER_MAX_DEPTH); the simdjson engine matches it. */
#define AD_EXTRACT_MAX_DEPTH 2048

/*
 * One step of one or more paths. The root is the document; a child is reached from its parent
 * by a key (in an object) or an index (in an array). Paths that end at a node fill the values[]
 * entries listed in slots.
 */
struct ad_extract_node {
    enum ad_jpath_segment_type type;
    char *key; /* AD_JPATH_KEY: owned, unescaped */
    size_t key_len;
    size_t index; /* AD_JPATH_INDEX */
    size_t *slots;
    size_t n_slots;
    struct ad_extract_node *children;
    size_t n_children;
    bool has_keys;    /* some child is reached by a key */
    bool has_indexes; /* some child is reached by an index */
    uint64_t seen;    /* the run that matched this node last: later duplicates are skipped */
};

struct ad_extract_simdjson;

/* Returns NULL with errstr filled on failure. */
struct ad_extract_simdjson *ad_extract_simdjson_new(size_t max_bytes, char *errstr,
                                                    size_t errstr_size);
void ad_extract_simdjson_destroy(struct ad_extract_simdjson *s);

/*
 * Fills values (all AD_JSON_ABSENT on entry) along the tree at root; run is a number no earlier
 * run used. len is at most the max_bytes given to _new. On a result other than AD_EXTRACT_OK
 * the caller resets the values.
 */
enum ad_extract_result ad_extract_simdjson_run(struct ad_extract_simdjson *s,
                                               struct ad_extract_node *root, uint64_t run,
                                               const char *json, size_t len,
                                               struct ad_json_value *values);

#ifdef __cplusplus
}
#endif

#endif
