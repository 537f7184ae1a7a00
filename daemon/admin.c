#include "daemon/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/grow.h"
#include "config/config.h"

#define AD_LOG_MODULE "admin"
#include "base/log.h"

/* An admin endpoint has no use for big requests; refusing them early bounds memory. */
#define MAX_HEADERS_SIZE 16384
#define MAX_BODY_SIZE    4096
/* What one request may take, the wait for it included: evhttp's own timeout bounds each read
 * and write only, so a client that trickles a byte every few seconds, or a keep-alive
 * connection that sends a header now and then, would hold a connection for ever. */
#define REQUEST_TIMEOUT_MS 10000
#define SWEEP_MS           1000

/* An accepted connection, known by its descriptor and the socket's inode (a descriptor
 * closed by evhttp and reused is told apart without touching evhttp's objects). */
struct conn {
    int fd;
    dev_t dev;
    ino_t ino;
    int64_t since; /* monotonic ms: when the wait for its current request began */
};

struct ad_admin {
    struct evhttp *http;
    struct event_base *base;
    /* Bufferevents made for new connections, whose descriptors evhttp sets once bevcb has
     * returned; each holds a reference until it is registered. */
    struct bufferevent **accepted;
    size_t n_accepted, cap_accepted;
    struct event *register_ev, *sweep;
    struct conn *conns;
    size_t n_conns, cap_conns;
    struct ad_metrics *metrics;
    char address[300];
    bool ready;
    char not_ready_reason[128];
    ad_admin_status_fn status_fn;
    void *status_arg;
    ad_admin_serve_fn serve_fn;
    void *serve_arg;
    char *token; /* NULL: none */
    int64_t timeout_ms;
};

enum route {
    ROUTE_INDEX,
    ROUTE_METRICS,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_STATUS,
    ROUTE_ENTITIES, /* handed to the components */
    ROUTE_FEEDBACK, /* /alerts/<id>/feedback, handed to the components */
    ROUTE_OTHER
};

static const char *const route_paths[] = {
    "/",       "/metrics",          "/healthz",         "/readyz",
    "/status", "/metrics/entities", "/alerts/feedback", "other"};

/* /alerts/<id>/feedback, with an id of letters and digits. */
static bool feedback_path(const char *path)
{
    static const char prefix[] = "/alerts/", suffix[] = "/feedback";
    size_t n = strlen(path), p = sizeof prefix - 1, q = sizeof suffix - 1;
    if (n <= p + q || strncmp(path, prefix, p) != 0 || strcmp(path + n - q, suffix) != 0)
        return false;
    for (size_t i = p; i < n - q; i++)
        if (!((path[i] >= '0' && path[i] <= '9') || (path[i] >= 'a' && path[i] <= 'z') ||
              (path[i] >= 'A' && path[i] <= 'Z')))
            return false;
    return true;
}

static enum route find_route(const char *path)
{
    for (int r = ROUTE_INDEX; r < ROUTE_FEEDBACK; r++)
        if (strcmp(path, route_paths[r]) == 0)
            return (enum route)r;
    return feedback_path(path) ? ROUTE_FEEDBACK : ROUTE_OTHER;
}

static void wipe(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
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

/* ---- paths handed to the components ---- */

/* Whether the peer of req is on this machine: 127.0.0.0/8, ::1 or ::ffff:127.x. */
static bool from_loopback(struct evhttp_request *req, char *peer, size_t size)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    const char *addr = NULL;
    ev_uint16_t port = 0;
    if (evcon)
        evhttp_connection_get_peer(evcon, (char **)&addr, &port);
    snprintf(peer, size, "%s", addr ? addr : "?");
    return addr && (strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
                    strncmp(addr, "::ffff:127.", 11) == 0);
}

/* A constant-time comparison, so that the time an answer takes tells nothing of the token. */
static bool same_secret(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    unsigned char diff = (unsigned char)(na != nb);
    for (size_t i = 0; i < na; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (nb ? nb : 1)]);
    return diff == 0;
}

/* A request that changes something: the token when one is set, else a loopback peer. */
static bool allowed(struct ad_admin *admin, struct evhttp_request *req, bool loopback)
{
    if (!admin->token)
        return loopback;
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    return auth && strncmp(auth, "Bearer ", 7) == 0 && same_secret(auth + 7, admin->token);
}

