#ifndef AD_ENTITY_INDEX_H
#define AD_ENTITY_INDEX_H

/*
 * A hash index from entity keys (byte strings) to entity ids (uint32, 1-based), for the window
 * store. Open addressing with linear probing and backward-shift deletion, so lookups stay short
 * under constant eviction (no tombstones). The index stores ids and hashes; the keys live with
 * the store, which the index reads back through key_fn to confirm a match.
 */

#include <stddef.h>
#include <stdint.h>

/* Returns the key of entity id (borrowed) and its length. */
typedef const char *(*ad_entity_key_fn)(void *arg, uint32_t id, size_t *len);

struct ad_entity_index;

struct ad_entity_index *ad_entity_index_new(ad_entity_key_fn key_fn, void *arg);
void ad_entity_index_destroy(struct ad_entity_index *ix);

uint64_t ad_entity_hash(const char *key, size_t len);

/* The id stored for key, or 0. */
uint32_t ad_entity_index_find(const struct ad_entity_index *ix, const char *key, size_t len,
                              uint64_t hash);
/* Stores id under key (which must not be there). Returns 0, or -1 when out of memory. */
int ad_entity_index_insert(struct ad_entity_index *ix, uint32_t id, uint64_t hash);
/* Removes id (stored under hash). */
void ad_entity_index_remove(struct ad_entity_index *ix, uint32_t id, uint64_t hash);

size_t ad_entity_index_size(const struct ad_entity_index *ix);
/* Bytes the index holds. */
size_t ad_entity_index_bytes(const struct ad_entity_index *ix);

#endif
