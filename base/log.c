#include "base/log.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/utf8.h"

/* Longer records are cut: a log line must never allocate or fail. */
#define LOG_LINE_MAX 8192
/* Each value is cut to this many bytes (escaped), so a record keeps all of its keys. */
#define LOG_VALUE_MAX 2048

static atomic_int log_level = AD_LOG_INFO;
static atomic_int log_format = AD_LOG_LOGFMT;
static atomic_int log_fd = -1;

const char *const ad_log_level_names[] = {"debug", "info", "warn", "error", NULL};
const char *const ad_log_format_names[] = {"logfmt", "json", NULL};

void ad_log_set_level(enum ad_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum ad_log_level ad_log_get_level(void)
{
    return (enum ad_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

void ad_log_set_format(enum ad_log_format format)
{
    atomic_store(&log_format, (int)format);
}

void ad_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

int ad_log_level_parse(const char *name, enum ad_log_level *out)
{
    for (size_t i = 0; i < (size_t)AD_LOG_ERROR + 1; i++) {
        if (strcasecmp(name, ad_log_level_names[i]) == 0) {
            *out = (enum ad_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = AD_LOG_WARN;
        return 0;
    }
    return -1;
}

const char *ad_log_level_name(enum ad_log_level level)
{
    if ((int)level < 0 || (size_t)level >= (size_t)AD_LOG_ERROR + 1)
        return "unknown";
    return ad_log_level_names[level];
}

int ad_log_format_parse(const char *name, enum ad_log_format *out)
{
    if (strcasecmp(name, "logfmt") == 0)
        *out = AD_LOG_LOGFMT;
    else if (strcasecmp(name, "json") == 0)
        *out = AD_LOG_JSON;
    else
        return -1;
    return 0;
}

/* A fixed buffer that silently stops growing when full. */
struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    bool truncated;
};

/* Appends all of s or, once the line is full, nothing more at all. Two bytes stay reserved for
 * the closing brace and the newline. */
static void put_mem(struct line *l, const char *s, size_t n)
{
    if (l->truncated || l->len + n + 2 > sizeof l->buf) {
        l->truncated = true;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    put_mem(l, s, strlen(s));
}

static void put_char(struct line *l, char c)
{
    put_mem(l, &c, 1);
}

static void put_fmt(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put_fmt(struct line *l, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    put_str(l, tmp);
}

static bool logfmt_needs_quotes(const char *s)
{
    if (*s == '\0')
        return true;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f)
            return true;
    }
    return false;
}

/* Values are escaped for the format, and bytes that are not UTF-8 (a file's contents quoted in
 * an error, say) become U+FFFD, so that every line stays valid text and valid JSON. */
static void put_escaped(struct line *l, const char *s, bool json)
{
    size_t start = l->len;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c >= 0x80) {
            size_t n = ad_utf8_sequence(s, SIZE_MAX);
            if (n) {
                memcpy(esc, s, n);
                esc[n] = '\0';
                s += n - 1;
            } else {
                strcpy(esc, "\xef\xbf\xbd");
            }
            if (l->len - start + strlen(esc) > LOG_VALUE_MAX) {
                put_str(l, "...");
                return;
            }
            put_str(l, esc);
            continue;
        }
        switch (c) {
        case '"':
            strcpy(esc, "\\\"");
            break;
        case '\\':
            strcpy(esc, "\\\\");
            break;
        case '\n':
            strcpy(esc, "\\n");
            break;
        case '\r':
            strcpy(esc, "\\r");
            break;
        case '\t':
            strcpy(esc, "\\t");
            break;
        default:
            if (c < 0x20 || c == 0x7f)
                snprintf(esc, sizeof esc, json ? "\\u%04x" : "\\x%02x", c);
            else {
                esc[0] = (char)c;
                esc[1] = '\0';
            }
        }
        if (l->len - start + strlen(esc) > LOG_VALUE_MAX) {
            put_str(l, "...");
            return;
        }
        put_str(l, esc);
    }
}

static void put_key(struct line *l, const char *key, bool json, bool first)
{
    if (json) {
        put_str(l, first ? "{\"" : ",\"");
        put_escaped(l, key, true);
        put_str(l, "\":");
    } else {
        if (!first)
            put_char(l, ' ');
        put_str(l, key);
        put_char(l, '=');
    }
}

static void put_str_field(struct line *l, const char *key, const char *value, bool json, bool first)
{
    if (!value)
        value = "";
    put_key(l, key, json, first);
    bool quote = json || logfmt_needs_quotes(value);
    if (quote)
        put_char(l, '"');
    put_escaped(l, value, json);
    if (quote)
        put_char(l, '"');
}

static void put_double(struct line *l, double d, bool json)
{
    if (isfinite(d))
        put_fmt(l, "%.17g", d);
    else if (json) /* JSON has no NaN or Inf literals. */
        put_str(l, isnan(d) ? "\"NaN\"" : (d > 0 ? "\"+Inf\"" : "\"-Inf\""));
    else
        put_str(l, isnan(d) ? "NaN" : (d > 0 ? "+Inf" : "-Inf"));
}

static void put_header(struct line *l, enum ad_log_level level, const char *module, bool json)
{
    struct timespec ts;
    struct tm tm;
    char stamp[40];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);

    put_str_field(l, "ts", stamp, json, true);
    put_str_field(l, "level", ad_log_level_name(level), json, false);
    put_str_field(l, "module", module, json, false);
}

/* Values are capped at LOG_VALUE_MAX, so a full line only happens with many long fields; the
 * caller then writes the record again without them. */
static void emit(struct line *l, bool json)
{
    if (json)
        l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';

    int fd = atomic_load(&log_fd);
    if (fd < 0)
        fd = STDERR_FILENO;
    const char *p = l->buf;
    size_t left = l->len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* Nowhere left to report a logging failure. */
        p += w;
        left -= (size_t)w;
    }
}

