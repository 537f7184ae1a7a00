#ifndef AD_JPATH_H
#define AD_JPATH_H

/*
 * Paths into a JSON log event, as extraction rules write them:
 *     level    http.status    $.items[0].ms    kubernetes.labels["app.kubernetes.io/name"]
 * An optional leading "$" or "$."; keys joined by "."; ["key"] or ['key'] for keys with other
 * characters; [N] for array elements. Bare keys are letters, digits, '_', '-' and '@'.
 */

#include <stddef.h>

#include <jansson.h>

#define AD_JPATH_MAX_SEGMENTS 32

enum ad_jpath_segment_type { AD_JPATH_KEY, AD_JPATH_INDEX };

struct ad_jpath_segment {
    enum ad_jpath_segment_type type;
    char *key; /* AD_JPATH_KEY: owned, NUL-terminated */
    size_t index;
};

struct ad_jpath {
    struct ad_jpath_segment *segments;
    size_t len;
};

/*
 * Parses text into *out (owned by the caller: free with ad_jpath_free). On error returns -1,
 * sets *error to a static description and *error_offset to the byte offset of the problem.
 */
int ad_jpath_parse(const char *text, struct ad_jpath *out, const char **error,
                   size_t *error_offset);
void ad_jpath_free(struct ad_jpath *path);

/* The value at path in root (borrowed), or NULL when absent. */
json_t *ad_jpath_get(const struct ad_jpath *path, json_t *root);

#endif
