/* Parsing of Prometheus /api/v1/query_range responses: every shape Prometheus sends, and
 * every way a response can be wrong, each with its exact reason. */

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stream/prom_response.h"

/* What Prometheus 2.42 answered for a range query over test data (see
 * tests/integration/test_prometheus.py), with a NaN, both infinities and a warning added. */
static const char sample_response[] =
    "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":["
    "{\"metric\":{\"job\":\"demo\",\"__name__\":\"demo_gauge\",\"instance\":\"a\"},"
    "\"values\":[[1795321400,\"11.75\"],[1795321410,\"NaN\"],[1795321420,\"+Inf\"],"
    "[1795321430,\"-Inf\"],[1795321440.5,\"-1e-3\"],[1795321450.781,\"Inf\"]]},"
    "{\"metric\":{},\"values\":[]}]},"
    "\"warnings\":[\"PromQL info: something to know\"]}";

static enum ad_prom_parse_result parse(const char *body, struct ad_prom_matrix *m, char *errstr,
                                       size_t errstr_size)
{
    return ad_prom_parse_matrix(body, strlen(body), m, errstr, errstr_size);
}

static void test_success(void **state)
{
    (void)state;
    struct ad_prom_matrix m;
    char err[256];

    assert_int_equal(parse(sample_response, &m, err, sizeof err), AD_PROM_OK);
    assert_string_equal(err, "");
    assert_int_equal(m.n_series, 2);
    const struct ad_prom_series *s = &m.series[0];
    assert_int_equal(s->n_labels, 3);
    assert_string_equal(s->label_names[0], "__name__");
    assert_string_equal(s->label_values[0], "demo_gauge");
    assert_string_equal(s->label_names[1], "instance");
    assert_string_equal(s->label_values[1], "a");
    assert_string_equal(s->label_names[2], "job");
    assert_string_equal(s->label_values[2], "demo");
    assert_int_equal(s->n_samples, 6);
    assert_int_equal(s->times_ms[0], 1795321400000LL);
    assert_true(s->values[0] == 11.75);
    assert_true(isnan(s->values[1]));
    assert_true(isinf(s->values[2]) && s->values[2] > 0);
    assert_true(isinf(s->values[3]) && s->values[3] < 0);
    assert_int_equal(s->times_ms[4], 1795321440500LL);
    assert_true(s->values[4] == -1e-3);
    assert_int_equal(s->times_ms[5], 1795321450781LL);
    assert_true(isinf(s->values[5]) && s->values[5] > 0);
    assert_int_equal(m.series[1].n_labels, 0);
    assert_int_equal(m.series[1].n_samples, 0);
    assert_int_equal(m.n_warnings, 1);
    assert_string_equal(m.warnings[0], "PromQL info: something to know");
    ad_prom_matrix_free(&m);
    /* Freeing twice is harmless: the first free empties it. */
    ad_prom_matrix_free(&m);
    ad_prom_matrix_free(NULL);
}

static void test_empty_result_and_no_err_buffer(void **state)
{
    (void)state;
    struct ad_prom_matrix m;
    const char *body =
        "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[]}}";

    assert_int_equal(ad_prom_parse_matrix(body, strlen(body), &m, NULL, 0), AD_PROM_OK);
    assert_int_equal(m.n_series, 0);
    assert_int_equal(m.n_warnings, 0);
    ad_prom_matrix_free(&m);
    /* Not NUL-terminated: only len bytes count. */
    char buf[128];
    memcpy(buf, body, strlen(body));
    memset(buf + strlen(body), '}', sizeof buf - strlen(body));
    assert_int_equal(ad_prom_parse_matrix(buf, strlen(body), &m, NULL, 0), AD_PROM_OK);
    ad_prom_matrix_free(&m);
}

static void test_many_series(void **state)
{
    (void)state;
    enum { SERIES = 500, SAMPLES = 40 };
    size_t cap = SERIES * (SAMPLES * 32 + 128) + 256, len = 0;
    char *body = malloc(cap);
    struct ad_prom_matrix m;
    char err[256];

    assert_non_null(body);
    len += (size_t)snprintf(body + len, cap - len,
                            "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\","
                            "\"result\":[");
    for (int i = 0; i < SERIES; i++) {
        len += (size_t)snprintf(body + len, cap - len,
                                "%s{\"metric\":{\"z\":\"%d\",\"a\":\"x\"},\"values\":[",
                                i ? "," : "", i);
        for (int j = 0; j < SAMPLES; j++)
            len += (size_t)snprintf(body + len, cap - len, "%s[%d,\"%d.25\"]", j ? "," : "",
                                    1000 + 10 * j, i * j);
        len += (size_t)snprintf(body + len, cap - len, "]}");
    }
    len += (size_t)snprintf(body + len, cap - len, "]}}");
    assert_true(len < cap);

    assert_int_equal(ad_prom_parse_matrix(body, len, &m, err, sizeof err), AD_PROM_OK);
    assert_int_equal(m.n_series, SERIES);
    for (int i = 0; i < SERIES; i++) {
        const struct ad_prom_series *s = &m.series[i];
        char want[16];
        snprintf(want, sizeof want, "%d", i);
        assert_int_equal(s->n_labels, 2);
        assert_string_equal(s->label_names[0], "a");
        assert_string_equal(s->label_names[1], "z");
        assert_string_equal(s->label_values[1], want);
        assert_int_equal(s->n_samples, SAMPLES);
        for (int j = 0; j < SAMPLES; j++) {
            assert_int_equal(s->times_ms[j], (1000 + 10 * j) * 1000LL);
            assert_true(s->values[j] == i * j + 0.25);
        }
    }
    ad_prom_matrix_free(&m);
    free(body);
}

struct bad_case {
    const char *body;
    enum ad_prom_parse_result result;
    const char *err;
};

#define OK_HEAD "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":["
#define OK_TAIL "]}}"

static const struct bad_case bad_cases[] = {
    {"{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"1:12: parse error: unclosed "
     "left parenthesis\"}",
     AD_PROM_ERROR_STATUS, "bad_data: 1:12: parse error: unclosed left parenthesis"},
    {"{\"status\":\"error\",\"error\":\"no type\"}", AD_PROM_ERROR_STATUS, "no type"},
    {"{\"status\":\"error\",\"errorType\":\"timeout\"}", AD_PROM_ERROR_STATUS,
     "timeout: (no error message)"},
    {"{\"status\":\"error\",\"errorType\":\"\",\"error\":\"\"}", AD_PROM_ERROR_STATUS,
     "error: (no error message)"},
    {"{\"status\":\"error\",\"errorType\":\"x\",\"error\":\"two\\nlines\"}", AD_PROM_ERROR_STATUS,
     "x: two lines"},
    {"{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[]}}",
     AD_PROM_WRONG_RESULT_TYPE, "resultType is \"vector\", expected \"matrix\""},
    {"{\"status\":\"success\",\"data\":{\"resultType\":\"scalar\",\"result\":[1,\"1\"]}}",
     AD_PROM_WRONG_RESULT_TYPE, "resultType is \"scalar\", expected \"matrix\""},
    {"", AD_PROM_MALFORMED,
     "invalid JSON at line 1, column 0: '[' or '{' expected near end of file"},
    {"this is not JSON", AD_PROM_MALFORMED,
     "invalid JSON at line 1, column 4: '[' or '{' expected near 'this'"},
    {"{\"status\":\"success\"", AD_PROM_MALFORMED,
     "invalid JSON at line 1, column 19: '}' expected near end of file"},
    {"[]", AD_PROM_MALFORMED, "the response is not a JSON object"},
    {"{}", AD_PROM_MALFORMED, "\"status\" is missing"},
    {"{\"status\":1}", AD_PROM_MALFORMED, "\"status\" is not a string"},
    {"{\"status\":\"partial\"}", AD_PROM_MALFORMED, "unknown status \"partial\""},
    {"{\"status\":\"success\",\"status\":\"error\"}", AD_PROM_MALFORMED,
     "invalid JSON at line 1, column 28: duplicate object key near '\"status\"'"},
    {"{\"status\":\"success\"}", AD_PROM_MALFORMED, "\"data\" is missing"},
    {"{\"status\":\"success\",\"data\":[]}", AD_PROM_MALFORMED, "\"data\" is not an object"},
    {"{\"status\":\"success\",\"data\":{}}", AD_PROM_MALFORMED, "\"data.resultType\" is missing"},
    {"{\"status\":\"success\",\"data\":{\"resultType\":null}}", AD_PROM_MALFORMED,
     "\"data.resultType\" is not a string"},
    {"{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\"}}", AD_PROM_MALFORMED,
     "\"data.result\" is missing"},
    {"{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":{}}}",
     AD_PROM_MALFORMED, "\"data.result\" is not an array"},
    {"{\"status\":\"success\",\"warnings\":\"w\",\"data\":{\"resultType\":\"matrix\","
     "\"result\":[]}}",
     AD_PROM_MALFORMED, "\"warnings\" is not an array"},
    {"{\"status\":\"success\",\"warnings\":[\"ok\",3],\"data\":{\"resultType\":\"matrix\","
     "\"result\":[]}}",
     AD_PROM_MALFORMED, "warnings[1] is not a string"},
    {OK_HEAD "1" OK_TAIL, AD_PROM_MALFORMED, "result[0] is not an object"},
    {OK_HEAD "{\"values\":[]}" OK_TAIL, AD_PROM_MALFORMED, "result[0].metric is missing"},
    {OK_HEAD "{\"metric\":[],\"values\":[]}" OK_TAIL, AD_PROM_MALFORMED,
     "result[0].metric is not an object"},
    {OK_HEAD "{\"metric\":{\"job\":1},\"values\":[]}" OK_TAIL, AD_PROM_MALFORMED,
     "result[0].metric.job is not a string"},
    {OK_HEAD "{\"metric\":{},\"values\":[]},{\"metric\":{}}" OK_TAIL, AD_PROM_MALFORMED,
     "result[1].values is missing"},
    {OK_HEAD "{\"metric\":{},\"values\":{}}" OK_TAIL, AD_PROM_MALFORMED,
     "result[0].values is not an array"},
    {OK_HEAD "{\"metric\":{},\"values\":[1]}" OK_TAIL, AD_PROM_MALFORMED,
     "result[0].values[0] is not a [time, value] pair"},
    {OK_HEAD "{\"metric\":{},\"values\":[[1,\"1\",2]]}" OK_TAIL, AD_PROM_MALFORMED,
     "result[0].values[0] is not a [time, value] pair"},
    {OK_HEAD "{\"metric\":{},\"values\":[[\"1\",\"1\"]]}" OK_TAIL, AD_PROM_MALFORMED,
     "result[0].values[0]: the time is not a number"},
    {OK_HEAD "{\"metric\":{},\"values\":[[1e300,\"1\"]]}" OK_TAIL, AD_PROM_MALFORMED,
     "result[0].values[0]: time 1e+300 is out of range"},
    {OK_HEAD "{\"metric\":{},\"values\":[[1,1]]}" OK_TAIL, AD_PROM_MALFORMED,
     "result[0].values[0]: the value is not a string"},
    {OK_HEAD "{\"metric\":{},\"values\":[[2,\"1\"],[1,\"1\"]]}" OK_TAIL, AD_PROM_MALFORMED,
     "result[0].values[1]: times are not ascending"},
    {OK_HEAD "{\"metric\":{},\"values\":[[1,\"1\"],[1,\"1\"]]}" OK_TAIL, AD_PROM_MALFORMED,
     "result[0].values[1]: times are not ascending"},
};

