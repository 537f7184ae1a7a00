#include "daemon/cli.h"

#include <getopt.h>
#include <string.h>

void ad_cli_usage(FILE *out)
{
    fputs("Usage: anomalyd [options]\n"
          "       anomalyd replay [options] --input FILE [--input FILE ...]\n"
          "\n"
          "Streaming anomaly detection: JSON logs from Kafka and series from Prometheus,\n"
          "scored on event-time windows by an LSTM, alerts to Kafka and Redis. The replay\n"
          "command runs the same over files, offline ('anomalyd replay --help').\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE       config file (default " AD_DEFAULT_CONFIG_PATH ")\n"
          "  -t, --check-config      validate the config file, print every error, and exit\n"
          "      --log-level LEVEL   debug, info, warn or error (overrides daemon.log.level)\n"
          "      --log-format FMT    logfmt or json (overrides daemon.log.format)\n"
          "  -V, --version           print the version and exit\n"
          "  -h, --help              print this help and exit\n"
          "\n"
          "Signals: SIGHUP reloads the config file; SIGTERM and SIGINT stop gracefully\n"
          "within daemon.shutdown_timeout (a second signal stops at once).\n"
          "\n"
          "Exit status: 0 ok, 1 runtime failure, 2 usage or config error.\n"
          "Docs: README.md, docs/config.md, docs/operations.md\n",
          out);
}

void ad_cli_replay_usage(FILE *out)
{
    fputs("Usage: anomalyd replay [options] --input FILE [--input FILE ...]\n"
          "\n"
          "Runs a config's detectors over log events or feature rows from files, with the\n"
          "daemon's extraction, windows, scoring and alert state machine, on the events' own\n"
          "times, and writes every alert to standard output as one JSON document per line.\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE       config file (default " AD_DEFAULT_CONFIG_PATH ")\n"
          "  -i, --input FILE        log events as JSON lines, as on the source's Kafka topic;\n"
          "                          or, for a name ending in .csv, rows of time_ms, the\n"
          "                          detector's keys and its features; - is standard input\n"
          "                          (JSON lines); repeat to read several files in turn\n"
          "      --source NAME       the Kafka source whose rules read the JSON lines\n"
          "                          (default: the config's first Kafka source)\n"
          "      --detector NAME     replay this detector only (default: every detector the\n"
          "                          source feeds; required with CSV when there are several)\n"
          "      --model-dir DIR     score with the model version in DIR instead of\n"
          "                          model_store.path/<model>/CURRENT\n"
          "      --scores FILE       also write every scored window (entity, window end,\n"
          "                          score, likelihood, anomalous, feature shares) to FILE,\n"
          "                          one JSON object per line; - is standard output\n"
          "      --log-level LEVEL   debug, info, warn or error (overrides daemon.log.level)\n"
          "      --log-format FMT    logfmt or json (overrides daemon.log.format)\n"
          "  -h, --help              print this help and exit\n"
          "\n"
          "Standard output: the alerts. Standard error: the log, ending with a summary line.\n"
          "Exit status: 0 ok, 1 runtime failure (no model, a read or write error, windows\n"
          "that could not be scored), 2 usage or config error.\n"
          "Docs: docs/replay.md\n",
          out);
}

enum { OPT_LOG_LEVEL = 256, OPT_LOG_FORMAT, OPT_DETECTOR, OPT_SOURCE, OPT_MODEL_DIR, OPT_SCORES };

/* The daemon's options and the replay command's: -c, --log-level, --log-format and -h mean
 * the same in both. */
static const struct option daemon_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"check-config", no_argument, NULL, 't'},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const struct option replay_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"input", required_argument, NULL, 'i'},
    {"detector", required_argument, NULL, OPT_DETECTOR},
    {"source", required_argument, NULL, OPT_SOURCE},
    {"model-dir", required_argument, NULL, OPT_MODEL_DIR},
    {"scores", required_argument, NULL, OPT_SCORES},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The value of --detector, --source, --model-dir or --scores (opt); false (with the error)
 * when it is empty or the option was given before. */
