/*
 * The backend-independent half of ad_lstm: every call goes through the backend's ops. A
 * constructor (ad_lstm_backend_cpu_new, ad_lstm_backend_cuda_new) allocates the struct
 * ad_lstm_backend with malloc or calloc and fills ops, impl and description; destroying it
 * here frees the impl through ops->destroy and then the struct itself.
 */

#include "gpu/lstm.h"
#include "gpu/lstm_backend.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- slot states ---- */

struct ad_lstm_states {
    struct ad_lstm_backend *backend;
    size_t floats;   /* per slot */
    size_t capacity; /* slots */
    void *table;     /* capacity × floats: host memory, or the backend's */
    /* Host tables: each call's states gathered in batch order, and room for them. */
    float *gathered;
    size_t gathered_floats;
};

static bool on_host(const struct ad_lstm_states *s)
{
    return s->backend->ops->states_resize == NULL;
}

struct ad_lstm_states *ad_lstm_states_new(struct ad_lstm_backend *b,
                                          const struct ad_lstm_weights *w, char *errstr,
                                          size_t errstr_size)
{
    if (b->ops->states_resize ? !b->ops->step_slots : !b->ops->step) {
        ad_errstr_set(errstr, errstr_size, "the %s backend has no stream mode", b->ops->kind);
        return NULL;
    }
    struct ad_lstm_states *s = calloc(1, sizeof *s);
    if (!s) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->backend = b;
    s->floats = ad_lstm_state_floats(w);
    return s;
}

void ad_lstm_states_destroy(struct ad_lstm_states *s)
{
    if (!s)
        return;
    if (on_host(s))
        free(s->table);
    else
        s->backend->ops->states_free(s->backend->impl, s->table);
    free(s->gathered);
    free(s);
}

int ad_lstm_states_reserve(struct ad_lstm_states *s, size_t slots, char *errstr, size_t errstr_size)
{
    if (slots <= s->capacity)
        return 0;
    size_t capacity = s->capacity ? s->capacity : 1024;
    while (capacity < slots)
        capacity *= 2;
    size_t row = s->floats * sizeof(float);
    if (!on_host(s)) {
        if (s->backend->ops->states_resize(s->backend->impl, &s->table, s->capacity * row,
                                           capacity * row, errstr, errstr_size) < 0)
            return -1;
    } else {
        void *grown = realloc(s->table, capacity * row);
        if (!grown)
            return ad_errstr_set(errstr, errstr_size, "out of memory for %zu states", capacity);
        s->table = grown;
    }
    s->capacity = capacity;
    return 0;
}

size_t ad_lstm_states_capacity(const struct ad_lstm_states *s)
{
    return s->capacity;
}

size_t ad_lstm_states_bytes(const struct ad_lstm_states *s)
{
    return s->capacity * s->floats * sizeof(float);
}

static int check_slots(const struct ad_lstm_states *s, struct ad_lstm_backend *b,
                       const struct ad_lstm_weights *w, const uint32_t *slots, size_t batch,
                       char *errstr, size_t errstr_size)
{
    if (s->backend != b || s->floats != ad_lstm_state_floats(w))
        return ad_errstr_set(errstr, errstr_size, "the states are not this backend's or model's");
    for (size_t i = 0; i < batch; i++)
        if (slots[i] >= s->capacity)
            return ad_errstr_set(errstr, errstr_size, "slot %u beyond the states' %zu",
                                 (unsigned)slots[i], s->capacity);
    return 0;
}

static float *gathered(struct ad_lstm_states *s, size_t batch, char *errstr, size_t errstr_size)
{
    size_t need = batch * s->floats;
    if (need > s->gathered_floats) {
        float *grown = realloc(s->gathered, need * sizeof *grown);
        if (!grown) {
            ad_errstr_set(errstr, errstr_size, "out of memory for %zu states", batch);
            return NULL;
        }
        s->gathered = grown;
        s->gathered_floats = need;
    }
    return s->gathered;
}

int ad_lstm_warm_up_slots(struct ad_lstm_backend *b, const struct ad_lstm_weights *w,
                          struct ad_lstm_states *states, const float *x, size_t batch, size_t steps,
                          size_t x_stride, const uint32_t *slots, float *out, char *errstr,
                          size_t errstr_size)
{
    if (check_slots(states, b, w, slots, batch, errstr, errstr_size) < 0)
        return -1;
    if (!on_host(states))
        return b->ops->warm_up_slots(b->impl, w, states->table, x, batch, steps, x_stride, slots,
                                     out, errstr, errstr_size);
    float *state = gathered(states, batch, errstr, errstr_size);
    if (!state ||
        ad_lstm_warm_up(b, w, x, batch, steps, x_stride, out, state, errstr, errstr_size) < 0)
        return -1;
    float *table = states->table;
    size_t S = states->floats;
    for (size_t i = 0; i < batch; i++)
        memcpy(table + (size_t)slots[i] * S, state + i * S, S * sizeof *state);
    return 0;
}

int ad_lstm_step_slots(struct ad_lstm_backend *b, const struct ad_lstm_weights *w,
                       struct ad_lstm_states *states, const float *x, size_t batch, size_t x_stride,
                       const uint32_t *slots, float *out, char *errstr, size_t errstr_size)
{
    if (check_slots(states, b, w, slots, batch, errstr, errstr_size) < 0)
        return -1;
    if (!on_host(states))
        return b->ops->step_slots(b->impl, w, states->table, x, batch, x_stride, slots, out, errstr,
                                  errstr_size);
    float *state = gathered(states, batch, errstr, errstr_size);
    if (!state)
        return -1;
    float *table = states->table;
    size_t S = states->floats;
    for (size_t i = 0; i < batch; i++)
        memcpy(state + i * S, table + (size_t)slots[i] * S, S * sizeof *state);
    if (ad_lstm_step(b, w, x, batch, x_stride, state, out, errstr, errstr_size) < 0)
        return -1;
    for (size_t i = 0; i < batch; i++)
        memcpy(table + (size_t)slots[i] * S, state + i * S, S * sizeof *state);
    return 0;
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
