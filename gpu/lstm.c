/*
 * The backend-independent half of ad_lstm: every call goes through the backend's ops. A
 * constructor (ad_lstm_backend_cpu_new, ad_lstm_backend_cuda_new) allocates the struct
 * ad_lstm_backend with malloc or calloc and fills ops, impl and description; destroying it
 * here frees the impl through ops->destroy and then the struct itself.
 */

#include "gpu/lstm.h"
#include "gpu/lstm_backend.h"

#include <stdlib.h>

#include "base/errstr.h"

int ad_lstm_forward(struct ad_lstm_backend *b, const struct ad_lstm_weights *w, const float *x,
                    size_t batch, size_t steps, size_t x_stride, float *out, char *errstr,
                    size_t errstr_size)
{
    return b->ops->forward(b->impl, w, x, batch, steps, x_stride, out, errstr, errstr_size);
}

size_t ad_lstm_state_floats(const struct ad_lstm_weights *w)
{
    return 2 * w->layers * w->hidden;
}

int ad_lstm_warm_up(struct ad_lstm_backend *b, const struct ad_lstm_weights *w, const float *x,
                    size_t batch, size_t steps, size_t x_stride, float *out, float *state,
                    char *errstr, size_t errstr_size)
{
    if (!b->ops->warm_up)
        return ad_errstr_set(errstr, errstr_size, "the %s backend has no stream mode",
                             b->ops->kind);
    return b->ops->warm_up(b->impl, w, x, batch, steps, x_stride, out, state, errstr, errstr_size);
}

int ad_lstm_step(struct ad_lstm_backend *b, const struct ad_lstm_weights *w, const float *x,
                 size_t batch, size_t x_stride, float *state, float *out, char *errstr,
                 size_t errstr_size)
{
    if (!b->ops->step)
        return ad_errstr_set(errstr, errstr_size, "the %s backend has no stream mode",
                             b->ops->kind);
    return b->ops->step(b->impl, w, x, batch, x_stride, state, out, errstr, errstr_size);
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
