#include "windows/window_store.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/grow.h"
#include "windows/bucket.h"
#include "windows/entity_index.h"

#define AD_LOG_MODULE "windows"
#include "base/log.h"

#define NO_BUCKET INT64_MIN

/* Per-feature aggregation state of one open bucket; what a and b hold depends on the agg. */
struct acc {
    double a; /* sum, min, max or the last value */
    double b; /* count (mean) or the event time of the last value (last) */
};

/* One open bucket of one entity: a header followed by F accumulators. Each entity has one
 * block of its own, right after it in memory, for the bucket it is filling (the usual case);
 * more open buckets (late and early events) take blocks from a pool. */
struct block {
    int64_t bucket;
    uint64_t present; /* bit f: feature f has had an observation */
    uint32_t next;    /* the entity's next open block (older bucket), or the free list */
    uint32_t unused;
};

/* Block references: 0 is none, OWN_BLOCK the entity's own block, others index the pool. */
#define OWN_BLOCK UINT32_MAX

/* Keys up to this long live in the entity record, sparing a cache miss per event. */
#define INLINE_KEY 32

/* An entity record is cache-line aligned, and the first line holds everything an event reads:
 * the lookup (hash, key) and the open-bucket link. */
struct entity {
    /* first cache line */
    uint64_t hash;
    uint32_t key_len;
    uint32_t open_head;  /* open blocks, newest bucket first: in-order events find theirs at
                            once */
    uint64_t last_touch; /* the store's add counter at the last observation (for eviction) */
    int64_t last_data;   /* newest bucket with an observation, open or closed */
    char key[INLINE_KEY];
    /* second cache line, with the start of the entity's own block */
    int64_t last_closed_data; /* newest closed bucket with an observation */
    int64_t ring_bucket;      /* newest bucket written into the ring */
    char *long_key;           /* keys longer than INLINE_KEY */
    uint16_t open_count;
    bool own_busy; /* the entity's own block holds an open bucket */
    bool alive;
    int64_t first_data; /* where its history starts: its first data, or its first after a
                           silence as long as the window */
    uint64_t born;      /* unique in the process (batch.h's born) */
    /* followed by the entity's own block */
};

#define CACHE_LINE 64

/* How many open blocks hold each bucket; few distinct buckets are open at a time. */
struct open_count {
    int64_t bucket;
    size_t count;
};

struct ad_window_store {
    char *detector;
    size_t detector_index;
    int64_t step;
    size_t T, F;
    enum ad_agg aggs[AD_WINDOW_MAX_FEATURES];
    enum ad_fill_policy fills[AD_WINDOW_MAX_FEATURES];
    int64_t lateness;
    size_t max_entities;
    int64_t idle_buckets;
    size_t max_batch;
    size_t max_open;

    ad_window_consumer_fn consumer;
    void *consumer_arg;
    struct ad_batch_pool *pool; /* buffers of batches handed back */

    /* Entity records (an entity and its own block) by id, record_size bytes apart; id 0 is
     * unused so that 0 can mean "none". */
    unsigned char *records;
    size_t record_size;
    float *ring;   /* (cap + 1) × T × F */
    uint8_t *mask; /* (cap + 1) × T × mask_bytes */
    size_t mask_bytes;
    /* Each mask byte as 8 bytes of 0 or 1, lowest bit first: a window's mask is unpacked with
     * a copy per byte instead of a shift per cell (most of a close's time otherwise). */
    uint8_t unpacked[256][8];
    size_t cap; /* ids 1..cap exist */
    size_t hwm; /* ids 1..hwm have been used */
    uint32_t *free_ids;
    size_t n_free;
    size_t live;
    size_t key_bytes; /* of keys longer than INLINE_KEY */
    uint64_t touches; /* observations added so far: the clock of last_touch */
    uint64_t rng;     /* for sampling eviction candidates */
    struct ad_entity_index *index;

    unsigned char *blocks; /* pool of block_size-byte blocks; block 0 unused */
    size_t block_size;
    size_t blocks_cap;
    size_t blocks_used; /* blocks 1..blocks_used have been handed out */
    uint32_t free_blocks;
    size_t open_blocks;
    struct open_count *open_counts; /* sorted by bucket */
    size_t n_open_counts, open_counts_cap;

    int64_t first_open; /* lowest bucket not closed; NO_BUCKET before the first close */
    int64_t closed_through;
    int64_t watermark;
    int64_t max_closed_data; /* over all entities */

    struct {
        size_t late, too_far, no_entity, evicted_idle, evicted_limit, windows, buckets;
    } counts;
    struct ad_counter *late_total, *too_far_total, *no_entity_total;
    struct ad_counter *evicted_idle_total, *evicted_limit_total, *windows_total, *buckets_total;
    struct ad_gauge *entities_gauge, *watermark_gauge, *memory_gauge;
    struct ad_histogram *close_seconds;
};

