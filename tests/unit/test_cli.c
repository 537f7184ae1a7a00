/* Command-line parsing. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/cli.h"

static struct ad_cli parse(int argc, const char **argv)
{
    struct ad_cli cli;
    ad_cli_parse(argc, (char **)argv, &cli);
    return cli;
}

#define PARSE(...)                                                            \
    parse(sizeof((const char *[]){"anomalyd", __VA_ARGS__}) / sizeof(char *), \
          (const char *[]){"anomalyd", __VA_ARGS__, NULL})

static void test_defaults(void **state)
{
    (void)state;
    const char *argv[] = {"anomalyd", NULL};
    struct ad_cli cli = parse(1, argv);
    assert_int_equal(cli.action, AD_CLI_RUN);
    assert_string_equal(cli.config_path, AD_DEFAULT_CONFIG_PATH);
    assert_false(cli.log_level_set);
    assert_false(cli.log_format_set);
}

static void test_options(void **state)
{
    (void)state;
    struct ad_cli cli = PARSE("-c", "/tmp/a.yaml", "--log-level", "debug", "--log-format=json");
    assert_int_equal(cli.action, AD_CLI_RUN);
    assert_string_equal(cli.config_path, "/tmp/a.yaml");
    assert_true(cli.log_level_set);
    assert_int_equal(cli.log_level, AD_LOG_DEBUG);
    assert_true(cli.log_format_set);
    assert_int_equal(cli.log_format, AD_LOG_JSON);

    cli = PARSE("--config=b.yaml", "--check-config");
    assert_int_equal(cli.action, AD_CLI_CHECK_CONFIG);
    assert_string_equal(cli.config_path, "b.yaml");
    cli = PARSE("-tc", "c.yaml");
    assert_int_equal(cli.action, AD_CLI_CHECK_CONFIG);
    assert_string_equal(cli.config_path, "c.yaml");
    assert_int_equal(PARSE("--version").action, AD_CLI_VERSION);
    assert_int_equal(PARSE("-V").action, AD_CLI_VERSION);
    assert_int_equal(PARSE("--help").action, AD_CLI_HELP);
    assert_int_equal(PARSE("-h", "--bogus").action, AD_CLI_HELP);
}

struct error_case {
    struct ad_cli cli;
    const char *message;
};

static void assert_errors(const struct error_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(cases[i].cli.action, AD_CLI_ERROR);
        assert_string_equal(cases[i].cli.error, cases[i].message);
    }
}

static void test_errors(void **state)
{
    (void)state;
    struct error_case cases[] = {
        {PARSE("--bogus"), "unknown option --bogus"},
        {PARSE("-x"), "unknown option -x"},
        {PARSE("-c"), "-c needs a value"},
        {PARSE("--config"), "--config needs a value"},
        {PARSE("--log-level", "loud"), "--log-level: expected debug, info, warn or error, got "
                                       "\"loud\""},
        {PARSE("--log-format", "xml"), "--log-format: expected logfmt or json, got \"xml\""},
        {PARSE("extra"), "unexpected argument \"extra\""},
        {PARSE("-c", ""), "--config: the path is empty"},
    };
    assert_errors(cases, sizeof cases / sizeof cases[0]);
}

static void test_replay(void **state)
{
    (void)state;
    struct ad_cli cli =
        PARSE("replay", "-c", "a.yaml", "--input", "x.jsonl", "-i", "-", "--input=y.jsonl",
              "--detector", "api", "--source", "app", "--model-dir", "/m/api/v2", "--scores",
              "s.jsonl", "--log-format", "json");
    assert_int_equal(cli.action, AD_CLI_REPLAY);
    assert_true(cli.replay);
    assert_string_equal(cli.config_path, "a.yaml");
    assert_int_equal(cli.n_inputs, 3);
    assert_string_equal(cli.inputs[0], "x.jsonl");
    assert_string_equal(cli.inputs[1], "-");
    assert_string_equal(cli.inputs[2], "y.jsonl");
    assert_string_equal(cli.detector, "api");
    assert_string_equal(cli.source, "app");
    assert_string_equal(cli.model_dir, "/m/api/v2");
    assert_string_equal(cli.scores, "s.jsonl");
    assert_true(cli.log_format_set);

    cli = PARSE("replay", "-i", "x.csv");
    assert_int_equal(cli.action, AD_CLI_REPLAY);
    assert_string_equal(cli.config_path, AD_DEFAULT_CONFIG_PATH);
    assert_null(cli.detector);
    assert_null(cli.source);
    assert_null(cli.model_dir);
    assert_null(cli.scores);

    cli = PARSE("replay", "--help");
    assert_int_equal(cli.action, AD_CLI_HELP);
    assert_true(cli.replay);
    /* The command is the first argument only: elsewhere it is a stray argument. */
    cli = PARSE("-c", "a.yaml", "replay");
    assert_int_equal(cli.action, AD_CLI_ERROR);
    assert_false(cli.replay);

    struct error_case cases[] = {
        {PARSE("replay"), "replay needs at least one --input FILE"},
        {PARSE("replay", "-i", "a", "--check-config"), "unknown option --check-config"},
        {PARSE("replay", "-i", "a", "-V"), "unknown option -V"},
        {PARSE("replay", "-i", "a", "more"), "unexpected argument \"more\""},
        {PARSE("replay", "-i", ""), "--input: the path is empty"},
        {PARSE("replay", "-i", "a", "--detector"), "--detector needs a value"},
        {PARSE("replay", "-i", "a", "--detector", "x", "--detector", "y"),
         "--detector may be given only once"},
        {PARSE("replay", "-i", "a", "--model-dir="), "--model-dir: the value is empty"},
        {PARSE("replay", "-i", "a", "--scores", "x", "--scores", "y"),
         "--scores may be given only once"},
        {PARSE("--input", "a"), "unknown option --input"},
    };
    assert_errors(cases, sizeof cases / sizeof cases[0]);
}

static void test_replay_inputs_are_bounded(void **state)
{
    (void)state;
    const char *argv[2 + 2 * (AD_CLI_MAX_INPUTS + 1) + 1] = {"anomalyd", "replay"};
    int argc = 2;
    for (int i = 0; i <= AD_CLI_MAX_INPUTS; i++) {
        argv[argc++] = "-i";
        argv[argc++] = "f.jsonl";
    }
    struct ad_cli cli = parse(argc, argv);
    assert_int_equal(cli.action, AD_CLI_ERROR);
    assert_string_equal(cli.error, "--input: at most 256 files; concatenate them and read - "
                                   "instead");
    cli = parse(argc - 2, argv);
    assert_int_equal(cli.action, AD_CLI_REPLAY);
    assert_int_equal(cli.n_inputs, AD_CLI_MAX_INPUTS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_replay_inputs_are_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
