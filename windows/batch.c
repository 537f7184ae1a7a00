#include "batch.h"

#include <stdlib.h>
#include <string.h>

void ad_window_batch_free(struct ad_window_batch *b)
{
    if (!b)
        return;
    free(b->detector);
    free(b->values);
    free(b->mask);
    free(b->keys);
    free(b->key_offsets);
    free(b);
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