/* ---- small helpers ---- */

static size_t slot_of(const struct ad_window_store *s, int64_t bucket)
{
    int64_t m = bucket % (int64_t)s->T;
    return (size_t)(m < 0 ? m + (int64_t)s->T : m);
}

static float *ring_of(const struct ad_window_store *s, uint32_t id)
{
    return s->ring + (size_t)id * s->T * s->F;
}

static uint8_t *mask_of(const struct ad_window_store *s, uint32_t id)
{
    return s->mask + (size_t)id * s->T * s->mask_bytes;
}

/* Process-wide, so that an entity of a store rebuilt after a reload never passes for one of
 * the store before it in the same slot (a scorer keeps stream states across rebuilds). */
static uint64_t next_birth(void)
{
    static atomic_uint_fast64_t births = 1;
    return atomic_fetch_add(&births, 1);
}

static struct entity *entity_at(const struct ad_window_store *s, uint32_t id)
{
    return (struct entity *)(s->records + (size_t)id * s->record_size);
}

static const char *key_of(const struct entity *e)
{
    return e->key_len > INLINE_KEY ? e->long_key : e->key;
}

/* The block ref of entity e refers to. */
static struct block *block_at(const struct ad_window_store *s, struct entity *e, uint32_t ref)
{
    if (ref == OWN_BLOCK)
        return (struct block *)(e + 1);
    return (struct block *)(s->blocks + (size_t)ref * s->block_size);
}

static struct acc *accs_of(struct block *b)
{
    return (struct acc *)(b + 1);
}

/* ---- open bucket bookkeeping ---- */

static void open_count_add(struct ad_window_store *s, int64_t bucket, int delta)
{
    size_t i = 0;
    while (i < s->n_open_counts && s->open_counts[i].bucket < bucket)
        i++;
    if (i < s->n_open_counts && s->open_counts[i].bucket == bucket) {
        s->open_counts[i].count += (size_t)delta;
        if (s->open_counts[i].count == 0) {
            memmove(&s->open_counts[i], &s->open_counts[i + 1],
                    (s->n_open_counts - i - 1) * sizeof *s->open_counts);
            s->n_open_counts--;
        }
        return;
    }
    if (delta < 0)
        return;
    if (ad_grow(&s->open_counts, &s->open_counts_cap, s->n_open_counts + 1,
                sizeof *s->open_counts) < 0)
        return; /* only the skip over empty buckets relies on it; closing stays correct */
    memmove(&s->open_counts[i + 1], &s->open_counts[i],
            (s->n_open_counts - i) * sizeof *s->open_counts);
    s->open_counts[i] = (struct open_count){bucket, (size_t)delta};
    s->n_open_counts++;
}

static int64_t min_open_bucket(const struct ad_window_store *s)
{
    return s->n_open_counts ? s->open_counts[0].bucket : INT64_MAX;
}

static uint32_t block_alloc(struct ad_window_store *s)
{
    if (s->free_blocks) {
        uint32_t i = s->free_blocks;
        s->free_blocks = ((struct block *)(s->blocks + (size_t)i * s->block_size))->next;
        return i;
    }
    /* Block ids are 32-bit, and block 0 is never handed out. */
    if (s->blocks_used + 2 > UINT32_MAX ||
        ad_grow(&s->blocks, &s->blocks_cap, s->blocks_used + 2, s->block_size) < 0)
        return 0;
    return (uint32_t)++s->blocks_used;
}

static void block_free(struct ad_window_store *s, struct entity *e, uint32_t ref)
{
    if (ref == OWN_BLOCK) {
        e->own_busy = false;
        return;
    }
    ((struct block *)(s->blocks + (size_t)ref * s->block_size))->next = s->free_blocks;
    s->free_blocks = ref;
}

/* ---- entities ---- */

static const char *entity_key(void *arg, uint32_t id, size_t *len)
{
    const struct entity *e = entity_at(arg, id);
    *len = e->key_len;
    return key_of(e);
}

static void evict(struct ad_window_store *s, uint32_t id)
{
    struct entity *e = entity_at(s, id);
    for (uint32_t ref = e->open_head; ref;) {
        struct block *blk = block_at(s, e, ref);
        uint32_t next = blk->next;
        open_count_add(s, blk->bucket, -1);
        s->open_blocks--;
        block_free(s, e, ref);
        ref = next;
    }
    ad_entity_index_remove(s->index, id, e->hash);
    if (e->key_len > INLINE_KEY)
        s->key_bytes -= e->key_len;
    free(e->long_key);
    memset(e, 0, sizeof *e);
    s->free_ids[s->n_free++] = id;
    s->live--;
}

