/* ad_lstm_backend_cuda_new for builds without CUDA. */

#include <stdio.h>

#include "lstm.h"

struct ad_lstm_backend *ad_lstm_backend_cuda_new(int device, char *err, size_t err_size)
{
    (void)device;
    snprintf(err, err_size, "built without CUDA (ANOMALYD_CUDA=OFF or no nvcc)");
    return NULL;
}
