#include "gpu/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/errstr.h"

/* A header larger than this is not a model header: refuse before allocating for it. */
#define MAX_HEADER (16u * 1024 * 1024)

static size_t dtype_size(enum ad_dtype d)
{
    return d == AD_DTYPE_F32 ? 4 : 2;
}

static int parse_dtype(const char *s, enum ad_dtype *out)
{
    if (strcmp(s, "F32") == 0)
        *out = AD_DTYPE_F32;
    else if (strcmp(s, "F16") == 0)
        *out = AD_DTYPE_F16;
    else if (strcmp(s, "BF16") == 0)
        *out = AD_DTYPE_BF16;
    else
        return -1;
    return 0;
}

/* A JSON integer that fits size_t, or -1. */
static int get_size(json_t *v, size_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (size_t)json_integer_value(v);
    return 0;
}

static int parse_tensor(const char *name, json_t *entry, size_t data_len, struct ad_tensor *t,
                        char *errstr, size_t errstr_size)
{
    const char *key;
    json_t *v;

    t->name = strdup(name);
    if (!t->name) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (!json_is_object(entry)) {
        ad_errstr_set(errstr, errstr_size, "tensor %s: expected an object", name);
        return -1;
    }
    json_object_foreach (entry, key, v) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets")) {
            ad_errstr_set(errstr, errstr_size, "tensor %s: unknown key \"%s\"", name, key);
            return -1;
        }
    }
    json_t *dtype = json_object_get(entry, "dtype");
    if (!json_is_string(dtype) || parse_dtype(json_string_value(dtype), &t->dtype) < 0) {
        ad_errstr_set(errstr, errstr_size, "tensor %s: dtype must be F32, F16 or BF16, not %s",
                      name, json_is_string(dtype) ? json_string_value(dtype) : "missing");
        return -1;
    }
    json_t *shape = json_object_get(entry, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > AD_TENSOR_MAX_RANK) {
        ad_errstr_set(errstr, errstr_size, "tensor %s: shape must be a list of at most %d sizes",
                      name, AD_TENSOR_MAX_RANK);
        return -1;
    }
    t->rank = json_array_size(shape);
    t->elements = 1;
    for (size_t i = 0; i < t->rank; i++) {
        if (get_size(json_array_get(shape, i), &t->shape[i]) < 0) {
            ad_errstr_set(errstr, errstr_size, "tensor %s: shape[%zu] is not a size", name, i);
            return -1;
        }
        /* Overflow would let a tiny data range pass for a huge tensor. */
        if (t->shape[i] && t->elements > SIZE_MAX / 8 / t->shape[i]) {
            ad_errstr_set(errstr, errstr_size, "tensor %s: shape too large", name);
            return -1;
        }
        t->elements *= t->shape[i];
    }
    json_t *offsets = json_object_get(entry, "data_offsets");
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        get_size(json_array_get(offsets, 0), &t->begin) < 0 ||
        get_size(json_array_get(offsets, 1), &t->end) < 0 || t->begin > t->end) {
        ad_errstr_set(errstr, errstr_size,
                      "tensor %s: data_offsets must be [begin, end] with begin <= end", name);
        return -1;
    }
    if (t->end > data_len) {
        ad_errstr_set(errstr, errstr_size,
                      "tensor %s: data_offsets end at %zu, past the %zu bytes of data", name,
                      t->end, data_len);
        return -1;
    }
    if (t->end - t->begin != t->elements * dtype_size(t->dtype)) {
        ad_errstr_set(errstr, errstr_size, "tensor %s: %zu bytes of data for %zu %s values", name,
                      t->end - t->begin, t->elements, json_string_value(dtype));
        return -1;
    }
    return 0;
}

