/*
 * The model loader on hostile bytes. The first byte picks the part: even, the rest is a
 * model.safetensors file (parsed, then every tensor converted); odd, the rest is a
 * manifest.json, checked against a detector (the weights are then empty, so the checksum
 * stops it after the manifest). Neither may crash, leak or read out of bounds.
 */

#include <stdint.h>
#include <stdlib.h>

#include "gpu/model.h"
#include "gpu/safetensors.h"

static void fuzz_safetensors(const uint8_t *data, size_t size)
{
    struct ad_safetensors st;
    char err[512];
    if (ad_safetensors_parse(data, size, &st, err, sizeof err) == 0) {
        for (size_t i = 0; i < st.n_tensors; i++) {
            const struct ad_tensor *t = &st.tensors[i];
            if (t->elements > (1u << 20))
                continue;
            float *out = malloc((t->elements ? t->elements : 1) * sizeof *out);
            if (out)
                ad_safetensors_read(&st, t, out);
            free(out);
        }
    }
    ad_safetensors_free(&st);
}

static void fuzz_manifest(const uint8_t *data, size_t size)
{
    char err[1024];
    struct ad_strlist features = {.items = (char *[]){"a.x", "b.y"}, .len = 2};
    struct ad_model_expect expect = {.features = &features, .window = 3, .step_ms = 1000};
    struct ad_model *m =
        ad_model_parse("fuzz", data, size, (const uint8_t *)"", 0, &expect, err, sizeof err);
    ad_model_unref(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] % 2 == 0)
        fuzz_safetensors(data + 1, size - 1);
    else
        fuzz_manifest(data + 1, size - 1);
    return 0;
}
