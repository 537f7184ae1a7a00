#ifndef AD_SCHEMA_H
#define AD_SCHEMA_H

/*
 * Declarative config tables and the generic decoder that reads a jansson tree (from
 * yaml_tree.h) into typed structs through them. Each section lists its keys with type, offset,
 * default, bounds, reload behaviour and a one-line description; the same tables drive
 * decoding, error messages, the reload diff and the reference in docs/config.md.
 *
 * Errors go to a diag list with the file:line:column of the offending node; decoding goes on
 * after an error so that one run reports every problem.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "config/diag.h"

enum ad_schema_kind {
    AD_SCHEMA_STRING,      /* char * (any scalar, as written) */
    AD_SCHEMA_BOOL,        /* bool */
    AD_SCHEMA_INT,         /* int64_t */
    AD_SCHEMA_FLOAT,       /* double; NAN when absent without default */
    AD_SCHEMA_DURATION,    /* int64_t milliseconds, written "30s", "1h30m" */
    AD_SCHEMA_SIZE,        /* int64_t bytes, written 1048576 or "1MiB" */
    AD_SCHEMA_ENUM,        /* an int-sized enum: the index into values */
    AD_SCHEMA_STRING_LIST, /* struct ad_strlist */
    AD_SCHEMA_STRING_MAP,  /* struct ad_strmap */
    AD_SCHEMA_SECRET,      /* struct ad_secret: "text", {file: PATH} or {env: NAME} */
    AD_SCHEMA_SECRET_MAP,  /* struct ad_secretmap */
    AD_SCHEMA_SECTION,     /* a nested mapping decoded into obj + offset */
    AD_SCHEMA_SECTION_LIST /* a list of mappings: pointer at offset, count at count_offset */
};

#define AD_SCHEMA_REQUIRED   0x1u  /* the key must be given */
#define AD_SCHEMA_RESTART    0x2u  /* a change takes effect only after a restart */
#define AD_SCHEMA_COMMA_LIST 0x4u  /* a string list may also be one "a,b,c" string */
#define AD_SCHEMA_NONEMPTY   0x8u  /* a string, list or map must not be empty */
#define AD_SCHEMA_PATH       0x10u /* a file or folder: relative to the config file's folder */

struct ad_schema_section;

struct ad_schema_field {
    /* NULL for an inline SECTION: its keys sit in this same mapping. */
    const char *name;
    enum ad_schema_kind kind;
    size_t offset;
    unsigned flags;
    /* The default as it would be written in YAML; NULL means none (zero, NULL or NAN). */
    const char *def;
    /* Bounds for INT, FLOAT, DURATION (ms) and SIZE, checked when min < max. */
    double min, max;
    const char *const *values; /* ENUM: the accepted names, NULL-terminated */
    const struct ad_schema_section *section;
    size_t count_offset; /* SECTION_LIST */
    const char *doc;
};

struct ad_schema_ctx {
    const char *file;
    const char *base_dir; /* relative paths resolve against it ("" or NULL: as they are) */
    json_t *index;        /* positions, from ad_yaml_read */
    struct ad_diag *diag;
    void *root;    /* the top-level object being decoded, for checks that look across sections */
    size_t errors; /* errors added so far (the diag list may stop storing them) */
    size_t check_errors; /* of those, the ones check hooks added */
    /* Loaded for anomalyd replay: a detector's feature may name a source the file does not
     * define (its CSV input holds the feature). */
    bool replay;
};

struct ad_schema_section {
    const char *name;
    size_t size; /* element size in a SECTION_LIST */
    const struct ad_schema_field *fields;
    size_t n_fields;
    /* Runs after the section's fields decoded; checks how they fit together and fills derived
     * members. path is the section's path. May be NULL. */
    void (*check)(struct ad_schema_ctx *ctx, const char *path, void *obj);
    /* Frees what check derived. May be NULL. */
    void (*free_derived)(void *obj);
    const char *doc;
};

/* Decodes node (a mapping, or NULL/json null for an absent section: defaults only) into obj,
 * which must be zeroed. Returns the number of errors added. */
size_t ad_schema_decode(struct ad_schema_ctx *ctx, const struct ad_schema_section *section,
                        json_t *node, const char *path, void *obj);

/* Frees everything decode and check allocated inside obj (not obj itself). */
void ad_schema_free(const struct ad_schema_section *section, void *obj);

/* Calls fn with the path of every RESTART key whose value differs between a and b. */
void ad_schema_restart_changes(const struct ad_schema_section *section, const void *a,
                               const void *b, const char *path,
                               void (*fn)(const char *path, void *arg), void *arg);

/* Calls fn with the path of every key whose value differs between a and b (a list whose
 * length differs is one path: the list's). */
void ad_schema_changes(const struct ad_schema_section *section, const void *a, const void *b,
                       const char *path, void (*fn)(const char *path, void *arg), void *arg);

/* Whether field name of section holds the same value in a and b; false for unknown names. A
 * dotted name ("sinks.kafka") names a key inside a section. */
bool ad_schema_field_equal(const struct ad_schema_section *section, const char *name, const void *a,
                           const void *b);

/* Writes the markdown reference of section and everything below it. */
void ad_schema_write_reference(FILE *out, const struct ad_schema_section *section,
                               const char *path);

/* Error reporting for check hooks. The position is path's value (or key); a path that was not
 * written in the file falls back to its nearest written parent. error_offset points into a
 * one-line scalar's text, offset bytes from its start. */
void ad_schema_error(struct ad_schema_ctx *ctx, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ad_schema_error_key(struct ad_schema_ctx *ctx, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ad_schema_error_offset(struct ad_schema_ctx *ctx, const char *path, size_t offset,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Whether path was written in the file (a key given, even with an empty value). */
int ad_schema_present(struct ad_schema_ctx *ctx, const char *path);

/* The candidate closest to word by edit distance when close enough to be a likely typo, else
 * NULL. candidates is NULL-terminated. */
const char *ad_schema_suggest(const char *word, const char *const *candidates);

#endif
