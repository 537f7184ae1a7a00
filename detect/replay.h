#ifndef AD_REPLAY_H
#define AD_REPLAY_H

/*
 * The offline replay (docs/replay.md): log events (JSON lines, as a Kafka source reads them)
 * or per-bucket feature rows (CSV) from files, through the same extraction rules, window
 * stores, scoring, likelihoods and alert state machine as the daemon, with the events' own
 * times as the only clock. Every alert goes to the output as one JSON document per line; a
 * summary goes to the log at the end.
 *
 * The grid moves to the newest event time read (the watermark of a single partition), one
 * event at a time, and every bucket still open is closed at the end of the input. Windows
 * are scored on the CPU backend, one batch at a time, before the next event is read, so the
 * output depends on the input alone: two replays of the same files write the same bytes.
 */

#include <stddef.h>
#include <stdio.h>

#include "config/config.h"

struct ad_replay_options {
    const struct ad_config *config; /* borrowed */
    const char *const *inputs;      /* paths, read in this order as one stream; "-": stdin */
    size_t n_inputs;
    const char *detector;  /* NULL: every detector the input feeds */
    const char *source;    /* JSON lines: the Kafka source; NULL: the config's first */
    const char *model_dir; /* a model version's folder; NULL: each detector's CURRENT */
    FILE *out;             /* the alerts */
    FILE *scores;          /* every scored window, one JSON object per line; NULL: none */
};

/* The process exit statuses of cli.h, by design. */
enum ad_replay_status {
    AD_REPLAY_OK = 0,
    AD_REPLAY_FAILED = 1, /* a model, the scorer, reading or writing failed */
    AD_REPLAY_USAGE = 2   /* the options do not fit the config, an input cannot be opened */
};

/* Runs a replay to the end of its inputs. What goes wrong is logged. */
enum ad_replay_status ad_replay_run(const struct ad_replay_options *opts);

#endif