/* Strings Go's ParseFloat or C's strtod would take but Prometheus never writes. */
static const char *const bad_values[] = {
    "",   "abc", " 1", "1 ", "0x10", "nan",   "inf", "-inf",  "Infinity",
    "1e", "1e+", ".",  "-",  "+",    "1.2.3", "1,5", "1e400", "-1e400",
};

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *c = &bad_cases[i];
        struct ad_prom_matrix m;
        char err[256];
        enum ad_prom_parse_result r = parse(c->body, &m, err, sizeof err);
        if (r != c->result || strcmp(err, c->err) != 0)
            fail_msg("case %zu: %s\n  got %s \"%s\"\n  want %s \"%s\"", i, c->body,
                     ad_prom_parse_result_name(r), err, ad_prom_parse_result_name(c->result),
                     c->err);
        ad_prom_matrix_free(&m);
    }
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        char body[256], want[128], err[256];
        struct ad_prom_matrix m;
        snprintf(body, sizeof body,
                 OK_HEAD "{\"metric\":{},\"values\":[[1,\"2\"],[2,\"%s\"]]}" OK_TAIL,
                 bad_values[i]);
        snprintf(want, sizeof want, "result[0].values[1]: value \"%s\" is not a number",
                 bad_values[i]);
        assert_int_equal(parse(body, &m, err, sizeof err), AD_PROM_MALFORMED);
        assert_string_equal(err, want);
        ad_prom_matrix_free(&m);
    }
}

