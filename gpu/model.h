#ifndef AD_MODEL_H
#define AD_MODEL_H

/*
 * A model version loaded from the store (docs/models.md): manifest.json and model.safetensors,
 * checked completely (sha256, every tensor's offsets, dtype and shape, finite weights, the
 * manifest's every key, the detector's features, window and step) and trusted only once the
 * CPU backend reproduces the manifest's golden output. Every failure names the file and, where
 * one is at fault, the tensor or key.
 *
 * Immutable and reference-counted: the scorer thread keeps a reference while it scores with
 * one, so a new version can be swapped in while the old one finishes.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config/settings.h"
#include "gpu/lstm.h"

struct ad_model;

/* What the detector that will serve the model requires; NULL skips those checks. */
struct ad_model_expect {
    const struct ad_strlist *features;
    size_t window;
    int64_t step_ms;
};

struct ad_model_calibration {
    const float *error_std; /* F */
    double score_mean, score_std, threshold;
};

/* Loads the version in folder dir. Returns a model with one reference, or NULL with err. */
struct ad_model *ad_model_load(const char *dir, const struct ad_model_expect *expect, char *errstr,
                               size_t errstr_size);

/*
 * The same from the two files' bytes (borrowed), as an HTTP store fetches them; dir names the
 * version in errors and /status.
 */
struct ad_model *ad_model_parse(const char *dir, const uint8_t *manifest, size_t manifest_len,
                                const uint8_t *weights, size_t weights_len,
                                const struct ad_model_expect *expect, char *errstr,
                                size_t errstr_size);

/* Loads the version named by <store>/<name>/CURRENT. */
struct ad_model *ad_model_load_current(const char *store, const char *name,
                                       const struct ad_model_expect *expect, char *errstr,
                                       size_t errstr_size);

/* 0 when m is for windows like expect's (features, window, step); else -1 and why. */
int ad_model_fits(const struct ad_model *m, const struct ad_model_expect *expect, char *errstr,
                  size_t errstr_size);

struct ad_model *ad_model_ref(struct ad_model *m);
void ad_model_unref(struct ad_model *m); /* accepts NULL; thread-safe */

const char *ad_model_name(const struct ad_model *m);
const char *ad_model_version(const struct ad_model *m);
const char *ad_model_dir(const struct ad_model *m);
size_t ad_model_features(const struct ad_model *m);
size_t ad_model_window(const struct ad_model *m);

/* Periods whose phase at each step's bucket start is a network input, as sin and cos
 * (docs/models.md, "Time inputs"): the manifest's architecture.time_inputs. */
enum ad_time_input { AD_TIME_DAY, AD_TIME_WEEK };
#define AD_MODEL_MAX_TIME_INPUTS 2
size_t ad_model_time_inputs(const struct ad_model *m, enum ad_time_input *out);
/* Network inputs per step: the features, then 2 per time input. */
size_t ad_model_inputs(const struct ad_model *m);
/* How the model scores (docs/models.md, "Modes"): each window from a zero state, or one step
 * per bucket from the state an entity carries (architecture.mode; absent: windowed). */
enum ad_model_mode { AD_MODEL_WINDOWED, AD_MODEL_STREAM };
enum ad_model_mode ad_model_mode(const struct ad_model *m);
/* A stream model's state starts again from a warm-up once every this many buckets, at a phase
 * of its own per entity: the longest run of steps the trainer trained on, and what makes a
 * score depend on the data alone, never on when the daemon started (architecture.rewarm_every;
 * 0 for windowed models). */
size_t ad_model_rewarm_every(const struct ad_model *m);
const struct ad_lstm_weights *ad_model_weights(const struct ad_model *m);
const float *ad_model_mean(const struct ad_model *m); /* F */
const float *ad_model_std(const struct ad_model *m);  /* F */
const struct ad_model_calibration *ad_model_calibration(const struct ad_model *m);

/*
 * Runs the golden sample on backend: 0 when it reproduces the manifest's output within its
 * tolerance, else -1 with err. The loader checks the CPU backend; the scorer checks its own
 * backend before it scores with a model.
 */
int ad_model_verify(const struct ad_model *m, struct ad_lstm_backend *backend, char *errstr,
                    size_t errstr_size);

/* Name, version, architecture, calibration and the manifest's training notes, for /status. */
void ad_model_describe(const struct ad_model *m, json_t *out);

#endif
