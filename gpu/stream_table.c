#include "gpu/stream_table.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/errstr.h"

/* Tables per detector: the serving model's and a shadow candidate's. */
#define PER_DETECTOR 2

/* Beside each state: whose it is and the newest bucket (its start, ms) it has read. born 0:
 * nobody's (no entity is born 0). */
struct owner {
    uint64_t born;
    int64_t read_through;
    uint64_t phase; /* the entity's re-warm phase, in [0, rewarm_every) */
};

struct ad_stream_table {
    size_t detector;
    uint64_t model; /* ad_lstm_weights.id */
    uint64_t used;  /* the tables' tick at its last use */
    uint64_t rewarm_every;
    struct ad_lstm_states *states;
    struct owner *owners;
    size_t capacity; /* slots in owners */
    struct ad_stream_table *next;
};

struct ad_stream_tables {
    struct ad_stream_table *head;
    uint64_t tick;
};

struct ad_stream_tables *ad_stream_tables_new(void)
{
    return calloc(1, sizeof(struct ad_stream_tables));
}

static void table_free(struct ad_stream_table *table)
{
    ad_lstm_states_destroy(table->states);
    free(table->owners);
    free(table);
}

void ad_stream_tables_clear(struct ad_stream_tables *t)
{
    while (t->head) {
        struct ad_stream_table *next = t->head->next;
        table_free(t->head);
        t->head = next;
    }
}

void ad_stream_tables_destroy(struct ad_stream_tables *t)
{
    if (!t)
        return;
    ad_stream_tables_clear(t);
    free(t);
}

struct ad_stream_table *ad_stream_table_get(struct ad_stream_tables *t, struct ad_lstm_backend *b,
                                            size_t detector, const struct ad_lstm_weights *w,
                                            size_t rewarm_every, char *errstr, size_t errstr_size)
{
    struct ad_stream_table **oldest = NULL;
    size_t of_detector = 0;
    t->tick++;
    for (struct ad_stream_table **p = &t->head; *p; p = &(*p)->next) {
        if ((*p)->detector != detector)
            continue;
        if ((*p)->model == w->id) {
            (*p)->used = t->tick;
            return *p;
        }
        of_detector++;
        if (!oldest || (*p)->used < (*oldest)->used)
            oldest = p;
    }
    if (of_detector >= PER_DETECTOR) {
        struct ad_stream_table *gone = *oldest;
        *oldest = gone->next;
        table_free(gone);
    }
    struct ad_stream_table *table = calloc(1, sizeof *table);
    if (!table) {
        ad_errstr_set(errstr, errstr_size, "out of memory for a table of stream states");
        return NULL;
    }
    table->states = ad_lstm_states_new(b, w, errstr, errstr_size);
    if (!table->states) {
        free(table);
        return NULL;
    }
    table->detector = detector;
    table->model = w->id;
    table->rewarm_every = rewarm_every ? rewarm_every : 1;
    table->used = t->tick;
    table->next = t->head;
    t->head = table;
    return table;
}

struct ad_lstm_states *ad_stream_table_states(struct ad_stream_table *table)
{
    return table->states;
}

static int reserve(struct ad_stream_table *table, size_t slots, char *errstr, size_t errstr_size)
{
    if (slots <= table->capacity)
        return 0;
    if (ad_lstm_states_reserve(table->states, slots, errstr, errstr_size) < 0)
        return -1;
    size_t capacity = ad_lstm_states_capacity(table->states);
    struct owner *grown = realloc(table->owners, capacity * sizeof *grown);
    if (!grown)
        return ad_errstr_set(errstr, errstr_size, "out of memory for %zu stream states", capacity);
    memset(grown + table->capacity, 0, (capacity - table->capacity) * sizeof *grown);
    table->owners = grown;
    table->capacity = capacity;
    return 0;
}

int ad_stream_table_plan(struct ad_stream_table *table, const struct ad_window_batch *batch,
                         size_t first, size_t n, uint32_t *step, size_t *n_step, uint32_t *warm,
                         size_t *n_warm, char *errstr, size_t errstr_size)
{
    size_t need = 0;
    for (size_t i = first; i < first + n; i++)
        if ((size_t)batch->slots[i] + 1 > need)
            need = (size_t)batch->slots[i] + 1;
    if (reserve(table, need, errstr, errstr_size) < 0)
        return -1;
    int64_t before = batch->bucket_start - 2 * batch->step;
    int64_t N = (int64_t)table->rewarm_every;
    uint64_t at = (uint64_t)((batch->bucket_start / batch->step % N + N) % N);
    *n_step = *n_warm = 0;
    for (size_t i = first; i < first + n; i++) {
        const struct owner *o = &table->owners[batch->slots[i]];
        bool due = (at + o->phase) % (uint64_t)N == 0;
        if (o->born == batch->born[i] && o->read_through == before && !due)
            step[(*n_step)++] = (uint32_t)i;
        else
            warm[(*n_warm)++] = (uint32_t)i;
    }
    return 0;
}

uint64_t ad_stream_phase(const char *key, size_t len, size_t rewarm_every)
{
    /* FNV-1a: the same for a key in every process, as the phase must be. */
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)key[i]) * 1099511628211ull;
    return rewarm_every ? h % rewarm_every : 0;
}

void ad_stream_table_advanced(struct ad_stream_table *table, const struct ad_window_batch *batch,
                              const uint32_t *idx, size_t n, bool warmed_up)
{
    for (size_t k = 0; k < n; k++) {
        struct owner *o = &table->owners[batch->slots[idx[k]]];
        if (warmed_up) {
            size_t len;
            const char *key = ad_window_batch_key(batch, idx[k], &len);
            o->phase = ad_stream_phase(key, len, table->rewarm_every);
        }
        o->born = batch->born[idx[k]];
        o->read_through = batch->bucket_start - batch->step;
    }
}

void ad_stream_table_forget(struct ad_stream_table *table, const struct ad_window_batch *batch,
                            const uint32_t *idx, size_t n)
{
    for (size_t k = 0; k < n; k++)
        table->owners[batch->slots[idx[k]]].born = 0;
}

size_t ad_stream_tables_count(const struct ad_stream_tables *t)
{
    size_t n = 0;
    for (const struct ad_stream_table *p = t->head; p; p = p->next)
        n++;
    return n;
}

size_t ad_stream_tables_bytes(const struct ad_stream_tables *t)
{
    size_t bytes = 0;
    for (const struct ad_stream_table *p = t->head; p; p = p->next)
        bytes += ad_lstm_states_bytes(p->states) + p->capacity * sizeof *p->owners;
    return bytes;
}