/* The least recently seen of a few live entities picked at random, as Redis approximates LRU:
 * exact recency order would cost every event two cache misses on its list neighbours. */
static uint32_t eviction_candidate(struct ad_window_store *s)
{
    uint32_t best = 0;
    uint64_t oldest = UINT64_MAX;
    for (int tries = 0, found = 0; found < 16 && tries < 256; tries++) {
        s->rng ^= s->rng << 13;
        s->rng ^= s->rng >> 7;
        s->rng ^= s->rng << 17;
        uint32_t id = (uint32_t)(s->rng % s->hwm) + 1;
        struct entity *e = entity_at(s, id);
        if (!e->alive)
            continue;
        found++;
        if (e->last_touch < oldest) {
            oldest = e->last_touch;
            best = id;
        }
    }
    return best;
}

/* Random access over large arrays is TLB-bound on 4 KiB pages; huge pages are a hint only. */
static void advise_huge_pages(void *p, size_t len)
{
#ifdef MADV_HUGEPAGE
    uintptr_t start = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
    uintptr_t end = ((uintptr_t)p + len) & ~(uintptr_t)4095;
    if (end > start)
        madvise((void *)start, end - start, MADV_HUGEPAGE);
#else
    (void)p;
    (void)len;
#endif
}

/* Makes room for ids up to want (doubling), with their rings, masks and free-id slots. */
static int grow_entities(struct ad_window_store *s, size_t want)
{
    size_t cap = s->cap ? s->cap : 256;
    while (cap < want)
        cap *= 2;
    if (cap > s->max_entities)
        cap = s->max_entities;
    /* Aligned records, copied over (realloc keeps no alignment). */
    unsigned char *records = NULL;
    if (posix_memalign((void **)&records, CACHE_LINE, (cap + 1) * s->record_size) != 0)
        return -1;
    if (s->records)
        memcpy(records, s->records, (s->cap + 1) * s->record_size);
    free(s->records);
    s->records = records;
    advise_huge_pages(records, (cap + 1) * s->record_size);
    float *ring = realloc(s->ring, (cap + 1) * s->T * s->F * sizeof *ring);
    if (!ring)
        return -1;
    s->ring = ring;
    uint8_t *mask = realloc(s->mask, (cap + 1) * s->T * s->mask_bytes);
    if (!mask)
        return -1;
    s->mask = mask;
    uint32_t *free_ids = realloc(s->free_ids, (cap + 1) * sizeof *free_ids);
    if (!free_ids)
        return -1;
    s->free_ids = free_ids;
    memset(s->records + (s->cap + 1) * s->record_size, 0, (cap - s->cap) * s->record_size);
    s->cap = cap;
    return 0;
}

static uint32_t entity_create(struct ad_window_store *s, const char *key, size_t len, uint64_t hash)
{
    if (s->live == s->max_entities) {
        uint32_t victim = eviction_candidate(s);
        if (victim) {
            evict(s, victim);
            s->counts.evicted_limit++;
            ad_counter_inc(s->evicted_limit_total);
        }
    }
    uint32_t id;
    if (s->n_free) {
        id = s->free_ids[--s->n_free];
    } else {
        if (s->hwm == s->cap && grow_entities(s, s->hwm + 1) < 0)
            return 0;
        id = (uint32_t)++s->hwm;
    }
    struct entity *e = entity_at(s, id);
    memset(e, 0, sizeof *e);
    if (len > INLINE_KEY) {
        e->long_key = malloc(len);
        if (!e->long_key)
            goto fail;
        memcpy(e->long_key, key, len);
        s->key_bytes += len;
    } else {
        memcpy(e->key, key, len);
    }
    e->key_len = (uint32_t)len;
    if (ad_entity_index_insert(s->index, id, hash) < 0) {
        if (len > INLINE_KEY)
            s->key_bytes -= len;
        free(e->long_key);
        e->long_key = NULL;
        goto fail;
    }
    e->hash = hash;
    e->last_data = e->last_closed_data = e->ring_bucket = NO_BUCKET;
    e->alive = true;
    e->born = next_birth();
    memset(ring_of(s, id), 0, s->T * s->F * sizeof(float));
    memset(mask_of(s, id), 0, s->T * s->mask_bytes);
    s->live++;
    return id;
fail:
    s->free_ids[s->n_free++] = id;
    return 0;
}

/* ---- adding ---- */

