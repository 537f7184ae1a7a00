#include "windows/grid.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct grid_source {
    char *name;
    struct ad_watermark *w;
};

struct ad_grid {
    struct ad_window_store *store;
    int64_t idle_timeout;
    struct grid_source sources[AD_GRID_MAX_SOURCES];
    size_t n_sources;
    int64_t watermark;
};

struct ad_grid *ad_grid_new(struct ad_window_store *store, int64_t idle_timeout)
{
    struct ad_grid *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->store = store;
    g->idle_timeout = idle_timeout;
    g->watermark = AD_WATERMARK_NONE;
    return g;
}

void ad_grid_destroy(struct ad_grid *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_sources; i++)
        free(g->sources[i].name);
    free(g);
}

int ad_grid_add_source(struct ad_grid *g, const char *name, struct ad_watermark *w)
{
    if (g->n_sources == AD_GRID_MAX_SOURCES)
        return -1;
    char *copy = strdup(name);
    if (!copy)
        return -1;
    g->sources[g->n_sources++] = (struct grid_source){copy, w};
    return 0;
}

int64_t ad_grid_watermark(struct ad_grid *g, int64_t now)
{
    int64_t w = INT64_MAX;
    bool any_active = false;

    for (size_t i = 0; i < g->n_sources; i++) {
        bool idle;
        int64_t sw = ad_watermark_get(g->sources[i].w, now, g->idle_timeout, &idle);
        if (idle)
            continue;
        any_active = true;
        if (sw < w)
            w = sw;
    }
    if (!any_active)
        w = g->n_sources ? now - g->idle_timeout : AD_WATERMARK_NONE;
    if (w > g->watermark)
        g->watermark = w;
    return g->watermark;
}

int64_t ad_grid_advance(struct ad_grid *g, int64_t now)
{
    return ad_window_store_advance(g->store, ad_grid_watermark(g, now));
}

struct ad_window_store *ad_grid_store(const struct ad_grid *g)
{
    return g->store;
}

int64_t ad_grid_sample_time(int64_t t, int64_t step)
{
    return t - step;
}

void ad_grid_status(struct ad_grid *g, int64_t now, json_t *out)
{
    int64_t w = ad_grid_watermark(g, now);
    json_object_set_new(out, "watermark_ms",
                        w == AD_WATERMARK_NONE ? json_null() : json_integer((json_int_t)w));
    json_object_set_new(out, "lag_seconds",
                        w == AD_WATERMARK_NONE ? json_null() : json_real((double)(now - w) / 1e3));
    json_t *sources = json_object();
    for (size_t i = 0; i < g->n_sources; i++) {
        json_t *inputs = json_array();
        ad_watermark_status(g->sources[i].w, now, g->idle_timeout, inputs);
        json_object_set_new(sources, g->sources[i].name, inputs);
    }
    json_object_set_new(out, "sources", sources);
}
