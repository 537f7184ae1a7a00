#include "cli.h"

#include <getopt.h>
#include <string.h>

void ad_cli_usage(FILE *out)
{
    fputs("Usage: anomalyd [options]\n"
          "\n"
          "Streaming anomaly detection: JSON logs from Kafka and series from Prometheus,\n"
          "scored on event-time windows by an LSTM, alerts to Kafka and Redis.\n"
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

void ad_cli_parse(int argc, char **argv, struct ad_cli *out)
{
    enum { OPT_LOG_LEVEL = 256, OPT_LOG_FORMAT };
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 't'},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    memset(out, 0, sizeof *out);
    out->action = AD_CLI_RUN;
    out->config_path = AD_DEFAULT_CONFIG_PATH;
    optind = 0; /* GNU: start over, so tests can parse more than once */
    opterr = 0; /* the message below says more than getopt's */

    while ((opt = getopt_long(argc, argv, ":c:tVh", options, NULL)) != -1) {
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
    return;
err:
    out->action = AD_CLI_ERROR;
}
