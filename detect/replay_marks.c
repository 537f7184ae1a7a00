#include "detect/replay_marks.h"

#include <stdlib.h>

#include "detect/entity_table.h"

struct ad_replay_marks {
    struct ad_entity_table *table; /* key -> the end through which it was notified (int64_t) */
};

struct ad_replay_marks *ad_replay_marks_new(size_t max)
{
    struct ad_replay_marks *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->table = ad_entity_table_new(sizeof(int64_t), max);
    if (!m->table) {
        free(m);
        return NULL;
    }
    return m;
}

void ad_replay_marks_destroy(struct ad_replay_marks *m)
{
    if (!m)
        return;
    ad_entity_table_destroy(m->table);
    free(m);
}

static int64_t *through(struct ad_replay_marks *m, uint32_t id)
{
    return ad_entity_table_record(m->table, id);
}

int ad_replay_marks_raise(struct ad_replay_marks *m, const char *key, size_t len,
                          int64_t through_ms)
{
    uint32_t id = ad_entity_table_find(m->table, key, len);
    if (!id) {
        id = ad_entity_table_add(m->table, key, len);
        if (!id)
            return -1;
        *through(m, id) = through_ms;
    } else if (through_ms > *through(m, id)) {
        *through(m, id) = through_ms;
    }
    return 0;
}

bool ad_replay_marks_covers(struct ad_replay_marks *m, const char *key, size_t len, int64_t end_ms)
{
    if (!m || ad_entity_table_count(m->table) == 0)
        return false;
    uint32_t id = ad_entity_table_find(m->table, key, len);
    if (!id)
        return false;
    if (end_ms <= *through(m, id))
        return true;
    ad_entity_table_remove(m->table, id);
    return false;
}

void ad_replay_marks_expire(struct ad_replay_marks *m, int64_t end_ms)
{
    for (uint32_t id = 0; m && (id = ad_entity_table_next(m->table, id));)
        if (*through(m, id) <= end_ms)
            ad_entity_table_remove(m->table, id);
}

size_t ad_replay_marks_size(const struct ad_replay_marks *m)
{
    return m ? ad_entity_table_count(m->table) : 0;
}
