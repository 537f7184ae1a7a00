#ifndef AD_YAML_TREE_H
#define AD_YAML_TREE_H

/*
 * Reads one YAML document with libyaml into a jansson tree, and records where every node came
 * from so that later validation can name file:line:column.
 *
 * Positions are keyed by the node's path, written the way error messages show it:
 *     daemon.admin.listen    sources[0].kafka.topics[1]    labels["app.kubernetes.io/name"]
 * (jansson shares one object for every true, false and null, so a node's address cannot
 * identify it). Plain scalars resolve as YAML 1.2's core schema says: null, true/false,
 * integers (decimal, 0o octal, 0x hex; one too large for 64 bits becomes the nearest double,
 * and the decoder refuses it where it wants an integer), finite floats, else strings; quoted and
 * block scalars
 * are always strings. Anchors and aliases work; merge keys ("<<") and duplicate keys are
 * errors. Nesting deeper than AD_YAML_MAX_DEPTH or more than AD_YAML_MAX_NODES nodes (alias
 * expansion included) is refused, so a hostile file cannot exhaust memory.
 */

#include <stddef.h>

#include <jansson.h>

#include "config/diag.h"

#define AD_YAML_MAX_DEPTH 64
#define AD_YAML_MAX_NODES 10000
#define AD_YAML_PATH_MAX  1024

enum ad_yaml_style { AD_YAML_PLAIN, AD_YAML_QUOTED, AD_YAML_BLOCK, AD_YAML_COLLECTION };

struct ad_yaml_pos {
    int key_line, key_column; /* of the mapping key (or sequence item) that holds the node */
    int line, column;         /* of the node itself */
    enum ad_yaml_style style;
    const char *raw; /* a scalar's text as written (borrowed from the index), else NULL */
};

/*
 * Parses buf (len bytes; need not be NUL-terminated). Returns a new reference to the root, or
 * NULL after adding every error found to diag, each named after file. Positions go into
 * index, a jansson object the caller owns.
 */
json_t *ad_yaml_read(const char *file, const char *buf, size_t len, json_t *index,
                     struct ad_diag *diag);

/* Looks up the position recorded for path. Returns 0, or -1 if the path has none. */
int ad_yaml_position(json_t *index, const char *path, struct ad_yaml_pos *out);

/* Writes the path of a mapping member or sequence item of parent into out. Returns 0, or -1
 * when it does not fit in size bytes. */
int ad_yaml_path_key(char *out, size_t size, const char *parent, const char *key);
int ad_yaml_path_index(char *out, size_t size, const char *parent, size_t index);

#endif
