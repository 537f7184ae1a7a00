#ifndef AD_CONFIG_H
#define AD_CONFIG_H

/*
 * One loaded and validated config file.
 *
 * Loading reads YAML into a jansson tree, decodes it through the schema tables into typed
 * settings (settings.h), resolves secrets and checks everything that ties keys together. A
 * config either loads completely or not at all: every problem found goes into the diag list
 * with its file:line:column, and NULL is returned.
 *
 * Relative paths in the file (model store, TLS files, secret files) resolve against the
 * folder of the file, so give an absolute path to keep that independent of the working
 * directory.
 *
 * A struct ad_config is immutable and reference-counted, so the loop can swap in a new one on
 * reload while another thread still reads the old one.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/diag.h"
#include "config/settings.h"

/* Larger files are refused before parsing. */
#define AD_CONFIG_MAX_BYTES (4 * 1024 * 1024)

struct ad_config;

/* Returns a new config with one reference, or NULL with errors added to diag. */
struct ad_config *ad_config_load_file(const char *path, struct ad_diag *diag);
/* Same from memory; name is used in messages. buf need not be NUL-terminated. */
struct ad_config *ad_config_load_buffer(const char *name, const char *buf, size_t len,
                                        struct ad_diag *diag);
/* As anomalyd replay reads a config: a detector's feature `src.name` whose source the file
 * does not define is a column of the replay's CSV input (a source of type AD_SOURCE_FILE, a
 * gauge: the latest row of a bucket, filled by carrying), so that a backtest needs no made-up
 * Kafka or Prometheus section. Everything else is checked as for the daemon. */
struct ad_config *ad_config_load_replay(const char *path, struct ad_diag *diag);

/* Adds a reference; returns cfg. Thread-safe. */
struct ad_config *ad_config_ref(struct ad_config *cfg);
/* Drops a reference; the last one frees. Accepts NULL. Thread-safe. */
void ad_config_unref(struct ad_config *cfg);

const struct ad_settings *ad_config_settings(const struct ad_config *cfg);
/* The file it came from (or the name given to ad_config_load_buffer). */
const char *ad_config_path(const struct ad_config *cfg);
/* sha256 of the exact bytes validated, 64 hex digits. */
const char *ad_config_sha256(const struct ad_config *cfg);
/* When it was loaded, in Unix seconds. */
double ad_config_loaded_at(const struct ad_config *cfg);

/*
 * Calls fn with the key (e.g. "daemon.admin.listen") of every setting that differs between old
 * and next but takes effect only after a restart. Returns how many.
 */
size_t ad_config_restart_changes(const struct ad_config *old, const struct ad_config *next,
                                 void (*fn)(const char *key, void *arg), void *arg);

/* Calls fn with the path of every key whose value differs between old and next
 * ("detectors[0].alert.for", "sinks.redis.url"; secrets by path only). */
void ad_config_changes(const struct ad_config *old, const struct ad_config *next,
                       void (*fn)(const char *key, void *arg), void *arg);

/* Whether the sections named in sections (NULL-terminated: top-level like "sources", or
 * nested like "sinks.kafka") hold the same settings in a and b. */
bool ad_config_sections_equal(const struct ad_config *a, const struct ad_config *b,
                              const char *const *sections);

/* Writes the markdown reference of every key (the generated part of docs/config.md). */
void ad_config_write_reference(FILE *out);

/*
 * Splits "host:port", "[v6]:port" or ":port" (empty host: every interface) into host and port.
 * Returns 0, or -1 when malformed, the host does not fit, or the port is not 0..65535.
 */
int ad_config_split_address(const char *text, char *host, size_t host_size, int *port);

/* Names for enum values, as the config spells them. */
const char *ad_config_backend_name(enum ad_scoring_backend backend);
const char *ad_config_fill_name(enum ad_fill_policy fill);

#endif
