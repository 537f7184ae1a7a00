#include "gpu/scorer.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/grow.h"
#include "config/config.h"
#include "gpu/lstm.h"
#include "gpu/score.h"
#include "gpu/stream_table.h"

#define AD_LOG_MODULE "scorer"
#include "base/log.h"

/* Windows normalized and run at once: enough to keep a GPU busy, few enough that the input
 * buffer stays under 64 MiB (X_FLOATS) whatever the window's shape. */
#define CHUNK_WINDOWS 32768
#define X_FLOATS      ((size_t)1 << 24)
/* Models whose golden sample the active backend has reproduced, newest last. */
#define VERIFIED_MAX 8

struct ad_scorer {
    pthread_t thread;
    atomic_size_t pending;      /* submitted, not taken back */
    _Atomic(const char *) kind; /* the backend's kind: a static string */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int pipe_r, pipe_w;

    /* Under lock. */
    struct ad_score_job *in_head, *in_tail, *out_head, *out_tail;
    bool stop, ready;
    char description[256];
    char fallback[512]; /* why the scorer left CUDA, if it did */
    char start_error[256];
    unsigned long long jobs, windows, failures;
    unsigned long long stream_steps, stream_warm_ups; /* copies of the thread's own */
    size_t stream_tables, stream_bytes;

    /* The scorer thread's own. */
    struct ad_settings_scoring settings;
    struct ad_lstm_backend *backend;
    float *x, *predictions;
    size_t x_size, predictions_size;
    /* Stream models: the states, a batch's predictions in window order, and which windows
     * step and which warm up. */
    struct ad_stream_tables *tables;
    float *stream_out;
    size_t stream_out_size;
    uint32_t *step_idx, *warm_idx, *slot_list;
    size_t step_cap, warm_cap, slot_cap;
    unsigned long long own_steps, own_warm_ups;
    uint64_t verified[VERIFIED_MAX];
    size_t n_verified;

    struct ad_metrics *metrics;
    struct ad_histogram *batch_windows, *seconds;
    struct ad_gauge *queue_depth, *backend_info;
    struct ad_counter *fallbacks;
    struct ad_counter *stream_steps_total, *stream_warm_ups_total;
};

/* ---- jobs ---- */

struct ad_score_job *ad_score_job_new(struct ad_window_batch *batch, struct ad_model *model,
                                      void *owner)
{
    struct ad_score_job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->batch = batch;
    job->model = model;
    job->owner = owner;
    return job;
}

void ad_score_job_free(struct ad_score_job *job)
{
    if (!job)
        return;
    ad_window_batch_free(job->batch);
    ad_model_unref(job->model);
    ad_model_unref(job->shadow);
    free(job->scores);
    free(job->shares);
    free(job->shadow_scores);
    free(job);
}

/* ---- backends (scorer thread) ---- */

/* Publishes the backend in use: the info metric, /status and the log. */
static void announce(struct ad_scorer *s)
{
    const char *kind = ad_lstm_backend_kind(s->backend);
    const char *description = ad_lstm_backend_description(s->backend);
    ad_gauge_set(s->backend_info, 0);
    if (s->metrics)
        s->backend_info = ad_metrics_gauge(s->metrics, "anomalyd_scoring_backend_info",
                                           "The scoring backend in use (value 1).", "backend", kind,
                                           "device", description, NULL);
    ad_gauge_set(s->backend_info, 1);
    atomic_store(&s->kind, kind);
    pthread_mutex_lock(&s->lock);
    snprintf(s->description, sizeof s->description, "%s", description);
    pthread_mutex_unlock(&s->lock);
    AD_INFO_KV("scoring backend ready", AD_KV_STR("backend", kind),
               AD_KV_STR("device", description));
}

