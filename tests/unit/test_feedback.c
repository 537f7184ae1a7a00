/*
 * Marks of one detector's alerts: named by any notification's id, kept as JSON lines in
 * <folder>/<model>/feedback.jsonl and read back by a new instance (a restart), spans from the
 * first of the `for` windows through the resolution (open until it is notified, then closed by
 * an appended line), false positives' coverage, and refusals.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "detect/feedback.h"

#define STEP  60000LL
#define START 1795323600000LL /* 2026-11-22T05:00:00Z */

static char *keys_items[] = {"service", "instance"};
static const struct ad_strlist keys = {.items = keys_items, .len = 2};
#define KEY_CO  "checkout\0c-1"
#define KEY_LEN (sizeof KEY_CO - 1)

static struct ad_feedback *open_feedback(const char *folder)
{
    struct ad_feedback_options o = {.detector = "api",
                                    .model = "api-model",
                                    .keys = &keys,
                                    .folder = folder,
                                    .recent = 4,
                                    .step_ms = STEP,
                                    .for_windows = 3};
    char err[256];
    struct ad_feedback *fb = ad_feedback_new(&o, err, sizeof err);
    if (!fb)
        fail_msg("%s", err);
    return fb;
}

static void notify(struct ad_feedback *fb, const char *id, const char *state, int64_t end_ms)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"id\":\"%s\",\"detector\":\"api\",\"entity\":\"service=checkout,instance=c-1\","
             "\"labels\":{\"service\":\"checkout\",\"instance\":\"c-1\"},\"fingerprint\":"
             "\"81850d5a4d6ee0b9\",\"state\":\"%s\",\"starts_at\":\"2026-11-22T05:00:00.000Z\""
             "%s,\"model\":\"api-model\",\"model_version\":\"v1\"}",
             id, state,
             strcmp(state, "resolved") == 0 ? ",\"ends_at\":\"2026-11-22T05:10:00.000Z\"" : "");
    struct ad_alert alert = {
        .state = state, .end_ms = end_ms, .json = json, .json_len = strlen(json)};
    snprintf(alert.id, sizeof alert.id, "%s", id);
    ad_feedback_notified(fb, &alert, KEY_CO, KEY_LEN);
}

static size_t lines(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    int c;
    while (f && (c = fgetc(f)) != EOF)
        n += c == '\n';
    if (f)
        fclose(f);
    return n;
}