static int by_begin(const void *a, const void *b)
{
    const struct ad_tensor *x = *(const struct ad_tensor *const *)a;
    const struct ad_tensor *y = *(const struct ad_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Tensors may not share bytes: an overlap means a corrupt or crafted header. */
static int check_overlaps(struct ad_safetensors *st, char *errstr, size_t errstr_size)
{
    const struct ad_tensor **order = malloc((st->n_tensors + 1) * sizeof *order);
    int rc = 0;
    if (!order) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < st->n_tensors; i++)
        order[i] = &st->tensors[i];
    qsort(order, st->n_tensors, sizeof *order, by_begin);
    for (size_t i = 1; i < st->n_tensors; i++) {
        if (order[i]->begin < order[i - 1]->end) {
            ad_errstr_set(errstr, errstr_size, "tensors %s and %s overlap", order[i - 1]->name,
                          order[i]->name);
            rc = -1;
            break;
        }
    }
    free(order);
    return rc;
}

int ad_safetensors_parse(const uint8_t *buf, size_t len, struct ad_safetensors *out, char *errstr,
                         size_t errstr_size)
{
    json_t *header = NULL;
    json_error_t jerr;
    const char *name;
    json_t *entry;
    int rc = -1;

    memset(out, 0, sizeof *out);
    if (len < 8) {
        ad_errstr_set(errstr, errstr_size,
                      "truncated: %zu bytes, less than the 8-byte header length", len);
        return -1;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | buf[i];
    if (n > MAX_HEADER || n > len - 8) {
        ad_errstr_set(errstr, errstr_size,
                      "the header claims %llu bytes; the file has %zu after the length",
                      (unsigned long long)n, len - 8);
        return -1;
    }
    header = json_loadb((const char *)buf + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(header)) {
        ad_errstr_set(errstr, errstr_size, "the header is not a JSON object: %s",
                      header ? "another JSON value" : jerr.text);
        goto out;
    }
    out->data = buf + 8 + n;
    out->data_len = len - 8 - (size_t)n;
    out->tensors = calloc(json_object_size(header) + 1, sizeof *out->tensors);
    if (!out->tensors) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto out;
    }
    json_object_foreach (header, name, entry) {
        if (strcmp(name, "__metadata__") == 0) {
            const char *k;
            json_t *v;
            if (!json_is_object(entry)) {
                ad_errstr_set(errstr, errstr_size, "__metadata__ must be an object of strings");
                goto out;
            }
            json_object_foreach (entry, k, v) {
                if (!json_is_string(v)) {
                    ad_errstr_set(errstr, errstr_size, "__metadata__.%s must be a string", k);
                    goto out;
                }
            }
            continue;
        }
        if (parse_tensor(name, entry, out->data_len, &out->tensors[out->n_tensors++], errstr,
                         errstr_size) < 0)
            goto out;
    }
    rc = check_overlaps(out, errstr, errstr_size);
out:
    json_decref(header);
    return rc;
}

void ad_safetensors_free(struct ad_safetensors *st)
{
    for (size_t i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    free(st->tensors);
    memset(st, 0, sizeof *st);
}

const struct ad_tensor *ad_safetensors_find(const struct ad_safetensors *st, const char *name)
{
    for (size_t i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0)
            return &st->tensors[i];
    return NULL;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalize */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            bits = sign | exp << 23 | (mant & 0x3ff) << 13;
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000 | mant << 13; /* inf or nan */
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void ad_safetensors_read(const struct ad_safetensors *st, const struct ad_tensor *t, float *out)
{
    const uint8_t *p = st->data + t->begin;
    for (size_t i = 0; i < t->elements; i++) {
        uint32_t bits;
        switch (t->dtype) {
        case AD_DTYPE_F32:
            bits = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
                   (uint32_t)p[4 * i + 3] << 24;
            memcpy(&out[i], &bits, 4);
            break;
        case AD_DTYPE_BF16:
            bits = ((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8) << 16;
            memcpy(&out[i], &bits, 4);
            break;
        case AD_DTYPE_F16:
            out[i] = half_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
            break;
        }
    }
}