static int open_backend(struct ad_scorer *s, char *errstr, size_t errstr_size)
{
    const struct ad_settings_scoring *set = &s->settings;
    char why[256] = "";
    if (set->backend != AD_BACKEND_CPU) {
        s->backend = ad_lstm_backend_cuda_new((int)set->device, why, sizeof why);
        if (!s->backend && set->backend == AD_BACKEND_CUDA) {
            ad_errstr_set(errstr, errstr_size,
                          "scoring.backend is cuda, but CUDA is not usable: %s", why);
            return -1;
        }
        if (!s->backend)
            AD_INFO_KV("scoring on the CPU: no usable CUDA device", AD_KV_STR("reason", why));
    }
    if (!s->backend) {
        s->backend = ad_lstm_backend_cpu_new((int)set->cpu_threads, errstr, errstr_size);
        if (!s->backend)
            return -1;
    }
    announce(s);
    return 0;
}

/* Leaves CUDA for the CPU for good. Returns 0, or -1 when the CPU backend cannot start. */
static int fall_back(struct ad_scorer *s, const char *why)
{
    char err[256];
    AD_ERROR_KV("the CUDA backend failed; scoring continues on the CPU", AD_KV_STR("error", why));
    ad_counter_inc(s->fallbacks);
    pthread_mutex_lock(&s->lock);
    snprintf(s->fallback, sizeof s->fallback, "%s", why);
    pthread_mutex_unlock(&s->lock);
    ad_stream_tables_clear(s->tables); /* their states were the old backend's */
    ad_lstm_backend_destroy(s->backend);
    s->n_verified = 0;
    s->backend = ad_lstm_backend_cpu_new((int)s->settings.cpu_threads, err, sizeof err);
    if (!s->backend) {
        AD_ERROR_KV("cannot start the CPU backend", AD_KV_STR("error", err));
        return -1;
    }
    announce(s);
    return 0;
}

static bool on_cuda(const struct ad_scorer *s)
{
    return s->backend && strcmp(ad_lstm_backend_kind(s->backend), "cuda") == 0;
}

/* The active backend must reproduce a model's golden sample before it scores with it. */
static int verify(struct ad_scorer *s, const struct ad_model *m, char *errstr, size_t errstr_size)
{
    uint64_t id = ad_model_weights(m)->id;
    for (size_t i = 0; i < s->n_verified; i++)
        if (s->verified[i] == id)
            return 0;
    while (ad_model_verify(m, s->backend, errstr, errstr_size) < 0) {
        if (!on_cuda(s) || fall_back(s, errstr) < 0)
            return -1;
    }
    if (s->n_verified == VERIFIED_MAX) {
        memmove(s->verified, s->verified + 1, (VERIFIED_MAX - 1) * sizeof *s->verified);
        s->n_verified--;
    }
    s->verified[s->n_verified++] = id;
    return 0;
}

/* ---- scoring (scorer thread) ---- */

static int grow(float **buf, size_t *size, size_t floats)
{
    if (floats <= *size)
        return 0;
    float *grown = realloc(*buf, floats * sizeof *grown);
    if (!grown)
        return -1;
    *buf = grown;
    *size = floats;
    return 0;
}

/* Runs the windows idx[0 .. n - 1] of b through the states, one step each or a warm-up each,
 * and puts each window's prediction at s->stream_out + window × F. */
static int stream_run(struct ad_scorer *s, const struct ad_window_batch *b,
                      const struct ad_model *m, struct ad_lstm_states *states, const uint32_t *idx,
                      size_t n, bool warm_up, char *errstr, size_t errstr_size)
{
    size_t F = b->n_features, steps = b->window_len - 1, I = ad_model_inputs(m);
    const struct ad_lstm_weights *w = ad_model_weights(m);
    for (size_t k = 0; k < n; k++)
        s->slot_list[k] = b->slots[idx[k]];
    int rc;
    if (warm_up) {
        ad_score_inputs_of(m, b, idx, n, s->x);
        rc = ad_lstm_warm_up_slots(s->backend, w, states, s->x, n, steps, steps * I, s->slot_list,
                                   s->predictions, errstr, errstr_size);
    } else {
        ad_score_step_inputs(m, b, idx, n, s->x);
        rc = ad_lstm_step_slots(s->backend, w, states, s->x, n, I, s->slot_list, s->predictions,
                                errstr, errstr_size);
    }
    if (rc < 0)
        return -1;
    for (size_t k = 0; k < n; k++)
        memcpy(s->stream_out + (size_t)idx[k] * F, s->predictions + k * F, F * sizeof(float));
    return 0;
}

