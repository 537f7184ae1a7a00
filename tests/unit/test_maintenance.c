/*
 * Maintenance windows compiled from a config: which entities each matches (exact values and
 * anchored regular expressions on the detector's keys, windows for other detectors or on labels
 * the detector lacks left out) and when each is active (absolute ranges, cron schedules in a
 * time zone, with their durations), and what /status shows.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/tz.h"
#include "config/config.h"
#include "detect/maintenance.h"

#define MS(y, mo, d, h, mi) \
    (((int64_t)ad_tz_days_from_civil(y, mo, d) * 86400 + (h)*3600 + (mi)*60) * 1000)

static const char config_text[] =
    "kafka: {brokers: 'localhost:9092'}\n"
    "sources:\n"
    "  - name: app\n"
    "    kafka:\n"
    "      topics: [logs]\n"
    "      time: {path: ts}\n"
    "      labels: {service: service, instance: instance, zone: zone}\n"
    "      features: {requests: count}\n"
    "detectors:\n"
    "  - name: api\n"
    "    keys: [service, instance]\n"
    "    features: [app.requests]\n"
    "  - name: zones\n"
    "    keys: [zone]\n"
    "    features: [app.requests]\n"
    "model_store: {path: /m}\n"
    "maintenance:\n"
    "  - name: upgrade\n"
    "    comment: CHG-1234\n"
    "    detectors: [api]\n"
    "    match: {service: checkout}\n"
    "    match_re: {instance: 'db-[0-9]+'}\n"
    "    start: 2026-06-13T22:00:00+02:00\n"
    "    end: 2026-06-14T01:00:00+02:00\n"
    "  - name: nightly\n"
    "    match_re: {service: 'batch|etl'}\n"
    "    schedule: '30 2 * * *'\n"
    "    duration: 1h\n"
    "    timezone: Europe/Berlin\n"
    "  - name: zone-b\n"
    "    match: {zone: b}\n"
    "    schedule: '@weekly'\n"
    "    duration: 2h\n";

static struct ad_config *load(void)
{
    struct ad_diag *diag = ad_diag_new();
    struct ad_config *cfg =
        ad_config_load_buffer("test.yaml", config_text, strlen(config_text), diag);
    if (!cfg)
        fail_msg("%s", ad_diag_count(diag) ? ad_diag_message(diag, 0) : "?");
    ad_diag_destroy(diag);
    return cfg;
}

#define KEY(a, b) a "\0" b, sizeof(a) + sizeof(b) - 1

static void test_covering(void **state)
{
    (void)state;
    struct ad_config *cfg = load();
    char err[256];
    struct ad_maintenance *api = ad_maintenance_new(ad_config_settings(cfg), 0, err, sizeof err);
    assert_non_null(api);
    /* zone-b matches on a label api does not have: left out for api. */
    assert_int_equal(ad_maintenance_count(api), 2);
    int64_t start = MS(2026, 6, 13, 20, 0); /* 22:00 +02:00 */
    assert_null(ad_maintenance_covering(api, KEY("checkout", "db-1"), start - 1));
    assert_string_equal(ad_maintenance_covering(api, KEY("checkout", "db-1"), start), "upgrade");
    assert_string_equal(ad_maintenance_covering(api, KEY("checkout", "db-22"), start + 3600000),
                        "upgrade");
    assert_null(ad_maintenance_covering(api, KEY("checkout", "db-1"), start + 3 * 3600000));
    /* Anchored: db-1x and xdb-1 are not db-[0-9]+; another service is not checkout. */
    assert_null(ad_maintenance_covering(api, KEY("checkout", "db-1x"), start));
    assert_null(ad_maintenance_covering(api, KEY("checkout", "xdb-1"), start));
    assert_null(ad_maintenance_covering(api, KEY("payments", "db-1"), start));
    /* Nightly at 02:30 Berlin for an hour: 00:30Z to 01:30Z in summer, 01:30Z in winter. */
    assert_string_equal(ad_maintenance_covering(api, KEY("etl", "x"), MS(2026, 6, 10, 0, 30)),
                        "nightly");
    assert_string_equal(ad_maintenance_covering(api, KEY("batch", "x"), MS(2026, 6, 10, 1, 29)),
                        "nightly");
    assert_null(ad_maintenance_covering(api, KEY("batch", "x"), MS(2026, 6, 10, 1, 30)));
    assert_null(ad_maintenance_covering(api, KEY("batch", "x"), MS(2026, 12, 10, 0, 45)));
    assert_string_equal(ad_maintenance_covering(api, KEY("batch", "x"), MS(2026, 12, 10, 1, 45)),
                        "nightly");
    assert_null(ad_maintenance_covering(api, KEY("batchy", "x"), MS(2026, 12, 10, 1, 45)));
    /* Times that go back and forth get the same answers (the cache). */
    int64_t start_out, end_out;
    assert_int_equal(ad_maintenance_active(api, 1, MS(2026, 6, 10, 12, 0), &start_out, &end_out),
                     0);
    assert_int_equal(start_out, MS(2026, 6, 11, 0, 30)); /* the next start */
    assert_int_equal(ad_maintenance_active(api, 1, MS(2026, 6, 11, 1, 0), &start_out, &end_out), 1);
    assert_int_equal(end_out, MS(2026, 6, 11, 1, 30));
    assert_int_equal(ad_maintenance_active(api, 1, MS(2026, 6, 10, 12, 0), &start_out, &end_out),
                     0);
    ad_maintenance_destroy(api);

    struct ad_maintenance *zones = ad_maintenance_new(ad_config_settings(cfg), 1, err, sizeof err);
    assert_int_equal(ad_maintenance_count(zones), 1); /* upgrade is api's; nightly's label too */
    /* @weekly: Sunday 00:00 UTC. 2026-06-14 is a Sunday. */
    assert_string_equal(ad_maintenance_covering(zones, "b", 1, MS(2026, 6, 14, 1, 59)), "zone-b");
    assert_null(ad_maintenance_covering(zones, "b", 1, MS(2026, 6, 14, 2, 0)));
    assert_null(ad_maintenance_covering(zones, "a", 1, MS(2026, 6, 14, 1, 0)));
    ad_maintenance_destroy(zones);
    ad_config_unref(cfg);
}

