#ifndef AD_SCORER_H
#define AD_SCORER_H

/*
 * The scorer thread (DESIGN.md, "Threads"): it owns the LSTM backend (the CUDA context, stream,
 * cuBLAS handle and device buffers, or the CPU's workspaces), takes jobs from a queue, scores
 * them and hands them back through a pipe the loop watches. Submitting never blocks; the loop
 * bounds the queue itself with ad_scorer_pending(), holding closed buckets back while it is
 * full.
 *
 * Backend choice (scoring.backend): auto uses CUDA when a device is usable and reproduces each
 * model's golden sample, else the CPU; cuda refuses to start without a usable device; cpu
 * never touches the GPU. A CUDA failure later (a forward pass that fails, a golden sample that
 * does not reproduce) moves the scorer to the CPU for good, with a log line, a metric and a
 * note in /status, and the job is scored again there: a device failure costs time, not
 * windows.
 */

#include <stddef.h>

#include <jansson.h>

#include "base/metrics.h"
#include "config/settings.h"
#include "gpu/model.h"
#include "windows/batch.h"

struct ad_scorer;

#define AD_SCORE_MAX_FEATURES 64 /* AD_WINDOW_MAX_FEATURES */

/* A batch to score and, once handed back, its results. */
struct ad_score_job {
    struct ad_window_batch *batch; /* owned */
    struct ad_model *model;        /* a reference; NULL: nothing to score with */
    void *owner;                   /* the submitter's, untouched */
    /* Per feature, which deviations count (docs/scoring.md); set by the submitter when
     * has_controls, copied so that a reload cannot free them under the scorer. */
    bool has_controls;
    struct ad_feature_control controls[AD_SCORE_MAX_FEATURES];
    /* Filled by the scorer. */
    float *scores;       /* n_windows; NaN where a window was not scored */
    float *shares;       /* n_windows × F: each feature's share of the squared error */
    size_t scored;       /* windows with a score */
    const char *backend; /* "cuda" or "cpu" */
    double seconds;      /* spent scoring */
    char error[256];     /* set when the job could not be scored at all */
    /* Shadow scoring (docs/model-store.md): a candidate model the batch is also scored with,
     * set by the submitter (a reference the job owns; NULL: none). Its scores come back in
     * shadow_scores (NaN where not scored), or shadow_error says why not; a shadow failure
     * never fails the job. */
    struct ad_model *shadow;
    float *shadow_scores;
    char shadow_error[256];
    struct ad_score_job *next;
};

/* Takes batch and the model reference. NULL when out of memory (nothing is taken then). */
struct ad_score_job *ad_score_job_new(struct ad_window_batch *batch, struct ad_model *model,
                                      void *owner);
void ad_score_job_free(struct ad_score_job *job); /* frees the batch, drops the models */

/*
 * Starts the thread and its backend, waiting until the backend is ready. metrics may be NULL.
 * Returns NULL with err when the thread cannot start or scoring.backend is cuda and no device
 * is usable.
 */
struct ad_scorer *ad_scorer_new(const struct ad_settings_scoring *settings,
                                struct ad_metrics *metrics, char *errstr, size_t errstr_size);
/* Stops the thread after its current job and frees every job not handed back. */
void ad_scorer_destroy(struct ad_scorer *s);

/* Readable when jobs are done; ad_scorer_take drains it. Non-blocking. */
int ad_scorer_fd(const struct ad_scorer *s);

/* Queues a job; takes ownership. Never blocks. */
void ad_scorer_submit(struct ad_scorer *s, struct ad_score_job *job);
/* Jobs submitted and not yet taken back. */
size_t ad_scorer_pending(const struct ad_scorer *s);
/* A finished job (in submission order), or NULL when none is ready. */
struct ad_score_job *ad_scorer_take(struct ad_scorer *s);

/* "cuda" or "cpu", as in use now. */
const char *ad_scorer_backend(const struct ad_scorer *s);

/* Backend, device, any fallback and why, queue and totals. */
void ad_scorer_status(struct ad_scorer *s, json_t *out);

#endif
