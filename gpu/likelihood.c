#include "likelihood.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "entity_index.h"

struct entry {
    char *key; /* NULL: a free slot */
    size_t len;
    uint64_t hash;
    uint64_t model_id;
    int64_t last_bucket;
    uint32_t n;
    uint32_t next_free;
    double short_mean, long_mean, long_var;
};

struct ad_likelihood {
    struct ad_entity_index *index;
    struct entry *entries; /* id − 1 */
    size_t used, cap, max;
    uint32_t free_head; /* a freed id, 0 when none */
    size_t live;
    int64_t idle_buckets;
    uint64_t untracked;
};

static const char *key_of(void *arg, uint32_t id, size_t *len)
{
    struct ad_likelihood *l = arg;
    *len = l->entries[id - 1].len;
    return l->entries[id - 1].key;
}

struct ad_likelihood *ad_likelihood_new(size_t max_entities, int64_t idle_buckets)
{
    struct ad_likelihood *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->index = ad_entity_index_new(key_of, l);
    if (!l->index) {
        free(l);
        return NULL;
    }
    l->max = max_entities;
    l->idle_buckets = idle_buckets;
    return l;
}

void ad_likelihood_destroy(struct ad_likelihood *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->used; i++)
        free(l->entries[i].key);
    free(l->entries);
    ad_entity_index_destroy(l->index);
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

/* A new entry for key, or NULL when the table is full or out of memory. */
static struct entry *add(struct ad_likelihood *l, const char *key, size_t len, uint64_t hash)
{
    if (l->live >= l->max)
        return NULL;
    uint32_t id = l->free_head;
    if (id) {
        l->free_head = l->entries[id - 1].next_free;
    } else {
        if (l->used == l->cap) {
            size_t cap = l->cap ? 2 * l->cap : 64;
            struct entry *grown = realloc(l->entries, cap * sizeof *grown);
            if (!grown)
                return NULL;
            l->entries = grown;
            l->cap = cap;
        }
        id = (uint32_t)++l->used;
    }
    struct entry *e = &l->entries[id - 1];
    *e = (struct entry){.key = malloc(len ? len : 1), .len = len, .hash = hash};
    if (e->key)
        memcpy(e->key, key, len);
    if (!e->key || ad_entity_index_insert(l->index, id, hash) < 0) {
        free(e->key);
        *e = (struct entry){.next_free = l->free_head};
        l->free_head = id;
        return NULL;
    }
    l->live++;
    return e;
}

static double normal_cdf(double z)
{
    return 0.5 * erfc(-z / sqrt(2.0));
}

double ad_likelihood_update(struct ad_likelihood *l, const char *key, size_t len, int64_t bucket,
                            double score, const struct ad_model *model)
{
    const struct ad_model_calibration *c = ad_model_calibration(model);
    uint64_t hash = ad_entity_hash(key, len);
    uint32_t id = ad_entity_index_find(l->index, key, len, hash);
    struct entry *e = id ? &l->entries[id - 1] : add(l, key, len, hash);
    struct entry scratch;
    if (!e) {
        l->untracked++;
        e = &scratch;
        start(e, model);
    } else if (!id || e->model_id != ad_model_weights(model)->id) {
        start(e, model);
    }
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
    for (size_t i = 0; i < l->used; i++) {
        struct entry *e = &l->entries[i];
        if (!e->key || e->last_bucket >= oldest)
            continue;
        ad_entity_index_remove(l->index, (uint32_t)(i + 1), e->hash);
        free(e->key);
        e->key = NULL;
        e->next_free = l->free_head;
        l->free_head = (uint32_t)(i + 1);
        l->live--;
    }
}

size_t ad_likelihood_entities(const struct ad_likelihood *l)
{
    return l->live;
}

uint64_t ad_likelihood_untracked(const struct ad_likelihood *l)
{
    return l->untracked;
}
