#include "windows/entity_index.h"

#include <stdlib.h>
#include <string.h>

/* One slot: the id (0 = empty) and the upper bits of its hash, so most mismatches are settled
 * without reading the key. */
struct slot {
    uint32_t id;
    uint32_t tag;
};

struct ad_entity_index {
    struct slot *slots;
    size_t mask; /* capacity - 1, a power of two */
    size_t len;
    ad_entity_key_fn key_fn;
    void *arg;
};

#define MIN_CAPACITY 1024

uint64_t ad_entity_hash(const char *key, size_t len)
{
    /* FNV-1a over 8-byte words, then a murmur-style finalizer: fast for short keys and well
     * mixed in the low bits the table uses. */
    uint64_t h = 0xcbf29ce484222325ULL ^ len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, key + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
    }
    for (; i < len; i++)
        h = (h ^ (uint8_t)key[i]) * 0x100000001b3ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

struct ad_entity_index *ad_entity_index_new(ad_entity_key_fn key_fn, void *arg)
{
    struct ad_entity_index *ix = calloc(1, sizeof *ix);
    if (!ix)
        return NULL;
    ix->slots = calloc(MIN_CAPACITY, sizeof *ix->slots);
    if (!ix->slots) {
        free(ix);
        return NULL;
    }
    ix->mask = MIN_CAPACITY - 1;
    ix->key_fn = key_fn;
    ix->arg = arg;
    return ix;
}

void ad_entity_index_destroy(struct ad_entity_index *ix)
{
    if (!ix)
        return;
    free(ix->slots);
    free(ix);
}

static uint32_t tag_of(uint64_t hash)
{
    return (uint32_t)(hash >> 32);
}

uint32_t ad_entity_index_find(const struct ad_entity_index *ix, const char *key, size_t len,
                              uint64_t hash)
{
    uint32_t tag = tag_of(hash);
    for (size_t i = hash & ix->mask;; i = (i + 1) & ix->mask) {
        const struct slot *s = &ix->slots[i];
        if (s->id == 0)
            return 0;
        if (s->tag != tag)
            continue;
        size_t klen;
        const char *k = ix->key_fn(ix->arg, s->id, &klen);
        if (klen == len && memcmp(k, key, len) == 0)
            return s->id;
    }
}

static void place(struct slot *slots, size_t mask, uint32_t id, uint32_t tag, uint64_t hash)
{
    size_t i = hash & mask;
    while (slots[i].id != 0)
        i = (i + 1) & mask;
    slots[i] = (struct slot){id, tag};
}

static int grow(struct ad_entity_index *ix)
{
    size_t cap = (ix->mask + 1) * 2;
    struct slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i <= ix->mask; i++) {
        const struct slot *s = &ix->slots[i];
        if (s->id == 0)
            continue;
        size_t len;
        const char *k = ix->key_fn(ix->arg, s->id, &len);
        place(slots, cap - 1, s->id, s->tag, ad_entity_hash(k, len));
    }
    free(ix->slots);
    ix->slots = slots;
    ix->mask = cap - 1;
    return 0;
}

int ad_entity_index_insert(struct ad_entity_index *ix, uint32_t id, uint64_t hash)
{
    /* At most half full keeps linear probes short. */
    if ((ix->len + 1) * 2 > ix->mask + 1 && grow(ix) < 0)
        return -1;
    place(ix->slots, ix->mask, id, tag_of(hash), hash);
    ix->len++;
    return 0;
}

void ad_entity_index_remove(struct ad_entity_index *ix, uint32_t id, uint64_t hash)
{
    size_t i = hash & ix->mask;
    while (ix->slots[i].id != id) {
        if (ix->slots[i].id == 0)
            return;
        i = (i + 1) & ix->mask;
    }
    /* Backward-shift: move later members of the probe run into the hole when their home slot
     * does not lie between the hole and them. */
    size_t hole = i;
    for (size_t j = (i + 1) & ix->mask; ix->slots[j].id != 0; j = (j + 1) & ix->mask) {
        size_t len;
        const char *k = ix->key_fn(ix->arg, ix->slots[j].id, &len);
        size_t home = ad_entity_hash(k, len) & ix->mask;
        if (((j - home) & ix->mask) >= ((j - hole) & ix->mask)) {
            ix->slots[hole] = ix->slots[j];
            hole = j;
        }
    }
    ix->slots[hole] = (struct slot){0, 0};
    ix->len--;
}

size_t ad_entity_index_size(const struct ad_entity_index *ix)
{
    return ix->len;
}

size_t ad_entity_index_bytes(const struct ad_entity_index *ix)
{
    return (ix->mask + 1) * sizeof(struct slot);
}
