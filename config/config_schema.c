#include "config/config_schema.h"

#include <ctype.h>
#include <math.h>
#include <regex.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

#include "base/clock.h"
#include "base/cron.h"
#include "base/number.h"
#include "base/template.h"
#include "base/tz.h"
#include "config/config.h"
#include "config/expr.h"
#include "config/jpath.h"
#include "config/kafka_sink_rules.h"
#include "config/kafka_source_rules.h"
#include "config/settings.h"
#include "config/yaml_tree.h"

#define N(a)         (sizeof(a) / sizeof((a)[0]))
#define MS(s)        ((double)(s)*1000.0)
#define MAX_WINDOW   4096 /* buckets per window (T) */
#define MAX_FEATURES 64   /* per detector, and per source */
#define PATH_BUF     AD_YAML_PATH_MAX
static const char *const time_formats[] = {"rfc3339", "unix_s", "unix_ms",
                                           "unix_us", "kafka",  NULL};
static const char *const backends[] = {"auto", "cuda", "cpu", NULL};
static const char *const fill_policies[] = {"zero", "carry", "nan", NULL};

const char *ad_config_backend_name(enum ad_scoring_backend backend)
{
    return (size_t)backend < N(backends) - 1 ? backends[backend] : "unknown";
}

const char *ad_config_fill_name(enum ad_fill_policy fill)
{
    return (size_t)fill < N(fill_policies) - 1 ? fill_policies[fill] : "unknown";
}

static void child_path(char *out, const char *parent, const char *key)
{
    ad_yaml_path_key(out, PATH_BUF, parent, key);
}

static void item_path(char *out, const char *parent, const char *key, size_t i)
{
    char tmp[PATH_BUF];
    ad_yaml_path_key(tmp, sizeof tmp, parent, key);
    ad_yaml_path_index(out, PATH_BUF, tmp, i);
}

/* Names end up in metric labels and in "source.feature" references. */
static bool valid_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
            return false;
    return true;
}

static void check_name(struct ad_schema_ctx *ctx, const char *path, const char *name)
{
    char p[PATH_BUF];
    child_path(p, path, "name");
    if (!valid_name(name))
        ad_schema_error(ctx, p, "\"%s\" may hold only letters, digits, '_' and '-'", name);
}

int ad_config_split_address(const char *text, char *host, size_t host_size, int *port)
{
    const char *colon;
    size_t host_len;

    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return -1;
        host_len = (size_t)(close - text - 1);
        text++;
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || memchr(text, ':', (size_t)(colon - text)))
            return -1;
        host_len = (size_t)(colon - text);
    }
    if (host_len >= host_size)
        return -1;
    const char *p = colon + 1;
    if (!*p || strlen(p) > 5)
        return -1;
    long v = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v > 65535)
        return -1;
    memcpy(host, text, host_len);
    host[host_len] = '\0';
    *port = (int)v;
    return 0;
}

static void check_address(struct ad_schema_ctx *ctx, const char *path, const char *text,
                          bool need_host)
{
    char host[256];
    int port;
    if (ad_config_split_address(text, host, sizeof host, &port) < 0 || (need_host && !*host) ||
        (need_host && port == 0))
        ad_schema_error(ctx, path, "expected host:port%s, got \"%s\"",
                        need_host ? "" : " (or [v6]:port, :port)", text);
}

static void check_url(struct ad_schema_ctx *ctx, const char *path, const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    if (!u)
        return;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        (strcmp(scheme, "http") && strcmp(scheme, "https")))
        ad_schema_error(ctx, path, "expected an http:// or https:// URL, got \"%s\"", url);
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
}

static void check_jpath(struct ad_schema_ctx *ctx, const char *path, const char *text)
{
    struct ad_jpath parsed;
    const char *error;
    size_t offset;
    if (ad_jpath_parse(text, &parsed, &error, &offset) < 0)
        ad_schema_error_offset(ctx, path, offset, "bad JSON path \"%s\": %s", text, error);
    else
        ad_jpath_free(&parsed);
}

static void check_readable(struct ad_schema_ctx *ctx, const char *parent, const char *key,
                           const char *file)
{
    char p[PATH_BUF];
    if (!file)
        return;
    child_path(p, parent, key);
    if (access(file, R_OK) < 0)
        ad_schema_error(ctx, p, "cannot read %s", file);
}

/* ---- daemon ---- */

#define DAEMON(m) offsetof(struct ad_settings_daemon, m)

static const struct ad_schema_field daemon_log_fields[] = {
    {.name = "level",
     .kind = AD_SCHEMA_ENUM,
     .offset = DAEMON(log_level),
     .def = "info",
     .values = ad_log_level_names,
     .doc = "Least severe level written: `debug`, `info`, `warn` or `error`. "
            "`--log-level` overrides it."},
    {.name = "format",
     .kind = AD_SCHEMA_ENUM,
     .offset = DAEMON(log_format),
     .def = "logfmt",
     .values = ad_log_format_names,
     .doc = "`logfmt` (key=value) or `json` lines on stderr. `--log-format` overrides it."},
};

static const struct ad_schema_section daemon_log_section = {
    .name = "log",
    .fields = daemon_log_fields,
    .n_fields = N(daemon_log_fields),
    .doc = "Logging. Both keys change live on reload."};

static void check_admin(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    const struct ad_settings_daemon *d = obj;
    char p[PATH_BUF];
    child_path(p, path, "listen");
    check_address(ctx, p, d->admin_listen, false);
}

static const struct ad_schema_field daemon_admin_fields[] = {
    {.name = "listen",
     .kind = AD_SCHEMA_STRING,
     .offset = DAEMON(admin_listen),
     .def = "127.0.0.1:9476",
     .flags = AD_SCHEMA_RESTART,
     .doc = "Address of the admin HTTP server (`/metrics`, `/healthz`, `/readyz`, `/status`): "
            "`host:port`, `[v6]:port`, or `:port` for every interface. Port 0 picks a free "
            "port and logs it."},
    {.name = "token",
     .kind = AD_SCHEMA_SECRET,
     .offset = DAEMON(admin_token),
     .doc = "Bearer token (a secret) that requests which change something (`POST "
            "/alerts/<id>/feedback`) must send as `Authorization: Bearer <token>`. Without it "
            "they are taken from loopback peers only (docs/feedback.md)."},
};

static const struct ad_schema_section daemon_admin_section = {.name = "admin",
                                                              .fields = daemon_admin_fields,
                                                              .n_fields = N(daemon_admin_fields),
                                                              .check = check_admin,
                                                              .doc = "The admin HTTP endpoint."};

static const struct ad_schema_field daemon_fields[] = {
    {.name = "log",
     .kind = AD_SCHEMA_SECTION,
     .offset = 0,
     .section = &daemon_log_section,
     .doc = "Logging."},
    {.name = "admin",
     .kind = AD_SCHEMA_SECTION,
     .offset = 0,
     .section = &daemon_admin_section,
     .doc = "Admin HTTP endpoint."},
    {.name = "shutdown_timeout",
     .kind = AD_SCHEMA_DURATION,
     .offset = DAEMON(shutdown_timeout),
     .def = "30s",
     .min = 0,
     .max = MS(3600),
     .doc = "How long a graceful stop (SIGTERM, SIGINT) may take; past it the daemon exits "
            "with status 1. Keep it below systemd's TimeoutStopSec and Kubernetes' "
            "terminationGracePeriodSeconds."},
    {.name = "watch_config",
     .kind = AD_SCHEMA_BOOL,
     .offset = DAEMON(watch_config),
     .def = "true",
     .doc = "Reload when the config file's content changes, as on SIGHUP: the file's folder "
            "is watched with inotify, so an editor's save and a Kubernetes ConfigMap update "
            "(a swapped `..data` link) are both seen. Turn it off where another tool decides "
            "when to reload."},
};

static const struct ad_schema_section daemon_section = {.name = "daemon",
                                                        .fields = daemon_fields,
                                                        .n_fields = N(daemon_fields),
                                                        .doc = "The process itself."};

/* ---- kafka ---- */

#define KAFKA(m) offsetof(struct ad_settings_kafka, m)

/* Properties anomalyd sets itself; overriding them would break delivery or identity. */
static const struct {
    const char *property;
    const char *instead;
} reserved_properties[] = {
    {"bootstrap.servers", "use kafka.brokers"},
    {"metadata.broker.list", "use kafka.brokers"},
    {"group.id", "use kafka.group_id"},
    {"client.id", "use kafka.client_id"},
    {"enable.auto.offset.store", "offsets are stored once every alert is delivered"},
    {"enable.auto.commit", "anomalyd commits offsets with their rebuild points itself"},
    {"enable.partition.eof", "idle partitions are tracked by source_idle_timeout"},
};

static void check_kafka_properties(struct ad_schema_ctx *ctx, const char *path,
                                   const struct ad_secretmap *props)
{
    char errstr[512], p[PATH_BUF];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    size_t n_known = 0;
    const char **known = rd_kafka_conf_dump(conf, &n_known);
    const char **names = calloc(n_known / 2 + 1, sizeof *names);

    for (size_t i = 0; names && i < n_known / 2; i++)
        names[i] = known[2 * i];
    for (size_t i = 0; i < props->len; i++) {
        const char *key = props->keys[i];
        child_path(p, path, key);
        bool reserved = false;
        for (size_t r = 0; r < N(reserved_properties) && !reserved; r++) {
            if (strcmp(key, reserved_properties[r].property) == 0) {
                ad_schema_error_key(ctx, p, "\"%s\" is set by anomalyd: %s", key,
                                    reserved_properties[r].instead);
                reserved = true;
            }
        }
        if (reserved)
            continue;
        rd_kafka_conf_res_t res =
            rd_kafka_conf_set(conf, key, props->values[i].value, errstr, sizeof errstr);
        if (res == RD_KAFKA_CONF_UNKNOWN) {
            const char *hint = names ? ad_schema_suggest(key, names) : NULL;
            if (hint)
                ad_schema_error_key(ctx, p,
                                    "unknown librdkafka property \"%s\" (did you mean "
                                    "\"%s\"?)",
                                    key, hint);
            else
                ad_schema_error_key(ctx, p, "unknown librdkafka property \"%s\"", key);
        } else if (res != RD_KAFKA_CONF_OK) {
            /* librdkafka names the property and the accepted values; the secret is never
             * echoed because free-form properties (passwords) accept anything. */
            ad_schema_error(ctx, p, "%s", errstr);
        }
    }
    free(names);
    rd_kafka_conf_dump_free(known, n_known);
    rd_kafka_conf_destroy(conf);
}

