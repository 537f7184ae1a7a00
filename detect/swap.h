#ifndef AD_SWAP_H
#define AD_SWAP_H

/*
 * The hot swap of one detector's model versions (docs/model-store.md). The store's watcher
 * offers each new version it finds; the swap validates it against the detector (features,
 * window, step) and either serves it from the next batch on, or, with `shadow.windows`, first
 * has it score in shadow beside the serving version, then promotes it or refuses it by how
 * often the two disagree. A refused version is logged and counted, and the serving one stays.
 * Batches already submitted finish with the version they were submitted with, so no window is
 * lost or scored twice. Loop thread only.
 */

#include <stddef.h>

#include <jansson.h>

#include "base/metrics.h"
#include "config/settings.h"
#include "gpu/model.h"

struct ad_swap;

/* For detector d (borrowed: it must outlive the swap). NULL when out of memory. */
struct ad_swap *ad_swap_new(const struct ad_settings_detector *d, struct ad_metrics *metrics);
void ad_swap_destroy(struct ad_swap *sw); /* accepts NULL */

/* Loads the version that CURRENT names in a folder store at once, so that the first buckets
 * are scored. store_path NULL (an HTTP store, or none): the watcher offers what it finds. */
void ad_swap_load_first(struct ad_swap *sw, const char *store_path);

/* Offers a new version (a reference, which this takes): refused when it does not fit the
 * detector, ignored when it is the serving version or the candidate already, else served at
 * once or put in shadow. */
void ad_swap_offer(struct ad_swap *sw, struct ad_model *m);
/* A version was found and refused (error says why): kept for /status, logged and counted. */
void ad_swap_refuse(struct ad_swap *sw, const char *error);

/* The serving version and the candidate in shadow (borrowed; NULL when none). */
struct ad_model *ad_swap_serving(const struct ad_swap *sw);
struct ad_model *ad_swap_candidate(const struct ad_swap *sw);

/* The raw-score threshold a version is judged by: the detector's, or the version's
 * calibrated one. */
double ad_swap_score_threshold(const struct ad_swap *sw, const struct ad_model *m);

/*
 * The candidate's scores of n windows beside the serving version's (NaN where a window was not
 * scored), for a job submitted with candidate in shadow; error non-NULL when the candidate
 * could not score it, which refuses it. Concludes the run (promotes or refuses) once enough
 * windows were compared. A job whose candidate is no longer the current one is ignored.
 */
void ad_swap_compare(struct ad_swap *sw, const struct ad_model *candidate, const float *serving,
                     const float *shadow, size_t n, const char *error);

/*
 * Whether the version each detector of s would serve (what CURRENT names in a folder store)
 * fits the detector's features, window and step, read from its manifest alone. A config that
 * changes a detector's window under its model would otherwise load and leave the detector
 * without a model: SIGHUP and --check-config refuse it instead (docs/model-store.md). A store
 * that is a URL, a detector without a published version, or a manifest that does not parse
 * (the watcher reports those) pass. Returns 0, or -1 with errstr naming the detector.
 */
int ad_swap_check_store(const struct ad_settings *s, char *errstr, size_t errstr_size);

/* The serving version, why there is none or the last refusal, and the shadow runs. */
void ad_swap_status(const struct ad_swap *sw, json_t *model);

#endif
