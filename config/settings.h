#ifndef AD_SETTINGS_H
#define AD_SETTINGS_H

/*
 * The typed, validated settings of one config file: plain data, immutable once loaded, owned by
 * the struct ad_config it came from (see config.h). Every key is documented in
 * docs/config.md, generated from the schema tables in config.c. Durations are milliseconds.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"

struct ad_strlist {
    char **items;
    size_t len;
};

/* An ordered string map: keys[i] -> values[i]. */
struct ad_strmap {
    char **keys;
    char **values;
    size_t len;
};

/* A value that may come from the file, a file it names or the environment. The value is never
 * logged or shown; origin ("inline", "file:/run/secrets/x", "env:NAME") may be. */
struct ad_secret {
    char *value; /* NULL when not set */
    char *origin;
};

struct ad_secretmap {
    char **keys;
    struct ad_secret *values;
    size_t len;
};

struct ad_settings_daemon {
    enum ad_log_level log_level; /* decoded by name, in the logger's order */
    enum ad_log_format log_format;
    char *admin_listen; /* host:port, [v6]:port */
    /* Required by the admin endpoint's requests that change something (POST); without it
     * they are taken from loopback peers only. */
    struct ad_secret admin_token;
    int64_t shutdown_timeout;
    bool watch_config;
};

struct ad_settings_kafka {
    struct ad_strlist brokers;
    char *client_id;
    char *group_id;
    struct ad_secretmap properties; /* passed to librdkafka as they are */
};

enum ad_time_format {
    AD_TIME_RFC3339,
    AD_TIME_UNIX_S,
    AD_TIME_UNIX_MS,
    AD_TIME_UNIX_US,
    AD_TIME_KAFKA /* the message timestamp */
};

struct ad_settings_event_time {
    char *path; /* a JSON path (jpath.h); NULL with AD_TIME_KAFKA */
    enum ad_time_format format;
    int64_t max_past;   /* events older than now - max_past are rejected */
    int64_t max_future; /* events newer than now + max_future are rejected */
};

enum ad_cmp_op { AD_OP_EQ, AD_OP_NE, AD_OP_LT, AD_OP_LE, AD_OP_GT, AD_OP_GE, AD_OP_EXISTS };
enum ad_literal_type { AD_LITERAL_STRING, AD_LITERAL_NUMBER, AD_LITERAL_BOOL, AD_LITERAL_NULL };

/* "<path> <op> <literal>" or "<path> exists". */
struct ad_predicate {
    char *path;
    enum ad_cmp_op op;
    enum ad_literal_type type;
    char *string;
    double number;
    bool boolean;
};

enum ad_feature_kind {
    AD_FEATURE_COUNT,
    AD_FEATURE_COUNT_IF,
    AD_FEATURE_SUM,
    AD_FEATURE_MEAN,
    AD_FEATURE_MIN,
    AD_FEATURE_MAX,
    AD_FEATURE_LAST,
    AD_FEATURE_QUERY /* a Prometheus query's value */
};

/* How a bucket with no data for a feature is filled (the mask records it either way). */
enum ad_fill_policy { AD_FILL_ZERO, AD_FILL_CARRY, AD_FILL_NAN };

struct ad_settings_feature {
    char *name;
    enum ad_feature_kind kind;
    char *path;                    /* SUM..LAST: the numeric field */
    struct ad_predicate predicate; /* COUNT_IF */
    char *query;                   /* QUERY: PromQL */
};

struct ad_settings_kafka_source {
    struct ad_strlist topics;
    int64_t max_message_bytes;
    char *dead_letter_topic; /* NULL: rejected events are only counted */
    struct ad_settings_event_time time;
    struct ad_strmap labels;        /* entity label -> JSON path */
    struct ad_strmap static_labels; /* entity label -> value */
    struct ad_strlist filter_exprs; /* as written; parsed into filters */
    struct ad_strmap feature_exprs; /* as written; parsed into features */
    /* Derived while validating. */
    struct ad_predicate *filters;
    size_t n_filters;
};

struct ad_settings_tls {
    char *ca_file;
    char *cert_file;
    char *key_file;
    bool insecure_skip_verify;
};

/* Credentials and headers for an HTTP(S) peer (Prometheus, a model store URL). */
struct ad_settings_http {
    struct ad_secret bearer_token;
    char *basic_username;
    struct ad_secret basic_password;
    struct ad_settings_tls tls;
    struct ad_secretmap headers;
    int64_t timeout;
};

struct ad_settings_prometheus_source {
    char *url;
    struct ad_strmap queries; /* feature name -> PromQL */
    struct ad_strmap labels;  /* entity label -> series label, when the names differ */
    int64_t step;             /* 0: the step of the detectors that use it */
    int64_t delay;
    struct ad_settings_http http;
};

/* AD_SOURCE_FILE: a source no section defines, whose features only a replay's CSV input
 * holds (ad_config_load_replay); the daemon never sees one. */
enum ad_source_type { AD_SOURCE_KAFKA, AD_SOURCE_PROMETHEUS, AD_SOURCE_FILE };

struct ad_settings_source {
    char *name;
    enum ad_source_type type;
    struct ad_settings_kafka_source kafka;
    struct ad_settings_prometheus_source prometheus;
    /* Derived: the features this source produces, in the order written. */
    struct ad_settings_feature *features;
    size_t n_features;
};

struct ad_settings_alert {
    int64_t for_windows;
    int64_t resolve_for;
    int64_t repeat_interval;
    int64_t flap_window;   /* windows looked back on for flapping */
    double flap_threshold; /* fraction of state changes in that look-back that is flapping */
};

struct ad_settings_shadow {
    int64_t windows;         /* 0: new versions serve at once */
    double max_disagreement; /* share of windows with different verdicts that refuses one */
};

