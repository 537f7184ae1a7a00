/* The CUDA side of ad_gpu_probe. */

#include "gpu/device.h"

#include <stdio.h>
#include <string.h>

#include <cuda_runtime_api.h>

extern "C" void ad_gpu_probe(int device, struct ad_gpu_info *out)
{
    memset(out, 0, sizeof *out);
    out->built_with_cuda = true;
    cudaRuntimeGetVersion(&out->runtime_version);
    cudaDriverGetVersion(&out->driver_version);

    /* Without a driver this returns cudaErrorInsufficientDriver (35) at once: no device. */
    cudaError_t err = cudaGetDeviceCount(&out->device_count);
    if (err != cudaSuccess) {
        out->device_count = 0;
        snprintf(out->error, sizeof out->error, "%s (%s)", cudaGetErrorString(err),
                 cudaGetErrorName(err));
        cudaGetLastError(); /* the error is sticky otherwise */
        return;
    }
    if (device >= out->device_count) {
        snprintf(out->error, sizeof out->error, "device %d asked for, %d present", device,
                 out->device_count);
        return;
    }
    cudaDeviceProp prop;
    err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) {
        snprintf(out->error, sizeof out->error, "%s", cudaGetErrorString(err));
        cudaGetLastError();
        return;
    }
    snprintf(out->name, sizeof out->name, "%s", prop.name);
    out->compute_major = prop.major;
    out->compute_minor = prop.minor;
    out->total_memory = prop.totalGlobalMem;
}