/* Windows first .. first + n - 1 of b through stream model m's states: a step for each window
 * whose entity's state has read the bucket before the one it needs, a warm-up over the window
 * for the others (docs/scoring.md, "Stream mode"). Returns 0, or -1 with err (then none of
 * the chunk's states is trusted any more). */
static int stream_chunk(struct ad_scorer *s, const struct ad_window_batch *b,
                        const struct ad_model *m, struct ad_stream_table *table, size_t first,
                        size_t n, char *errstr, size_t errstr_size)
{
    struct ad_lstm_states *states = ad_stream_table_states(table);
    size_t n_step = 0, n_warm = 0;
    if (ad_stream_table_plan(table, b, first, n, s->step_idx, &n_step, s->warm_idx, &n_warm, errstr,
                             errstr_size) < 0)
        return -1;
    if ((n_step &&
         stream_run(s, b, m, states, s->step_idx, n_step, false, errstr, errstr_size) < 0) ||
        (n_warm &&
         stream_run(s, b, m, states, s->warm_idx, n_warm, true, errstr, errstr_size) < 0)) {
        ad_stream_table_forget(table, b, s->step_idx, n_step);
        ad_stream_table_forget(table, b, s->warm_idx, n_warm);
        return -1;
    }
    ad_stream_table_advanced(table, b, s->step_idx, n_step, false);
    ad_stream_table_advanced(table, b, s->warm_idx, n_warm, true);
    s->own_steps += n_step;
    s->own_warm_ups += n_warm;
    ad_counter_add(s->stream_steps_total, (double)n_step);
    ad_counter_add(s->stream_warm_ups_total, (double)n_warm);
    return 0;
}

/* A stream model's predictions for batch b into s->stream_out, chunk by chunk; a CUDA failure
 * moves to the CPU (dropping every state) and starts the batch again there. */
static int stream_predict(struct ad_scorer *s, const struct ad_window_batch *b,
                          const struct ad_model *m, size_t per_chunk, char *errstr,
                          size_t errstr_size)
{
    char why[256];
    if (grow(&s->stream_out, &s->stream_out_size, b->n_windows * b->n_features) < 0 ||
        ad_grow(&s->step_idx, &s->step_cap, per_chunk, sizeof *s->step_idx) < 0 ||
        ad_grow(&s->warm_idx, &s->warm_cap, per_chunk, sizeof *s->warm_idx) < 0 ||
        ad_grow(&s->slot_list, &s->slot_cap, per_chunk, sizeof *s->slot_list) < 0)
        return ad_errstr_set(errstr, errstr_size, "out of memory for the scorer's buffers");
    for (;;) {
        struct ad_stream_table *table =
            ad_stream_table_get(s->tables, s->backend, b->detector_index, ad_model_weights(m),
                                ad_model_rewarm_every(m), why, sizeof why);
        size_t first = 0;
        while (table && first < b->n_windows) {
            size_t n = b->n_windows - first < per_chunk ? b->n_windows - first : per_chunk;
            if (stream_chunk(s, b, m, table, first, n, why, sizeof why) < 0)
                break;
            first += n;
        }
        if (table && first >= b->n_windows)
            return 0;
        if (!on_cuda(s) || fall_back(s, why) < 0 || verify(s, m, why, sizeof why) < 0)
            return ad_errstr_set(errstr, errstr_size, "%s", why);
    }
}

/* Scores batch b with model m into scores (NaN where not scored) and shares; adds the windows
 * scored to *scored. Returns 0, or -1 with err filled. */