/* Which way a feature's change matters (detectors[].direction). */
enum ad_direction { AD_DIRECTION_BOTH, AD_DIRECTION_UP, AD_DIRECTION_DOWN };

/* What a feature's deviation from what was expected must be to count (docs/scoring.md,
 * "Direction and minimum deviation"): its direction, and at least max(min_abs, min_rel ×
 * |expected|). All zero: every deviation counts. */
struct ad_feature_control {
    enum ad_direction direction;
    double min_abs, min_rel;
};

struct ad_feature_ref {
    size_t source;  /* index into settings.sources */
    size_t feature; /* index into that source's features */
    enum ad_fill_policy fill;
    struct ad_feature_control control;
};

/* Windows the surprise's short mean looks back on (detect/surprise): rebuilding a detector's
 * state after a restart replays at least that many (rebuild_history's default). */
#define AD_SURPRISE_SHORT 6
/* The default threshold.surprise: one window in 100,000. */
#define AD_DEFAULT_SURPRISE 5.0

struct ad_settings_detector {
    char *name;
    struct ad_strlist keys;
    struct ad_strlist features; /* "source.feature", in the model's order */
    struct ad_strmap fill;      /* "source.feature" -> zero|carry|nan */
    int64_t step;
    int64_t window;
    int64_t allowed_lateness;
    int64_t source_idle_timeout;
    int64_t max_entities;
    int64_t entity_idle_timeout;
    int64_t rebuild_history;     /* ms of event time a restart reads again */
    char *model;                 /* the model's name in the store */
    char *export_path;           /* NULL: windows are not exported */
    double threshold_surprise;   /* −log10 of a chance; the likelihood's, when that was given */
    double threshold_likelihood; /* NAN when not given */
    double threshold_score;      /* NAN: none */
    struct ad_strlist streams;   /* "lstm", "seasonal": the score streams judged */
    struct ad_strmap direction;  /* "source.feature" -> up|down|both */
    struct ad_strmap min_deviation; /* "source.feature" -> "N", "P%" or "N, P%" */
    struct ad_settings_alert alert;
    struct ad_settings_shadow shadow;
    /* Derived while validating. */
    struct ad_feature_ref *refs; /* features.len entries */
    size_t window_len;           /* T = window / step */
    bool stream_lstm, stream_seasonal;
};

struct ad_settings_kafka_sink {
    char *topic; /* NULL: no Kafka sink */
    struct ad_secretmap properties;
};

struct ad_settings_redis_sink {
    char *url; /* NULL: no Redis sink */
    struct ad_secret username;
    struct ad_secret password;
    char *stream;
    int64_t stream_maxlen;
    char *hash;
    char *channel;
    int64_t queue_limit;
    int64_t connect_timeout;
    /* Derived from url. */
    char *host;
    int port;
    char *socket_path;
    int db;
};

struct ad_settings_alertmanager_sink {
    struct ad_strlist urls; /* empty: no Alertmanager sink; each gets every alert */
    char *severity;
    struct ad_strmap labels; /* static labels on every alert */
    char *generator_url;     /* a template (base/template.h); NULL: none */
    int64_t resend_interval; /* firing alerts are sent again this often */
    int64_t queue_limit;     /* alerts not yet acknowledged, at most, before back-pressure */
    struct ad_settings_http http;
};

struct ad_settings_sinks {
    struct ad_settings_kafka_sink kafka;
    struct ad_settings_redis_sink redis;
    struct ad_settings_alertmanager_sink alertmanager;
};

/* A maintenance window (docs/maintenance.md): entities it matches notify nothing and their
 * windows enter no history while it is active. Either start/end or schedule/duration. */
struct ad_settings_maintenance {
    char *name;
    char *comment;
    struct ad_strlist detectors; /* empty: every detector */
    struct ad_strmap match;      /* label -> exact value */
    struct ad_strmap match_re;   /* label -> POSIX extended regex, anchored */
    char *start, *end;           /* RFC 3339, as written */
    char *schedule;              /* five-field cron, as written */
    int64_t duration;
    char *timezone;
    /* Derived while validating. */
    int64_t start_ms, end_ms; /* INT64_MIN when not absolute */
};

struct ad_settings_feedback {
    char *path;          /* the marks' folder; NULL: model_store.path */
    char *redis_channel; /* NULL: no command channel */
    int64_t history;     /* how long a false positive can still take its windows back */
    int64_t max_held;    /* entities whose recent history is held, per detector */
    int64_t recent_alerts;
};

struct ad_settings_model_store {
    char *path; /* a local folder, or */
    char *url;  /* an HTTP(S) base URL */
    int64_t poll_interval;
    char *redis_channel; /* NULL: no announcements */
    struct ad_settings_http http;
};

enum ad_scoring_backend { AD_BACKEND_AUTO, AD_BACKEND_CUDA, AD_BACKEND_CPU };

struct ad_settings_scoring {
    enum ad_scoring_backend backend;
    int64_t device;
    int64_t max_batch;
    int64_t queue_depth;
    int64_t cpu_threads;          /* 0: one per core */
    int64_t entity_metrics_limit; /* entities with series on /metrics/entities, per detector */
};

struct ad_settings {
    struct ad_settings_daemon daemon;
    struct ad_settings_kafka kafka;
    struct ad_settings_source *sources;
    size_t n_sources;
    struct ad_settings_detector *detectors;
    size_t n_detectors;
    struct ad_settings_sinks sinks;
    struct ad_settings_model_store model_store;
    struct ad_settings_scoring scoring;
    struct ad_settings_maintenance *maintenance;
    size_t n_maintenance;
    struct ad_settings_feedback feedback;
};

#endif
