#include "base/grow.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int ad_grow(void *arrayp, size_t *cap, size_t need, size_t elem_size)
{
    if (need <= *cap)
        return 0;
    size_t grown = *cap > SIZE_MAX / 2 ? SIZE_MAX : 2 * *cap;
    if (grown < 8)
        grown = 8;
    if (grown < need)
        grown = need;
    if (elem_size && grown > SIZE_MAX / elem_size)
        return -1;
    /* arrayp points at an object pointer of any type: read and write it as bytes, which C
     * allows where a void ** would not. */
    void *array;
    memcpy(&array, arrayp, sizeof array);
    void *bigger = realloc(array, grown * elem_size);
    if (!bigger)
        return -1;
    memcpy(arrayp, &bigger, sizeof bigger);
    *cap = grown;
    return 0;
}
