#include "detect/likelihood.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "detect/entity_table.h"

struct entry {
    uint64_t model_id;
    int64_t last_bucket;
    uint32_t n;
    double short_mean, long_mean, long_var;
};

struct ad_likelihood {
    struct ad_entity_table *table;
    int64_t idle_buckets;
    uint64_t untracked;
};

struct ad_likelihood *ad_likelihood_new(size_t max_entities, int64_t idle_buckets)
{
    struct ad_likelihood *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->table = ad_entity_table_new(sizeof(struct entry), max_entities);
    if (!l->table) {
        free(l);
        return NULL;
    }
    l->idle_buckets = idle_buckets;
    return l;
}

void ad_likelihood_destroy(struct ad_likelihood *l)
{
    if (!l)
        return;
    ad_entity_table_destroy(l->table);
    free(l);
}

static void start(struct entry *e, const struct ad_model *model)
{
    const struct ad_model_calibration *c = ad_model_calibration(model);
    e->model_id = ad_model_weights(model)->id;
    e->n = 0;
    e->short_mean = 0;
    e->long_mean = c->score_mean;
    e->long_var = c->score_std * c->score_std;
}

static double normal_cdf(double z)
{
    return 0.5 * erfc(-z / sqrt(2.0));
}

double ad_likelihood_update(struct ad_likelihood *l, const char *key, size_t len, int64_t bucket,
                            double score, const struct ad_model *model)
{
    const struct ad_model_calibration *c = ad_model_calibration(model);
    uint32_t id = ad_entity_table_find(l->table, key, len);
    bool added = !id;
    if (added)
        id = ad_entity_table_add(l->table, key, len);
    struct entry scratch;
    struct entry *e = id ? ad_entity_table_record(l->table, id) : &scratch;
    if (!id)
        l->untracked++;
    if (added || e->model_id != ad_model_weights(model)->id)
        start(e, model);
    e->last_bucket = bucket;
    e->n++;
    e->short_mean +=
        (score - e->short_mean) / (e->n < AD_LIKELIHOOD_SHORT ? e->n : AD_LIKELIHOOD_SHORT);

    /* A floor on the spread: an entity whose scores never moved would otherwise call the
     * smallest change certain. */
    double std = sqrt(e->long_var);
    double floor = fmax(0.05 * c->score_std, 1e-6);
    double z = (e->short_mean - e->long_mean) / (std > floor ? std : floor);
    double likelihood = normal_cdf(z);

    double weight = 1.0 / (double)(e->n + AD_LIKELIHOOD_PRIOR);
    if (weight < 1.0 / AD_LIKELIHOOD_LONG)
        weight = 1.0 / AD_LIKELIHOOD_LONG;
    double delta = e->short_mean - e->long_mean;
    e->long_mean += weight * delta;
    e->long_var = (1.0 - weight) * (e->long_var + weight * delta * delta);
    return likelihood;
}

void ad_likelihood_expire(struct ad_likelihood *l, int64_t bucket)
{
    int64_t oldest = bucket - l->idle_buckets;
    for (uint32_t id = 0; (id = ad_entity_table_next(l->table, id));) {
        const struct entry *e = ad_entity_table_record(l->table, id);
        if (e->last_bucket < oldest)
            ad_entity_table_remove(l->table, id);
    }
}

size_t ad_likelihood_entities(const struct ad_likelihood *l)
{
    return ad_entity_table_count(l->table);
}

uint64_t ad_likelihood_untracked(const struct ad_likelihood *l)
{
    return l->untracked;
}
