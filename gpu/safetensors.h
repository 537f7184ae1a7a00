#ifndef AD_SAFETENSORS_H
#define AD_SAFETENSORS_H

/*
 * A reader of the safetensors format (docs/models.md): an 8-byte little-endian header length,
 * a JSON header, and raw tensor data. It checks every offset, size, dtype and shape against the
 * buffer before anything is read, so a truncated or hostile file gives an error, never a
 * read out of bounds. F32, F16 and BF16 tensors convert to float32.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AD_TENSOR_MAX_RANK 4

enum ad_dtype { AD_DTYPE_F32, AD_DTYPE_F16, AD_DTYPE_BF16 };

struct ad_tensor {
    char *name;
    enum ad_dtype dtype;
    size_t shape[AD_TENSOR_MAX_RANK];
    size_t rank;
    size_t elements;
    size_t begin, end; /* byte offsets into the data section */
};

struct ad_safetensors {
    struct ad_tensor *tensors;
    size_t n_tensors;
    const uint8_t *data; /* borrowed from the buffer given to parse */
    size_t data_len;
};

/*
 * Parses buf (len bytes, borrowed: it must outlive out). Returns 0, or -1 with err naming the
 * problem (and the tensor, when one is at fault). out is freed with ad_safetensors_free in
 * either case.
 */
int ad_safetensors_parse(const uint8_t *buf, size_t len, struct ad_safetensors *out, char *errstr,
                         size_t errstr_size);
void ad_safetensors_free(struct ad_safetensors *st);

/* The tensor named name, or NULL. */
const struct ad_tensor *ad_safetensors_find(const struct ad_safetensors *st, const char *name);

/* Converts tensor t to float32 into out (t->elements floats). */
void ad_safetensors_read(const struct ad_safetensors *st, const struct ad_tensor *t, float *out);

#ifdef __cplusplus
}
#endif

#endif