static int score_with(struct ad_scorer *s, const struct ad_window_batch *b,
                      const struct ad_model *m, const struct ad_feature_control *controls,
                      float *scores, float *shares, size_t *scored, char *errstr,
                      size_t errstr_size)
{
    size_t F = b->n_features, steps = b->window_len - 1, I = ad_model_inputs(m);
    char why[256];

    for (size_t w = 0; w < b->n_windows; w++)
        scores[w] = NAN;
    if (ad_model_window(m) != b->window_len || ad_model_features(m) != F || steps == 0) {
        ad_errstr_set(errstr, errstr_size,
                      "model %s/%s is for windows of %zu×%zu, the batch has %zu×%zu",
                      ad_model_name(m), ad_model_version(m), ad_model_window(m),
                      ad_model_features(m), b->window_len, F);
        return -1;
    }
    size_t per_chunk = X_FLOATS / (steps * I);
    if (per_chunk > CHUNK_WINDOWS)
        per_chunk = CHUNK_WINDOWS;
    if (grow(&s->x, &s->x_size, per_chunk * steps * I) < 0 ||
        grow(&s->predictions, &s->predictions_size, per_chunk * F) < 0) {
        ad_errstr_set(errstr, errstr_size, "out of memory for the scorer's buffers");
        return -1;
    }
    if (verify(s, m, errstr, errstr_size) < 0)
        return -1;
    if (ad_model_mode(m) == AD_MODEL_STREAM && b->slots && b->born) {
        if (stream_predict(s, b, m, per_chunk, errstr, errstr_size) < 0)
            return -1;
        *scored += ad_score_windows(m, b, 0, b->n_windows, s->stream_out, controls, scores, shares);
        return 0;
    }
    for (size_t first = 0; first < b->n_windows; first += per_chunk) {
        size_t n = b->n_windows - first < per_chunk ? b->n_windows - first : per_chunk;
        ad_score_inputs(m, b, first, n, s->x);
        while (ad_lstm_forward(s->backend, ad_model_weights(m), s->x, n, steps, steps * I,
                               s->predictions, why, sizeof why) < 0) {
            if (!on_cuda(s) || fall_back(s, why) < 0 || verify(s, m, why, sizeof why) < 0) {
                ad_errstr_set(errstr, errstr_size, "%s", why);
                return -1;
            }
        }
        *scored += ad_score_windows(m, b, first, n, s->predictions, controls, scores + first,
                                    shares + first * F);
    }
    return 0;
}

/* The candidate's scores beside the serving model's; its shares are not kept. */
static void score_shadow(struct ad_scorer *s, struct ad_score_job *job)
{
    const struct ad_window_batch *b = job->batch;
    size_t scored = 0;
    float *shares = calloc(b->n_windows * b->n_features + 1, sizeof *shares);
    job->shadow_scores = malloc((b->n_windows ? b->n_windows : 1) * sizeof *job->shadow_scores);
    if (!shares || !job->shadow_scores) {
        free(job->shadow_scores);
        job->shadow_scores = NULL;
        snprintf(job->shadow_error, sizeof job->shadow_error, "out of memory for the results");
    } else if (score_with(s, b, job->shadow, job->has_controls ? job->controls : NULL,
                          job->shadow_scores, shares, &scored, job->shadow_error,
                          sizeof job->shadow_error) < 0) {
        free(job->shadow_scores);
        job->shadow_scores = NULL;
    }
    free(shares);
}

static int score(struct ad_scorer *s, struct ad_score_job *job)
{
    struct ad_window_batch *b = job->batch;

    job->scores = malloc((b->n_windows ? b->n_windows : 1) * sizeof *job->scores);
    job->shares = calloc(b->n_windows * b->n_features + 1, sizeof *job->shares);
    if (!job->scores || !job->shares) {
        snprintf(job->error, sizeof job->error, "out of memory for the results");
        return -1;
    }
    for (size_t w = 0; w < b->n_windows; w++)
        job->scores[w] = NAN;
    if (!job->model)
        return 0;
    if (score_with(s, b, job->model, job->has_controls ? job->controls : NULL, job->scores,
                   job->shares, &job->scored, job->error, sizeof job->error) < 0)
        return -1;
    if (job->shadow)
        score_shadow(s, job);
    return 0;
}

/* ---- the thread ---- */

