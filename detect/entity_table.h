#ifndef AD_ENTITY_TABLE_H
#define AD_ENTITY_TABLE_H

/*
 * What a detector remembers per entity beyond its window (alert states, likelihood histories,
 * rebuild marks): entity key -> a record of a fixed size, at most max entities. Ids are
 * 1-based and reused once removed; records are zeroed when added. One thread owns a table.
 *
 * Records move when the table grows: keep an id, not a record pointer, across an add.
 */

#include <stddef.h>
#include <stdint.h>

struct ad_entity_table;

/* NULL when out of memory. */
struct ad_entity_table *ad_entity_table_new(size_t record_size, size_t max);
/* Frees the table, not what its records point to: free that first (ad_entity_table_next). */
void ad_entity_table_destroy(struct ad_entity_table *t);

/* The id of key, or 0. */
uint32_t ad_entity_table_find(const struct ad_entity_table *t, const char *key, size_t len);
/* Adds key (which must not be there) with a zeroed record. Returns its id, or 0 when the
 * table holds max entities or memory is short. */
uint32_t ad_entity_table_add(struct ad_entity_table *t, const char *key, size_t len);
/* Forgets id; its record's contents are the caller's to free first. */
void ad_entity_table_remove(struct ad_entity_table *t, uint32_t id);

/* The record of a live id (borrowed, valid until the next add). */
void *ad_entity_table_record(struct ad_entity_table *t, uint32_t id);
/* The key of a live id (borrowed, valid until it is removed). */
const char *ad_entity_table_key(const struct ad_entity_table *t, uint32_t id, size_t *len);

/* Iteration: the live id after `after` (0 to start), or 0 at the end. Removing the current id
 * while iterating is allowed. */
uint32_t ad_entity_table_next(const struct ad_entity_table *t, uint32_t after);

size_t ad_entity_table_count(const struct ad_entity_table *t);
size_t ad_entity_table_max(const struct ad_entity_table *t);

#endif