static void test_marks_kept_and_read_back(void **state)
{
    (void)state;
    char folder[] = "/tmp/anomalyd-feedback-XXXXXX", path[256], err[256];
    assert_non_null(mkdtemp(folder));
    snprintf(path, sizeof path, "%s/api-model/feedback.jsonl", folder);
    struct ad_feedback *fb = open_feedback(folder);
    json_t *record;
    struct ad_feedback_span span;

    assert_int_equal(ad_feedback_mark(fb, "f1", AD_FEEDBACK_FALSE_POSITIVE, NULL, "t", 0, &record,
                                      &span, err, sizeof err),
                     AD_FEEDBACK_UNKNOWN);
    notify(fb, "f1", "firing", START);
    assert_true(ad_feedback_knows(fb, "f1"));
    assert_false(ad_feedback_false_positive(fb, KEY_CO, KEY_LEN, START));
    /* Marked while it fires: from the first of the 3 `for` windows, open. */
    assert_int_equal(ad_feedback_mark(fb, "f1", AD_FEEDBACK_FALSE_POSITIVE, "deploy", "admin x",
                                      START + 1, &record, &span, err, sizeof err),
                     AD_FEEDBACK_OK);
    assert_int_equal(span.from_ms, START - 2 * STEP);
    assert_int_equal(span.through_ms, INT64_MAX);
    assert_int_equal(span.key_len, KEY_LEN);
    assert_memory_equal(span.key, KEY_CO, KEY_LEN);
    assert_string_equal(json_string_value(json_object_get(record, "verdict")), "false_positive");
    assert_string_equal(json_string_value(json_object_get(record, "comment")), "deploy");
    assert_string_equal(json_string_value(json_object_get(record, "by")), "admin x");
    assert_string_equal(json_string_value(json_object_get(record, "detector")), "api");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(record, "labels"), "instance")), "c-1");
    assert_true(json_is_null(json_object_get(record, "through_ms")));
    json_decref(record);
    assert_int_equal(lines(path), 1);
    assert_true(ad_feedback_false_positive(fb, KEY_CO, KEY_LEN, START - 2 * STEP));
    assert_true(ad_feedback_false_positive(fb, KEY_CO, KEY_LEN, START + 100 * STEP));
    assert_false(ad_feedback_false_positive(fb, KEY_CO, KEY_LEN, START - 3 * STEP));
    assert_false(ad_feedback_false_positive(fb, "checkout\0c-2", KEY_LEN, START));

    /* The resolution closes it (a line more); its id names the same mark. */
    notify(fb, "r1", "resolved", START + 10 * STEP);
    assert_int_equal(lines(path), 2);
    assert_false(ad_feedback_false_positive(fb, KEY_CO, KEY_LEN, START + 11 * STEP));
    assert_true(ad_feedback_false_positive(fb, KEY_CO, KEY_LEN, START + 10 * STEP));
    record = ad_feedback_get(fb, "r1");
    assert_non_null(record);
    assert_int_equal(json_integer_value(json_object_get(record, "through_ms")), START + 600000);
    json_decref(record);

    /* Changed to a true positive through the resolution's id: one mark, the last line wins. */
    assert_int_equal(ad_feedback_mark(fb, "r1", AD_FEEDBACK_TRUE_POSITIVE, NULL, "redis", 5,
                                      &record, &span, err, sizeof err),
                     AD_FEEDBACK_OK);
    assert_int_equal(span.through_ms, START + 600000);
    json_decref(record);
    assert_false(ad_feedback_false_positive(fb, KEY_CO, KEY_LEN, START));
    json_t *status = json_object();
    ad_feedback_status(fb, status);
    assert_int_equal(json_integer_value(json_object_get(status, "true_positives")), 1);
    assert_int_equal(json_integer_value(json_object_get(status, "false_positives")), 0);
    json_decref(status);
    ad_feedback_destroy(fb);

    /* A restart: the marks are read back; a line that is not a mark, or another detector's,
     * is skipped. */
    FILE *f = fopen(path, "a");
    fputs("not json\n{\"id\":\"z\",\"detector\":\"other\",\"verdict\":\"true_positive\"}\n", f);
    fclose(f);
    fb = open_feedback(folder);
    record = ad_feedback_get(fb, "r1");
    assert_non_null(record);
    assert_string_equal(json_string_value(json_object_get(record, "verdict")), "true_positive");
    json_decref(record);
    assert_true(ad_feedback_knows(fb, "r1"));
    assert_false(ad_feedback_knows(fb, "z"));
    /* Marked again after the restart, from the kept record: a false positive again. */
    assert_int_equal(ad_feedback_mark(fb, "r1", AD_FEEDBACK_FALSE_POSITIVE, NULL, "t", 6, &record,
                                      &span, err, sizeof err),
                     AD_FEEDBACK_OK);
    json_decref(record);
    assert_true(ad_feedback_false_positive(fb, KEY_CO, KEY_LEN, START));
    status = json_object();
    ad_feedback_status(fb, status);
    assert_int_equal(json_integer_value(json_object_get(status, "lines_skipped")), 1);
    json_decref(status);
    ad_feedback_destroy(fb);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", folder);
    assert_int_equal(system(cmd), 0);
}

static void test_not_kept_without_a_folder(void **state)
{
    (void)state;
    struct ad_feedback *fb = open_feedback(NULL);
    json_t *record;
    struct ad_feedback_span span;
    char err[256];
    notify(fb, "f1", "firing", START);
    assert_int_equal(ad_feedback_mark(fb, "f1", AD_FEEDBACK_TRUE_POSITIVE, NULL, "t", 0, &record,
                                      &span, err, sizeof err),
                     AD_FEEDBACK_NOT_KEPT);
    assert_non_null(strstr(err, "feedback.path"));
    /* Only `recent` notifications are remembered. */
    for (int i = 0; i < 4; i++) {
        char id[8];
        snprintf(id, sizeof id, "n%d", i);
        notify(fb, id, "firing", START);
    }
    assert_false(ad_feedback_knows(fb, "f1"));
    assert_true(ad_feedback_knows(fb, "n0"));
    assert_int_equal(ad_feedback_verdict_parse("true_positive"), AD_FEEDBACK_TRUE_POSITIVE);
    assert_int_equal(ad_feedback_verdict_parse("maybe"), -1);
    ad_feedback_destroy(fb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_marks_kept_and_read_back),
        cmocka_unit_test(test_not_kept_without_a_folder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
