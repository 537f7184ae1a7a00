#include "detect/routing.h"

#include <stdbool.h>
#include <string.h>

/* The index of key label `key` among a Kafka source's labels, in log_rules.h's order: labels,
 * then static_labels. The config's validation made sure it is there. */
static int kafka_label_index(const struct ad_settings_kafka_source *k, const char *key)
{
    for (size_t i = 0; i < k->labels.len; i++)
        if (strcmp(k->labels.keys[i], key) == 0)
            return (int)i;
    for (size_t i = 0; i < k->static_labels.len; i++)
        if (strcmp(k->static_labels.keys[i], key) == 0)
            return (int)(k->labels.len + i);
    return -1;
}

/* The series label that carries key label `key`: renamed by the source's labels map, or the
 * same name. */
static const char *series_label_of(const struct ad_settings_prometheus_source *p, const char *key)
{
    for (size_t i = 0; i < p->labels.len; i++)
        if (strcmp(p->labels.keys[i], key) == 0)
            return p->labels.values[i];
    return key;
}

size_t ad_routing_build(const struct ad_settings *s, size_t si, struct ad_route *routes)
{
    const struct ad_settings_source *ss = &s->sources[si];
    size_t n = 0;
    for (size_t di = 0; di < s->n_detectors; di++) {
        const struct ad_settings_detector *d = &s->detectors[di];
        struct ad_route route = {.detector = di};
        for (size_t f = 0; f < d->features.len; f++) {
            if (d->refs[f].source != si)
                continue;
            route.source_feature[route.n_features] = d->refs[f].feature;
            route.detector_feature[route.n_features++] = f;
        }
        if (route.n_features == 0)
            continue;
        for (size_t k = 0; k < d->keys.len; k++) {
            if (ss->type == AD_SOURCE_KAFKA)
                route.label_index[k] = kafka_label_index(&ss->kafka, d->keys.items[k]);
            else
                route.series_label[k] = series_label_of(&ss->prometheus, d->keys.items[k]);
        }
        routes[n++] = route;
    }
    return n;
}

size_t ad_routing_key_append(char *key, size_t len, size_t index, const char *v, size_t n)
{
    size_t need = len + (index ? 1 : 0) + n;
    if (need > AD_ROUTING_MAX_KEY)
        return SIZE_MAX;
    if (index)
        key[len++] = '\0';
    memcpy(key + len, v, n);
    return len + n;
}

enum ad_routing_result ad_routing_log_event(const struct ad_route *route,
                                            const struct ad_settings_detector *d,
                                            const struct ad_log_event *ev, char *key, size_t *len,
                                            double *values, uint64_t *present)
{
    size_t n = 0;
    for (size_t k = 0; k < d->keys.len; k++) {
        int li = route->label_index[k];
        n = ad_routing_key_append(key, n, k, ev->labels[li], ev->label_lens[li]);
        if (n == SIZE_MAX)
            return AD_ROUTING_KEY_TOO_LONG;
    }
    *len = n;
    *present = 0;
    for (size_t f = 0; f < route->n_features; f++) {
        size_t sf = route->source_feature[f], df = route->detector_feature[f];
        if ((ev->present >> sf) & 1) {
            values[df] = ev->values[sf];
            *present |= 1ULL << df;
        }
    }
    return *present ? AD_ROUTING_OK : AD_ROUTING_NO_FEATURES;
}

static enum ad_agg agg_of(const struct ad_settings_feature *f)
{
    switch (f->kind) {
    case AD_FEATURE_MEAN:
        return AD_AGG_MEAN;
    case AD_FEATURE_MIN:
        return AD_AGG_MIN;
    case AD_FEATURE_MAX:
        return AD_AGG_MAX;
    case AD_FEATURE_LAST:
    case AD_FEATURE_QUERY:
        return AD_AGG_LAST;
    default:
        return AD_AGG_SUM;
    }
}

void ad_routing_window_spec(const struct ad_settings *s, size_t di, size_t max_batch,
                            struct ad_window_spec *spec, enum ad_agg *aggs,
                            enum ad_fill_policy *fills)
{
    const struct ad_settings_detector *d = &s->detectors[di];
    for (size_t f = 0; f < d->features.len; f++) {
        const struct ad_settings_source *src = &s->sources[d->refs[f].source];
        aggs[f] = agg_of(&src->features[d->refs[f].feature]);
        fills[f] = d->refs[f].fill;
    }
    *spec = (struct ad_window_spec){
        .detector = d->name,
        .detector_index = di,
        .step = d->step,
        .window_len = d->window_len,
        .n_features = d->features.len,
        .aggs = aggs,
        .fills = fills,
        .allowed_lateness = d->allowed_lateness,
        .max_entities = (size_t)d->max_entities,
        .entity_idle_timeout = d->entity_idle_timeout,
        .max_batch = max_batch,
    };
}
