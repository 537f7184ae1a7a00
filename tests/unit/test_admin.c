/*
 * The admin HTTP server, served from a loop thread and exercised over real loopback sockets
 * with libcurl and raw bytes.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <event2/thread.h>

#include "daemon/admin.h"

struct fixture {
    struct event_base *base;
    struct ad_metrics *metrics;
    struct ad_admin *admin;
    pthread_t thread;
    char url[128];
};

static void *loop_main(void *arg)
{
    struct fixture *f = arg;
    event_base_loop(f->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* Runs fn(arg) on the loop thread and waits for it: admin calls belong to that thread. */
struct call {
    void (*fn)(void *);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
};

static void call_cb(evutil_socket_t fd, short what, void *arg)
{
    struct call *c = arg;
    (void)fd;
    (void)what;
    c->fn(c->arg);
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void in_loop(struct fixture *f, void (*fn)(void *), void *arg)
{
    struct call c = {fn, arg, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    struct timeval now = {0, 0};
    assert_int_equal(event_base_once(f->base, -1, EV_TIMEOUT, call_cb, &c, &now), 0);
    pthread_mutex_lock(&c.mu);
    while (!c.done)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
}

static void status_doc(void *arg, json_t *out)
{
    json_object_set_new(out, "component", json_string(arg));
}

static int setup(void **state)
{
    static struct fixture f;
    char err[256];
    memset(&f, 0, sizeof f);
    f.base = event_base_new();
    f.metrics = ad_metrics_new();
    f.admin = ad_admin_new(f.base, "127.0.0.1:0", f.metrics, err, sizeof err);
    if (!f.admin)
        fail_msg("%s", err);
    ad_admin_set_status_fn(f.admin, status_doc, "admin-test");
    snprintf(f.url, sizeof f.url, "http://%s", ad_admin_address(f.admin));
    pthread_create(&f.thread, NULL, loop_main, &f);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    event_base_loopbreak(f->base);
    pthread_join(f->thread, NULL);
    ad_admin_destroy(f->admin);
    ad_metrics_destroy(f->metrics);
    event_base_free(f->base);
    return 0;
}

struct response {
    long code;
    char body[65536];
    size_t len;
    char content_type[128];
    char allow[64];
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct response *r = arg;
    size_t len = size * n;
    if (r->len + len < sizeof r->body) {
        memcpy(r->body + r->len, data, len);
        r->len += len;
        r->body[r->len] = '\0';
    }
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct response *r = arg;
    size_t len = size * n;
    if (strncasecmp(data, "Allow: ", 7) == 0)
        snprintf(r->allow, sizeof r->allow, "%.*s", (int)(len - 9), data + 7);
    return len;
}

static struct response *request(struct fixture *f, const char *method, const char *path)
{
    static struct response r;
    char url[256];
    char *ct = NULL;
    memset(&r, 0, sizeof r);
    snprintf(url, sizeof url, "%s%s", f->url, path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.code);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    if (ct)
        snprintf(r.content_type, sizeof r.content_type, "%s", ct);
    curl_easy_cleanup(c);
    return &r;
}

/* A POST of body with an Authorization header (NULL: none). */
static struct response *post(struct fixture *f, const char *path, const char *body,
                             const char *authorization)
{
    static struct response r;
    char url[256];
    struct curl_slist *headers = NULL;
    memset(&r, 0, sizeof r);
    snprintf(url, sizeof url, "%s%s", f->url, path);
    if (authorization)
        headers = curl_slist_append(headers, authorization);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.code);
    curl_easy_cleanup(c);
    curl_slist_free_all(headers);
    return &r;
}

/* Sends raw bytes and returns the status line's code. */
static int raw_request(struct fixture *f, const char *bytes, size_t len)
{
    char host[64];
    int port;
    const char *colon = strrchr(ad_admin_address(f->admin), ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - ad_admin_address(f->admin)),
             ad_admin_address(f->admin));
    port = atoi(colon + 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    size_t sent = 0;
    while (sent < len) {
        ssize_t w = send(fd, bytes + sent, len - sent, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may hang up early on a bad request */
        sent += (size_t)w;
    }
    char reply[256] = "";
    ssize_t n = recv(fd, reply, sizeof reply - 1, 0);
    close(fd);
    if (n < 12)
        return -1;
    reply[n] = '\0';
    return atoi(reply + 9);
}

static void set_ready(void *arg)
{
    ad_admin_set_ready(arg, 1, NULL);
}

static void set_stopping(void *arg)
{
    ad_admin_set_ready(arg, 0, "stopping");
}

static void test_endpoints(void **state)
{
    struct fixture *f = *state;
    struct response *r;

    r = request(f, "GET", "/healthz");
    assert_int_equal(r->code, 200);
    assert_string_equal(r->body, "ok\n");

    r = request(f, "GET", "/readyz");
    assert_int_equal(r->code, 503);
    assert_string_equal(r->body, "not ready: starting\n");
    in_loop(f, set_ready, f->admin);
    r = request(f, "GET", "/readyz");
    assert_int_equal(r->code, 200);
    in_loop(f, set_stopping, f->admin);
    r = request(f, "GET", "/readyz");
    assert_int_equal(r->code, 503);
    assert_string_equal(r->body, "not ready: stopping\n");

    r = request(f, "GET", "/status");
    assert_int_equal(r->code, 200);
    assert_string_equal(r->content_type, "application/json");
    json_error_t err;
    json_t *doc = json_loads(r->body, 0, &err);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "component")), "admin-test");
    json_decref(doc);

    r = request(f, "GET", "/");
    assert_int_equal(r->code, 200);
    assert_non_null(strstr(r->body, "/metrics"));

    r = request(f, "GET", "/metrics?debug=1");
    assert_int_equal(r->code, 200);
    assert_string_equal(r->content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(r->body, "# TYPE anomalyd_admin_requests_total counter\n"));
    assert_non_null(strstr(r->body, "anomalyd_admin_requests_total{handler=\"/readyz\","
                                    "code=\"503\"} 2\n"));
    assert_non_null(strstr(r->body, "anomalyd_admin_requests_total{handler=\"/readyz\","
                                    "code=\"200\"} 1\n"));
}

