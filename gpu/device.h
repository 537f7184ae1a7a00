#ifndef AD_GPU_DEVICE_H
#define AD_GPU_DEVICE_H

/*
 * What the scoring backends can use: whether this build has the CUDA backend, and whether a
 * CUDA device is usable here. A machine without a GPU or driver answers "no device" with the
 * reason, never an error.
 */

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ad_gpu_info {
    bool built_with_cuda;
    int device_count;
    /* Of the device asked for, when device_count > device. */
    char name[256];
    int compute_major, compute_minor;
    size_t total_memory;
    int driver_version;  /* e.g. 13000 for 13.0; 0 when there is no driver */
    int runtime_version; /* of the CUDA runtime linked in */
    char error[256];     /* why no device is usable, when none is */
};

/* Fills *out for CUDA device ordinal device. */
void ad_gpu_probe(int device, struct ad_gpu_info *out);

#ifdef __cplusplus
}
#endif

#endif