static void serve_handed_on(struct ad_admin *admin, struct evhttp_request *req, enum route route,
                            const char *path, enum evhttp_cmd_type method)
{
    bool post = method == EVHTTP_REQ_POST;
    bool takes_post = route == ROUTE_FEEDBACK;
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD && !(post && takes_post)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          takes_post ? "GET, HEAD, POST" : "GET, HEAD");
        reply_text(admin, req, route, 405, "Method Not Allowed",
                   takes_post ? "only GET, HEAD and POST\n" : "only GET and HEAD\n");
        return;
    }
    char peer[128], by[160];
    bool loopback = from_loopback(req, peer, sizeof peer);
    if (post && !allowed(admin, req, loopback)) {
        reply_text(admin, req, route, 403, "Forbidden",
                   admin->token ? "send Authorization: Bearer <daemon.admin.token>\n"
                                : "only from this machine (loopback), or set daemon.admin.token "
                                  "and send it as a bearer token\n");
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in ? evbuffer_get_length(in) : 0;
    char *body = malloc(len + 1);
    struct evbuffer *answer = evbuffer_new();
    struct ad_component_reply out = {0};
    if (!body || !answer) {
        free(body);
        evbuffer_free(answer);
        reply_text(admin, req, route, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    if (len)
        evbuffer_copyout(in, body, len);
    body[len] = '\0';
    snprintf(by, sizeof by, "admin %s", peer);
    struct ad_component_request call = {.method = post                        ? "POST"
                                                  : method == EVHTTP_REQ_HEAD ? "HEAD"
                                                                              : "GET",
                                        .path = path,
                                        .body = body,
                                        .body_len = len,
                                        .by = by};
    if (!admin->serve_fn || admin->serve_fn(admin->serve_arg, &call, &out) < 0) {
        reply_text(admin, req, route, 404, "Not Found", "nothing serves this path\n");
    } else {
        if (out.body)
            evbuffer_add_reference(answer, out.body, out.body_len, free_rendered, NULL);
        out.body = NULL;
        reply(admin, req, route, out.status, NULL,
              out.content_type ? out.content_type : "text/plain; charset=utf-8", answer);
    }
    free(out.body);
    free(body);
    evbuffer_free(answer);
}

/* ---- connections: TCP_NODELAY and a bound on each request ---- */

static struct conn *find_conn(struct ad_admin *admin, int fd)
{
    for (size_t i = 0; i < admin->n_conns; i++)
        if (admin->conns[i].fd == fd)
            return &admin->conns[i];
    return NULL;
}

/* evhttp asks for a bufferevent per accepted connection, before it sets the descriptor:
 * the connection is registered right after, still in this pass of the loop. */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    struct ad_admin *admin = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (bev && ad_grow(&admin->accepted, &admin->cap_accepted, admin->n_accepted + 1,
                       sizeof *admin->accepted) == 0) {
        bufferevent_incref(bev); /* evhttp may free it before it is registered */
        admin->accepted[admin->n_accepted++] = bev;
        event_active(admin->register_ev, EV_TIMEOUT, 0);
    }
    return bev;
}

static void register_accepted(evutil_socket_t unused, short what, void *arg)
{
    struct ad_admin *admin = arg;
    int64_t now = ad_clock_mono_ms();
    (void)unused;
    (void)what;
    for (size_t i = 0; i < admin->n_accepted; i++) {
        struct bufferevent *bev = admin->accepted[i];
        int fd = (int)bufferevent_getfd(bev);
        struct stat st;
        int one = 1;
        /* Small answers on a keep-alive connection must not wait for Nagle's algorithm
         * and the client's delayed acknowledgement (about 40 ms each). */
        if (fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
            AD_DEBUG_KV("cannot set TCP_NODELAY", AD_KV_STR("error", strerror(errno)));
        if (fd >= 0 && fstat(fd, &st) == 0 && !find_conn(admin, fd) &&
            ad_grow(&admin->conns, &admin->cap_conns, admin->n_conns + 1, sizeof *admin->conns) ==
                0)
            admin->conns[admin->n_conns++] = (struct conn){fd, st.st_dev, st.st_ino, now};
        bufferevent_decref(bev);
    }
    admin->n_accepted = 0;
}

/* Forgets connections evhttp has closed and shuts down those whose request took longer
 * than the bound; evhttp then sees the end of the stream and frees them itself. */
static void sweep(evutil_socket_t unused, short what, void *arg)
{
    struct ad_admin *admin = arg;
    int64_t now = ad_clock_mono_ms();
    (void)unused;
    (void)what;
    for (size_t i = 0; i < admin->n_conns;) {
        struct conn *c = &admin->conns[i];
        struct stat st;
        bool gone = fstat(c->fd, &st) < 0 || st.st_dev != c->dev || st.st_ino != c->ino;
        if (!gone && now - c->since >= admin->timeout_ms) {
            AD_DEBUG_KV("an admin connection took too long for a request; closed",
                        AD_KV_INT("ms", now - c->since));
            shutdown(c->fd, SHUT_RDWR);
            gone = true;
        }
        if (gone)
            *c = admin->conns[--admin->n_conns];
        else
            i++;
    }
}

/* A request has arrived whole: the bound starts over for the next one. */
static void request_done(struct ad_admin *admin, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    struct conn *c = bev ? find_conn(admin, (int)bufferevent_getfd(bev)) : NULL;
    if (c)
        c->since = ad_clock_mono_ms();
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct ad_admin *admin = arg;
    request_done(admin, req);
    /* Routes on the request target as sent, without its query: evhttp's parsed URI would
     * read "//metrics" as a host name with an empty path. */
    const char *target = evhttp_request_get_uri(req);
    char path[160];
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
                   "not found; try /metrics, /metrics/entities, /healthz, /readyz or /status\n");
        return;
    }
    if (route == ROUTE_FEEDBACK) {
        serve_handed_on(admin, req, route, path, method);
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
                   "anomalyd admin endpoint: /metrics /metrics/entities /healthz /readyz "
                   "/status /alerts/<id>/feedback\n");
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
    case ROUTE_ENTITIES:
        serve_handed_on(admin, req, route, path, method);
        break;
    case ROUTE_FEEDBACK:
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
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    admin->metrics = metrics;
    admin->base = base;
    admin->timeout_ms = REQUEST_TIMEOUT_MS;
    snprintf(admin->not_ready_reason, sizeof admin->not_ready_reason, "starting");
    if (ad_config_split_address(listen, host, sizeof host, &port) < 0) {
        ad_errstr_set(errstr, errstr_size, "bad listen address \"%s\": expected host:port", listen);
        goto err;
    }
    admin->http = evhttp_new(base);
    if (!admin->http) {
        ad_errstr_set(errstr, errstr_size, "cannot create the HTTP server");
        goto err;
    }
    /* Every method reaches handle() so that it can answer 405 rather than evhttp's 501. */
    evhttp_set_allowed_methods(admin->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                                EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                                EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(admin->http, MAX_HEADERS_SIZE);
    evhttp_set_max_body_size(admin->http, MAX_BODY_SIZE);
    struct timeval each = {REQUEST_TIMEOUT_MS / 1000, (REQUEST_TIMEOUT_MS % 1000) * 1000};
    evhttp_set_timeout_tv(admin->http, &each); /* each read and write */
    evhttp_set_gencb(admin->http, handle, admin);
    evhttp_set_bevcb(admin->http, make_bev, admin);
    struct timeval every = {SWEEP_MS / 1000, (SWEEP_MS % 1000) * 1000};
    admin->register_ev = event_new(base, -1, 0, register_accepted, admin);
    admin->sweep = event_new(base, -1, EV_PERSIST, sweep, admin);
    if (!admin->register_ev || !admin->sweep || event_add(admin->sweep, &every) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot add the admin endpoint's timers to the loop");
        goto err;
    }

    struct evhttp_bound_socket *bound =
        evhttp_bind_socket_with_handle(admin->http, *host ? host : "0.0.0.0", (ev_uint16_t)port);
    if (!bound) {
        ad_errstr_set(errstr, errstr_size, "cannot listen on %s: %s", listen,
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
    for (size_t i = 0; i < admin->n_accepted; i++)
        bufferevent_decref(admin->accepted[i]);
    if (admin->register_ev)
        event_free(admin->register_ev);
    if (admin->sweep)
        event_free(admin->sweep);
    free(admin->accepted);
    free(admin->conns);
    wipe(admin->token);
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

void ad_admin_set_serve_fn(struct ad_admin *admin, ad_admin_serve_fn fn, void *arg)
{
    admin->serve_fn = fn;
    admin->serve_arg = arg;
}

void ad_admin_set_token(struct ad_admin *admin, const char *token)
{
    wipe(admin->token);
    admin->token = token && *token ? strdup(token) : NULL;
}