static void test_methods_and_paths(void **state)
{
    struct fixture *f = *state;
    struct response *r;

    r = request(f, "HEAD", "/metrics");
    assert_int_equal(r->code, 200);
    assert_int_equal(r->len, 0);

    const char *methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        r = request(f, methods[i], "/status");
        assert_int_equal(r->code, 405);
        assert_string_equal(r->allow, "GET, HEAD");
    }
    const char *missing[] = {"/nope", "/metrics/", "//metrics", "/status.json", "/%00"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        r = request(f, "GET", missing[i]);
        if (r->code != 404)
            fail_msg("%s answered %ld", missing[i], r->code);
    }
    r = request(f, "GET", "/metrics");
    assert_non_null(strstr(r->body, "anomalyd_admin_requests_total{handler=\"other\","
                                    "code=\"404\"} 5\n"));
    assert_non_null(strstr(r->body, "anomalyd_admin_requests_total{handler=\"/status\","
                                    "code=\"405\"} 5\n"));
}

/* What the components are handed: method, path, body and who asked, echoed. */
static int echo(void *arg, const struct ad_component_request *req, struct ad_component_reply *out)
{
    (void)arg;
    if (strcmp(req->path, "/alerts/unknown/feedback") == 0)
        return -1;
    out->status = strcmp(req->method, "POST") == 0 ? 201 : 200;
    out->content_type = "text/plain";
    if (asprintf(&out->body, "%s %s [%.*s] %s", req->method, req->path, (int)req->body_len,
                 req->body, req->by) < 0)
        return -1;
    out->body_len = strlen(out->body);
    return 0;
}

static void set_echo(void *arg)
{
    ad_admin_set_serve_fn(arg, echo, NULL);
}

static void set_token(void *arg)
{
    ad_admin_set_token(arg, "s3cret");
}

static void clear_token(void *arg)
{
    ad_admin_set_token(arg, NULL);
}

