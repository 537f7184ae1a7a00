#include "daemon/admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "config/config.h"

#define AD_LOG_MODULE "admin"
#include "base/log.h"

/* An admin endpoint has no use for big requests; refusing them early bounds memory. */
#define MAX_HEADERS_SIZE 16384
#define MAX_BODY_SIZE    4096
#define REQUEST_TIMEOUT  10

struct ad_admin {
    struct evhttp *http;
    struct ad_metrics *metrics;
    char address[300];
    bool ready;
    char not_ready_reason[128];
    ad_admin_status_fn status_fn;
    void *status_arg;
};

enum route { ROUTE_INDEX, ROUTE_METRICS, ROUTE_HEALTHZ, ROUTE_READYZ, ROUTE_STATUS, ROUTE_OTHER };

static const char *const route_paths[] = {"/",       "/metrics", "/healthz",
                                          "/readyz", "/status",  "other"};

static enum route find_route(const char *path)
{
    for (int r = ROUTE_INDEX; r < ROUTE_OTHER; r++)
        if (strcmp(path, route_paths[r]) == 0)
            return (enum route)r;
    return ROUTE_OTHER;
}

static void count_request(struct ad_admin *admin, enum route route, int code)
{
    char code_text[8];
    snprintf(code_text, sizeof code_text, "%d", code);
    ad_counter_inc(ad_metrics_counter(admin->metrics, "anomalyd_admin_requests_total",
                                      "HTTP requests to the admin endpoint.", "handler",
                                      route_paths[route], "code", code_text, NULL));
}

static void reply(struct ad_admin *admin, struct evhttp_request *req, enum route route, int code,
                  const char *reason, const char *content_type, struct evbuffer *body)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", content_type);
    evhttp_add_header(headers, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, body);
    count_request(admin, route, code);
    AD_DEBUG_KV("request", AD_KV_STR("handler", route_paths[route]), AD_KV_INT("code", code));
}

static void reply_text(struct ad_admin *admin, struct evhttp_request *req, enum route route,
                       int code, const char *reason, const char *text)
{
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(body, text, strlen(text));
    reply(admin, req, route, code, reason, "text/plain; charset=utf-8", body);
    evbuffer_free(body);
}

static void free_rendered(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

static void serve_metrics(struct ad_admin *admin, struct evhttp_request *req)
{
    size_t len = 0;
    char *text = ad_metrics_render(admin->metrics, &len);
    struct evbuffer *body = evbuffer_new();
    if (!text || !body) {
        free(text);
        evbuffer_free(body);
        reply_text(admin, req, ROUTE_METRICS, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    evbuffer_add_reference(body, text, len, free_rendered, NULL);
    reply(admin, req, ROUTE_METRICS, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
    evbuffer_free(body);
}

static void serve_status(struct ad_admin *admin, struct evhttp_request *req)
{
    json_t *doc = json_object();
    char *text = NULL;
    struct evbuffer *body = evbuffer_new();

    if (doc && admin->status_fn)
        admin->status_fn(admin->status_arg, doc);
    if (doc)
        text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text || !body) {
        reply_text(admin, req, ROUTE_STATUS, 500, "Internal Server Error", "out of memory\n");
    } else {
        evbuffer_add(body, text, strlen(text));
        evbuffer_add(body, "\n", 1);
        reply(admin, req, ROUTE_STATUS, 200, "OK", "application/json", body);
    }
    free(text);
    json_decref(doc);
    evbuffer_free(body);
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct ad_admin *admin = arg;
    /* Routes on the request target as sent, without its query: evhttp's parsed URI would
     * read "//metrics" as a host name with an empty path. */
    const char *target = evhttp_request_get_uri(req);
    char path[64];
    size_t len = strcspn(target ? target : "", "?");
    enum route route = ROUTE_OTHER;
    if (len < sizeof path) {
        memcpy(path, target, len);
        path[len] = '\0';
        route = find_route(path);
    }
    enum evhttp_cmd_type method = evhttp_request_get_command(req);

    if (route == ROUTE_OTHER) {
        reply_text(admin, req, route, 404, "Not Found",
                   "not found; try /metrics, /healthz, /readyz or /status\n");
        return;
    }
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(admin, req, route, 405, "Method Not Allowed", "only GET and HEAD\n");
        return;
    }
    switch (route) {
    case ROUTE_INDEX:
        reply_text(admin, req, route, 200, "OK",
                   "anomalyd admin endpoint: /metrics /healthz /readyz /status\n");
        break;
    case ROUTE_METRICS:
        serve_metrics(admin, req);
        break;
    case ROUTE_HEALTHZ:
        reply_text(admin, req, route, 200, "OK", "ok\n");
        break;
    case ROUTE_READYZ:
        if (admin->ready) {
            reply_text(admin, req, route, 200, "OK", "ready\n");
        } else {
            char text[160];
            snprintf(text, sizeof text, "not ready: %s\n", admin->not_ready_reason);
            reply_text(admin, req, route, 503, "Service Unavailable", text);
        }
        break;
    case ROUTE_STATUS:
        serve_status(admin, req);
        break;
    case ROUTE_OTHER:
        break;
    }
}

static void describe_bound(struct ad_admin *admin, struct evhttp_bound_socket *bound)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
            port = ntohs(a->sin6_port);
            snprintf(admin->address, sizeof admin->address, "[%s]:%d", host, port);
            return;
        }
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    }
    snprintf(admin->address, sizeof admin->address, "%s:%d", host, port);
}

