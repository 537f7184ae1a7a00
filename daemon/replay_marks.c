#include "replay_marks.h"

#include <stdlib.h>
#include <string.h>

#include "entity_index.h"

struct mark {
    char *key;
    size_t len;
    uint64_t hash;
    int64_t through_ms;
};

struct ad_replay_marks {
    struct ad_entity_index *index; /* key -> position + 1 in marks */
    struct mark *marks;
    size_t n, cap, max;
};

static const char *mark_key(void *arg, uint32_t id, size_t *len)
{
    const struct ad_replay_marks *m = arg;
    *len = m->marks[id - 1].len;
    return m->marks[id - 1].key;
}

struct ad_replay_marks *ad_replay_marks_new(size_t max)
{
    struct ad_replay_marks *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->max = max;
    m->index = ad_entity_index_new(mark_key, m);
    if (!m->index) {
        free(m);
        return NULL;
    }
    return m;
}

void ad_replay_marks_destroy(struct ad_replay_marks *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->marks[i].key);
    free(m->marks);
    ad_entity_index_destroy(m->index);
    free(m);
}

/* Removes the mark at position i; the last one takes its place. */
static void remove_at(struct ad_replay_marks *m, size_t i)
{
    size_t last = m->n - 1;
    ad_entity_index_remove(m->index, (uint32_t)(i + 1), m->marks[i].hash);
    free(m->marks[i].key);
    if (i != last) {
        ad_entity_index_remove(m->index, (uint32_t)(last + 1), m->marks[last].hash);
        m->marks[i] = m->marks[last];
        /* Cannot fail: the index had room for this entry a moment ago. */
        ad_entity_index_insert(m->index, (uint32_t)(i + 1), m->marks[i].hash);
    }
    m->n--;
}

int ad_replay_marks_raise(struct ad_replay_marks *m, const char *key, size_t len,
                          int64_t through_ms)
{
    uint64_t hash = ad_entity_hash(key, len);
    uint32_t id = ad_entity_index_find(m->index, key, len, hash);
    if (id) {
        if (through_ms > m->marks[id - 1].through_ms)
            m->marks[id - 1].through_ms = through_ms;
        return 0;
    }
    if (m->n == m->max)
        return -1;
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        struct mark *grown = realloc(m->marks, cap * sizeof *grown);
        if (!grown)
            return -1;
        m->marks = grown;
        m->cap = cap;
    }
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    memcpy(copy, key, len);
    m->marks[m->n] = (struct mark){.key = copy, .len = len, .hash = hash, .through_ms = through_ms};
    if (ad_entity_index_insert(m->index, (uint32_t)(m->n + 1), hash) < 0) {
        free(copy);
        return -1;
    }
    m->n++;
    return 0;
}

bool ad_replay_marks_covers(struct ad_replay_marks *m, const char *key, size_t len, int64_t end_ms)
{
    if (!m || m->n == 0)
        return false;
    uint64_t hash = ad_entity_hash(key, len);
    uint32_t id = ad_entity_index_find(m->index, key, len, hash);
    if (!id)
        return false;
    if (end_ms <= m->marks[id - 1].through_ms)
        return true;
    remove_at(m, id - 1);
    return false;
}

void ad_replay_marks_expire(struct ad_replay_marks *m, int64_t end_ms)
{
    for (size_t i = 0; m && i < m->n;) {
        if (m->marks[i].through_ms <= end_ms)
            remove_at(m, i); /* the last mark moved to i: look at it next */
        else
            i++;
    }
}

size_t ad_replay_marks_size(const struct ad_replay_marks *m)
{
    return m ? m->n : 0;
}
