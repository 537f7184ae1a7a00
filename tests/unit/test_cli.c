/* Command-line parsing. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "cli.h"

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

static void test_errors(void **state)
{
    (void)state;
    struct {
        struct ad_cli cli;
        const char *message;
    } cases[] = {
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
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(cases[i].cli.action, AD_CLI_ERROR);
        assert_string_equal(cases[i].cli.error, cases[i].message);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