/* The entity's open block for bucket, opened if needed; NULL when it may hold no more. */
static struct block *open_block_for(struct ad_window_store *s, struct entity *e, int64_t bucket)
{
    uint32_t *link = &e->open_head;
    while (*link && block_at(s, e, *link)->bucket > bucket)
        link = &block_at(s, e, *link)->next;
    if (*link && block_at(s, e, *link)->bucket == bucket)
        return block_at(s, e, *link);
    if (e->open_count >= s->max_open)
        return NULL;
    uint32_t ref = OWN_BLOCK;
    if (e->own_busy) {
        /* The pool may move as it grows; e lives elsewhere, so links into e stay valid, but
         * a link inside a pool block does not: find it again afterwards. */
        ref = block_alloc(s);
        if (!ref)
            return NULL;
        link = &e->open_head;
        while (*link && block_at(s, e, *link)->bucket > bucket)
            link = &block_at(s, e, *link)->next;
    } else {
        e->own_busy = true;
    }
    struct block *blk = block_at(s, e, ref);
    blk->bucket = bucket;
    blk->present = 0;
    blk->next = *link;
    *link = ref;
    e->open_count++;
    s->open_blocks++;
    open_count_add(s, bucket, 1);
    return blk;
}

static void aggregate(enum ad_agg agg, struct acc *acc, bool seen, double v, int64_t t)
{
    switch (agg) {
    case AD_AGG_SUM:
        acc->a = seen ? acc->a + v : v;
        break;
    case AD_AGG_MEAN:
        acc->a = seen ? acc->a + v : v;
        acc->b = seen ? acc->b + 1 : 1;
        break;
    case AD_AGG_MIN:
        if (!seen || v < acc->a)
            acc->a = v;
        break;
    case AD_AGG_MAX:
        if (!seen || v > acc->a)
            acc->a = v;
        break;
    case AD_AGG_LAST:
        /* Latest by event time; of two at the same time, the one that arrived later. */
        if (!seen || (double)t >= acc->b) {
            acc->a = v;
            acc->b = (double)t;
        }
        break;
    }
}

enum ad_window_add ad_window_store_add(struct ad_window_store *s, const char *key, size_t len,
                                       int64_t t, const double *values, uint64_t present)
{
    int64_t bucket = ad_bucket_index(t, s->step);
    if (s->first_open != NO_BUCKET && bucket < s->first_open) {
        s->counts.late++;
        ad_counter_inc(s->late_total);
        return AD_WINDOW_LATE;
    }
    uint64_t hash = ad_entity_hash(key, len);
    uint32_t id = ad_entity_index_find(s->index, key, len, hash);
    if (!id) {
        id = entity_create(s, key, len, hash);
        if (!id) {
            s->counts.no_entity++;
            ad_counter_inc(s->no_entity_total);
            return AD_WINDOW_NO_ENTITY;
        }
        ad_gauge_set(s->entities_gauge, (double)s->live);
    }
    struct entity *e = entity_at(s, id);
    e->last_touch = ++s->touches;
    struct block *blk = open_block_for(s, e, bucket);
    if (!blk) {
        s->counts.too_far++;
        ad_counter_inc(s->too_far_total);
        return AD_WINDOW_TOO_FAR;
    }
    struct acc *accs = accs_of(blk);
    for (uint64_t bits = present; bits; bits &= bits - 1) {
        int f = __builtin_ctzll(bits);
        aggregate(s->aggs[f], &accs[f], (blk->present >> f) & 1, values[f], t);
    }
    blk->present |= present;
    if (bucket > e->last_data)
        e->last_data = bucket;
    return AD_WINDOW_ADDED;
}

/* ---- closing ---- */

static double finalize(enum ad_agg agg, const struct acc *acc)
{
    return agg == AD_AGG_MEAN ? acc->a / acc->b : acc->a;
}

static float fill_value(enum ad_fill_policy policy, float previous)
{
    switch (policy) {
    case AD_FILL_CARRY:
        return previous;
    case AD_FILL_NAN:
        return NAN;
    default:
        return 0.0f;
    }
}

/* Writes fills into the ring for every bucket after the entity's last written one up to
 * target. Older buckets than target - T + 1 would be overwritten at once, so they are not
 * written at all. */
static void fill_through(struct ad_window_store *s, uint32_t id, int64_t target)
{
    struct entity *e = entity_at(s, id);
    if (e->ring_bucket == NO_BUCKET) {
        /* Before its first data an entity's ring is zeros with mask 0, whatever the policy. */
        e->ring_bucket = target;
        return;
    }
    if (e->ring_bucket >= target)
        return;
    float *ring = ring_of(s, id);
    uint8_t *mask = mask_of(s, id);
    float previous[AD_WINDOW_MAX_FEATURES];
    int64_t from = target - (int64_t)s->T + 1;
    memcpy(previous, ring + slot_of(s, e->ring_bucket) * s->F, s->F * sizeof(float));
    if (e->ring_bucket + 1 > from)
        from = e->ring_bucket + 1;
    for (int64_t k = from; k <= target; k++) {
        size_t slot = slot_of(s, k);
        for (size_t f = 0; f < s->F; f++)
            ring[slot * s->F + f] = fill_value(s->fills[f], previous[f]);
        memset(mask + slot * s->mask_bytes, 0, s->mask_bytes);
    }
    e->ring_bucket = target;
}

