#include "detect/entity_table.h"

#include <stdlib.h>
#include <string.h>

#include "base/grow.h"
#include "windows/entity_index.h"

struct slot {
    char *key; /* NULL: free */
    size_t len;
    uint64_t hash;
    uint32_t next_free;
};

struct ad_entity_table {
    struct ad_entity_index *index;
    struct slot *slots; /* id − 1 */
    unsigned char *records;
    size_t used, cap, records_cap, record_size, max, live;
    uint32_t free_head; /* a freed id, 0 when none */
};

static const char *key_of(void *arg, uint32_t id, size_t *len)
{
    const struct ad_entity_table *t = arg;
    *len = t->slots[id - 1].len;
    return t->slots[id - 1].key;
}

struct ad_entity_table *ad_entity_table_new(size_t record_size, size_t max)
{
    struct ad_entity_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->record_size = record_size ? record_size : 1;
    t->max = max < UINT32_MAX ? max : UINT32_MAX - 1;
    t->index = ad_entity_index_new(key_of, t);
    if (!t->index) {
        free(t);
        return NULL;
    }
    return t;
}

void ad_entity_table_destroy(struct ad_entity_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->used; i++)
        free(t->slots[i].key);
    free(t->slots);
    free(t->records);
    ad_entity_index_destroy(t->index);
    free(t);
}

uint32_t ad_entity_table_find(const struct ad_entity_table *t, const char *key, size_t len)
{
    return ad_entity_index_find(t->index, key, len, ad_entity_hash(key, len));
}

uint32_t ad_entity_table_add(struct ad_entity_table *t, const char *key, size_t len)
{
    if (t->live >= t->max)
        return 0;
    uint32_t id = t->free_head;
    if (!id && (ad_grow(&t->slots, &t->cap, t->used + 1, sizeof *t->slots) < 0 ||
                ad_grow(&t->records, &t->records_cap, t->used + 1, t->record_size) < 0))
        return 0;
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return 0;
    memcpy(copy, key, len);
    uint64_t hash = ad_entity_hash(key, len);
    uint32_t new_id = id ? id : (uint32_t)(t->used + 1);
    struct slot *s = &t->slots[new_id - 1];
    uint32_t next_free = id ? s->next_free : 0;
    *s = (struct slot){.key = copy, .len = len, .hash = hash};
    if (ad_entity_index_insert(t->index, new_id, hash) < 0) {
        free(copy);
        *s = (struct slot){.next_free = next_free};
        return 0;
    }
    if (id)
        t->free_head = next_free;
    else
        t->used++;
    memset(t->records + (size_t)(new_id - 1) * t->record_size, 0, t->record_size);
    t->live++;
    return new_id;
}

void ad_entity_table_remove(struct ad_entity_table *t, uint32_t id)
{
    struct slot *s = &t->slots[id - 1];
    ad_entity_index_remove(t->index, id, s->hash);
    free(s->key);
    *s = (struct slot){.next_free = t->free_head};
    t->free_head = id;
    t->live--;
}

void *ad_entity_table_record(struct ad_entity_table *t, uint32_t id)
{
    return t->records + (size_t)(id - 1) * t->record_size;
}

const char *ad_entity_table_key(const struct ad_entity_table *t, uint32_t id, size_t *len)
{
    return key_of((void *)t, id, len);
}

uint32_t ad_entity_table_next(const struct ad_entity_table *t, uint32_t after)
{
    for (size_t i = after; i < t->used; i++)
        if (t->slots[i].key)
            return (uint32_t)(i + 1);
    return 0;
}

size_t ad_entity_table_count(const struct ad_entity_table *t)
{
    return t->live;
}

size_t ad_entity_table_max(const struct ad_entity_table *t)
{
    return t->max;
}