struct ad_admin *ad_admin_new(struct event_base *base, const char *listen,
                              struct ad_metrics *metrics, char *errstr, size_t errstr_size)
{
    struct ad_admin *admin = calloc(1, sizeof *admin);
    char host[256];
    int port;

    if (!admin) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    admin->metrics = metrics;
    snprintf(admin->not_ready_reason, sizeof admin->not_ready_reason, "starting");
    if (ad_config_split_address(listen, host, sizeof host, &port) < 0) {
        snprintf(errstr, errstr_size, "bad listen address \"%s\": expected host:port", listen);
        goto err;
    }
    admin->http = evhttp_new(base);
    if (!admin->http) {
        snprintf(errstr, errstr_size, "cannot create the HTTP server");
        goto err;
    }
    /* Every method reaches handle() so that it can answer 405 rather than evhttp's 501. */
    evhttp_set_allowed_methods(admin->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                                EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                                EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(admin->http, MAX_HEADERS_SIZE);
    evhttp_set_max_body_size(admin->http, MAX_BODY_SIZE);
    evhttp_set_timeout(admin->http, REQUEST_TIMEOUT);
    evhttp_set_gencb(admin->http, handle, admin);

    struct evhttp_bound_socket *bound =
        evhttp_bind_socket_with_handle(admin->http, *host ? host : "0.0.0.0", (ev_uint16_t)port);
    if (!bound) {
        snprintf(errstr, errstr_size, "cannot listen on %s: %s", listen,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto err;
    }
    describe_bound(admin, bound);
    AD_INFO_KV("admin endpoint listening", AD_KV_STR("address", admin->address));
    return admin;

err:
    ad_admin_destroy(admin);
    return NULL;
}

void ad_admin_destroy(struct ad_admin *admin)
{
    if (!admin)
        return;
    if (admin->http)
        evhttp_free(admin->http);
    free(admin);
}

const char *ad_admin_address(const struct ad_admin *admin)
{
    return admin->address;
}

void ad_admin_set_ready(struct ad_admin *admin, bool ready, const char *reason)
{
    admin->ready = ready;
    snprintf(admin->not_ready_reason, sizeof admin->not_ready_reason, "%s",
             reason ? reason : "unknown");
}

void ad_admin_set_status_fn(struct ad_admin *admin, ad_admin_status_fn fn, void *arg)
{
    admin->status_fn = fn;
    admin->status_arg = arg;
}