static void *run(void *arg)
{
    struct ad_scorer *s = arg;
    char err[256] = "";
    int rc = open_backend(s, err, sizeof err);
    pthread_mutex_lock(&s->lock);
    s->ready = true;
    if (rc < 0) {
        snprintf(s->start_error, sizeof s->start_error, "%s", err);
        s->stop = true;
    }
    pthread_cond_broadcast(&s->wake);
    for (;;) {
        while (!s->in_head && !s->stop)
            pthread_cond_wait(&s->wake, &s->lock);
        if (s->stop)
            break;
        struct ad_score_job *job = s->in_head;
        s->in_head = job->next;
        if (!s->in_head)
            s->in_tail = NULL;
        job->next = NULL;
        pthread_mutex_unlock(&s->lock);

        double started = ad_clock_mono_seconds();
        if (score(s, job) < 0)
            AD_ERROR_KV("a batch could not be scored", AD_KV_STR("detector", job->batch->detector),
                        AD_KV_INT("windows", job->batch->n_windows),
                        AD_KV_STR("error", job->error));
        job->seconds = ad_clock_mono_seconds() - started;
        job->backend = s->backend ? ad_lstm_backend_kind(s->backend) : "none";
        if (job->model && !job->error[0]) {
            ad_histogram_observe(s->batch_windows, (double)job->batch->n_windows);
            ad_histogram_observe(s->seconds, job->seconds);
        }

        pthread_mutex_lock(&s->lock);
        s->jobs++;
        s->windows += job->scored;
        s->failures += job->error[0] != '\0';
        s->stream_steps = s->own_steps;
        s->stream_warm_ups = s->own_warm_ups;
        s->stream_tables = ad_stream_tables_count(s->tables);
        s->stream_bytes = ad_stream_tables_bytes(s->tables);
        if (s->out_tail)
            s->out_tail->next = job;
        else
            s->out_head = job;
        s->out_tail = job;
        /* A full pipe is already readable: the loop will come. */
        if (write(s->pipe_w, "", 1) < 0 && errno != EAGAIN)
            AD_ERROR_KV("cannot wake the loop", AD_KV_STR("error", strerror(errno)));
    }
    pthread_mutex_unlock(&s->lock);
    ad_stream_tables_clear(s->tables); /* before the backend whose memory holds the states */
    ad_lstm_backend_destroy(s->backend);
    s->backend = NULL;
    return NULL;
}

static void free_list(struct ad_score_job *job)
{
    while (job) {
        struct ad_score_job *next = job->next;
        ad_score_job_free(job);
        job = next;
    }
}

static void register_metrics(struct ad_scorer *s, struct ad_metrics *m)
{
    s->batch_windows = ad_metrics_histogram(
        m, "anomalyd_scoring_batch_windows", "Windows per scored batch.",
        (const double[]){1, 16, 256, 1024, 4096, 16384, 65536, 262144, 1048576}, 9, NULL);
    s->seconds = ad_metrics_histogram(
        m, "anomalyd_scoring_duration_seconds", "Time to score one batch, its model run included.",
        ad_metrics_seconds_buckets, ad_metrics_seconds_buckets_len, NULL);
    s->queue_depth = ad_metrics_gauge(m, "anomalyd_scoring_queue_depth",
                                      "Batches submitted to the scorer and not handed back.", NULL);
    s->fallbacks = ad_metrics_counter(
        m, "anomalyd_scoring_backend_fallbacks_total",
        "Times the scorer left the CUDA backend for the CPU after a failure.", NULL);
    static const char stream_help[] =
        "Windows scored by stream models, by how: one step from the entity's state, or a "
        "warm-up over the window (a new entity, a gap, a new model or backend).";
    s->stream_steps_total = ad_metrics_counter(m, "anomalyd_scoring_stream_windows_total",
                                               stream_help, "how", "step", NULL);
    s->stream_warm_ups_total = ad_metrics_counter(m, "anomalyd_scoring_stream_windows_total",
                                                  stream_help, "how", "warm_up", NULL);
}

