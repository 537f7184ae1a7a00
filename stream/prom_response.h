#ifndef AD_PROM_RESPONSE_H
#define AD_PROM_RESPONSE_H

/*
 * Parsing of a Prometheus HTTP API response to /api/v1/query_range (jansson):
 *   {"status":"success","data":{"resultType":"matrix","result":[
 *       {"metric":{"job":"a"},"values":[[1795323660,"0.5"],[1795323670,"NaN"]]}]},
 *    "warnings":["..."]}
 * Sample values arrive as strings; "NaN", "+Inf" and "-Inf" become NAN, INFINITY and
 * -INFINITY. Times are Unix seconds (possibly fractional) and become milliseconds.
 */

#include <stddef.h>
#include <stdint.h>

struct ad_prom_series {
    char **label_names; /* sorted by name; __name__ included when present */
    char **label_values;
    size_t n_labels;
    int64_t *times_ms; /* ascending as Prometheus returns them */
    double *values;
    size_t n_samples;
};

struct ad_prom_matrix {
    struct ad_prom_series *series;
    size_t n_series;
    char **warnings;
    size_t n_warnings;
};

enum ad_prom_parse_result {
    AD_PROM_OK,
    AD_PROM_MALFORMED,         /* not JSON, truncated, or not the documented shape */
    AD_PROM_ERROR_STATUS,      /* "status":"error": err holds errorType and error */
    AD_PROM_WRONG_RESULT_TYPE, /* a resultType other than "matrix" */
};

/*
 * Parses body (len bytes; need not be NUL-terminated) into *out, which the caller frees with
 * ad_prom_matrix_free (also after a failure). err (may be NULL) receives a one-line reason.
 */
enum ad_prom_parse_result ad_prom_parse_matrix(const char *body, size_t len,
                                               struct ad_prom_matrix *out, char *errstr,
                                               size_t errstr_size);
void ad_prom_matrix_free(struct ad_prom_matrix *m);

const char *ad_prom_parse_result_name(enum ad_prom_parse_result r);

#endif
