/* anomalyd: the command line and the composition of the daemon's components. */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/version.h"
#include "config/config.h"
#include "daemon/cli.h"
#include "daemon/daemon.h"
#include "detect/pipeline.h"
#include "detect/replay.h"
#include "detect/swap.h"
#include "gpu/device.h"
#include "gpu/scorer.h"

#define AD_LOG_MODULE "main"
#include "base/log.h"

struct gpu_part {
    struct ad_gpu_info info;
};

static void gpu_status(void *ctx, json_t *out)
{
    const struct ad_gpu_info *g = &((struct gpu_part *)ctx)->info;
    json_object_set_new(out, "built_with_cuda", json_boolean(g->built_with_cuda));
    json_object_set_new(out, "devices", json_integer(g->device_count));
    if (g->name[0]) {
        json_object_set_new(out, "name", json_string(g->name));
        json_object_set_new(out, "compute_capability",
                            json_sprintf("%d.%d", g->compute_major, g->compute_minor));
        json_object_set_new(out, "memory_bytes", json_integer((json_int_t)g->total_memory));
    }
    if (g->error[0])
        json_object_set_new(out, "error", json_string(g->error));
}

static void probe_gpu(struct ad_daemon *d, struct gpu_part *gpu)
{
    const struct ad_settings_scoring *s = &ad_config_settings(ad_daemon_config(d))->scoring;
    ad_gpu_probe((int)s->device, &gpu->info);
    if (gpu->info.name[0])
        AD_INFO_KV("CUDA device found", AD_KV_INT("device", s->device),
                   AD_KV_STR("name", gpu->info.name));
    else
        AD_INFO_KV("no usable CUDA device", AD_KV_STR("reason", gpu->info.error));
    ad_gauge_set(ad_metrics_gauge(ad_daemon_metrics(d), "anomalyd_gpu_devices",
                                  "CUDA devices visible to this process.", NULL),
                 gpu->info.device_count);
    struct ad_component part = {.name = "gpu", .ctx = gpu, .status = gpu_status};
    ad_daemon_add_component(d, &part);
}

static void scoring_status(void *ctx, json_t *out)
{
    ad_scorer_status(ctx, out);
}

/* The config path made absolute without resolving symlinks: Kubernetes mounts a ConfigMap
 * as a symlink that it swaps on update, and a reload must follow the link again. */
static char *absolute_path(const char *path)
{
    char cwd[4096];
    if (path[0] == '/' || !getcwd(cwd, sizeof cwd))
        return strdup(path);
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", cwd, path);
    return out;
}

static int check_config(const char *path, struct ad_config *cfg, struct ad_diag *diag)
{
    if (!cfg) {
        ad_diag_print(diag, stderr);
        fprintf(stderr, "%s: %zu error%s; the config is invalid\n", path, ad_diag_count(diag),
                ad_diag_count(diag) == 1 ? "" : "s");
        return AD_EXIT_USAGE;
    }
    const struct ad_settings *s = ad_config_settings(cfg);
    char why[1024];
    if (ad_swap_check_store(s, why, sizeof why) < 0) {
        fprintf(stderr, "%s: %s\n%s: the config is invalid for the model store\n", path, why, path);
        ad_config_unref(cfg);
        return AD_EXIT_USAGE;
    }
    printf("%s: OK (%zu source%s, %zu detector%s; sha256 %s)\n", path, s->n_sources,
           s->n_sources == 1 ? "" : "s", s->n_detectors, s->n_detectors == 1 ? "" : "s",
           ad_config_sha256(cfg));
    ad_config_unref(cfg);
    return AD_EXIT_OK;
}

/* anomalyd replay: the config's detectors over files (docs/replay.md). */
static int replay(const struct ad_cli *cli, const struct ad_config *cfg)
{
    const struct ad_settings_daemon *s = &ad_config_settings(cfg)->daemon;
    ad_log_set_level(cli->log_level_set ? cli->log_level : s->log_level);
    ad_log_set_format(cli->log_format_set ? cli->log_format : s->log_format);
    struct ad_replay_options opts = {
        .config = cfg,
        .inputs = cli->inputs,
        .n_inputs = cli->n_inputs,
        .detector = cli->detector,
        .source = cli->source,
        .model_dir = cli->model_dir,
        .out = stdout,
    };
    if (cli->scores && strcmp(cli->scores, "-") == 0) {
        opts.scores = stdout;
    } else if (cli->scores) {
        opts.scores = fopen(cli->scores, "w");
        if (!opts.scores) {
            AD_ERROR_KV("cannot open the scores file", AD_KV_STR("path", cli->scores),
                        AD_KV_STR("error", strerror(errno)));
            return AD_EXIT_USAGE;
        }
    }
    int status = (int)ad_replay_run(&opts);
    if (opts.scores && opts.scores != stdout && fclose(opts.scores) != 0 && status == 0) {
        AD_ERROR_KV("cannot write the scores file", AD_KV_STR("path", cli->scores),
                    AD_KV_STR("error", strerror(errno)));
        status = AD_EXIT_FAILURE;
    }
    return status;
}

