/*
 * The backend-independent half of ad_lstm: every call goes through the backend's ops. A
 * constructor (ad_lstm_backend_cpu_new, ad_lstm_backend_cuda_new) allocates the struct
 * ad_lstm_backend with malloc or calloc and fills ops, impl and description; destroying it
 * here frees the impl through ops->destroy and then the struct itself.
 */

#include "gpu/lstm.h"
#include "gpu/lstm_backend.h"

#include <stdlib.h>

int ad_lstm_forward(struct ad_lstm_backend *b, const struct ad_lstm_weights *w, const float *x,
                    size_t batch, size_t steps, size_t x_stride, float *out, char *errstr,
                    size_t errstr_size)
{
    return b->ops->forward(b->impl, w, x, batch, steps, x_stride, out, errstr, errstr_size);
}

const char *ad_lstm_backend_kind(const struct ad_lstm_backend *b)
{
    return b->ops->kind;
}

const char *ad_lstm_backend_description(const struct ad_lstm_backend *b)
{
    return b->description;
}

void ad_lstm_backend_destroy(struct ad_lstm_backend *b)
{
    if (b == NULL)
        return;
    if (b->ops != NULL && b->ops->destroy != NULL)
        b->ops->destroy(b->impl);
    free(b);
}