static void test_paths_handed_on(void **state)
{
    struct fixture *f = *state;
    struct response *r;
    /* Nothing serves them yet. */
    r = request(f, "GET", "/metrics/entities");
    assert_int_equal(r->code, 404);
    in_loop(f, set_echo, f->admin);
    r = request(f, "GET", "/metrics/entities");
    assert_int_equal(r->code, 200);
    assert_string_equal(r->body, "GET /metrics/entities [] admin 127.0.0.1");
    r = request(f, "POST", "/metrics/entities");
    assert_int_equal(r->code, 405);
    assert_string_equal(r->allow, "GET, HEAD");
    r = request(f, "GET", "/alerts/48bc2b2be172cf4e/feedback");
    assert_int_equal(r->code, 200);
    r = request(f, "PUT", "/alerts/48bc2b2be172cf4e/feedback");
    assert_int_equal(r->code, 405);
    assert_string_equal(r->allow, "GET, HEAD, POST");
    /* Ids are letters and digits; anything else is no such path. */
    r = request(f, "GET", "/alerts/a.b/feedback");
    assert_int_equal(r->code, 404);
    r = request(f, "GET", "/alerts//feedback");
    assert_int_equal(r->code, 404);
    r = request(f, "GET", "/alerts/unknown/feedback");
    assert_int_equal(r->code, 404);

    /* Without a token, a POST from loopback is taken. */
    r = post(f, "/alerts/abc/feedback", "{\"verdict\":\"true_positive\"}", NULL);
    assert_int_equal(r->code, 201);
    assert_string_equal(r->body,
                        "POST /alerts/abc/feedback [{\"verdict\":\"true_positive\"}] admin "
                        "127.0.0.1");
    /* With one, only with it. */
    in_loop(f, set_token, f->admin);
    r = post(f, "/alerts/abc/feedback", "{}", NULL);
    assert_int_equal(r->code, 403);
    r = post(f, "/alerts/abc/feedback", "{}", "Authorization: Bearer wrong");
    assert_int_equal(r->code, 403);
    r = post(f, "/alerts/abc/feedback", "{}", "Authorization: Bearer s3cret0");
    assert_int_equal(r->code, 403);
    r = post(f, "/alerts/abc/feedback", "{}", "Authorization: Bearer s3cret");
    assert_int_equal(r->code, 201);
    r = request(f, "GET", "/alerts/abc/feedback"); /* reading needs no token */
    assert_int_equal(r->code, 200);
    in_loop(f, clear_token, f->admin);
    r = request(f, "GET", "/metrics");
    assert_non_null(strstr(r->body, "anomalyd_admin_requests_total{handler=\"/alerts/feedback\","
                                    "code=\"403\"} 3\n"));
    assert_non_null(strstr(r->body, "anomalyd_admin_requests_total{handler="
                                    "\"/metrics/entities\",code=\"200\"} 1\n"));
}

static void test_bad_requests_get_4xx(void **state)
{
    struct fixture *f = *state;
    const char garbage[] = "THIS IS NOT HTTP\r\n\r\n";
    int code = raw_request(f, garbage, sizeof garbage - 1);
    assert_true(code >= 400 && code < 500);

    const char absolute[] = "GET http://evil.example/metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(raw_request(f, absolute, sizeof absolute - 1), 404);

    const char bad_version[] = "GET /metrics HTTP/9.9\r\n\r\n";
    code = raw_request(f, bad_version, sizeof bad_version - 1);
    assert_true(code >= 400 && code < 500);

    size_t big = 64 * 1024;
    char *huge = malloc(big + 64);
    int n = snprintf(huge, 64, "GET /metrics HTTP/1.1\r\nX-Big: ");
    memset(huge + n, 'a', big);
    memcpy(huge + n + big, "\r\n\r\n", 4);
    code = raw_request(f, huge, (size_t)n + big + 4);
    assert_true(code >= 400 && code < 500);
    free(huge);

    const char big_body[] = "POST /status HTTP/1.1\r\nContent-Length: 100000\r\n\r\n";
    code = raw_request(f, big_body, sizeof big_body - 1);
    assert_int_equal(code, 413);

    /* The server is still there. */
    assert_int_equal(request(f, "GET", "/healthz")->code, 200);
}

/* A connected socket to the admin endpoint. */
static int connect_admin(struct fixture *f)
{
    const char *address = ad_admin_address(f->admin), *colon = strrchr(address, ':');
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* Whether the server has closed fd: an end of stream (or a reset) is waiting there. */
static bool closed_by_server(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char buf[512];
    if (poll(&p, 1, 0) <= 0)
        return false;
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* The server side of the client socket fd: the descriptor of this process whose peer is
 * fd's own address. */
static int server_side(int fd)
{
    struct sockaddr_in mine, peer;
    socklen_t len = sizeof mine;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&mine, &len), 0);
    for (int other = 3; other < 4096; other++) {
        len = sizeof peer;
        if (other != fd && getpeername(other, (struct sockaddr *)&peer, &len) == 0 &&
            peer.sin_family == AF_INET && peer.sin_port == mine.sin_port &&
            peer.sin_addr.s_addr == mine.sin_addr.s_addr)
            return other;
    }
    return -1;
}

/* Keep-alive answers go out at once: Nagle's algorithm is off on every accepted connection
 * (else a small answer waits for the client's delayed acknowledgement, about 40 ms). */