int main(int argc, char **argv)
{
    struct ad_cli cli;
    struct ad_diag *diag = NULL;
    struct ad_daemon *d = NULL;
    struct ad_pipeline *pipeline = NULL;
    struct ad_scorer *scorer = NULL;
    struct gpu_part gpu;
    char *config_path = NULL;
    char err[512];
    int rc = AD_EXIT_FAILURE;

    ad_cli_parse(argc, argv, &cli);
    switch (cli.action) {
    case AD_CLI_HELP:
        if (cli.replay)
            ad_cli_replay_usage(stdout);
        else
            ad_cli_usage(stdout);
        return AD_EXIT_OK;
    case AD_CLI_VERSION:
        printf("anomalyd %s (revision %s, CUDA backend %s)\n", AD_VERSION, AD_REVISION,
               AD_BUILT_WITH_CUDA ? "built" : "not built");
        return AD_EXIT_OK;
    case AD_CLI_ERROR:
        fprintf(stderr, "anomalyd: %s\nTry 'anomalyd%s --help'.\n", cli.error,
                cli.replay ? " replay" : "");
        return AD_EXIT_USAGE;
    default:
        break;
    }
    if (cli.log_level_set)
        ad_log_set_level(cli.log_level);
    if (cli.log_format_set)
        ad_log_set_format(cli.log_format);
    /* A peer that hangs up must not kill the daemon; write errors are handled where they
     * happen. A replay is a filter: a reader that has seen enough (| head) ends it. */
    if (cli.action != AD_CLI_REPLAY)
        signal(SIGPIPE, SIG_IGN);

    diag = ad_diag_new();
    config_path = absolute_path(cli.config_path);
    if (!diag || !config_path) {
        free(config_path);
        ad_diag_destroy(diag);
        fprintf(stderr, "anomalyd: out of memory\n");
        return AD_EXIT_FAILURE;
    }
    /* --check-config names the file as it was typed, as compilers do. */
    struct ad_config *cfg =
        cli.action == AD_CLI_REPLAY
            ? ad_config_load_replay(config_path, diag)
            : ad_config_load_file(cli.action == AD_CLI_CHECK_CONFIG ? cli.config_path : config_path,
                                  diag);
    if (cli.action == AD_CLI_CHECK_CONFIG) {
        rc = check_config(cli.config_path, cfg, diag);
        goto out;
    }
    if (!cfg) {
        for (size_t i = 0; i < ad_diag_count(diag); i++)
            AD_ERROR_KV("config error", AD_KV_STR("error", ad_diag_message(diag, i)));
        AD_ERROR_KV("cannot start: the config is invalid", AD_KV_STR("path", cli.config_path),
                    AD_KV_INT("errors", ad_diag_count(diag)));
        rc = AD_EXIT_USAGE;
        goto out;
    }
    if (cli.action == AD_CLI_REPLAY) {
        rc = replay(&cli, cfg);
        ad_config_unref(cfg);
        goto out;
    }

    struct ad_daemon_options opts = {.log_level_set = cli.log_level_set,
                                     .log_level = cli.log_level,
                                     .log_format_set = cli.log_format_set,
                                     .log_format = cli.log_format};
    d = ad_daemon_new(cfg, &opts, err, sizeof err);
    if (!d) {
        AD_ERROR_KV("cannot start", AD_KV_STR("error", err));
        rc = AD_EXIT_FAILURE;
        goto out;
    }
    probe_gpu(d, &gpu);
    scorer = ad_scorer_new(&ad_config_settings(ad_daemon_config(d))->scoring, ad_daemon_metrics(d),
                           err, sizeof err);
    if (scorer)
        pipeline = ad_pipeline_new(ad_daemon_base(d), ad_daemon_metrics(d), ad_daemon_config(d),
                                   scorer, err, sizeof err);
    if (!pipeline) {
        AD_ERROR_KV("cannot start", AD_KV_STR("error", err));
        rc = AD_EXIT_FAILURE;
        goto out;
    }
    struct ad_component scoring = {.name = "scoring", .ctx = scorer, .status = scoring_status};
    ad_daemon_add_component(d, &scoring);
    struct ad_component part = ad_pipeline_component(pipeline);
    ad_daemon_add_component(d, &part);
    rc = ad_daemon_run(d);

out:
    /* The loop is gone: the pipeline goes first, then what it was built on. */
    ad_pipeline_destroy(pipeline);
    ad_scorer_destroy(scorer);
    ad_daemon_destroy(d);
    ad_diag_destroy(diag);
    free(config_path);
    return rc;
}
