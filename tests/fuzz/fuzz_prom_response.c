/*
 * libFuzzer target: arbitrary bytes as a Prometheus /api/v1/query_range response body.
 * Parsing must return one of its results, never crash, leak or hang (ASan and UBSan are on
 * in fuzz builds), and what it returns on success must keep the header's promises.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "stream/prom_response.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ad_prom_matrix m;
    char err[256];
    enum ad_prom_parse_result r =
        ad_prom_parse_matrix((const char *)data, size, &m, err, sizeof err);

    if (r == AD_PROM_OK) {
        for (size_t i = 0; i < m.n_series; i++) {
            const struct ad_prom_series *s = &m.series[i];
            for (size_t j = 1; j < s->n_labels; j++)
                if (strcmp(s->label_names[j - 1], s->label_names[j]) >= 0)
                    __builtin_trap(); /* labels sorted, no duplicates */
            for (size_t j = 1; j < s->n_samples; j++)
                if (s->times_ms[j - 1] >= s->times_ms[j])
                    __builtin_trap(); /* times ascending */
        }
    } else if (!err[0] || !memchr(err, '\0', sizeof err) || strchr(err, '\n')) {
        __builtin_trap(); /* every failure says why, on one line */
    }
    ad_prom_matrix_free(&m);
    return 0;
}
