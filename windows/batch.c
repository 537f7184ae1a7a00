#include "windows/batch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/grow.h"

struct ad_batch_pool {
    pthread_mutex_t lock;
    size_t refs;   /* the maker's and one per batch out */
    bool released; /* by its maker: nobody takes spares any more */
    size_t keep;
    struct ad_window_batch **spare;
    size_t n_spare, cap_spare;
};

static void batch_destroy(struct ad_window_batch *b)
{
    free(b->detector);
    free(b->values);
    free(b->mask);
    free(b->keys);
    free(b->key_offsets);
    free(b->history);
    free(b->slots);
    free(b->born);
    free(b);
}

static void pool_destroy(struct ad_batch_pool *p)
{
    for (size_t i = 0; i < p->n_spare; i++)
        batch_destroy(p->spare[i]);
    free(p->spare);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* Drops one reference under the lock; true when it was the last. */
static bool pool_unref_locked(struct ad_batch_pool *p)
{
    return --p->refs == 0;
}

struct ad_batch_pool *ad_batch_pool_new(void)
{
    struct ad_batch_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return NULL;
    }
    p->refs = 1;
    p->keep = 1;
    return p;
}

void ad_batch_pool_release(struct ad_batch_pool *p)
{
    if (!p)
        return;
    ad_batch_pool_keep(p, 0);
    pthread_mutex_lock(&p->lock);
    p->released = true;
    bool last = pool_unref_locked(p);
    pthread_mutex_unlock(&p->lock);
    if (last)
        pool_destroy(p);
}

void ad_batch_pool_keep(struct ad_batch_pool *p, size_t keep)
{
    struct ad_window_batch *extra[8];
    size_t n_extra;
    if (!p)
        return;
    do { /* free what no longer fits, outside the lock, a few at a time */
        n_extra = 0;
        pthread_mutex_lock(&p->lock);
        p->keep = keep;
        while (p->n_spare > keep && n_extra < sizeof extra / sizeof extra[0])
            extra[n_extra++] = p->spare[--p->n_spare];
        pthread_mutex_unlock(&p->lock);
        for (size_t i = 0; i < n_extra; i++)
            batch_destroy(extra[i]);
    } while (n_extra == sizeof extra / sizeof extra[0]);
}

size_t ad_batch_pool_out(struct ad_batch_pool *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->lock);
    size_t out = p->refs - (p->released ? 0 : 1);
    pthread_mutex_unlock(&p->lock);
    return out;
}

struct ad_window_batch *ad_batch_pool_take(struct ad_batch_pool *p, size_t windows)
{
    struct ad_window_batch *b = NULL, *small = NULL;
    if (!p)
        return NULL;
    pthread_mutex_lock(&p->lock);
    /* The newest first: its pages are the likeliest to be in the caches. */
    for (size_t i = p->n_spare; i-- > 0;) {
        if (p->spare[i]->capacity >= windows) {
            b = p->spare[i];
            p->spare[i] = p->spare[--p->n_spare];
            p->refs++;
            break;
        }
    }
    if (!b && p->n_spare) /* too small for what comes now: make room for a bigger one */
        small = p->spare[--p->n_spare];
    pthread_mutex_unlock(&p->lock);
    if (small)
        batch_destroy(small);
    return b;
}

void ad_batch_pool_adopt(struct ad_batch_pool *p, struct ad_window_batch *b)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->refs++;
    pthread_mutex_unlock(&p->lock);
    b->pool = p;
}

void ad_window_batch_free(struct ad_window_batch *b)
{
    if (!b)
        return;
    struct ad_batch_pool *p = b->pool;
    if (!p) {
        batch_destroy(b);
        return;
    }
    bool kept = false;
    pthread_mutex_lock(&p->lock);
    if (p->n_spare < p->keep && !p->released &&
        ad_grow(&p->spare, &p->cap_spare, p->n_spare + 1, sizeof *p->spare) == 0) {
        p->spare[p->n_spare++] = b;
        kept = true;
    }
    bool last = pool_unref_locked(p);
    pthread_mutex_unlock(&p->lock);
    if (!kept)
        batch_destroy(b);
    if (last)
        pool_destroy(p);
}

const char *ad_window_batch_key(const struct ad_window_batch *b, size_t i, size_t *len)
{
    *len = b->key_offsets[i + 1] - b->key_offsets[i];
    return b->keys + b->key_offsets[i];
}

size_t ad_entity_key_split(const char *key, size_t len, const char **values, size_t *lens,
                           size_t max)
{
    size_t n = 0;
    const char *p = key, *end = key + len;
    for (;;) {
        const char *nul = memchr(p, '\0', (size_t)(end - p));
        const char *stop = nul ? nul : end;
        if (n < max) {
            values[n] = p;
            lens[n] = (size_t)(stop - p);
        }
        n++;
        if (!nul)
            return n;
        p = nul + 1;
    }
}
