#ifndef AD_CLI_H
#define AD_CLI_H

/* The command line: what to do, and the overrides that win over the config file. */

#include <stdbool.h>
#include <stdio.h>

#include "base/log.h"

#define AD_DEFAULT_CONFIG_PATH "/etc/anomalyd/anomalyd.yaml"

/* Process exit statuses, as documented in --help and docs/operations.md. */
enum ad_exit { AD_EXIT_OK = 0, AD_EXIT_FAILURE = 1, AD_EXIT_USAGE = 2 };

enum ad_cli_action {
    AD_CLI_RUN,
    AD_CLI_CHECK_CONFIG,
    AD_CLI_REPLAY,
    AD_CLI_HELP,
    AD_CLI_VERSION,
    AD_CLI_ERROR
};

/* --input files one replay takes at most. */
#define AD_CLI_MAX_INPUTS 256

struct ad_cli {
    enum ad_cli_action action;
    bool replay;             /* the replay command: also with AD_CLI_HELP and AD_CLI_ERROR */
    const char *config_path; /* borrowed from argv, or the default */
    bool log_level_set;
    enum ad_log_level log_level;
    bool log_format_set;
    enum ad_log_format log_format;
    /* The replay command's (docs/replay.md); borrowed from argv, NULL when not given. */
    const char *inputs[AD_CLI_MAX_INPUTS];
    size_t n_inputs;
    const char *detector, *source, *model_dir, *scores;
    char error[256]; /* AD_CLI_ERROR: what was wrong */
};

/* Parses argv (getopt_long; may be called again): the daemon's options, or the replay
 * command's when argv[1] is "replay". */
void ad_cli_parse(int argc, char **argv, struct ad_cli *out);
void ad_cli_usage(FILE *out);
void ad_cli_replay_usage(FILE *out);

#endif