/* The link to the entity's oldest open block (the last in its list), or NULL. */
static uint32_t *oldest_link(const struct ad_window_store *s, struct entity *e)
{
    if (!e->open_head)
        return NULL;
    uint32_t *link = &e->open_head;
    while (block_at(s, e, *link)->next)
        link = &block_at(s, e, *link)->next;
    return link;
}

/* Writes the block at link (the oldest: its bucket is closing) into the ring and frees it. */
static void materialize(struct ad_window_store *s, uint32_t id, uint32_t *link)
{
    struct entity *e = entity_at(s, id);
    uint32_t ref = *link;
    struct block *blk = block_at(s, e, ref);
    int64_t bucket = blk->bucket;
    fill_through(s, id, bucket - 1);
    float *ring = ring_of(s, id);
    uint8_t *mask = mask_of(s, id);
    size_t slot = slot_of(s, bucket), prev_slot = slot_of(s, bucket - 1);
    bool has_previous = e->ring_bucket != NO_BUCKET;
    struct acc *accs = accs_of(blk);
    for (size_t f = 0; f < s->F; f++) {
        float *cell = &ring[slot * s->F + f];
        if ((blk->present >> f) & 1) {
            *cell = (float)finalize(s->aggs[f], &accs[f]);
            mask[slot * s->mask_bytes + f / 8] |= (uint8_t)(1u << (f % 8));
        } else {
            float previous = has_previous ? ring[prev_slot * s->F + f] : 0.0f;
            *cell = fill_value(s->fills[f], previous);
            mask[slot * s->mask_bytes + f / 8] &= (uint8_t) ~(1u << (f % 8));
        }
    }
    e->ring_bucket = bucket;
    /* A history starts with the first data, or again after a silence so long that the window
     * ending here holds nothing observed before this bucket: nothing in it is history. */
    if (e->last_closed_data == NO_BUCKET || e->last_closed_data < bucket - (int64_t)s->T + 1)
        e->first_data = bucket;
    e->last_closed_data = bucket;
    if (bucket > s->max_closed_data)
        s->max_closed_data = bucket;
    *link = 0; /* it was the last */
    e->open_count--;
    s->open_blocks--;
    open_count_add(s, bucket, -1);
    block_free(s, e, ref);
}

struct batch_builder {
    struct ad_window_batch *batch;
    double closed_at;
    size_t handed_on; /* batches of this bucket so far */
};

/* A batch with room for n windows: one handed back if the pool has it, else a new one. */
static struct ad_window_batch *batch_new(struct ad_window_store *s, int64_t bucket, size_t n)
{
    struct ad_window_batch *b = ad_batch_pool_take(s->pool, n);
    if (!b) {
        size_t cells = n * s->T * s->F;
        b = calloc(1, sizeof *b);
        if (!b)
            return NULL;
        b->detector = strdup(s->detector);
        b->values = malloc(cells * sizeof(float));
        b->mask = malloc(cells);
        b->key_offsets = malloc((n + 1) * sizeof(size_t));
        b->history = malloc(n * sizeof(uint32_t));
        b->slots = malloc(n * sizeof(uint32_t));
        b->born = malloc(n * sizeof(uint64_t));
        b->keys = malloc(64);
        b->capacity = n;
        b->keys_capacity = 64;
        if (!b->detector || !b->values || !b->mask || !b->key_offsets || !b->history || !b->slots ||
            !b->born || !b->keys) {
            ad_window_batch_free(b);
            return NULL;
        }
        ad_batch_pool_adopt(s->pool, b);
    }
    b->detector_index = s->detector_index;
    b->bucket_start = bucket * s->step;
    b->step = s->step;
    b->n_windows = 0;
    b->window_len = s->T;
    b->n_features = s->F;
    b->last_of_bucket = false;
    b->skipped_no_data = 0;
    b->key_offsets[0] = 0;
    return b;
}

