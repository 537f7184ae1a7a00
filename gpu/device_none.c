/* ad_gpu_probe for builds without the CUDA backend. */

#include "gpu/device.h"

#include <stdio.h>
#include <string.h>

void ad_gpu_probe(int device, struct ad_gpu_info *out)
{
    (void)device;
    memset(out, 0, sizeof *out);
    snprintf(out->error, sizeof out->error, "built without CUDA (ANOMALYD_CUDA=OFF or no nvcc)");
}
