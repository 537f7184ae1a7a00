#include "config/config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/clock.h"
#include "base/file.h"
#include "base/sha256.h"
#include "config/config_schema.h"
#include "config/schema.h"
#include "config/yaml_tree.h"

struct ad_config {
    atomic_int refs;
    char *path;
    char sha256[AD_SHA256_HEX_LEN + 1];
    double loaded_at;
    struct ad_settings settings;
};

static void config_free(struct ad_config *cfg)
{
    ad_schema_free(&ad_config_root_section, &cfg->settings);
    free(cfg->path);
    free(cfg);
}

static struct ad_config *load_buffer(const char *name, const char *buf, size_t len, bool replay,
                                     struct ad_diag *diag)
{
    struct ad_config *cfg = NULL;
    json_t *index = NULL, *root = NULL;

    if (len > AD_CONFIG_MAX_BYTES) {
        ad_diag_add(diag, name, 0, 0, "the file is larger than %d bytes", AD_CONFIG_MAX_BYTES);
        return NULL;
    }
    index = json_object();
    cfg = calloc(1, sizeof *cfg);
    if (!index || !cfg || !(cfg->path = strdup(name))) {
        ad_diag_add(diag, name, 0, 0, "out of memory");
        goto err;
    }
    atomic_init(&cfg->refs, 1);
    ad_sha256_hex(buf, len, cfg->sha256);
    cfg->loaded_at = ad_clock_wall_seconds();

    root = ad_yaml_read(name, buf, len, index, diag);
    if (!root)
        goto err;
    if (!json_is_object(root)) {
        ad_diag_add(diag, name, 1, 1,
                    "expected a mapping of sections (daemon, kafka, sources, "
                    "detectors, sinks, model_store, scoring)");
        goto err;
    }
    char *base_dir = strdup(name);
    char *slash = base_dir ? strrchr(base_dir, '/') : NULL;
    if (slash)
        *(slash == base_dir ? slash + 1 : slash) = '\0';
    else if (base_dir)
        base_dir[0] = '\0';
    struct ad_schema_ctx ctx = {.file = name,
                                .base_dir = base_dir,
                                .index = index,
                                .diag = diag,
                                .root = &cfg->settings,
                                .replay = replay};
    size_t errors = ad_schema_decode(&ctx, &ad_config_root_section, root, "", &cfg->settings);
    free(base_dir);
    if (errors > 0)
        goto err;
    json_decref(root);
    json_decref(index);
    return cfg;

err:
    ad_diag_sort(diag);
    json_decref(root);
    json_decref(index);
    if (cfg)
        config_free(cfg);
    return NULL;
}

struct ad_config *ad_config_load_buffer(const char *name, const char *buf, size_t len,
                                        struct ad_diag *diag)
{
    return load_buffer(name, buf, len, false, diag);
}

static struct ad_config *load_file(const char *path, bool replay, struct ad_diag *diag)
{
    char why[256];
    size_t len = 0;
    /* Without blocking, and only a regular file: a FIFO in its place must not stall the loop
     * (a reload, the config watch) or --check-config. */
    char *buf = ad_file_read(path, AD_CONFIG_MAX_BYTES, &len, NULL, why, sizeof why);
    if (!buf && errno == EFBIG)
        ad_diag_add(diag, path, 0, 0, "the file is larger than %d bytes", AD_CONFIG_MAX_BYTES);
    else if (!buf)
        ad_diag_add(diag, path, 0, 0, "cannot open: %s", why);
    if (!buf)
        return NULL;
    struct ad_config *cfg = load_buffer(path, buf, len, replay, diag);
    free(buf);
    return cfg;
}

struct ad_config *ad_config_load_file(const char *path, struct ad_diag *diag)
{
    return load_file(path, false, diag);
}

struct ad_config *ad_config_load_replay(const char *path, struct ad_diag *diag)
{
    return load_file(path, true, diag);
}

struct ad_config *ad_config_ref(struct ad_config *cfg)
{
    atomic_fetch_add(&cfg->refs, 1);
    return cfg;
}

void ad_config_unref(struct ad_config *cfg)
{
    if (cfg && atomic_fetch_sub(&cfg->refs, 1) == 1)
        config_free(cfg);
}

const struct ad_settings *ad_config_settings(const struct ad_config *cfg)
{
    return &cfg->settings;
}

const char *ad_config_path(const struct ad_config *cfg)
{
    return cfg->path;
}

const char *ad_config_sha256(const struct ad_config *cfg)
{
    return cfg->sha256;
}

double ad_config_loaded_at(const struct ad_config *cfg)
{
    return cfg->loaded_at;
}

struct restart_count {
    void (*fn)(const char *key, void *arg);
    void *arg;
    size_t n;
};

static void count_change(const char *key, void *arg)
{
    struct restart_count *c = arg;
    c->n++;
    if (c->fn)
        c->fn(key, c->arg);
}

size_t ad_config_restart_changes(const struct ad_config *old, const struct ad_config *next,
                                 void (*fn)(const char *key, void *arg), void *arg)
{
    struct restart_count c = {fn, arg, 0};
    ad_schema_restart_changes(&ad_config_root_section, &old->settings, &next->settings, "",
                              count_change, &c);
    return c.n;
}

void ad_config_changes(const struct ad_config *old, const struct ad_config *next,
                       void (*fn)(const char *key, void *arg), void *arg)
{
    ad_schema_changes(&ad_config_root_section, &old->settings, &next->settings, "", fn, arg);
}

bool ad_config_sections_equal(const struct ad_config *a, const struct ad_config *b,
                              const char *const *sections)
{
    for (; *sections; sections++)
        if (!ad_schema_field_equal(&ad_config_root_section, *sections, &a->settings, &b->settings))
            return false;
    return true;
}

void ad_config_write_reference(FILE *out)
{
    ad_schema_write_reference(out, &ad_config_root_section, "");
}