static int batch_append(struct ad_window_store *s, struct batch_builder *bb, uint32_t id,
                        int64_t bucket)
{
    struct ad_window_batch *b = bb->batch;
    struct entity *e = entity_at(s, id);
    size_t i = b->n_windows;
    size_t used = b->key_offsets[i];
    if (ad_grow(&b->keys, &b->keys_capacity, used + e->key_len, 1) < 0)
        return -1;
    memcpy(b->keys + used, key_of(e), e->key_len);
    b->key_offsets[i + 1] = used + e->key_len;
    int64_t history = bucket - e->first_data + 1;
    b->history[i] = history > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)history;
    b->slots[i] = id - 1;
    b->born[i] = e->born;

    /* The window is buckets bucket-T+1 .. bucket, oldest first: the ring from the slot after
     * the newest, wrapping around. */
    size_t first = slot_of(s, bucket + 1), row = s->F;
    const float *ring = ring_of(s, id);
    const uint8_t *mask = mask_of(s, id);
    float *out = b->values + i * s->T * row;
    uint8_t *out_mask = b->mask + i * s->T * row;
    memcpy(out, ring + first * row, (s->T - first) * row * sizeof(float));
    memcpy(out + (s->T - first) * row, ring, first * row * sizeof(float));
    for (size_t k = 0, slot = first; k < s->T; k++) {
        const uint8_t *bits = mask + slot * s->mask_bytes;
        for (size_t j = 0, f = 0; f < s->F; j++, f += 8)
            memcpy(out_mask + k * row + f, s->unpacked[bits[j]], s->F - f < 8 ? s->F - f : 8);
        slot = slot + 1 == s->T ? 0 : slot + 1;
    }
    b->n_windows++;
    return 0;
}

/* Hands on the batch being built; the last of a bucket carries the count of the windows left
 * out (skipped), and is handed on for them alone if it holds no window. */
static void hand_on(struct ad_window_store *s, struct batch_builder *bb, bool last, int64_t bucket,
                    size_t skipped)
{
    struct ad_window_batch *b = bb->batch;
    bb->batch = NULL;
    if (!b && last && skipped)
        b = batch_new(s, bucket, 1);
    if (!b)
        return;
    if (b->n_windows == 0 && !(last && skipped)) {
        ad_window_batch_free(b);
        return;
    }
    b->last_of_bucket = last;
    b->skipped_no_data = last ? skipped : 0;
    b->closed_at = bb->closed_at;
    bb->handed_on++;
    s->counts.windows += b->n_windows + b->skipped_no_data;
    ad_counter_add(s->windows_total, (double)(b->n_windows + b->skipped_no_data));
    s->consumer(s->consumer_arg, b);
}

static void close_bucket(struct ad_window_store *s, int64_t bucket)
{
    /* Taken before any window is assembled, so the alerts' delivery latency counts the
     * assembly too. */
    struct batch_builder bb = {NULL, ad_clock_mono_seconds(), 0};
    int64_t window_start = bucket - (int64_t)s->T + 1;
    int64_t idle_before = bucket - s->idle_buckets;
    size_t skipped = 0;

    for (uint32_t id = 1; id <= s->hwm; id++) {
        struct entity *e = entity_at(s, id);
        if (!e->alive)
            continue;
        uint32_t *oldest = oldest_link(s, e);
        if (oldest && block_at(s, e, *oldest)->bucket == bucket)
            materialize(s, id, oldest);
        if (e->last_closed_data != NO_BUCKET && e->last_closed_data >= window_start &&
            e->last_closed_data < bucket) {
            /* No data in its newest bucket: the window would be scored on nothing. After a
             * flood of entities seen once, these are most windows of T buckets; they are
             * counted, not assembled (the ring is filled when data comes). */
            skipped++;
        } else if (e->last_closed_data != NO_BUCKET && e->last_closed_data >= window_start) {
            fill_through(s, id, bucket);
            /* A full batch goes once another window comes, so that the last one handed on
             * for the bucket is always the one marked last. */
            if (bb.batch && bb.batch->n_windows == s->max_batch)
                hand_on(s, &bb, false, bucket, 0);
            if (!bb.batch) /* at most every live entity has a window */
                bb.batch = batch_new(s, bucket, s->live < s->max_batch ? s->live : s->max_batch);
            if (!bb.batch || batch_append(s, &bb, id, bucket) < 0) {
                AD_ERROR_KV("out of memory assembling windows; dropping them",
                            AD_KV_STR("detector", s->detector));
                continue;
            }
        } else if (e->open_head == 0 && (e->last_data == NO_BUCKET || e->last_data < idle_before)) {
            evict(s, id);
            s->counts.evicted_idle++;
            ad_counter_inc(s->evicted_idle_total);
        }
    }
    hand_on(s, &bb, true, bucket, skipped);
    /* The next bucket needs as many, and while the scorer is behind, the next buckets close
     * before these come back: keep what is out now when it comes back. */
    if (bb.handed_on) {
        size_t out = ad_batch_pool_out(s->pool);
        ad_batch_pool_keep(s->pool, out > bb.handed_on ? out : bb.handed_on);
    }
    s->counts.buckets++;
    ad_counter_inc(s->buckets_total);
}

void ad_window_store_set_max_batch(struct ad_window_store *s, size_t max_batch)
{
    if (max_batch > 0)
        s->max_batch = max_batch;
}

