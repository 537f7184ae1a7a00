/* ad_lstm_backend_cuda_new and the CUDA backend's knobs for builds without CUDA. */

#include "gpu/lstm.h"
#include "base/errstr.h"
#include "gpu/lstm_cuda.h"

#include <stdio.h>

struct ad_lstm_backend *ad_lstm_backend_cuda_new(int device, char *errstr, size_t errstr_size)
{
    (void)device;
    if (errstr != NULL && errstr_size > 0)
        ad_errstr_set(errstr, errstr_size, "built without CUDA (ANOMALYD_CUDA=OFF or no nvcc)");
    return NULL;
}

int ad_lstm_cuda_set_profiling(struct ad_lstm_backend *b, bool on)
{
    (void)b;
    (void)on;
    return -1;
}

int ad_lstm_cuda_last_stats(const struct ad_lstm_backend *b, struct ad_lstm_cuda_stats *out)
{
    (void)b;
    (void)out;
    return -1;
}

int ad_lstm_cuda_set_gate_bytes(struct ad_lstm_backend *b, size_t bytes)
{
    (void)b;
    (void)bytes;
    return -1;
}

int ad_lstm_cuda_set_fused_layers(struct ad_lstm_backend *b, bool on)
{
    (void)b;
    (void)on;
    return -1;
}
