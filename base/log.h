#ifndef AD_LOG_H
#define AD_LOG_H

/*
 * Structured logging to stderr, one line per record, as logfmt or JSON.
 *
 * Every record has ts, level, module and msg; AD_*_KV adds typed fields. Each .c file
 * defines AD_LOG_MODULE (its "[module]" tag) before including this header. Arguments are
 * not evaluated when the level is disabled. Safe to call from any thread: a record is
 * formatted on the stack and written with one write(2).
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ad_log_level { AD_LOG_DEBUG, AD_LOG_INFO, AD_LOG_WARN, AD_LOG_ERROR };
enum ad_log_format { AD_LOG_LOGFMT, AD_LOG_JSON };
/* Their names, in the enums' order, NULL-terminated (the config decodes them by position). */
extern const char *const ad_log_level_names[];
extern const char *const ad_log_format_names[];

enum ad_log_field_type { AD_LOG_FIELD_STR, AD_LOG_FIELD_INT, AD_LOG_FIELD_DOUBLE };

struct ad_log_field {
    const char *key;
    enum ad_log_field_type type;
    const char *s;
    long long i;
    double d;
};

#define AD_KV_STR(k, v)                                \
    {                                                  \
        .key = (k), .type = AD_LOG_FIELD_STR, .s = (v) \
    }
#define AD_KV_INT(k, v)                                           \
    {                                                             \
        .key = (k), .type = AD_LOG_FIELD_INT, .i = (long long)(v) \
    }
#define AD_KV_DOUBLE(k, v)                                        \
    {                                                             \
        .key = (k), .type = AD_LOG_FIELD_DOUBLE, .d = (double)(v) \
    }

void ad_log_set_level(enum ad_log_level level);
enum ad_log_level ad_log_get_level(void);
void ad_log_set_format(enum ad_log_format format);

/* Writes to this fd instead of stderr (tests); -1 restores stderr. */
void ad_log_set_fd(int fd);

/* Parses "debug", "info", "warn"/"warning", "error". Returns 0 or -1. */
int ad_log_level_parse(const char *name, enum ad_log_level *out);
const char *ad_log_level_name(enum ad_log_level level);
int ad_log_format_parse(const char *name, enum ad_log_format *out);

void ad_log_printf(enum ad_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ad_log_vprintf(enum ad_log_level level, const char *module, const char *fmt, va_list ap);
void ad_log_fields(enum ad_log_level level, const char *module, const char *msg,
                   const struct ad_log_field *fields, size_t n_fields);

/*
 * At most one record per interval for a recurring problem (a stream of bad events), saying how
 * many were held back. Zero-initialize with the interval set; not thread-safe.
 */
struct ad_log_ratelimit {
    int64_t interval_ms;
    int64_t last_ms;
    uint64_t suppressed;
    bool used;
};

/* Whether a record may be written at now_ms; if so, *suppressed (may be NULL) gets how many
 * were held back since the last one. */
bool ad_log_ratelimit_allow(struct ad_log_ratelimit *rl, int64_t now_ms, uint64_t *suppressed);

#define AD_LOG_ENABLED(level) ((level) >= ad_log_get_level())

#define AD_LOG(level, ...)                                      \
    do {                                                        \
        if (AD_LOG_ENABLED(level))                              \
            ad_log_printf((level), AD_LOG_MODULE, __VA_ARGS__); \
    } while (0)

#define AD_LOG_KV(level, msg, ...)                                   \
    do {                                                             \
        if (AD_LOG_ENABLED(level)) {                                 \
            const struct ad_log_field ad_log_kv_[] = {__VA_ARGS__};  \
            ad_log_fields((level), AD_LOG_MODULE, (msg), ad_log_kv_, \
                          sizeof ad_log_kv_ / sizeof ad_log_kv_[0]); \
        }                                                            \
    } while (0)

#define AD_DEBUG(...) AD_LOG(AD_LOG_DEBUG, __VA_ARGS__)
#define AD_INFO(...)  AD_LOG(AD_LOG_INFO, __VA_ARGS__)
#define AD_WARN(...)  AD_LOG(AD_LOG_WARN, __VA_ARGS__)
#define AD_ERROR(...) AD_LOG(AD_LOG_ERROR, __VA_ARGS__)

#define AD_DEBUG_KV(msg, ...) AD_LOG_KV(AD_LOG_DEBUG, msg, __VA_ARGS__)
#define AD_INFO_KV(msg, ...)  AD_LOG_KV(AD_LOG_INFO, msg, __VA_ARGS__)
#define AD_WARN_KV(msg, ...)  AD_LOG_KV(AD_LOG_WARN, msg, __VA_ARGS__)
#define AD_ERROR_KV(msg, ...) AD_LOG_KV(AD_LOG_ERROR, msg, __VA_ARGS__)

#endif