static void test_status(void **state)
{
    (void)state;
    struct ad_config *cfg = load();
    char err[256];
    struct ad_maintenance *all =
        ad_maintenance_new(ad_config_settings(cfg), SIZE_MAX, err, sizeof err);
    assert_int_equal(ad_maintenance_count(all), 3);
    json_t *out = json_array();
    ad_maintenance_status(all, MS(2026, 6, 13, 21, 0), out);
    assert_int_equal(json_array_size(out), 3);
    json_t *upgrade = json_array_get(out, 0);
    assert_string_equal(json_string_value(json_object_get(upgrade, "name")), "upgrade");
    assert_string_equal(json_string_value(json_object_get(upgrade, "comment")), "CHG-1234");
    assert_true(json_is_true(json_object_get(upgrade, "active")));
    assert_string_equal(json_string_value(json_object_get(upgrade, "active_until")),
                        "2026-06-13T23:00:00Z");
    json_t *nightly = json_array_get(out, 1);
    assert_true(json_is_false(json_object_get(nightly, "active")));
    assert_string_equal(json_string_value(json_object_get(nightly, "next_start")),
                        "2026-06-14T00:30:00Z");
    assert_string_equal(json_string_value(json_object_get(nightly, "timezone")), "Europe/Berlin");
    /* No entity matches in the set for /status. */
    assert_null(ad_maintenance_covering(all, KEY("checkout", "db-1"), MS(2026, 6, 13, 21, 0)));
    json_decref(out);
    ad_maintenance_destroy(all);
    ad_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_covering),
        cmocka_unit_test(test_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