int64_t ad_window_store_advance(struct ad_window_store *s, int64_t watermark)
{
    if (watermark == INT64_MIN || watermark <= s->watermark)
        return s->closed_through;
    s->watermark = watermark;
    ad_gauge_set(s->watermark_gauge, (double)watermark / 1000.0);

    /* Bucket b may close once (b + 1) * step + lateness <= watermark. */
    int64_t last = ad_bucket_index(watermark - s->lateness, s->step) - 1;
    int64_t b = s->first_open;
    if (b != NO_BUCKET && b > last)
        return s->closed_through;
    if (b == NO_BUCKET) {
        /* Nothing closed yet: start at the oldest data, or just after the last closable. */
        b = min_open_bucket(s);
        if (b > last + 1)
            b = last + 1;
    }

    double started = ad_clock_mono_seconds();
    while (b <= last) {
        /* Buckets without data, after every entity's window has run out, hand on nothing:
         * jump to the next bucket that has data. */
        bool windows_left =
            s->max_closed_data != NO_BUCKET && b <= s->max_closed_data + (int64_t)s->T - 1;
        int64_t next_data = min_open_bucket(s);
        if (!windows_left && next_data > b) {
            b = next_data < last + 1 ? next_data : last + 1;
            continue;
        }
        close_bucket(s, b);
        b++;
    }
    s->first_open = last + 1;
    s->closed_through = last;
    ad_gauge_set(s->entities_gauge, (double)s->live);
    ad_gauge_set(s->memory_gauge, (double)ad_window_store_bytes(s));
    ad_histogram_observe(s->close_seconds, ad_clock_mono_seconds() - started);
    return s->closed_through;
}

/* ---- construction ---- */

static void register_metrics(struct ad_window_store *s, struct ad_metrics *m)
{
    const char *d = s->detector;
    if (!m)
        return;
    s->late_total = ad_metrics_counter(m, "anomalyd_window_events_late_total",
                                       "Observations for buckets that had already closed.",
                                       "detector", d, NULL);
    static const char refused_help[] = "Observations refused by the window store.";
    s->too_far_total = ad_metrics_counter(m, "anomalyd_window_events_refused_total", refused_help,
                                          "detector", d, "reason", "too_far", NULL);
    s->no_entity_total = ad_metrics_counter(m, "anomalyd_window_events_refused_total", refused_help,
                                            "detector", d, "reason", "no_memory", NULL);
    static const char evicted_help[] = "Entities evicted from the window store.";
    s->evicted_idle_total = ad_metrics_counter(m, "anomalyd_window_entity_evictions_total",
                                               evicted_help, "detector", d, "reason", "idle", NULL);
    s->evicted_limit_total =
        ad_metrics_counter(m, "anomalyd_window_entity_evictions_total", evicted_help, "detector", d,
                           "reason", "limit", NULL);
    s->windows_total = ad_metrics_counter(
        m, "anomalyd_windows_closed_total",
        "Windows closed: handed on for scoring, or left out with no data in their newest bucket.",
        "detector", d, NULL);
    s->buckets_total = ad_metrics_counter(m, "anomalyd_window_buckets_closed_total",
                                          "Buckets closed.", "detector", d, NULL);
    s->entities_gauge = ad_metrics_gauge(m, "anomalyd_window_entities",
                                         "Entities held by the window store.", "detector", d, NULL);
    s->watermark_gauge = ad_metrics_gauge(m, "anomalyd_window_watermark_seconds",
                                          "The detector's event-time watermark, in Unix seconds.",
                                          "detector", d, NULL);
    s->memory_gauge = ad_metrics_gauge(m, "anomalyd_window_memory_bytes",
                                       "Memory held by the window store.", "detector", d, NULL);
    s->close_seconds = ad_metrics_histogram(
        m, "anomalyd_window_close_duration_seconds",
        "Time to close the buckets a watermark passed and hand on their windows.",
        ad_metrics_seconds_buckets, ad_metrics_seconds_buckets_len, "detector", d, NULL);
}

