/*
 * The GPU probe. Without a device the probe must say why; with --require-device (the
 * `gpu`-labelled test) the absence of a device skips with status 77 and a present one must
 * describe itself.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/version.h"
#include "gpu/device.h"

static void test_probe_is_consistent(void **state)
{
    (void)state;
    struct ad_gpu_info info;
    memset(&info, 0xAB, sizeof info);
    ad_gpu_probe(0, &info);
    assert_int_equal(info.built_with_cuda, AD_BUILT_WITH_CUDA);
    assert_true(info.device_count >= 0);
    if (info.device_count == 0) {
        /* No device is never silent. */
        assert_true(strlen(info.error) > 0);
        assert_string_equal(info.name, "");
    } else {
        assert_true(strlen(info.name) > 0);
        assert_true(info.compute_major >= 3);
        assert_true(info.total_memory > 0);
        assert_true(info.driver_version > 0);
    }
    if (info.built_with_cuda)
        assert_true(info.runtime_version >= 12000);
}

static void test_missing_ordinal_is_explained(void **state)
{
    (void)state;
    struct ad_gpu_info info;
    ad_gpu_probe(63, &info);
    assert_string_equal(info.name, "");
    assert_true(strlen(info.error) > 0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--require-device") == 0) {
        struct ad_gpu_info info;
        ad_gpu_probe(0, &info);
        if (info.device_count == 0) {
            printf("skipped: no CUDA device (%s)\n", info.error);
            return 77;
        }
        printf("device 0: %s, compute %d.%d, %zu MiB\n", info.name, info.compute_major,
               info.compute_minor, info.total_memory >> 20);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe_is_consistent),
        cmocka_unit_test(test_missing_ordinal_is_explained),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
