/*
 * model-write: publishes a model version with random weights into a folder store, complete
 * and valid (sha256, golden sample), for integration tests that need a detector to serve a
 * model without training one:
 *
 *   model-write STORE MODEL VERSION WINDOW STEP_MS FEATURE...
 *
 * writes STORE/MODEL/VERSION/{model.safetensors,manifest.json} and STORE/MODEL/CURRENT, with
 * the features named as given (e.g. "app.requests", as a detector references them).
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "model_fixture.h"

static int make_dir(const char *path)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "model-write: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    char dir[4096], path[4200];
    if (argc < 7) {
        fprintf(stderr,
                "usage: model-write STORE MODEL VERSION WINDOW STEP_MS FEATURE [FEATURE...]\n");
        return 2;
    }
    const char *store = argv[1], *model = argv[2], *version = argv[3];
    struct fixture_model spec = {.layers = 1,
                                 .hidden = 8,
                                 .features = (size_t)(argc - 6),
                                 .window = (size_t)strtoul(argv[4], NULL, 10),
                                 .step_ms = strtoll(argv[5], NULL, 10),
                                 .seed = 7};
    snprintf(dir, sizeof dir, "%s/%s", store, model);
    if (make_dir(store) < 0 || make_dir(dir) < 0)
        return 1;
    snprintf(dir, sizeof dir, "%s/%s/%s", store, model, version);
    if (make_dir(dir) < 0 || fixture_write(dir, &spec) < 0) {
        fprintf(stderr, "model-write: cannot write the version into %s\n", dir);
        return 1;
    }
    /* The fixture names its features src.f0, src.f1, ...: rename them, and name the model. */
    json_t *manifest = fixture_read_manifest(dir);
    json_t *features = json_array();
    for (int i = 6; i < argc; i++)
        json_array_append_new(features, json_string(argv[i]));
    json_object_set_new(manifest, "features", features);
    json_object_set_new(manifest, "model", json_string(model));
    json_object_set_new(manifest, "version", json_string(version));
    if (fixture_write_manifest(dir, manifest) < 0) {
        json_decref(manifest);
        return 1;
    }
    json_decref(manifest);
    snprintf(path, sizeof path, "%s/%s/CURRENT", store, model);
    FILE *fp = fopen(path, "w");
    if (!fp || fprintf(fp, "%s\n", version) < 0 || fclose(fp) != 0) {
        fprintf(stderr, "model-write: %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}
