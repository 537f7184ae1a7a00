#ifndef AD_MODEL_WATCH_H
#define AD_MODEL_WATCH_H

/*
 * The model store watcher (docs/model-store.md): notices when `<store>/<model>/CURRENT` names a
 * new version, loads and validates that version off the loop, and hands it on.
 *
 * A folder store is watched with inotify (the model folders, and the store for model folders
 * that appear), with a poll every poll_interval as the safety net for volumes where inotify
 * says nothing (NFS, some Kubernetes mounts). An HTTP store is polled every poll_interval with
 * If-None-Match. A trainer's announcement on Redis, or ad_model_watch_check (SIGHUP), asks for
 * a check at once.
 *
 * A version is loaded (read or fetched, sha256, shapes, finite weights, the golden sample on
 * the CPU: ad_model_load / ad_model_parse) on the watcher's own thread, one load at a time;
 * triggers that arrive meanwhile are coalesced into one check after it. The result comes back
 * to the loop through a pipe, so the loop never waits for a load.
 *
 * What is reported:
 *   - A version CURRENT names that is neither served (ad_model_watch_set_serving) nor the last
 *     one handled is loaded and reported once, to on_model or on_refused.
 *   - A version reported to on_model is not reported again while CURRENT keeps naming it.
 *   - A refused version is not retried on every poll, only when CURRENT is written again (a
 *     new file or a new ETag, even naming the same version) or on an explicit check
 *     (ad_model_watch_check, an announcement).
 *   - Store errors (unreadable CURRENT, connection refused, HTTP errors, a version whose files
 *     are not all there yet) are not refusals: they are counted by reason, logged once per
 *     change of state, and retried at the next poll. A missing store, model folder or CURRENT
 *     (404 over HTTP) means no model yet: logged once, not an error.
 *
 * Every function runs on the loop thread; the callbacks run there too, never inside a call of
 * this API, and must not destroy the watcher.
 */

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <jansson.h>

#include "base/metrics.h"
#include "config/settings.h"
#include "gpu/model.h"

struct ad_model_watch;

struct ad_model_watch_handler {
    /* A new version of model was found, loaded and validated: ownership of the reference
     * passes to the callee. */
    void (*on_model)(void *arg, const char *model, struct ad_model *m);
    /* A new version was found but refused (error says why, naming the file and the tensor or
     * key at fault). */
    void (*on_refused)(void *arg, const char *model, const char *version, const char *error);
    void *arg;
};

struct ad_model_watch_options {
    struct event_base *base;
    /* path or url, poll_interval, http; borrowed for the call (what is needed is copied). */
    const struct ad_settings_model_store *store;
    const char *const *models; /* the model names to watch (copied) */
    size_t n_models;
    /* NULL, or n_models entries: what the detector serving each model requires (features,
     * window, step; copied). A version that does not fit is refused. */
    const struct ad_model_expect *expect;
    struct ad_model_watch_handler handler;
    struct ad_metrics *metrics; /* borrowed; may be NULL */
    /* Poll only, without inotify: for tests, and for volumes where inotify is known to be
     * wrong rather than silent. */
    bool no_inotify;
};

/*
 * Starts watching; the first check runs on the loop at once. Returns NULL with err filled when
 * the store has neither path nor url, a model name is not a name, the HTTP settings are
 * malformed or a resource (thread, pipe, memory) is missing. A store that does not exist yet
 * is not an error.
 */
struct ad_model_watch *ad_model_watch_new_with(const struct ad_model_watch_options *opts,
                                               char *errstr, size_t errstr_size);

/* The same with inotify on and no detector expectations. */
struct ad_model_watch *ad_model_watch_new(struct event_base *base,
                                          const struct ad_settings_model_store *store,
                                          const char *const *models, size_t n_models,
                                          const struct ad_model_watch_handler *h,
                                          struct ad_metrics *metrics, char *errstr,
                                          size_t errstr_size);

/* Stops watching. Waits for a load in progress to end (one version's validation); models
 * loaded and not yet reported are dropped. Accepts NULL. */
void ad_model_watch_destroy(struct ad_model_watch *w);

/* Checks every model now (SIGHUP): an explicit check, which also retries a refused version
 * that CURRENT still names. */
void ad_model_watch_check(struct ad_model_watch *w);

/*
 * A trainer's announcement from the Redis channel (payload borrowed): a JSON object
 * {"model": "<name>", "version": "<version>"} ("version" optional, other keys ignored). For a
 * watched model: an explicit check of that model (CURRENT still decides what is served). For
 * another model: counted and ignored. Malformed: counted and logged, then every model is
 * checked as a poll would.
 */
void ad_model_watch_announce(struct ad_model_watch *w, const char *payload, size_t len);

/* What is served now for model (version NULL: nothing), so that version is not reported
 * again. Strings are copied; an unknown model is ignored. */
void ad_model_watch_set_serving(struct ad_model_watch *w, const char *model, const char *version);

/* The store and, per model, what CURRENT names, what is served, the last refusal and the
 * store's state, added to out. */
void ad_model_watch_status(const struct ad_model_watch *w, json_t *out);

#endif