static void test_err_is_cut_to_its_buffer(void **state)
{
    (void)state;
    struct ad_prom_matrix m;
    char err[8];
    assert_int_equal(parse("[]", &m, err, sizeof err), AD_PROM_MALFORMED);
    assert_string_equal(err, "the res");
    ad_prom_matrix_free(&m);
}

static void test_native_histograms_have_no_samples(void **state)
{
    (void)state;
    struct ad_prom_matrix m;
    assert_int_equal(
        parse(OK_HEAD "{\"metric\":{\"a\":\"b\"},\"histograms\":[[1,{}]]}" OK_TAIL, &m, NULL, 0),
        AD_PROM_OK);
    assert_int_equal(m.n_series, 1);
    assert_int_equal(m.series[0].n_samples, 0);
    ad_prom_matrix_free(&m);
}

/* Every prefix of a valid response is a truncated body: never a crash, always MALFORMED. */
static void test_every_truncation(void **state)
{
    (void)state;
    size_t len = strlen(sample_response);
    for (size_t n = 0; n < len; n++) {
        struct ad_prom_matrix m;
        char err[256];
        /* A copy of exactly n bytes, so that ASan sees any read past them. */
        char *copy = malloc(n ? n : 1);
        assert_non_null(copy);
        memcpy(copy, sample_response, n);
        enum ad_prom_parse_result r = ad_prom_parse_matrix(copy, n, &m, err, sizeof err);
        if (r != AD_PROM_MALFORMED)
            fail_msg("prefix of %zu bytes: %s", n, ad_prom_parse_result_name(r));
        assert_true(strncmp(err, "invalid JSON", 12) == 0);
        ad_prom_matrix_free(&m);
        free(copy);
    }
}

static void test_result_names(void **state)
{
    (void)state;
    assert_string_equal(ad_prom_parse_result_name(AD_PROM_OK), "ok");
    assert_string_equal(ad_prom_parse_result_name(AD_PROM_MALFORMED), "malformed");
    assert_string_equal(ad_prom_parse_result_name(AD_PROM_ERROR_STATUS), "error_status");
    assert_string_equal(ad_prom_parse_result_name(AD_PROM_WRONG_RESULT_TYPE), "wrong_result_type");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success),
        cmocka_unit_test(test_empty_result_and_no_err_buffer),
        cmocka_unit_test(test_many_series),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_err_is_cut_to_its_buffer),
        cmocka_unit_test(test_native_histograms_have_no_samples),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_result_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