static bool take(struct ad_cli *out, int opt)
{
    const char **slot = opt == OPT_DETECTOR ? &out->detector
                        : opt == OPT_SOURCE ? &out->source
                        : opt == OPT_SCORES ? &out->scores
                                            : &out->model_dir;
    const char *name = opt == OPT_DETECTOR ? "detector"
                       : opt == OPT_SOURCE ? "source"
                       : opt == OPT_SCORES ? "scores"
                                           : "model-dir";
    if (*slot) {
        snprintf(out->error, sizeof out->error, "--%s may be given only once", name);
        return false;
    }
    if (!*optarg) {
        snprintf(out->error, sizeof out->error, "--%s: the value is empty", name);
        return false;
    }
    *slot = optarg;
    return true;
}

void ad_cli_parse(int argc, char **argv, struct ad_cli *out)
{
    int opt;

    memset(out, 0, sizeof *out);
    out->action = AD_CLI_RUN;
    out->config_path = AD_DEFAULT_CONFIG_PATH;
    optind = 0; /* GNU: start over, so tests can parse more than once */
    opterr = 0; /* the message below says more than getopt's */
    if (argc > 1 && strcmp(argv[1], "replay") == 0) {
        /* The command's options follow it: parse as if it were the program. */
        out->replay = true;
        out->action = AD_CLI_REPLAY;
        argc--;
        argv++;
    }
    const struct option *options = out->replay ? replay_options : daemon_options;
    const char *shorts = out->replay ? ":c:i:h" : ":c:tVh";

    while ((opt = getopt_long(argc, argv, shorts, options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            out->config_path = optarg;
            break;
        case 't':
            out->action = AD_CLI_CHECK_CONFIG;
            break;
        case 'V':
            out->action = AD_CLI_VERSION;
            return;
        case 'h':
            out->action = AD_CLI_HELP;
            return;
        case 'i':
            if (out->n_inputs == AD_CLI_MAX_INPUTS) {
                snprintf(out->error, sizeof out->error,
                         "--input: at most %d files; concatenate them and read - instead",
                         AD_CLI_MAX_INPUTS);
                goto err;
            }
            if (!*optarg) {
                snprintf(out->error, sizeof out->error, "--input: the path is empty");
                goto err;
            }
            out->inputs[out->n_inputs++] = optarg;
            break;
        case OPT_DETECTOR:
        case OPT_SOURCE:
        case OPT_MODEL_DIR:
        case OPT_SCORES:
            if (!take(out, opt))
                goto err;
            break;
        case OPT_LOG_LEVEL:
            if (ad_log_level_parse(optarg, &out->log_level) < 0) {
                snprintf(out->error, sizeof out->error,
                         "--log-level: expected debug, info, warn or error, got \"%s\"", optarg);
                goto err;
            }
            out->log_level_set = true;
            break;
        case OPT_LOG_FORMAT:
            if (ad_log_format_parse(optarg, &out->log_format) < 0) {
                snprintf(out->error, sizeof out->error,
                         "--log-format: expected logfmt or json, got \"%s\"", optarg);
                goto err;
            }
            out->log_format_set = true;
            break;
        case ':':
            snprintf(out->error, sizeof out->error, "%s needs a value", argv[optind - 1]);
            goto err;
        default:
            snprintf(out->error, sizeof out->error, "unknown option %s", argv[optind - 1]);
            goto err;
        }
    }
    if (optind < argc) {
        snprintf(out->error, sizeof out->error, "unexpected argument \"%s\"", argv[optind]);
        goto err;
    }
    if (!*out->config_path) {
        snprintf(out->error, sizeof out->error, "--config: the path is empty");
        goto err;
    }
    if (out->replay && out->n_inputs == 0) {
        snprintf(out->error, sizeof out->error, "replay needs at least one --input FILE");
        goto err;
    }
    return;
err:
    out->action = AD_CLI_ERROR;
}
