#ifndef AD_GROW_H
#define AD_GROW_H

/*
 * Arrays that grow by doubling: one place that gets the arithmetic (and its overflow) right.
 *
 *     if (ad_grow(&s->items, &s->cap, s->len + 1, sizeof *s->items) < 0)
 *         return -1;
 *     s->items[s->len++] = item;
 */

#include <stddef.h>

/*
 * Makes room for at least need elements of elem_size bytes in the array whose pointer is at
 * arrayp (a pointer to any object pointer, e.g. &s->items; NULL when empty) and whose
 * capacity in elements is *cap: reallocates to max(need, 2 * *cap, 8) elements when need is
 * more than *cap. Returns 0, or -1 (out of memory, or a size past SIZE_MAX) with the array and
 * *cap unchanged.
 */
int ad_grow(void *arrayp, size_t *cap, size_t need, size_t elem_size);

#endif
