#ifndef AD_TEST_MODEL_FIXTURE_H
#define AD_TEST_MODEL_FIXTURE_H

/*
 * Writes complete model versions (docs/models.md) with random weights for the tests: the
 * safetensors file with its header, and a manifest whose sha256 and golden sample are right.
 * Tests then break one thing at a time.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct fixture_model {
    size_t layers, hidden, features, window;
    int64_t step_ms;
    const char *dtype; /* "F32" (default), "F16" or "BF16" */
    unsigned seed;
    bool stream;         /* architecture.mode stream, with the golden sample's steps */
    size_t rewarm_every; /* a stream model's architecture.rewarm_every; 0: 1000000 */
};

/* The features of a fixture with F features: "src.f0", "src.f1", ... */
const char *fixture_feature_name(size_t i);

/* Writes dir/model.safetensors and dir/manifest.json (dir must exist). Returns 0 or -1. */
int fixture_write(const char *dir, const struct fixture_model *spec);

/* The manifest as written, for a test to change and write back with fixture_write_manifest. */
json_t *fixture_read_manifest(const char *dir);
int fixture_write_manifest(const char *dir, json_t *manifest);

/* Writes bytes to dir/model.safetensors and puts their sha256 into the manifest. */
int fixture_write_weights(const char *dir, const uint8_t *bytes, size_t len);
/* Reads dir/model.safetensors; the caller frees. */
uint8_t *fixture_read_weights(const char *dir, size_t *len);

/* A fresh temporary folder (mkdtemp); the caller removes it with fixture_remove. */
char *fixture_tempdir(void);
void fixture_remove(const char *dir);

#endif
