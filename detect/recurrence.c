#include "detect/recurrence.h"

#include <string.h>

#define DAY_MS 86400000LL

void ad_recurrence_init(struct ad_recurrence *r)
{
    memset(r, 0, sizeof *r);
    r->day = INT64_MIN;
}

/* Moves the days on to `day`: each slot's bits shift by the days that passed, and a slot
 * whose last anomalous day left the look-back forgets its level. */
static void advance(struct ad_recurrence *r, int64_t day, size_t slots)
{
    if (r->day == INT64_MIN || day - r->day > 8) {
        memset(r->days, 0, sizeof r->days);
        memset(r->level, 0, sizeof r->level);
    } else if (day > r->day) {
        unsigned shift = (unsigned)(day - r->day);
        for (size_t s = 0; s < slots; s++) {
            r->days[s] = (uint8_t)(r->days[s] << shift);
            if (!(r->days[s] & ((1u << (AD_RECURRENCE_DAYS + 1)) - 1)))
                r->level[s] = 0;
        }
    }
    if (day > r->day || r->day == INT64_MIN)
        r->day = day;
}

bool ad_recurrence_seen(struct ad_recurrence *r, int64_t step_ms, int64_t bucket_ms,
                        double surprise)
{
    size_t slots = ad_seasonal_slots(step_ms);
    int64_t of_day = ((bucket_ms % DAY_MS) + DAY_MS) % DAY_MS;
    int64_t day = (bucket_ms - of_day) / DAY_MS;
    size_t slot = (size_t)(of_day * (int64_t)slots / DAY_MS);
    advance(r, day, slots);
    if (day < r->day)
        return false; /* out of order: nothing to compare with */

    /* The days before today on which this slot or a neighbour had a surprise this big. */
    uint8_t before = 0, mask = (uint8_t)(((1u << AD_RECURRENCE_DAYS) - 1) << 1);
    for (int d = -1; d <= 1; d++) {
        if (slots < 3 && d != 0)
            continue; /* one or two slots a day: the neighbours are the slot itself */
        size_t s = (size_t)(((long)slot + d + (long)slots) % (long)slots);
        if (r->level[s] >= AD_RECURRENCE_SHARE * surprise)
            before |= r->days[s] & mask;
    }
    int days = __builtin_popcount(before);

    r->days[slot] |= 1;
    if (surprise > r->level[slot])
        r->level[slot] = (float)surprise;
    return days >= AD_RECURRENCE_NEED;
}
