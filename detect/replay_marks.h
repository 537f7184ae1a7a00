#ifndef AD_REPLAY_MARKS_H
#define AD_REPLAY_MARKS_H

/*
 * Per entity of one detector, the end of the newest window whose notifications every sink
 * acknowledged before a restart (or before its partition moved to this consumer): while the
 * windows are rebuilt from replayed events, the alert state machine sees them again, and what
 * it notifies for windows ending at or before the mark is not sent a second time
 * (docs/delivery.md). Only entities fed by replayed events have a mark, and a mark is
 * forgotten once the entity's windows have passed it, so the table is empty in steady state.
 * Loop thread only.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ad_replay_marks;

/* At most max entities are marked at once. Returns NULL when out of memory. */
struct ad_replay_marks *ad_replay_marks_new(size_t max);
void ad_replay_marks_destroy(struct ad_replay_marks *m); /* accepts NULL */

/* Raises key's mark to through_ms (key copied). Returns 0, or -1 when the table is full or
 * memory runs out (the entity's old notifications may then be sent again). */
int ad_replay_marks_raise(struct ad_replay_marks *m, const char *key, size_t len,
                          int64_t through_ms);

/* Whether key's window ending at end_ms was notified before: at or before its mark. A window
 * past the mark forgets it. */
bool ad_replay_marks_covers(struct ad_replay_marks *m, const char *key, size_t len, int64_t end_ms);

/* Forgets every mark at or before end_ms: the detector's windows have all passed it. */
void ad_replay_marks_expire(struct ad_replay_marks *m, int64_t end_ms);

size_t ad_replay_marks_size(const struct ad_replay_marks *m);

#endif