static void test_tcp_nodelay(void **state)
{
    struct fixture *f = *state;
    int fd = connect_admin(f);
    static const char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    char reply[256];
    for (int i = 0; i < 2; i++) { /* two requests on one connection */
        assert_int_equal(send(fd, get, sizeof get - 1, MSG_NOSIGNAL), (ssize_t)(sizeof get - 1));
        ssize_t n = recv(fd, reply, sizeof reply - 1, 0);
        assert_true(n > 12);
        assert_int_equal(atoi(reply + 9), 200);
    }
    int server = server_side(fd);
    assert_true(server >= 0);
    int nodelay = 0;
    socklen_t len = sizeof nodelay;
    assert_int_equal(getsockopt(server, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
    assert_int_equal(nodelay, 1);
    close(fd);
}

struct trickle {
    int fd;
    atomic_bool stop;
};

/* A client that sends a request's headers a few bytes at a time and never ends it. */
static void *trickle_main(void *arg)
{
    struct trickle *t = arg;
    static const char start[] = "GET /metrics HTTP/1.1\r\n";
    send(t->fd, start, sizeof start - 1, MSG_NOSIGNAL);
    while (!atomic_load(&t->stop) && send(t->fd, "X-A: b\r\n", 8, MSG_NOSIGNAL) == 8)
        usleep(200 * 1000);
    return NULL;
}

/* Idle connections, one that stopped in the middle of a request and one that trickles its
 * headers: each is closed once its request took longer than the 10 s the docs promise, and
 * the server answers on. */
static void test_idle_and_slow_connections_are_closed(void **state)
{
    struct fixture *f = *state;
    enum { IDLE = 50 };
    int idle[IDLE];
    for (int i = 0; i < IDLE; i++)
        idle[i] = connect_admin(f);
    int partial = connect_admin(f);
    static const char half[] = "GET /metrics HTTP/1.1\r\nHost:";
    assert_int_equal(send(partial, half, sizeof half - 1, MSG_NOSIGNAL),
                     (ssize_t)(sizeof half - 1));
    struct trickle t = {.fd = connect_admin(f)};
    pthread_t thread;
    pthread_create(&thread, NULL, trickle_main, &t);

    bool all = false, trickler = false;
    for (int tries = 0; tries < 300 && !all; tries++) { /* up to 30 s */
        usleep(100 * 1000);
        all = trickler = trickler || closed_by_server(t.fd);
        for (int i = 0; i < IDLE; i++) {
            if (idle[i] >= 0 && closed_by_server(idle[i])) {
                close(idle[i]);
                idle[i] = -1;
            }
            all = all && idle[i] < 0;
        }
        if (partial >= 0 && closed_by_server(partial)) {
            close(partial);
            partial = -1;
        }
        all = all && partial < 0;
    }
    atomic_store(&t.stop, true);
    pthread_join(thread, NULL);
    close(t.fd);
    for (int i = 0; i < IDLE; i++)
        if (idle[i] >= 0)
            close(idle[i]);
    if (partial >= 0)
        close(partial);
    assert_true(trickler);
    assert_true(all);
    assert_int_equal(request(f, "GET", "/healthz")->code, 200);
}

struct bind_case {
    struct event_base *base;
    const char *listen;
    char err[256];
    struct ad_admin *admin;
};

static void try_bind(void *arg)
{
    struct bind_case *b = arg;
    struct ad_metrics *m = ad_metrics_new();
    b->admin = ad_admin_new(b->base, b->listen, m, b->err, sizeof b->err);
    ad_admin_destroy(b->admin);
    ad_metrics_destroy(m);
}

static void test_bind_errors(void **state)
{
    struct fixture *f = *state;
    struct bind_case cases[] = {
        {f->base, ad_admin_address(f->admin), "", NULL}, /* taken */
        {f->base, "localhost", "", NULL},                /* no port */
        {f->base, "192.0.2.1:0", "", NULL},              /* not an address of this host */
    };
    const char *want[] = {"cannot listen on", "bad listen address", "cannot listen on"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        in_loop(f, try_bind, &cases[i]);
        assert_null(cases[i].admin);
        if (!strstr(cases[i].err, want[i]))
            fail_msg("%s: %s", cases[i].listen, cases[i].err);
    }
}

int main(void)
{
    evthread_use_pthreads();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_methods_and_paths),
        cmocka_unit_test(test_paths_handed_on),
        cmocka_unit_test(test_bad_requests_get_4xx),
        cmocka_unit_test(test_bind_errors),
        cmocka_unit_test(test_tcp_nodelay),
        cmocka_unit_test(test_idle_and_slow_connections_are_closed),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
