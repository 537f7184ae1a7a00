#ifndef AD_ERRSTR_H
#define AD_ERRSTR_H

/*
 * The error convention of every constructor and fallible call: the caller passes a buffer
 * (char *errstr, size_t errstr_size) and gets a human sentence in it on failure, as
 * librdkafka's rd_kafka_new does. This is the one function that fills it.
 */

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Formats fmt into errstr as one line (line breaks from quoted text become spaces), cut to
 * errstr_size. errstr may be NULL or errstr_size 0: nothing is written. Returns -1, so that an
 * error path can end with `return ad_errstr_set(...)`. */
int ad_errstr_set(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif

#endif