struct ad_window_store *ad_window_store_new(const struct ad_window_spec *spec,
                                            struct ad_metrics *metrics,
                                            ad_window_consumer_fn consumer, void *consumer_arg,
                                            char *errstr, size_t errstr_size)
{
    struct ad_window_store *s = NULL;

    if (spec->step <= 0 || spec->window_len == 0 || spec->n_features == 0 ||
        spec->n_features > AD_WINDOW_MAX_FEATURES || spec->max_entities == 0 ||
        spec->max_entities >= UINT32_MAX || spec->max_batch == 0 || !consumer) {
        ad_errstr_set(errstr, errstr_size, "invalid window spec for detector %s", spec->detector);
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->detector = strdup(spec->detector);
    s->detector_index = spec->detector_index;
    s->step = spec->step;
    s->T = spec->window_len;
    s->F = spec->n_features;
    memcpy(s->aggs, spec->aggs, s->F * sizeof *s->aggs);
    memcpy(s->fills, spec->fills, s->F * sizeof *s->fills);
    s->lateness = spec->allowed_lateness;
    s->max_entities = spec->max_entities;
    s->idle_buckets = (spec->entity_idle_timeout + spec->step - 1) / spec->step;
    s->max_batch = spec->max_batch;
    /* The lateness plus the bucket being filled, with room for sources a few buckets apart. */
    s->max_open = spec->max_open_buckets
                      ? spec->max_open_buckets
                      : (size_t)((spec->allowed_lateness + spec->step - 1) / spec->step) + 16;
    if (s->max_open > UINT16_MAX)
        s->max_open = UINT16_MAX;
    s->consumer = consumer;
    s->consumer_arg = consumer_arg;
    s->mask_bytes = (s->F + 7) / 8;
    for (size_t v = 0; v < 256; v++)
        for (size_t bit = 0; bit < 8; bit++)
            s->unpacked[v][bit] = (uint8_t)((v >> bit) & 1);
    s->block_size = sizeof(struct block) + s->F * sizeof(struct acc);
    s->record_size =
        (sizeof(struct entity) + s->block_size + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    s->rng = 0x9e3779b97f4a7c15ULL;
    s->first_open = NO_BUCKET;
    s->closed_through = NO_BUCKET;
    s->watermark = INT64_MIN;
    s->max_closed_data = NO_BUCKET;
    s->pool = ad_batch_pool_new();
    if (!s->detector || !s->pool)
        goto oom;
    s->index = ad_entity_index_new(entity_key, s);
    if (!s->index || grow_entities(s, 1) < 0)
        goto oom;
    register_metrics(s, metrics);
    return s;

oom:
    ad_errstr_set(errstr, errstr_size, "out of memory creating the window store of %s",
                  spec->detector);
    ad_window_store_destroy(s);
    return NULL;
}

void ad_window_store_destroy(struct ad_window_store *s)
{
    if (!s)
        return;
    for (size_t id = 1; id <= s->hwm; id++)
        free(entity_at(s, (uint32_t)id)->long_key);
    ad_entity_index_destroy(s->index);
    free(s->records);
    free(s->ring);
    free(s->mask);
    free(s->free_ids);
    free(s->blocks);
    free(s->open_counts);
    free(s->detector);
    ad_batch_pool_release(s->pool); /* batches still out keep it until they come back */
    free(s);
}

int64_t ad_window_store_closed_through(const struct ad_window_store *s)
{
    return s->closed_through;
}

int64_t ad_window_store_oldest_open(const struct ad_window_store *s)
{
    return min_open_bucket(s);
}

size_t ad_window_store_max_open(const struct ad_window_store *s)
{
    return s->max_open;
}

size_t ad_window_store_entities(const struct ad_window_store *s)
{
    return s->live;
}

size_t ad_window_store_bytes(const struct ad_window_store *s)
{
    size_t per_id =
        s->record_size + s->T * s->F * sizeof(float) + s->T * s->mask_bytes + sizeof(uint32_t);
    return (s->cap + 1) * per_id + s->key_bytes + ad_entity_index_bytes(s->index) +
           s->blocks_cap * s->block_size + s->open_counts_cap * sizeof(struct open_count);
}

void ad_window_store_status(const struct ad_window_store *s, json_t *out)
{
    json_object_set_new(out, "entities", json_integer((json_int_t)s->live));
    json_object_set_new(out, "max_entities", json_integer((json_int_t)s->max_entities));
    json_object_set_new(out, "open_buckets", json_integer((json_int_t)s->n_open_counts));
    json_object_set_new(out, "memory_bytes", json_integer((json_int_t)ad_window_store_bytes(s)));
    json_object_set_new(out, "closed_through",
                        s->closed_through == NO_BUCKET
                            ? json_null()
                            : json_integer((json_int_t)(s->closed_through * s->step)));
    json_object_set_new(out, "windows_handed_on", json_integer((json_int_t)s->counts.windows));
    json_object_set_new(out, "buckets_closed", json_integer((json_int_t)s->counts.buckets));
    json_object_set_new(out, "late", json_integer((json_int_t)s->counts.late));
    json_object_set_new(out, "refused_too_far", json_integer((json_int_t)s->counts.too_far));
    json_object_set_new(out, "evicted_idle", json_integer((json_int_t)s->counts.evicted_idle));
    json_object_set_new(out, "evicted_limit", json_integer((json_int_t)s->counts.evicted_limit));
}
