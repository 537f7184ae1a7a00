/*
 * libFuzzer target: arbitrary bytes as a config file. Loading must either succeed or report
 * errors, never crash, leak or hang (ASan and UBSan are on in fuzz builds).
 */

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ad_diag *diag = ad_diag_new();
    struct ad_config *cfg = ad_config_load_buffer("fuzz.yaml", (const char *)data, size, diag);
    /* Either a config or at least one error, never neither. */
    if (!cfg && ad_diag_count(diag) == 0)
        __builtin_trap();
    ad_config_unref(cfg);
    ad_diag_destroy(diag);
    return 0;
}
