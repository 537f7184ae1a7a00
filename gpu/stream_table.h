#ifndef AD_STREAM_TABLE_H
#define AD_STREAM_TABLE_H

/*
 * What the scorer knows about the states of stream models (docs/scoring.md, "Stream mode"):
 * per detector and model, a table of states by entity slot (gpu/lstm.h's ad_lstm_states, on
 * the backend) and, beside each state, whose it is (the entity's birth, batch.h) and the
 * newest bucket whose input it has read.
 *
 * To score bucket b a window needs the state after bucket b - 1. A state that has read b - 2
 * of the same entity goes on by one step (the window's input at b - 1); any other window
 * (a new entity, a slot taken over, a bucket without data in between, a new model or backend)
 * warms up from its window's T - 1 inputs, as a windowed model reads them. Either way the state
 * has then read b - 1. Every entity also warms up again once every rewarm_every buckets (the
 * model's), when (b + phase) mod rewarm_every is 0 with a phase from its key: a state never
 * runs longer than the trainer trained, a score depends on the data alone (not on when the
 * daemon started or swapped models), and the entities of a store spread their warm-ups.
 *
 * Owned by the scorer thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpu/lstm.h"
#include "windows/batch.h"

struct ad_stream_tables;
struct ad_stream_table;

struct ad_stream_tables *ad_stream_tables_new(void);
void ad_stream_tables_destroy(struct ad_stream_tables *t); /* accepts NULL */
/* Drops every table: their states are the backend's, which is about to go. */
void ad_stream_tables_clear(struct ad_stream_tables *t);

/*
 * The table of detector `detector` and model weights w (by w->id) on backend b, made empty on
 * first use. A detector keeps the tables of its two most recently used models (the serving
 * one and a candidate in shadow); a third takes the place of the least recently used. NULL
 * with err when out of memory or the backend has no stream mode.
 */
struct ad_stream_table *ad_stream_table_get(struct ad_stream_tables *t, struct ad_lstm_backend *b,
                                            size_t detector, const struct ad_lstm_weights *w,
                                            size_t rewarm_every, char *errstr, size_t errstr_size);

/* An entity's re-warm phase, in [0, rewarm_every), from its key (batch.h). */
uint64_t ad_stream_phase(const char *key, size_t len, size_t rewarm_every);

struct ad_lstm_states *ad_stream_table_states(struct ad_stream_table *table);

/*
 * Sorts windows first .. first + n - 1 of batch (which has slots) into those that step
 * (indices into step, *n_step of them) and those that warm up (into warm, *n_warm), each in
 * batch order, and makes room in the states for their slots. Returns 0, or -1 with err.
 */
int ad_stream_table_plan(struct ad_stream_table *table, const struct ad_window_batch *batch,
                         size_t first, size_t n, uint32_t *step, size_t *n_step, uint32_t *warm,
                         size_t *n_warm, char *errstr, size_t errstr_size);

/* Records that windows idx[0 .. n - 1] of batch now have states that have read bucket b - 1,
 * from a warm-up or a step. */
void ad_stream_table_advanced(struct ad_stream_table *table, const struct ad_window_batch *batch,
                              const uint32_t *idx, size_t n, bool warmed_up);

/* Forgets windows idx[0 .. n - 1]'s states (a step or warm-up that failed half way). */
void ad_stream_table_forget(struct ad_stream_table *table, const struct ad_window_batch *batch,
                            const uint32_t *idx, size_t n);

/* Tables and the bytes they hold (the states on the backend and the bookkeeping beside). */
size_t ad_stream_tables_count(const struct ad_stream_tables *t);
size_t ad_stream_tables_bytes(const struct ad_stream_tables *t);

#endif