static void check_kafka(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    const struct ad_settings_kafka *k = obj;
    char p[PATH_BUF];
    for (size_t i = 0; i < k->brokers.len; i++) {
        item_path(p, path, "brokers", i);
        if (!ad_schema_present(ctx, p)) /* written as one "a,b" string */
            child_path(p, path, "brokers");
        check_address(ctx, p, k->brokers.items[i], true);
    }
    child_path(p, path, "properties");
    check_kafka_properties(ctx, p, &k->properties);
    /* The consumer's own rules; the shared properties are the only ones it takes. */
    for (size_t i = 0; i < k->properties.len; i++) {
        const char *why =
            ad_kafka_source_conflict(k->properties.keys[i], k->properties.values[i].value);
        char key_path[PATH_BUF];
        if (!why)
            continue;
        child_path(key_path, p, k->properties.keys[i]);
        ad_schema_error(ctx, key_path, "\"%s\" is refused: %s", k->properties.keys[i], why);
    }
}

static const struct ad_schema_field kafka_fields[] = {
    {.name = "brokers",
     .kind = AD_SCHEMA_STRING_LIST,
     .offset = KAFKA(brokers),
     .flags = AD_SCHEMA_COMMA_LIST,
     .doc = "Bootstrap brokers, `host:port`. Needed by Kafka sources and the Kafka sink."},
    {.name = "client_id",
     .kind = AD_SCHEMA_STRING,
     .offset = KAFKA(client_id),
     .def = "anomalyd",
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Client id shown in broker logs and quotas."},
    {.name = "group_id",
     .kind = AD_SCHEMA_STRING,
     .offset = KAFKA(group_id),
     .def = "anomalyd",
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Consumer group. Replicas sharing it divide the partitions between them."},
    {.name = "properties",
     .kind = AD_SCHEMA_SECRET_MAP,
     .offset = KAFKA(properties),
     .doc = "librdkafka properties passed through unchanged (`security.protocol`, `sasl.*`, "
            "`ssl.*`, `fetch.*`...); values may be secrets. Checked against librdkafka on load. "
            "`partition.assignment.strategy` may name only the eager `range` and `roundrobin` "
            "(the default is `range,roundrobin`): librdkafka 2.0.2's `cooperative-sticky` "
            "aborts the process when a consumer stops before its first assignment."},
};

static const struct ad_schema_section kafka_section = {
    .name = "kafka",
    .fields = kafka_fields,
    .n_fields = N(kafka_fields),
    .check = check_kafka,
    .doc = "The Kafka cluster that log sources read and the Kafka sink writes. A change rebuilds "
           "the pipeline (see docs/config.md, Reloading)."};

/* ---- HTTP peers ---- */

#define HTTP(m) offsetof(struct ad_settings_http, m)

static const struct ad_schema_field basic_auth_fields[] = {
    {.name = "username",
     .kind = AD_SCHEMA_STRING,
     .offset = HTTP(basic_username),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY,
     .doc = "User name."},
    {.name = "password",
     .kind = AD_SCHEMA_SECRET,
     .offset = HTTP(basic_password),
     .flags = AD_SCHEMA_REQUIRED,
     .doc = "Password (a secret)."},
};

static const struct ad_schema_section basic_auth_section = {.name = "basic_auth",
                                                            .fields = basic_auth_fields,
                                                            .n_fields = N(basic_auth_fields),
                                                            .doc = "HTTP basic authentication."};

#define TLS(m) offsetof(struct ad_settings_tls, m)

static void check_tls(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    const struct ad_settings_tls *t = obj;
    char p[PATH_BUF];
    if (!t->cert_file != !t->key_file) {
        child_path(p, path, t->cert_file ? "cert_file" : "key_file");
        ad_schema_error(ctx, p, "cert_file and key_file go together");
    }
    check_readable(ctx, path, "ca_file", t->ca_file);
    check_readable(ctx, path, "cert_file", t->cert_file);
    check_readable(ctx, path, "key_file", t->key_file);
}

static const struct ad_schema_field tls_fields[] = {
    {.name = "ca_file",
     .kind = AD_SCHEMA_STRING,
     .offset = TLS(ca_file),
     .flags = AD_SCHEMA_NONEMPTY | AD_SCHEMA_PATH,
     .doc = "CA bundle to verify the server with."},
    {.name = "cert_file",
     .kind = AD_SCHEMA_STRING,
     .offset = TLS(cert_file),
     .flags = AD_SCHEMA_NONEMPTY | AD_SCHEMA_PATH,
     .doc = "Client certificate (PEM), with key_file."},
    {.name = "key_file",
     .kind = AD_SCHEMA_STRING,
     .offset = TLS(key_file),
     .flags = AD_SCHEMA_NONEMPTY | AD_SCHEMA_PATH,
     .doc = "Client key (PEM), with cert_file."},
    {.name = "insecure_skip_verify",
     .kind = AD_SCHEMA_BOOL,
     .offset = TLS(insecure_skip_verify),
     .def = "false",
     .doc = "Skip verifying the server certificate. For tests only."},
};

static const struct ad_schema_section tls_section = {.name = "tls",
                                                     .fields = tls_fields,
                                                     .n_fields = N(tls_fields),
                                                     .check = check_tls,
                                                     .doc = "TLS for https:// URLs."};

static void check_http(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    const struct ad_settings_http *h = obj;
    char p[PATH_BUF];
    if (h->bearer_token.value && h->basic_username) {
        child_path(p, path, "basic_auth");
        ad_schema_error(ctx, p, "give bearer_token or basic_auth, not both");
    }
}

static const struct ad_schema_field http_fields[] = {
    {.name = "timeout",
     .kind = AD_SCHEMA_DURATION,
     .offset = HTTP(timeout),
     .def = "10s",
     .min = 1,
     .max = MS(600),
     .doc = "Timeout of one request."},
    {.name = "bearer_token",
     .kind = AD_SCHEMA_SECRET,
     .offset = HTTP(bearer_token),
     .doc = "Sent as `Authorization: Bearer <token>` (a secret)."},
    {.name = "basic_auth",
     .kind = AD_SCHEMA_SECTION,
     .offset = 0,
     .section = &basic_auth_section,
     .doc = "HTTP basic authentication."},
    {.name = "tls",
     .kind = AD_SCHEMA_SECTION,
     .offset = HTTP(tls),
     .section = &tls_section,
     .doc = "TLS settings."},
    {.name = "headers",
     .kind = AD_SCHEMA_SECRET_MAP,
     .offset = HTTP(headers),
     .doc = "Extra request headers (e.g. `X-Scope-OrgID`); values may be secrets."},
};

static const struct ad_schema_section http_section = {
    .name = "http", .fields = http_fields, .n_fields = N(http_fields), .check = check_http};

/* ---- sources ---- */

#define TIME(m) offsetof(struct ad_settings_event_time, m)

static const struct ad_schema_field event_time_fields[] = {
    {.name = "path",
     .kind = AD_SCHEMA_STRING,
     .offset = TIME(path),
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "JSON path of the event time. Required unless format is `kafka`."},
    {.name = "format",
     .kind = AD_SCHEMA_ENUM,
     .offset = TIME(format),
     .def = "rfc3339",
     .values = time_formats,
     .doc = "`rfc3339` text, `unix_s`, `unix_ms` or `unix_us` numbers (or numeric strings), "
            "or `kafka` for the message timestamp."},
    {.name = "max_past",
     .kind = AD_SCHEMA_DURATION,
     .offset = TIME(max_past),
     .def = "24h",
     .min = MS(1),
     .max = MS(365 * 86400.0),
     .doc = "Events older than now minus this are rejected (reason `time_too_old`)."},
    {.name = "max_future",
     .kind = AD_SCHEMA_DURATION,
     .offset = TIME(max_future),
     .def = "5m",
     .min = 0,
     .max = MS(7 * 86400.0),
     .doc = "Events newer than now plus this are rejected (reason `time_in_future`)."},
};

static const struct ad_schema_section event_time_section = {
    .name = "time",
    .fields = event_time_fields,
    .n_fields = N(event_time_fields),
    .doc = "Where each event's time comes from."};

#define KSRC(m) offsetof(struct ad_settings_kafka_source, m)

static void free_kafka_source(void *obj)
{
    struct ad_settings_kafka_source *k = obj;
    for (size_t i = 0; i < k->n_filters; i++)
        ad_expr_free_predicate(&k->filters[i]);
    free(k->filters);
    k->filters = NULL;
    k->n_filters = 0;
}

static void check_kafka_source(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    struct ad_settings_kafka_source *k = obj;
    char p[PATH_BUF];

    if (k->time.format != AD_TIME_KAFKA && !k->time.path) {
        child_path(p, path, "time");
        ad_schema_error(ctx, p,
                        "needs path (the JSON field holding the event time) unless "
                        "format is kafka");
    }
    if (k->time.path) {
        char tp[PATH_BUF];
        child_path(tp, path, "time");
        child_path(p, tp, "path");
        check_jpath(ctx, p, k->time.path);
    }
    for (size_t i = 0; i < k->labels.len; i++) {
        char lp[PATH_BUF];
        child_path(lp, path, "labels");
        child_path(p, lp, k->labels.keys[i]);
        check_jpath(ctx, p, k->labels.values[i]);
    }
    k->filters = calloc(k->filter_exprs.len ? k->filter_exprs.len : 1, sizeof *k->filters);
    for (size_t i = 0; k->filters && i < k->filter_exprs.len; i++) {
        const char *error;
        size_t offset;
        item_path(p, path, "filters", i);
        if (ad_expr_parse_predicate(k->filter_exprs.items[i], &k->filters[k->n_filters], &error,
                                    &offset) < 0)
            ad_schema_error_offset(ctx, p, offset, "%s", error);
        else
            k->n_filters++;
    }
}

static const struct ad_schema_field kafka_source_fields[] = {
    {.name = "topics",
     .kind = AD_SCHEMA_STRING_LIST,
     .offset = KSRC(topics),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY | AD_SCHEMA_COMMA_LIST,
     .doc = "Topics to consume, as one consumer group (`kafka.group_id`)."},
    {.name = "max_message_bytes",
     .kind = AD_SCHEMA_SIZE,
     .offset = KSRC(max_message_bytes),
     .def = "1MiB",
     .min = 64,
     .max = 64.0 * 1024 * 1024,
     .doc = "Larger messages are rejected (reason `too_large`) without being parsed."},
    {.name = "dead_letter_topic",
     .kind = AD_SCHEMA_STRING,
     .offset = KSRC(dead_letter_topic),
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Rejected events are produced here with the reason in the `anomalyd-reason` "
            "header. Unset: they are only counted."},
    {.name = "time",
     .kind = AD_SCHEMA_SECTION,
     .offset = KSRC(time),
     .section = &event_time_section,
     .doc = "Event time."},
    {.name = "labels",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = KSRC(labels),
     .doc = "Entity labels taken from each event: label name to JSON path."},
    {.name = "static_labels",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = KSRC(static_labels),
     .doc = "Entity labels with fixed values: label name to value."},
    {.name = "filters",
     .kind = AD_SCHEMA_STRING_LIST,
     .offset = KSRC(filter_exprs),
     .doc = "Conditions an event must meet to count at all, e.g. `kind == \"access\"`; all "
            "must hold. See \"Expressions\" above."},
    {.name = "features",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = KSRC(feature_exprs),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY,
     .doc = "Feature name to expression: `count`, `count_if COND`, `sum|mean|min|max|last "
            "PATH`."},
};

static const struct ad_schema_section kafka_source_section = {
    .name = "kafka",
    .fields = kafka_source_fields,
    .n_fields = N(kafka_source_fields),
    .check = check_kafka_source,
    .free_derived = free_kafka_source,
    .doc = "A Kafka topic of JSON log events, one event per message."};

#define PSRC(m) offsetof(struct ad_settings_prometheus_source, m)

static void check_prometheus_source(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    const struct ad_settings_prometheus_source *ps = obj;
    char p[PATH_BUF];
    child_path(p, path, "url");
    check_url(ctx, p, ps->url);
}

static const struct ad_schema_field prometheus_source_fields[] = {
    {.name = "url",
     .kind = AD_SCHEMA_STRING,
     .offset = PSRC(url),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY,
     .doc = "Base URL of the Prometheus HTTP API, e.g. `http://prometheus:9090`."},
    {.name = "queries",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = PSRC(queries),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY,
     .doc = "Feature name to PromQL. Each series' labels name its entity."},
    {.name = "labels",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = PSRC(labels),
     .doc = "Entity label to series label, where the names differ (e.g. `service: job`)."},
    {.name = "step",
     .kind = AD_SCHEMA_DURATION,
     .offset = PSRC(step),
     .def = "0s",
     .min = 0,
     .max = MS(86400),
     .doc = "Resolution of the range queries; `0s` takes the step of the detectors using it, "
            "which it must equal otherwise."},
    {.name = "delay",
     .kind = AD_SCHEMA_DURATION,
     .offset = PSRC(delay),
     .def = "1m",
     .min = 0,
     .max = MS(3600),
     .doc = "How far behind now the queries end, so that scrapes and rule evaluations have "
            "landed."},
    {.name = NULL, .kind = AD_SCHEMA_SECTION, .offset = PSRC(http), .section = &http_section},
};

static const struct ad_schema_section prometheus_source_section = {
    .name = "prometheus",
    .fields = prometheus_source_fields,
    .n_fields = N(prometheus_source_fields),
    .check = check_prometheus_source,
    .doc = "Range queries against a Prometheus server's HTTP API."};

#define SRC(m) offsetof(struct ad_settings_source, m)

static void free_source(void *obj)
{
    struct ad_settings_source *s = obj;
    for (size_t i = 0; i < s->n_features; i++)
        ad_expr_free_feature(&s->features[i]);
    free(s->features);
    s->features = NULL;
    s->n_features = 0;
}

static void source_features_from_kafka(struct ad_schema_ctx *ctx, const char *path,
                                       struct ad_settings_source *s)
{
    const struct ad_strmap *exprs = &s->kafka.feature_exprs;
    char kp[PATH_BUF], fp[PATH_BUF], p[PATH_BUF];

    child_path(kp, path, "kafka");
    child_path(fp, kp, "features");
    s->features = calloc(exprs->len ? exprs->len : 1, sizeof *s->features);
    for (size_t i = 0; s->features && i < exprs->len; i++) {
        struct ad_settings_feature *f = &s->features[s->n_features];
        const char *error;
        size_t offset;
        child_path(p, fp, exprs->keys[i]);
        if (!valid_name(exprs->keys[i])) {
            ad_schema_error_key(ctx, p,
                                "feature names may hold only letters, digits, '_' and "
                                "'-'");
            continue;
        }
        if (ad_expr_parse_feature(exprs->values[i], f, &error, &offset) < 0) {
            ad_schema_error_offset(ctx, p, offset, "%s", error);
            continue;
        }
        f->name = strdup(exprs->keys[i]);
        s->n_features++;
    }
}

static void source_features_from_prometheus(struct ad_schema_ctx *ctx, const char *path,
                                            struct ad_settings_source *s)
{
    const struct ad_strmap *queries = &s->prometheus.queries;
    char pp[PATH_BUF], qp[PATH_BUF], p[PATH_BUF];

    child_path(pp, path, "prometheus");
    child_path(qp, pp, "queries");
    s->features = calloc(queries->len ? queries->len : 1, sizeof *s->features);
    for (size_t i = 0; s->features && i < queries->len; i++) {
        child_path(p, qp, queries->keys[i]);
        if (!valid_name(queries->keys[i])) {
            ad_schema_error_key(ctx, p,
                                "feature names may hold only letters, digits, '_' and "
                                "'-'");
            continue;
        }
        if (!*queries->values[i]) {
            ad_schema_error(ctx, p, "needs a PromQL query");
            continue;
        }
        struct ad_settings_feature *f = &s->features[s->n_features++];
        f->name = strdup(queries->keys[i]);
        f->kind = AD_FEATURE_QUERY;
        f->query = strdup(queries->values[i]);
    }
}

static void check_source(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    struct ad_settings_source *s = obj;
    char kp[PATH_BUF], pp[PATH_BUF];

    check_name(ctx, path, s->name);
    child_path(kp, path, "kafka");
    child_path(pp, path, "prometheus");
    bool has_kafka = ad_schema_present(ctx, kp), has_prom = ad_schema_present(ctx, pp);
    if (has_kafka == has_prom) {
        ad_schema_error(ctx, path, "a source needs exactly one of kafka or prometheus");
        return;
    }
    s->type = has_kafka ? AD_SOURCE_KAFKA : AD_SOURCE_PROMETHEUS;
    if (has_kafka)
        source_features_from_kafka(ctx, path, s);
    else
        source_features_from_prometheus(ctx, path, s);
}

static const struct ad_schema_field source_fields[] = {
    {.name = "name",
     .kind = AD_SCHEMA_STRING,
     .offset = SRC(name),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY,
     .doc = "Unique name; detectors refer to its features as `name.feature`."},
    {.name = "kafka",
     .kind = AD_SCHEMA_SECTION,
     .offset = SRC(kafka),
     .section = &kafka_source_section,
     .doc = "A Kafka log source."},
    {.name = "prometheus",
     .kind = AD_SCHEMA_SECTION,
     .offset = SRC(prometheus),
     .section = &prometheus_source_section,
     .doc = "A Prometheus metric source."},
};

static const struct ad_schema_section source_section = {
    .name = "source",
    .size = sizeof(struct ad_settings_source),
    .fields = source_fields,
    .n_fields = N(source_fields),
    .check = check_source,
    .free_derived = free_source,
    .doc = "Each source has a name and exactly one of `kafka` or `prometheus`."};

/* ---- detectors ---- */

#define DET(m)   offsetof(struct ad_settings_detector, m)
#define ALERT(m) offsetof(struct ad_settings_alert, m)

static const struct ad_schema_field alert_fields[] = {
    {.name = "for",
     .kind = AD_SCHEMA_INT,
     .offset = ALERT(for_windows),
     .def = "1",
     .min = 1,
     .max = 1000,
     .doc = "Consecutive windows over the threshold before a pending alert fires."},
    {.name = "resolve_for",
     .kind = AD_SCHEMA_INT,
     .offset = ALERT(resolve_for),
     .def = "100",
     .min = 1,
     .max = 1000,
     .doc = "Consecutive windows under the threshold before a firing alert resolves."},
    {.name = "repeat_interval",
     .kind = AD_SCHEMA_DURATION,
     .offset = ALERT(repeat_interval),
     .def = "0s",
     .min = 0,
     .max = MS(30 * 86400.0),
     .doc = "A firing alert is sent again this often; `0s` (the default) never repeats: "
            "Alertmanager and the receivers of the sinks re-notify on their own schedule."},
    {.name = "flap_window",
     .kind = AD_SCHEMA_INT,
     .offset = ALERT(flap_window),
     .def = "20",
     .min = 2,
     .max = 1000,
     .doc = "Windows looked back on to detect flapping."},
    {.name = "flap_threshold",
     .kind = AD_SCHEMA_FLOAT,
     .offset = ALERT(flap_threshold),
     .def = "0.5",
     .min = 0,
     .max = 1,
     .doc = "Share of state changes within flap_window above which notifications are held "
            "back until the entity settles."},
};

static const struct ad_schema_section alert_section = {
    .name = "alert",
    .fields = alert_fields,
    .n_fields = N(alert_fields),
    .doc = "The alert state machine: pending, firing, resolved."};

static const struct ad_schema_field threshold_fields[] = {
    {.name = "surprise",
     .kind = AD_SCHEMA_FLOAT,
     .offset = DET(threshold_surprise),
     .min = 0,
     .max = 300,
     .doc = "Surprise (−log10 of the chance of a window this unusual for its entity, "
            "docs/scoring.md) at or over which a window counts as anomalous. Default 5: one "
            "window in 100,000."},
    {.name = "likelihood",
     .kind = AD_SCHEMA_FLOAT,
     .offset = DET(threshold_likelihood),
     .min = 0,
     .max = 1,
     .doc = "The same threshold as a likelihood, 1 − 10^−surprise (0.99999 is a surprise of 5); "
            "give one of surprise and likelihood."},
    {.name = "score",
     .kind = AD_SCHEMA_FLOAT,
     .offset = DET(threshold_score),
     .min = 0,
     .max = 1e12,
     .doc = "Raw LSTM score at or over which a window counts as anomalous whatever its "
            "surprise. Unset (the default): none, since a score only means something against "
            "the entity's own history."},
};

static const struct ad_schema_section threshold_section = {
    .name = "threshold",
    .fields = threshold_fields,
    .n_fields = N(threshold_fields),
    .doc = "When a scored window counts as anomalous."};

#define SHADOW(m) offsetof(struct ad_settings_shadow, m)

static const struct ad_schema_field shadow_fields[] = {
    {.name = "windows",
     .kind = AD_SCHEMA_INT,
     .offset = SHADOW(windows),
     .def = "0",
     .min = 0,
     .max = 1e9,
     .doc = "Windows a new model version scores beside the serving one before it is promoted "
            "(docs/model-store.md); `0` swaps it in at once."},
    {.name = "max_disagreement",
     .kind = AD_SCHEMA_FLOAT,
     .offset = SHADOW(max_disagreement),
     .def = "1",
     .min = 0,
     .max = 1,
     .doc = "Share of shadowed windows on which the two versions may disagree (one calls the "
            "window anomalous, the other not) before the candidate is refused instead of "
            "promoted; `1` always promotes."},
};

static const struct ad_schema_section shadow_section = {.name = "shadow",
                                                        .fields = shadow_fields,
                                                        .n_fields = N(shadow_fields),
                                                        .doc =
                                                            "Shadow mode for new model versions."};

static void free_detector(void *obj)
{
    struct ad_settings_detector *d = obj;
    free(d->refs);
    d->refs = NULL;
}

static void check_detector(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    struct ad_settings_detector *d = obj;
    char p[PATH_BUF];

    check_name(ctx, path, d->name);
    if (d->window % d->step != 0 || d->window / d->step > MAX_WINDOW) {
        child_path(p, path, "window");
        ad_schema_error(ctx, p, "must be a whole number of steps, at most %d of them", MAX_WINDOW);
    } else {
        d->window_len = (size_t)(d->window / d->step);
    }
    if (!d->model)
        d->model = strdup(d->name);
    char surprise_path[PATH_BUF], likelihood_path[PATH_BUF];
    child_path(p, path, "threshold");
    child_path(surprise_path, p, "surprise");
    child_path(likelihood_path, p, "likelihood");
    bool has_surprise = ad_schema_present(ctx, surprise_path);
    if (has_surprise && ad_schema_present(ctx, likelihood_path))
        ad_schema_error_key(ctx, likelihood_path,
                            "give the threshold once: as surprise or as likelihood");
    else if (!has_surprise && ad_schema_present(ctx, likelihood_path))
        d->threshold_surprise =
            d->threshold_likelihood >= 1 ? 300 : -log10(1 - d->threshold_likelihood);
    else if (!has_surprise)
        d->threshold_surprise = AD_DEFAULT_SURPRISE;
    child_path(p, path, "entity_idle_timeout");
    if (!ad_schema_present(ctx, p)) {
        const int64_t hour = 3600 * 1000;
        d->entity_idle_timeout = 4 * d->window > hour ? 4 * d->window : hour;
        if (d->entity_idle_timeout > MS(30 * 86400.0))
            d->entity_idle_timeout = MS(30 * 86400.0);
    }
    child_path(p, path, "rebuild_history");
    if (!ad_schema_present(ctx, p)) {
        /* The window of the first new bucket, and the run of windows the alert state machine
         * and the likelihood's short mean look back on. */
        int64_t lookback = AD_SURPRISE_SHORT;
        const int64_t runs[] = {d->alert.for_windows, d->alert.resolve_for, d->alert.flap_window};
        for (size_t i = 0; i < N(runs); i++)
            lookback = runs[i] > lookback ? runs[i] : lookback;
        d->rebuild_history = d->window + lookback * d->step;
    }
}

static const struct ad_schema_field detector_fields[] = {
    {.name = "name",
     .kind = AD_SCHEMA_STRING,
     .offset = DET(name),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY,
     .doc = "Unique name, used in metrics, alerts and the model store."},
    {.name = "keys",
     .kind = AD_SCHEMA_STRING_LIST,
     .offset = DET(keys),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY | AD_SCHEMA_COMMA_LIST,
     .doc = "Entity labels that identify one entity, e.g. `[service, instance]`."},
    {.name = "features",
     .kind = AD_SCHEMA_STRING_LIST,
     .offset = DET(features),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY,
     .doc = "`source.feature` references, in the order the model expects them (at most 64)."},
    {.name = "fill",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = DET(fill),
     .doc = "Per feature, how a bucket without data is filled: `zero`, `carry` (the last "
            "value) or `nan`. Default: zero for count, count_if and sum; carry otherwise."},
    {.name = "direction",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = DET(direction),
     .doc = "Per feature, the change that matters: `up` (only above what was expected, e.g. "
            "errors), `down` (only below, e.g. throughput) or `both` (the default)."},
    {.name = "min_deviation",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = DET(min_deviation),
     .doc = "Per feature, the smallest deviation from what was expected that counts: a number "
            "in the feature's unit (`50`), a share of the expected value (`20%`), or both "
            "(`50, 20%`: the larger). Smaller deviations count as none. Default: every "
            "deviation counts."},
    {.name = "streams",
     .kind = AD_SCHEMA_STRING_LIST,
     .offset = DET(streams),
     .flags = AD_SCHEMA_COMMA_LIST,
     .doc = "The score streams a window is judged by (docs/scoring.md): `lstm` (the model's "
            "prediction error) and `seasonal` (the seasonal baseline). Default: both."},
    {.name = "step",
     .kind = AD_SCHEMA_DURATION,
     .offset = DET(step),
     .def = "1m",
     .min = MS(1),
     .max = MS(86400),
     .doc = "Bucket width. Buckets are aligned to the Unix epoch."},
    {.name = "window",
     .kind = AD_SCHEMA_DURATION,
     .offset = DET(window),
     .def = "1h",
     .min = MS(1),
     .max = MS(90 * 86400.0),
     .doc = "Length of the window the model sees, a whole number of steps (at most 4096)."},
    {.name = "allowed_lateness",
     .kind = AD_SCHEMA_DURATION,
     .offset = DET(allowed_lateness),
     .def = "30s",
     .min = 0,
     .max = MS(86400),
     .doc = "How long after its end a bucket waits for late events before it closes."},
    {.name = "source_idle_timeout",
     .kind = AD_SCHEMA_DURATION,
     .offset = DET(source_idle_timeout),
     .def = "5m",
     .min = MS(1),
     .max = MS(86400),
     .doc = "A source (or Kafka partition) silent this long stops holding buckets open."},
    {.name = "max_entities",
     .kind = AD_SCHEMA_INT,
     .offset = DET(max_entities),
     .def = "100000",
     .min = 1,
     .max = 100000000,
     .doc = "Bound on tracked entities; past it the least recently seen is evicted."},
    {.name = "entity_idle_timeout",
     .kind = AD_SCHEMA_DURATION,
     .offset = DET(entity_idle_timeout),
     .min = MS(1),
     .max = MS(30 * 86400.0),
     .doc = "An entity without data this long is evicted, and its scoring history is forgotten "
            "after twice as long. Default: the larger of 1h and 4 windows, so that a sparse "
            "series (hourly data, say) keeps its history across short gaps; raise it above "
            "the longest silence an entity may have without losing its history."},
    {.name = "rebuild_history",
     .kind = AD_SCHEMA_DURATION,
     .offset = DET(rebuild_history),
     .min = 0,
     .max = MS(90 * 86400.0),
     .doc = "Event time before the newest alerted bucket that a restarted Kafka consumer reads "
            "again to rebuild windows, likelihoods and alert states without notifying twice "
            "(docs/delivery.md). Default: the window plus max(`alert.for`, "
            "`alert.resolve_for`, `alert.flap_window`, 6) steps; `0s` turns rebuilding off."},
    {.name = "model",
     .kind = AD_SCHEMA_STRING,
     .offset = DET(model),
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Name of the model in the store (`<store>/<model>/CURRENT`). Default: the "
            "detector's name."},
    {.name = "export_path",
     .kind = AD_SCHEMA_STRING,
     .offset = DET(export_path),
     .flags = AD_SCHEMA_NONEMPTY | AD_SCHEMA_PATH,
     .doc = "Append every window handed on to this file, one JSON object per line, with its "
            "score once scored (for training and debugging; see docs/windows.md)."},
    {.name = "threshold",
     .kind = AD_SCHEMA_SECTION,
     .offset = 0,
     .section = &threshold_section,
     .doc = "Anomaly thresholds."},
    {.name = "alert",
     .kind = AD_SCHEMA_SECTION,
     .offset = DET(alert),
     .section = &alert_section,
     .doc = "Alerting."},
    {.name = "shadow",
     .kind = AD_SCHEMA_SECTION,
     .offset = DET(shadow),
     .section = &shadow_section,
     .doc = "Shadow mode: a new model version scores beside the serving one before it serves."},
};

static const struct ad_schema_section detector_section = {
    .name = "detector",
    .size = sizeof(struct ad_settings_detector),
    .fields = detector_fields,
    .n_fields = N(detector_fields),
    .check = check_detector,
    .free_derived = free_detector,
    .doc = "A detector scores one kind of entity on one window grid with one model."};

/* ---- sinks ---- */

#define KSINK(m) offsetof(struct ad_settings_kafka_sink, m)

static void check_kafka_sink(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    const struct ad_settings_kafka_sink *k = obj;
    const struct ad_settings *root = ctx->root;
    char p[PATH_BUF], key_path[PATH_BUF], errstr[512];
    child_path(p, path, "properties");
    check_kafka_properties(ctx, p, &k->properties);
    if (!k->topic)
        return; /* no Kafka sink */
    /* The producer's properties as librdkafka will see them: the shared ones, then the sink's.
     * Values librdkafka refuses were reported above. */
    const struct ad_secretmap *maps[] = {&root->kafka.properties, &k->properties};
    const char *origins[] = {"kafka.properties", p};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (size_t m = 0; m < 2; m++)
        for (size_t i = 0; i < maps[m]->len; i++)
            rd_kafka_conf_set(conf, maps[m]->keys[i], maps[m]->values[i].value, errstr,
                              sizeof errstr);
    for (size_t m = 0; m < 2; m++) {
        for (size_t i = 0; i < maps[m]->len; i++) {
            const char *why = ad_kafka_sink_conflict(conf, maps[m]->keys[i]);
            if (!why)
                continue;
            child_path(key_path, origins[m], maps[m]->keys[i]);
            ad_schema_error(ctx, key_path, "%s; remove it", why);
        }
    }
    rd_kafka_conf_destroy(conf);
}

static const struct ad_schema_field kafka_sink_fields[] = {
    {.name = "topic",
     .kind = AD_SCHEMA_STRING,
     .offset = KSINK(topic),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY,
     .doc = "Topic the alerts are produced to, keyed by entity."},
    {.name = "properties",
     .kind = AD_SCHEMA_SECRET_MAP,
     .offset = KSINK(properties),
     .flags = AD_SCHEMA_RESTART,
     .doc = "librdkafka properties for the producer only, over `kafka.properties`."},
};

static const struct ad_schema_section kafka_sink_section = {
    .name = "kafka",
    .fields = kafka_sink_fields,
    .n_fields = N(kafka_sink_fields),
    .check = check_kafka_sink,
    .doc = "Alerts to a Kafka topic (idempotent producer) on the `kafka` cluster."};

#define RSINK(m) offsetof(struct ad_settings_redis_sink, m)

static void free_redis_sink(void *obj)
{
    struct ad_settings_redis_sink *r = obj;
    free(r->host);
    free(r->socket_path);
    r->host = r->socket_path = NULL;
}

/* Takes a URL part into *secret unless the config gave that secret on its own. */
static void url_secret(CURLU *u, CURLUPart part, struct ad_secret *secret)
{
    char *v = NULL;
    if (secret->value || curl_url_get(u, part, &v, CURLU_URLDECODE) != CURLUE_OK || !v)
        return;
    if (!*v) { /* "redis://:password@host" has an empty user */
        curl_free(v);
        return;
    }
    secret->value = strdup(v);
    secret->origin = strdup("url");
    memset(v, 0, strlen(v));
    curl_free(v);
}

static void check_redis_sink(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    struct ad_settings_redis_sink *r = obj;
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *upath = NULL, *query = NULL;
    char p[PATH_BUF];

    child_path(p, path, "url");
    if (!u)
        return;
    if (curl_url_set(u, CURLUPART_URL, r->url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        ad_schema_error(ctx, p,
                        "expected redis://[user:password@]host[:port][/db] or "
                        "unix:///path/to/socket[?db=N]");
        goto out;
    }
    if (strcmp(scheme, "rediss") == 0) {
        ad_schema_error(ctx, p, "rediss:// (TLS) is not supported by this build's hiredis");
        goto out;
    }
    curl_url_get(u, CURLUPART_PATH, &upath, CURLU_URLDECODE);
    curl_url_get(u, CURLUPART_QUERY, &query, 0);
    if (strcmp(scheme, "unix") == 0) {
        if (!upath || strlen(upath) < 2) {
            ad_schema_error(ctx, p, "unix:// needs a socket path, e.g. unix:///run/redis.sock");
            goto out;
        }
        r->socket_path = strdup(upath);
        if (query && strncmp(query, "db=", 3) == 0)
            r->db = atoi(query + 3);
    } else if (strcmp(scheme, "redis") == 0) {
        if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
            ad_schema_error(ctx, p, "redis:// needs a host");
            goto out;
        }
        r->host = strdup(host);
        r->port = 6379;
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
            r->port = atoi(port);
        if (upath && strlen(upath) > 1) {
            char *end;
            long db = strtol(upath + 1, &end, 10);
            if (*end || db < 0 || db > 1000) {
                ad_schema_error(ctx, p, "the path must be a database number, e.g. /0");
                goto out;
            }
            r->db = (int)db;
        }
    } else {
        ad_schema_error(ctx, p, "expected a redis:// or unix:// URL, got %s://", scheme);
        goto out;
    }
    url_secret(u, CURLUPART_USER, &r->username);
    url_secret(u, CURLUPART_PASSWORD, &r->password);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(upath);
    curl_free(query);
    curl_url_cleanup(u);
}

static const struct ad_schema_field redis_sink_fields[] = {
    {.name = "url",
     .kind = AD_SCHEMA_STRING,
     .offset = RSINK(url),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY,
     .doc = "`redis://[user:password@]host[:port][/db]` or `unix:///path.sock[?db=N]`."},
    {.name = "username",
     .kind = AD_SCHEMA_SECRET,
     .offset = RSINK(username),
     .doc = "ACL user name (a secret), over the URL's."},
    {.name = "password",
     .kind = AD_SCHEMA_SECRET,
     .offset = RSINK(password),
     .doc = "Password (a secret), over the URL's."},
    {.name = "stream",
     .kind = AD_SCHEMA_STRING,
     .offset = RSINK(stream),
     .def = "anomalyd:alerts",
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Stream every alert is added to (XADD)."},
    {.name = "stream_maxlen",
     .kind = AD_SCHEMA_INT,
     .offset = RSINK(stream_maxlen),
     .def = "100000",
     .min = 1,
     .max = 1e9,
     .doc = "Approximate bound on the stream's length (`MAXLEN ~`)."},
    {.name = "hash",
     .kind = AD_SCHEMA_STRING,
     .offset = RSINK(hash),
     .def = "anomalyd:state",
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Hash holding the latest alert state per entity."},
    {.name = "channel",
     .kind = AD_SCHEMA_STRING,
     .offset = RSINK(channel),
     .def = "anomalyd:alerts",
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Channel every alert is published on."},
    {.name = "queue_limit",
     .kind = AD_SCHEMA_INT,
     .offset = RSINK(queue_limit),
     .def = "10000",
     .min = 1,
     .max = 1e7,
     .doc = "Alerts waiting for Redis; when full, consumption pauses instead of dropping."},
    {.name = "connect_timeout",
     .kind = AD_SCHEMA_DURATION,
     .offset = RSINK(connect_timeout),
     .def = "5s",
     .min = MS(0.001),
     .max = MS(300),
     .doc = "Timeout of one connection attempt."},
};

static const struct ad_schema_section redis_sink_section = {
    .name = "redis",
    .fields = redis_sink_fields,
    .n_fields = N(redis_sink_fields),
    .check = check_redis_sink,
    .free_derived = free_redis_sink,
    .doc = "Alerts to Redis: a stream, a per-entity state hash and a pub/sub channel."};

#define AMSINK(m) offsetof(struct ad_settings_alertmanager_sink, m)

/* Alertmanager 0.25 refuses a whole request when one label name is not a Prometheus one. */
static bool valid_label_name(const char *s)
{
    if (!*s || isdigit((unsigned char)*s))
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

/* The placeholders of sinks.alertmanager.generator_url (docs/alertmanager.md). */
static const char *const generator_names[] = {
    "detector",        "entity",        "id", "fingerprint", "state", "starts_at_ms", "ends_at_ms",
    "window_start_ms", "window_end_ms", NULL};

static void check_alertmanager_sink(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    const struct ad_settings_alertmanager_sink *a = obj;
    char p[PATH_BUF], q[PATH_BUF];
    for (size_t i = 0; i < a->urls.len; i++) {
        item_path(p, path, "urls", i);
        check_url(ctx, p, a->urls.items[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(a->urls.items[i], a->urls.items[j]) == 0)
                ad_schema_error(ctx, p, "the same Alertmanager as urls[%zu]", j);
    }
    if (a->urls.len > 16) {
        child_path(p, path, "urls");
        ad_schema_error(ctx, p, "at most 16 Alertmanagers");
    }
    child_path(q, path, "labels");
    for (size_t i = 0; i < a->labels.len; i++) {
        child_path(p, q, a->labels.keys[i]);
        if (!valid_label_name(a->labels.keys[i]))
            ad_schema_error_key(ctx, p, "\"%s\" is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                                a->labels.keys[i]);
        else if (strcmp(a->labels.keys[i], "alertname") == 0 ||
                 strcmp(a->labels.keys[i], "severity") == 0)
            ad_schema_error_key(ctx, p, "%s is set by anomalyd (the detector, or severity)",
                                a->labels.keys[i]);
    }
    if (a->generator_url) {
        size_t offset = 0;
        char err[160];
        child_path(p, path, "generator_url");
        struct ad_template *t = ad_template_parse(a->generator_url, &offset, err, sizeof err);
        if (!t) {
            ad_schema_error_offset(ctx, p, offset, "%s", err);
            return;
        }
        const char *const *names;
        size_t n = ad_template_names(t, &names);
        for (size_t i = 0; i < n; i++) {
            bool known = strncmp(names[i], "labels.", 7) == 0 && names[i][7];
            for (size_t k = 0; !known && generator_names[k]; k++)
                known = strcmp(names[i], generator_names[k]) == 0;
            if (!known)
                ad_schema_error(ctx, p,
                                "unknown placeholder {{%s}}: use detector, entity, id, "
                                "fingerprint, state, starts_at_ms, ends_at_ms, window_start_ms, "
                                "window_end_ms or labels.<key>",
                                names[i]);
        }
        ad_template_free(t);
    }
}

static const struct ad_schema_field alertmanager_sink_fields[] = {
    {.name = "urls",
     .kind = AD_SCHEMA_STRING_LIST,
     .offset = AMSINK(urls),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY | AD_SCHEMA_COMMA_LIST,
     .doc = "Base URLs of the Alertmanagers (`http://am-0:9093`); every one gets every alert, "
            "as Prometheus sends to each member of an HA cluster."},
    {.name = "severity",
     .kind = AD_SCHEMA_STRING,
     .offset = AMSINK(severity),
     .def = "warning",
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "The `severity` label of every alert."},
    {.name = "labels",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = AMSINK(labels),
     .doc = "Static labels added to every alert (e.g. `team: sre`); the entity's labels win "
            "over one of the same name."},
    {.name = "generator_url",
     .kind = AD_SCHEMA_STRING,
     .offset = AMSINK(generator_url),
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "The alert's `generatorURL`, a template: `{{detector}}`, `{{entity}}`, `{{id}}`, "
            "`{{fingerprint}}`, `{{state}}`, `{{starts_at_ms}}`, `{{ends_at_ms}}`, "
            "`{{window_start_ms}}`, `{{window_end_ms}}` and `{{labels.<key>}}` are replaced, "
            "percent-encoded (docs/alertmanager.md)."},
    {.name = "resend_interval",
     .kind = AD_SCHEMA_DURATION,
     .offset = AMSINK(resend_interval),
     .def = "1m",
     .min = MS(1),
     .max = MS(86400),
     .doc = "A firing alert is sent again this often, with `endsAt` four intervals ahead, so "
            "that Alertmanager resolves it by itself if anomalyd stops sending."},
    {.name = "queue_limit",
     .kind = AD_SCHEMA_INT,
     .offset = AMSINK(queue_limit),
     .def = "10000",
     .min = 1,
     .max = 10000000,
     .doc = "Alerts not yet accepted by every Alertmanager, at most; at the limit the Kafka "
            "sources pause until the queue drains."},
    {.name = NULL, .kind = AD_SCHEMA_SECTION, .offset = AMSINK(http), .section = &http_section},
};

static const struct ad_schema_section alertmanager_sink_section = {
    .name = "alertmanager",
    .fields = alertmanager_sink_fields,
    .n_fields = N(alertmanager_sink_fields),
    .check = check_alertmanager_sink,
    .doc = "Alerts to Alertmanager's API (`POST /api/v2/alerts`), with the HTTP keys below "
           "(`timeout`, `bearer_token`, `basic_auth`, `tls`, `headers`)."};

#define SINKS(m) offsetof(struct ad_settings_sinks, m)

static const struct ad_schema_field sinks_fields[] = {
    {.name = "kafka",
     .kind = AD_SCHEMA_SECTION,
     .offset = SINKS(kafka),
     .section = &kafka_sink_section,
     .doc = "Kafka sink."},
    {.name = "redis",
     .kind = AD_SCHEMA_SECTION,
     .offset = SINKS(redis),
     .section = &redis_sink_section,
     .doc = "Redis sink."},
    {.name = "alertmanager",
     .kind = AD_SCHEMA_SECTION,
     .offset = SINKS(alertmanager),
     .section = &alertmanager_sink_section,
     .doc = "Alertmanager sink."},
};

static const struct ad_schema_section sinks_section = {
    .name = "sinks",
    .fields = sinks_fields,
    .n_fields = N(sinks_fields),
    .doc = "Where alerts go. Each sink is on when its section is present. A change under "
           "`sinks.kafka` or `sinks.redis` replaces that sink only, on the running pipeline; one "
           "under `sinks.alertmanager` rebuilds the pipeline (see docs/config.md, Reloading)."};

/* ---- model store ---- */

#define STORE(m) offsetof(struct ad_settings_model_store, m)

static void check_model_store(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    const struct ad_settings_model_store *m = obj;
    char p[PATH_BUF];
    if (!m->path == !m->url) {
        ad_schema_error(ctx, path, "needs exactly one of path or url");
        return;
    }
    if (m->url) {
        child_path(p, path, "url");
        check_url(ctx, p, m->url);
    }
}

static const struct ad_schema_field model_store_fields[] = {
    {.name = "path",
     .kind = AD_SCHEMA_STRING,
     .offset = STORE(path),
     .flags = AD_SCHEMA_NONEMPTY | AD_SCHEMA_PATH,
     .doc = "A local folder (a mounted volume) holding `<model>/<version>/` and "
            "`<model>/CURRENT`."},
    {.name = "url",
     .kind = AD_SCHEMA_STRING,
     .offset = STORE(url),
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Or an HTTP(S) base URL with the same layout (MinIO, S3), polled with ETags."},
    {.name = "poll_interval",
     .kind = AD_SCHEMA_DURATION,
     .offset = STORE(poll_interval),
     .def = "30s",
     .min = MS(1),
     .max = MS(86400),
     .doc = "How often the store is checked for a new CURRENT."},
    {.name = "redis_channel",
     .kind = AD_SCHEMA_STRING,
     .offset = STORE(redis_channel),
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Redis channel (on `sinks.redis`) on which the trainer announces new versions."},
    {.name = NULL, .kind = AD_SCHEMA_SECTION, .offset = STORE(http), .section = &http_section},
};

static const struct ad_schema_section model_store_section = {
    .name = "model_store",
    .fields = model_store_fields,
    .n_fields = N(model_store_fields),
    .check = check_model_store,
    .doc = "Where trained models come from: a folder or an HTTP(S) URL (with `url`, the HTTP "
           "keys below apply)."};

/* ---- scoring ---- */

#define SCORING(m) offsetof(struct ad_settings_scoring, m)

static const struct ad_schema_field scoring_fields[] = {
    {.name = "backend",
     .kind = AD_SCHEMA_ENUM,
     .offset = SCORING(backend),
     .def = "auto",
     .values = backends,
     .flags = AD_SCHEMA_RESTART,
     .doc = "`auto` uses CUDA when a device is usable, else the CPU; `cuda` or `cpu` force "
            "one."},
    {.name = "device",
     .kind = AD_SCHEMA_INT,
     .offset = SCORING(device),
     .def = "0",
     .min = 0,
     .max = 64,
     .flags = AD_SCHEMA_RESTART,
     .doc = "CUDA device ordinal."},
    {.name = "max_batch",
     .kind = AD_SCHEMA_INT,
     .offset = SCORING(max_batch),
     .def = "131072",
     .min = 1,
     .max = 4194304,
     .doc = "Most windows in one batch handed to the scorer (a bucket with more entities "
            "is split)."},
    {.name = "queue_depth",
     .kind = AD_SCHEMA_INT,
     .offset = SCORING(queue_depth),
     .def = "4",
     .min = 1,
     .max = 1024,
     .doc = "Batches submitted to the scorer and not yet back; while that many are out, the "
            "loop closes no more buckets (one bucket's batches may go past it)."},
    {.name = "cpu_threads",
     .kind = AD_SCHEMA_INT,
     .offset = SCORING(cpu_threads),
     .def = "0",
     .min = 0,
     .max = 1024,
     .flags = AD_SCHEMA_RESTART,
     .doc = "Threads of the CPU backend, which split each batch between them (each running "
            "single-threaded BLAS); 0 means one per core."},
    {.name = "entity_metrics_limit",
     .kind = AD_SCHEMA_INT,
     .offset = SCORING(entity_metrics_limit),
     .def = "10000",
     .min = 0,
     .max = 10000000,
     .doc = "Entities per detector whose latest score, surprise and anomalous flag are series "
            "on `/metrics/entities` (docs/entity-metrics.md); the rest are counted in "
            "`anomalyd_entity_metrics_left_out_total`. 0 turns the series off."},
};

static const struct ad_schema_section scoring_section = {.name = "scoring",
                                                         .fields = scoring_fields,
                                                         .n_fields = N(scoring_fields),
                                                         .doc =
                                                             "The scorer thread and its backend."};

/* ---- maintenance ---- */

#define MAINT(m) offsetof(struct ad_settings_maintenance, m)

/* How far ahead a schedule must fire at least once: one that never does is a mistake. */
#define SCHEDULE_HORIZON_MS (5 * 366 * 86400000LL)

static void check_maintenance(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    struct ad_settings_maintenance *m = obj;
    char p[PATH_BUF], q[PATH_BUF], err[256];
    m->start_ms = m->end_ms = INT64_MIN;
    check_name(ctx, path, m->name);
    bool absolute = m->start || m->end, recurring = m->schedule || m->duration;
    if (absolute == recurring) {
        ad_schema_error(ctx, path, "give start and end, or schedule and duration");
        return;
    }
    const char *const keys[] = {"start", "end"};
    char *const texts[] = {m->start, m->end};
    int64_t *const out[] = {&m->start_ms, &m->end_ms};
    for (int i = 0; absolute && i < 2; i++) {
        child_path(p, path, keys[i]);
        if (!texts[i])
            ad_schema_error_key(ctx, path, "needs %s too", keys[i]);
        else if (ad_clock_parse(texts[i], out[i]) < 0)
            ad_schema_error(ctx, p, "expected an RFC 3339 time (2026-11-22T02:00:00Z), got \"%s\"",
                            texts[i]);
    }
    if (absolute && m->start_ms != INT64_MIN && m->end_ms != INT64_MIN &&
        m->end_ms <= m->start_ms) {
        child_path(p, path, "end");
        ad_schema_error(ctx, p, "ends before it starts");
    }
    child_path(q, path, "timezone");
    struct ad_tz *tz = ad_tz_load(m->timezone, err, sizeof err);
    if (!tz)
        ad_schema_error(ctx, q, "%s", err);
    if (recurring) {
        struct ad_cron cron;
        size_t offset = 0;
        child_path(p, path, m->schedule ? "duration" : "schedule");
        if (!m->schedule || !m->duration) {
            ad_schema_error_key(ctx, path, "a schedule needs %s too",
                                m->schedule ? "duration" : "schedule");
        } else {
            child_path(p, path, "schedule");
            if (ad_cron_parse(m->schedule, &cron, &offset, err, sizeof err) < 0)
                ad_schema_error_offset(ctx, p, offset, "%s", err);
            else if (tz && ad_cron_next(&cron, tz, ad_clock_wall_ms(),
                                        ad_clock_wall_ms() + SCHEDULE_HORIZON_MS) == INT64_MAX)
                ad_schema_error(ctx, p, "\"%s\" never fires", m->schedule);
        }
    } else if (ad_schema_present(ctx, q)) {
        ad_schema_error_key(ctx, q,
                            "a time zone goes with a schedule (start and end carry "
                            "their own offsets)");
    }
    ad_tz_free(tz);
    child_path(q, path, "match_re");
    for (size_t i = 0; i < m->match_re.len; i++) {
        regex_t re;
        char anchored[1100];
        child_path(p, q, m->match_re.keys[i]);
        snprintf(anchored, sizeof anchored, "^(%s)$", m->match_re.values[i]);
        int rc = regcomp(&re, anchored, REG_EXTENDED | REG_NOSUB);
        if (rc != 0 || strlen(m->match_re.values[i]) > 1000) {
            regerror(rc, &re, err, sizeof err);
            ad_schema_error(ctx, p, "bad regular expression: %s", rc ? err : "too long");
        }
        if (rc == 0)
            regfree(&re);
    }
}

static const struct ad_schema_field maintenance_fields[] = {
    {.name = "name",
     .kind = AD_SCHEMA_STRING,
     .offset = MAINT(name),
     .flags = AD_SCHEMA_REQUIRED | AD_SCHEMA_NONEMPTY,
     .doc = "Unique name, shown in `/status` and the log."},
    {.name = "comment",
     .kind = AD_SCHEMA_STRING,
     .offset = MAINT(comment),
     .doc = "Free text shown in `/status` (a ticket, who planned it)."},
    {.name = "detectors",
     .kind = AD_SCHEMA_STRING_LIST,
     .offset = MAINT(detectors),
     .flags = AD_SCHEMA_COMMA_LIST,
     .doc = "The detectors it applies to. Default: every detector."},
    {.name = "match",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = MAINT(match),
     .doc = "Entity labels and the exact values they must have (`{service: checkout}`). A "
            "label a detector's `keys` do not hold matches none of its entities."},
    {.name = "match_re",
     .kind = AD_SCHEMA_STRING_MAP,
     .offset = MAINT(match_re),
     .doc = "Entity labels and regular expressions (POSIX extended, anchored at both ends, as "
            "Alertmanager anchors them) their values must match. With neither `match` nor "
            "`match_re`, every entity of the detectors matches."},
    {.name = "start",
     .kind = AD_SCHEMA_STRING,
     .offset = MAINT(start),
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "An absolute window: its start, RFC 3339 (`2026-11-22T02:00:00+01:00`)."},
    {.name = "end",
     .kind = AD_SCHEMA_STRING,
     .offset = MAINT(end),
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Its end (excluded), RFC 3339."},
    {.name = "schedule",
     .kind = AD_SCHEMA_STRING,
     .offset = MAINT(schedule),
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "A recurring window: when it starts, five cron fields (`0 2 * * sat`) or a macro "
            "(`@daily`), on the wall clock of `timezone`."},
    {.name = "duration",
     .kind = AD_SCHEMA_DURATION,
     .offset = MAINT(duration),
     .min = MS(1),
     .max = MS(31 * 86400.0),
     .doc = "How long each recurrence lasts, in elapsed time (a window across a clock change "
            "lasts as long as the others)."},
    {.name = "timezone",
     .kind = AD_SCHEMA_STRING,
     .offset = MAINT(timezone),
     .def = "UTC",
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "IANA time zone of `schedule` (`Europe/Berlin`), read from the system's zone files."},
};

static const struct ad_schema_section maintenance_section = {
    .name = "maintenance",
    .size = sizeof(struct ad_settings_maintenance),
    .fields = maintenance_fields,
    .n_fields = N(maintenance_fields),
    .check = check_maintenance,
    .doc = "A maintenance window: while it is active, nothing is notified for the entities it "
           "matches, and their windows enter no history (docs/maintenance.md). Applied live on "
           "reload."};

/* ---- feedback ---- */

#define FEEDBACK(m) offsetof(struct ad_settings_feedback, m)

static const struct ad_schema_field feedback_fields[] = {
    {.name = "path",
     .kind = AD_SCHEMA_STRING,
     .offset = FEEDBACK(path),
     .flags = AD_SCHEMA_NONEMPTY | AD_SCHEMA_PATH,
     .doc = "Folder the marks are kept in, `<path>/<model>/feedback.jsonl`. Default: "
            "`model_store.path` (beside the model's versions, where the trainer finds them)."},
    {.name = "redis_channel",
     .kind = AD_SCHEMA_STRING,
     .offset = FEEDBACK(redis_channel),
     .flags = AD_SCHEMA_NONEMPTY,
     .doc = "Redis channel (on `sinks.redis`) on which marks may also be published as JSON "
            "(docs/feedback.md)."},
    {.name = "history",
     .kind = AD_SCHEMA_DURATION,
     .offset = FEEDBACK(history),
     .def = "6h",
     .min = 0,
     .max = MS(7 * 86400.0),
     .doc = "How long after an alert's first window its windows can still be taken out of the "
            "entity's history by a false-positive mark: the entity's state from before the "
            "alert and its windows since are held that long (a few hundred bytes per window). "
            "0s holds nothing: marks are then only kept."},
    {.name = "max_held",
     .kind = AD_SCHEMA_INT,
     .offset = FEEDBACK(max_held),
     .def = "1000",
     .min = 0,
     .max = 1000000,
     .doc = "Entities per detector whose history is held at once; an alert of an entity "
            "past it cannot be taken back (counted)."},
    {.name = "recent_alerts",
     .kind = AD_SCHEMA_INT,
     .offset = FEEDBACK(recent_alerts),
     .def = "10000",
     .min = 1,
     .max = 10000000,
     .doc = "Notifications per detector remembered by id, which a mark can name; older ids "
            "are refused with 404 unless marked before."},
};

static const struct ad_schema_section feedback_section = {
    .name = "feedback",
    .fields = feedback_fields,
    .n_fields = N(feedback_fields),
    .doc = "Operators' verdicts on alerts: false or true positives (docs/feedback.md)."};

/* ---- cross-section checks ---- */

static ssize_t find_source(const struct ad_settings *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n_sources; i++)
        if (strlen(s->sources[i].name) == len && strncmp(s->sources[i].name, name, len) == 0)
            return (ssize_t)i;
    return -1;
}

static ssize_t find_feature(const struct ad_settings_source *src, const char *name)
{
    for (size_t i = 0; i < src->n_features; i++)
        if (strcmp(src->features[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static void unique_names(struct ad_schema_ctx *ctx, const char *list, const void *items, size_t n,
                         size_t size, size_t name_offset)
{
    char p[PATH_BUF], q[PATH_BUF];
    for (size_t i = 0; i < n; i++) {
        const char *a = *(char *const *)((const char *)items + i * size + name_offset);
        for (size_t j = 0; j < i; j++) {
            const char *b = *(char *const *)((const char *)items + j * size + name_offset);
            if (strcmp(a, b) == 0) {
                ad_yaml_path_index(q, sizeof q, list, i);
                child_path(p, q, "name");
                ad_schema_error(ctx, p, "the name \"%s\" is already used by %s[%zu]", a, list, j);
                break;
            }
        }
    }
}

static enum ad_fill_policy default_fill(const struct ad_settings_feature *f)
{
    switch (f->kind) {
    case AD_FEATURE_COUNT:
    case AD_FEATURE_COUNT_IF:
    case AD_FEATURE_SUM:
        return AD_FILL_ZERO;
    default:
        return AD_FILL_CARRY;
    }
}

/* For a replay, the file source named by ref's first len bytes, with ref's feature (added as
 * needed): a gauge, aggregated as the latest row and filled by carrying, as a Prometheus
 * sample is. Its index, or -1 when out of memory. */
static ssize_t file_source(struct ad_settings *s, const char *ref, size_t len, const char *feature)
{
    ssize_t si = find_source(s, ref, len);
    if (si < 0) {
        struct ad_settings_source *grown = realloc(s->sources, (s->n_sources + 1) * sizeof *grown);
        if (!grown)
            return -1;
        s->sources = grown;
        si = (ssize_t)s->n_sources;
        grown[si] = (struct ad_settings_source){.name = strndup(ref, len), .type = AD_SOURCE_FILE};
        if (!grown[si].name)
            return -1;
        s->n_sources++;
    }
    struct ad_settings_source *src = &s->sources[si];
    if (find_feature(src, feature) >= 0)
        return si;
    struct ad_settings_feature *f = realloc(src->features, (src->n_features + 1) * sizeof *f);
    if (!f)
        return -1;
    src->features = f;
    f[src->n_features] =
        (struct ad_settings_feature){.name = strdup(feature), .kind = AD_FEATURE_LAST};
    if (!f[src->n_features].name)
        return -1;
    src->n_features++;
    return si;
}

/* A feature reference's features[] or a fill key, resolved; -1 with an error otherwise. */
static int resolve_ref(struct ad_schema_ctx *ctx, struct ad_settings *s, const char *path,
                       const char *ref, struct ad_feature_ref *out)
{
    const char *dot = strchr(ref, '.');
    if (!dot) {
        ad_schema_error(ctx, path, "expected source.feature, got \"%s\"", ref);
        return -1;
    }
    ssize_t si = find_source(s, ref, (size_t)(dot - ref));
    if ((si < 0 || s->sources[si].type == AD_SOURCE_FILE) && ctx->replay && dot[1]) {
        si = file_source(s, ref, (size_t)(dot - ref), dot + 1);
        if (si < 0) {
            ad_schema_error(ctx, path, "out of memory");
            return -1;
        }
    }
    if (si < 0) {
        ad_schema_error(ctx, path, "no source is named \"%.*s\"", (int)(dot - ref), ref);
        return -1;
    }
    const struct ad_settings_source *src = &s->sources[si];
    ssize_t fi = find_feature(src, dot + 1);
    if (fi < 0) {
        const char **names = calloc(src->n_features + 1, sizeof *names);
        for (size_t i = 0; names && i < src->n_features; i++)
            names[i] = src->features[i].name;
        const char *hint = names ? ad_schema_suggest(dot + 1, names) : NULL;
        if (hint)
            ad_schema_error(ctx, path,
                            "source \"%s\" has no feature \"%s\" (did you mean "
                            "\"%s\"?)",
                            src->name, dot + 1, hint);
        else
            ad_schema_error(ctx, path, "source \"%s\" has no feature \"%s\"", src->name, dot + 1);
        free(names);
        return -1;
    }
    out->source = (size_t)si;
    out->feature = (size_t)fi;
    out->fill = default_fill(&src->features[fi]);
    return 0;
}

static bool kafka_source_has_label(const struct ad_settings_kafka_source *k, const char *label)
{
    for (size_t i = 0; i < k->labels.len; i++)
        if (strcmp(k->labels.keys[i], label) == 0)
            return true;
    for (size_t i = 0; i < k->static_labels.len; i++)
        if (strcmp(k->static_labels.keys[i], label) == 0)
            return true;
    return false;
}

/* The feature a per-feature map's key names, or -1 with an error at path. */
static ssize_t feature_of(struct ad_schema_ctx *ctx, const struct ad_settings_detector *d,
                          const char *path, const char *key)
{
    for (size_t f = 0; f < d->features.len; f++)
        if (strcmp(d->features.items[f], key) == 0)
            return (ssize_t)f;
    ad_schema_error_key(ctx, path, "\"%s\" is not one of this detector's features", key);
    return -1;
}

/* One min_deviation item: a number (absolute) or a percentage (relative). */
static bool parse_deviation(const char *text, size_t len, struct ad_feature_control *c)
{
    bool relative = len > 0 && text[len - 1] == '%';
    double v;
    if (!ad_number_parse(text, relative ? len - 1 : len, &v) || !isfinite(v) || v < 0)
        return false;
    if (relative)
        c->min_rel = v / 100.0;
    else
        c->min_abs = v;
    return true;
}

/* direction, min_deviation and streams: what a detector judges (docs/scoring.md). */
static void check_controls(struct ad_schema_ctx *ctx, struct ad_settings_detector *d,
                           const char *dpath)
{
    char fp[PATH_BUF], p[PATH_BUF];
    child_path(fp, dpath, "direction");
    for (size_t i = 0; i < d->direction.len; i++) {
        child_path(p, fp, d->direction.keys[i]);
        ssize_t f = feature_of(ctx, d, p, d->direction.keys[i]);
        const char *v = d->direction.values[i];
        if (f < 0)
            continue;
        if (strcmp(v, "both") == 0)
            d->refs[f].control.direction = AD_DIRECTION_BOTH;
        else if (strcmp(v, "up") == 0)
            d->refs[f].control.direction = AD_DIRECTION_UP;
        else if (strcmp(v, "down") == 0)
            d->refs[f].control.direction = AD_DIRECTION_DOWN;
        else
            ad_schema_error(ctx, p, "expected up, down or both; got \"%s\"", v);
    }
    child_path(fp, dpath, "min_deviation");
    for (size_t i = 0; i < d->min_deviation.len; i++) {
        child_path(p, fp, d->min_deviation.keys[i]);
        ssize_t f = feature_of(ctx, d, p, d->min_deviation.keys[i]);
        if (f < 0)
            continue;
        const char *v = d->min_deviation.values[i];
        bool ok = *v != '\0';
        for (const char *item = v; ok && *item;) {
            while (*item == ' ')
                item++;
            size_t len = strcspn(item, ",");
            size_t trimmed = len;
            while (trimmed && item[trimmed - 1] == ' ')
                trimmed--;
            ok = parse_deviation(item, trimmed, &d->refs[f].control);
            item += len + (item[len] == ',');
        }
        if (!ok)
            ad_schema_error(ctx, p,
                            "expected a number (\"50\"), a percentage (\"20%%\") or both "
                            "(\"50, 20%%\"), not negative; got \"%s\"",
                            v);
    }
    child_path(fp, dpath, "streams");
    d->stream_lstm = d->stream_seasonal = d->streams.len == 0;
    for (size_t i = 0; i < d->streams.len; i++) {
        item_path(p, dpath, "streams", i);
        bool *flag = strcmp(d->streams.items[i], "lstm") == 0       ? &d->stream_lstm
                     : strcmp(d->streams.items[i], "seasonal") == 0 ? &d->stream_seasonal
                                                                    : NULL;
        if (!flag)
            ad_schema_error(ctx, p, "expected lstm or seasonal; got \"%s\"", d->streams.items[i]);
        else if (*flag)
            ad_schema_error(ctx, p, "\"%s\" is listed twice", d->streams.items[i]);
        else
            *flag = true;
    }
}

static void check_detector_refs(struct ad_schema_ctx *ctx, struct ad_settings *s,
                                struct ad_settings_detector *d, const char *dpath)
{
    char p[PATH_BUF], fp[PATH_BUF];
    bool ok = true;

    if (d->features.len > MAX_FEATURES) {
        child_path(p, dpath, "features");
        ad_schema_error(ctx, p, "lists %zu features; at most %d", d->features.len, MAX_FEATURES);
        return;
    }
    d->refs = calloc(d->features.len, sizeof *d->refs);
    if (!d->refs)
        return;
    for (size_t i = 0; i < d->features.len; i++) {
        item_path(p, dpath, "features", i);
        if (resolve_ref(ctx, s, p, d->features.items[i], &d->refs[i]) < 0) {
            ok = false;
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(d->features.items[i], d->features.items[j]) == 0) {
                ad_schema_error(ctx, p, "\"%s\" is listed twice", d->features.items[i]);
                ok = false;
            }
        }
        const struct ad_settings_source *src = &s->sources[d->refs[i].source];
        if (src->type == AD_SOURCE_PROMETHEUS && src->prometheus.step &&
            src->prometheus.step != d->step) {
            ad_schema_error(ctx, p,
                            "source \"%s\" has step %llds but this detector %llds; "
                            "they must be equal",
                            src->name, (long long)src->prometheus.step / 1000,
                            (long long)d->step / 1000);
            ok = false;
        }
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = d->refs[j].source == d->refs[i].source;
        if (src->type != AD_SOURCE_KAFKA || seen)
            continue;
        for (size_t k = 0; k < d->keys.len; k++) {
            if (!kafka_source_has_label(&src->kafka, d->keys.items[k])) {
                item_path(fp, dpath, "keys", k);
                if (!ad_schema_present(ctx, fp))
                    child_path(fp, dpath, "keys");
                ad_schema_error(ctx, fp,
                                "source \"%s\" gives no label \"%s\" (add it to its "
                                "labels or static_labels)",
                                src->name, d->keys.items[k]);
                ok = false;
            }
        }
    }
    if (!ok)
        return;
    child_path(fp, dpath, "fill");
    for (size_t i = 0; i < d->fill.len; i++) {
        child_path(p, fp, d->fill.keys[i]);
        size_t f;
        for (f = 0; f < d->features.len; f++)
            if (strcmp(d->features.items[f], d->fill.keys[i]) == 0)
                break;
        if (f == d->features.len) {
            ad_schema_error_key(ctx, p, "\"%s\" is not one of this detector's features",
                                d->fill.keys[i]);
            continue;
        }
        int policy = -1;
        for (int k = 0; fill_policies[k]; k++)
            if (strcmp(fill_policies[k], d->fill.values[i]) == 0)
                policy = k;
        if (policy < 0)
            ad_schema_error(ctx, p, "expected zero, carry or nan; got \"%s\"", d->fill.values[i]);
        else
            d->refs[f].fill = (enum ad_fill_policy)policy;
    }
    check_controls(ctx, d, dpath);
}

/* A maintenance window's detectors exist, and each label it matches is a key of one of them. */
static void check_maintenance_refs(struct ad_schema_ctx *ctx, const struct ad_settings *s,
                                   const struct ad_settings_maintenance *m, const char *path)
{
    char p[PATH_BUF], q[PATH_BUF];
    for (size_t i = 0; i < m->detectors.len; i++) {
        bool found = false;
        for (size_t d = 0; d < s->n_detectors && !found; d++)
            found = strcmp(s->detectors[d].name, m->detectors.items[i]) == 0;
        if (!found && !ctx->replay) {
            item_path(p, path, "detectors", i);
            ad_schema_error(ctx, p, "no detector is named \"%s\"", m->detectors.items[i]);
        }
    }
    const struct ad_strmap *maps[] = {&m->match, &m->match_re};
    const char *names[] = {"match", "match_re"};
    for (size_t k = 0; k < 2; k++) {
        child_path(q, path, names[k]);
        for (size_t i = 0; i < maps[k]->len; i++) {
            bool found = false;
            for (size_t d = 0; d < s->n_detectors && !found; d++) {
                const struct ad_settings_detector *det = &s->detectors[d];
                bool applies = m->detectors.len == 0;
                for (size_t j = 0; j < m->detectors.len && !applies; j++)
                    applies = strcmp(m->detectors.items[j], det->name) == 0;
                for (size_t j = 0; applies && j < det->keys.len && !found; j++)
                    found = strcmp(det->keys.items[j], maps[k]->keys[i]) == 0;
            }
            if (!found && s->n_detectors) {
                child_path(p, q, maps[k]->keys[i]);
                ad_schema_error_key(ctx, p,
                                    "\"%s\" is a key of none of the detectors it applies to",
                                    maps[k]->keys[i]);
            }
        }
    }
}

static void check_root(struct ad_schema_ctx *ctx, const char *path, void *obj)
{
    struct ad_settings *s = obj;
    char p[PATH_BUF];
    (void)path;

    unique_names(ctx, "sources", s->sources, s->n_sources, sizeof *s->sources,
                 offsetof(struct ad_settings_source, name));
    unique_names(ctx, "detectors", s->detectors, s->n_detectors, sizeof *s->detectors,
                 offsetof(struct ad_settings_detector, name));
    for (size_t i = 0; i < s->n_detectors; i++) {
        ad_yaml_path_index(p, sizeof p, "detectors", i);
        check_detector_refs(ctx, s, &s->detectors[i], p);
    }
    for (size_t i = 0; i < s->n_sources && s->kafka.brokers.len == 0; i++) {
        if (s->sources[i].type == AD_SOURCE_KAFKA) {
            char sp[PATH_BUF];
            ad_yaml_path_index(sp, sizeof sp, "sources", i);
            child_path(p, sp, "kafka");
            ad_schema_error_key(ctx, p, "reading Kafka needs kafka.brokers");
            break;
        }
    }
    if (s->sinks.kafka.topic && s->kafka.brokers.len == 0)
        ad_schema_error_key(ctx, "sinks.kafka", "writing Kafka needs kafka.brokers");
    if (s->n_detectors > 0 && !ad_schema_present(ctx, "model_store"))
        ad_schema_error(ctx, "detectors", "detectors need a model_store (path or url)");
    if (s->model_store.redis_channel && !s->sinks.redis.url)
        ad_schema_error(ctx, "model_store.redis_channel",
                        "announcements arrive over sinks.redis, which is not configured");
    if (s->feedback.redis_channel && !s->sinks.redis.url)
        ad_schema_error(ctx, "feedback.redis_channel",
                        "marks arrive over sinks.redis, which is not configured");
    unique_names(ctx, "maintenance", s->maintenance, s->n_maintenance, sizeof *s->maintenance,
                 offsetof(struct ad_settings_maintenance, name));
    for (size_t i = 0; i < s->n_maintenance; i++) {
        ad_yaml_path_index(p, sizeof p, "maintenance", i);
        check_maintenance_refs(ctx, s, &s->maintenance[i], p);
    }
}

/* ---- the root ---- */

#define ROOT(m) offsetof(struct ad_settings, m)

static const struct ad_schema_field root_fields[] = {
    {.name = "daemon",
     .kind = AD_SCHEMA_SECTION,
     .offset = ROOT(daemon),
     .section = &daemon_section,
     .doc = "The process."},
    {.name = "kafka",
     .kind = AD_SCHEMA_SECTION,
     .offset = ROOT(kafka),
     .section = &kafka_section,
     .doc = "The Kafka cluster."},
    {.name = "sources",
     .kind = AD_SCHEMA_SECTION_LIST,
     .offset = ROOT(sources),
     .count_offset = ROOT(n_sources),
     .section = &source_section,
     .doc = "Where data comes from."},
    {.name = "detectors",
     .kind = AD_SCHEMA_SECTION_LIST,
     .offset = ROOT(detectors),
     .count_offset = ROOT(n_detectors),
     .section = &detector_section,
     .doc = "What is scored, and how."},
    {.name = "sinks",
     .kind = AD_SCHEMA_SECTION,
     .offset = ROOT(sinks),
     .section = &sinks_section,
     .doc = "Where alerts go."},
    {.name = "model_store",
     .kind = AD_SCHEMA_SECTION,
     .offset = ROOT(model_store),
     .section = &model_store_section,
     .doc = "Where models come from."},
    {.name = "scoring",
     .kind = AD_SCHEMA_SECTION,
     .offset = ROOT(scoring),
     .section = &scoring_section,
     .doc = "Scoring."},
    {.name = "maintenance",
     .kind = AD_SCHEMA_SECTION_LIST,
     .offset = ROOT(maintenance),
     .count_offset = ROOT(n_maintenance),
     .section = &maintenance_section,
     .doc = "Maintenance windows."},
    {.name = "feedback",
     .kind = AD_SCHEMA_SECTION,
     .offset = ROOT(feedback),
     .section = &feedback_section,
     .doc = "Feedback on alerts."},
};

const struct ad_schema_section ad_config_root_section = {
    .name = "",
    .fields = root_fields,
    .n_fields = N(root_fields),
    .check = check_root,
    .doc = "Every section is optional; a file with only `daemon:` runs the admin endpoint "
           "alone."};