struct ad_scorer *ad_scorer_new(const struct ad_settings_scoring *settings,
                                struct ad_metrics *metrics, char *errstr, size_t errstr_size)
{
    struct ad_scorer *s = calloc(1, sizeof *s);
    int fds[2] = {-1, -1};
    if (!s || pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot create the scorer: %s",
                      s ? strerror(errno) : "no memory");
        free(s);
        return NULL;
    }
    s->pipe_r = fds[0];
    s->pipe_w = fds[1];
    s->settings = *settings;
    s->tables = ad_stream_tables_new();
    if (!s->tables) {
        ad_errstr_set(errstr, errstr_size, "cannot create the scorer: no memory");
        close(fds[0]);
        close(fds[1]);
        free(s);
        return NULL;
    }
    atomic_init(&s->pending, 0);
    atomic_init(&s->kind, "none");
    s->metrics = metrics;
    if (metrics)
        register_metrics(s, metrics);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    int rc = pthread_create(&s->thread, NULL, run, s);
    if (rc != 0) {
        ad_errstr_set(errstr, errstr_size, "cannot start the scorer thread: %s", strerror(rc));
        goto fail_thread;
    }
    pthread_mutex_lock(&s->lock);
    while (!s->ready)
        pthread_cond_wait(&s->wake, &s->lock);
    bool failed = s->start_error[0] != '\0';
    if (failed)
        ad_errstr_set(errstr, errstr_size, "%s", s->start_error);
    pthread_mutex_unlock(&s->lock);
    if (failed) {
        pthread_join(s->thread, NULL);
        goto fail_thread;
    }
    return s;
fail_thread:
    ad_stream_tables_destroy(s->tables);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    close(s->pipe_r);
    close(s->pipe_w);
    free(s);
    return NULL;
}

void ad_scorer_destroy(struct ad_scorer *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    free_list(s->in_head);
    free_list(s->out_head);
    free(s->x);
    free(s->predictions);
    ad_stream_tables_destroy(s->tables); /* emptied by the thread, with its backend */
    free(s->stream_out);
    free(s->step_idx);
    free(s->warm_idx);
    free(s->slot_list);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    close(s->pipe_r);
    close(s->pipe_w);
    free(s);
}

int ad_scorer_fd(const struct ad_scorer *s)
{
    return s->pipe_r;
}

void ad_scorer_submit(struct ad_scorer *s, struct ad_score_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->in_tail)
        s->in_tail->next = job;
    else
        s->in_head = job;
    s->in_tail = job;
    ad_gauge_set(s->queue_depth, (double)(atomic_fetch_add(&s->pending, 1) + 1));
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

size_t ad_scorer_pending(const struct ad_scorer *s)
{
    return atomic_load(&s->pending);
}

struct ad_score_job *ad_scorer_take(struct ad_scorer *s)
{
    char drain[64];
    while (read(s->pipe_r, drain, sizeof drain) > 0)
        ;
    pthread_mutex_lock(&s->lock);
    struct ad_score_job *job = s->out_head;
    if (job) {
        s->out_head = job->next;
        if (!s->out_head)
            s->out_tail = NULL;
        job->next = NULL;
        ad_gauge_set(s->queue_depth, (double)(atomic_fetch_sub(&s->pending, 1) - 1));
    }
    pthread_mutex_unlock(&s->lock);
    return job;
}

const char *ad_scorer_backend(const struct ad_scorer *s)
{
    return atomic_load(&s->kind);
}

void ad_scorer_status(struct ad_scorer *s, json_t *out)
{
    pthread_mutex_lock(&s->lock);
    json_object_set_new(out, "backend", json_string(atomic_load(&s->kind)));
    json_object_set_new(out, "device", json_string(s->description));
    json_object_set_new(out, "requested", json_string(ad_config_backend_name(s->settings.backend)));
    if (s->fallback[0])
        json_object_set_new(out, "fallback", json_string(s->fallback));
    json_object_set_new(out, "queued", json_integer((json_int_t)atomic_load(&s->pending)));
    json_object_set_new(out, "batches", json_integer((json_int_t)s->jobs));
    json_object_set_new(out, "windows_scored", json_integer((json_int_t)s->windows));
    json_object_set_new(out, "failed_batches", json_integer((json_int_t)s->failures));
    json_object_set_new(out, "stream",
                        json_pack("{s:I, s:I, s:I, s:I}", "steps", (json_int_t)s->stream_steps,
                                  "warm_ups", (json_int_t)s->stream_warm_ups, "tables",
                                  (json_int_t)s->stream_tables, "state_bytes",
                                  (json_int_t)s->stream_bytes));
    pthread_mutex_unlock(&s->lock);
}