void ad_log_vprintf(enum ad_log_level level, const char *module, const char *fmt, va_list ap)
{
    struct line l = {.len = 0};
    char msg[LOG_LINE_MAX];
    bool json = atomic_load(&log_format) == AD_LOG_JSON;

    vsnprintf(msg, sizeof msg, fmt, ap);
    put_header(&l, level, module, json);
    put_str_field(&l, "msg", msg, json, false);
    emit(&l, json);
}

void ad_log_printf(enum ad_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ad_log_vprintf(level, module, fmt, ap);
    va_end(ap);
}

void ad_log_fields(enum ad_log_level level, const char *module, const char *msg,
                   const struct ad_log_field *fields, size_t n_fields)
{
    struct line l = {.len = 0};
    bool json = atomic_load(&log_format) == AD_LOG_JSON;

    put_header(&l, level, module, json);
    put_str_field(&l, "msg", msg, json, false);
    for (size_t i = 0; i < n_fields && !l.truncated; i++) {
        const struct ad_log_field *f = &fields[i];
        switch (f->type) {
        case AD_LOG_FIELD_STR:
            put_str_field(&l, f->key, f->s, json, false);
            break;
        case AD_LOG_FIELD_INT:
            put_key(&l, f->key, json, false);
            put_fmt(&l, "%lld", f->i);
            break;
        case AD_LOG_FIELD_DOUBLE:
            put_key(&l, f->key, json, false);
            put_double(&l, f->d, json);
            break;
        }
    }
    if (l.truncated) {
        l.len = 0;
        l.truncated = false;
        put_header(&l, level, module, json);
        put_str_field(&l, "msg", msg, json, false);
        put_key(&l, "fields_dropped", json, false);
        put_fmt(&l, "%zu", n_fields);
    }
    emit(&l, json);
}

bool ad_log_ratelimit_allow(struct ad_log_ratelimit *rl, int64_t now_ms, uint64_t *suppressed)
{
    if (rl->used && now_ms - rl->last_ms < rl->interval_ms) {
        rl->suppressed++;
        return false;
    }
    if (suppressed)
        *suppressed = rl->suppressed;
    rl->used = true;
    rl->last_ms = now_ms;
    rl->suppressed = 0;
    return true;
}
