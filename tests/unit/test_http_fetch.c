/*
 * One-shot GETs on the loop against a real nginx (ETag and 304, 404, the body limit, the
 * headers sent), against a closed port, a server that never answers, and raw sockets that
 * answer with a cut-off body, a reset in the middle of the body or no HTTP at all.
 *
 * Exits 77 (skipped) when nginx is not installed.
 */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "model_fixture.h"
#include "nginx_fixture.h"
#include "stream/http_fetch.h"

struct ctx {
    struct event_base *base;
    char *root;
    struct nginx_fixture *nginx;
    struct ad_settings_http http;
    char url[256];
};

struct got {
    int calls;
    struct ad_http_response r;
    char body[256];
    char etag[128];
    char error[512];
};

static void on_response(void *arg, struct ad_http_response *r)
{
    struct got *g = arg;
    g->calls++;
    g->r = *r;
    g->r.body = NULL;
    snprintf(g->body, sizeof g->body, "%.*s", (int)(r->body_len < 255 ? r->body_len : 255),
             r->body ? (const char *)r->body : "");
    snprintf(g->etag, sizeof g->etag, "%s", r->etag ? r->etag : "");
    snprintf(g->error, sizeof g->error, "%s", r->error);
}

static void expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

/* Runs the loop until the request has answered, or fails after 20 s. */
static void wait_for(struct ctx *c, struct got *g)
{
    int late = 0;
    struct timeval tv = {20, 0};
    struct event *deadline = evtimer_new(c->base, expired, &late);
    evtimer_add(deadline, &tv);
    while (!g->calls && !late)
        event_base_loop(c->base, EVLOOP_ONCE);
    event_free(deadline);
    if (!g->calls)
        fail_msg("no answer within 20 s");
}

/* nginx writes its access log line after the answer has gone: wait for it. */
static void wait_log(struct ctx *c, const char *needle, size_t count)
{
    struct timespec pause = {0, 5 * 1000 * 1000};
    for (int i = 0; i < 4000 && nginx_fixture_count(c->nginx, needle) < count; i++)
        nanosleep(&pause, NULL);
    assert_int_equal(nginx_fixture_count(c->nginx, needle), count);
}

static void write_file(const char *dir, const char *name, const char *text, size_t len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof *c);
    c->base = event_base_new();
    c->root = fixture_tempdir();
    assert_non_null(c->root);
    write_file(c->root, "a.txt", "hello", 5);
    char big[100000];
    memset(big, 'x', sizeof big);
    write_file(c->root, "big.bin", big, sizeof big);
    c->nginx = nginx_fixture_start(c->root);
    assert_non_null(c->nginx);
    snprintf(c->url, sizeof c->url, "http://127.0.0.1:%d", nginx_fixture_port(c->nginx));
    c->http.timeout = 5000;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    nginx_fixture_destroy(c->nginx);
    fixture_remove(c->root);
    free(c->root);
    event_base_free(c->base);
    free(c);
    return 0;
}

static struct ad_http_fetch *client(struct ctx *c, const struct ad_settings_http *http)
{
    char err[256];
    struct ad_http_fetch *f = ad_http_fetch_new(c->base, http ? http : &c->http, err, sizeof err);
    if (!f)
        fail_msg("%s", err);
    return f;
}

static void get(struct ctx *c, struct ad_http_fetch *f, const struct ad_http_request *req,
                struct got *g)
{
    char err[256];
    memset(g, 0, sizeof *g);
    struct ad_http_transfer *t = ad_http_fetch_get(f, req, on_response, g, err, sizeof err);
    if (!t)
        fail_msg("%s", err);
    assert_int_equal(g->calls, 0); /* never from inside the call */
    wait_for(c, g);
    assert_int_equal(g->calls, 1);
}

static void test_etag_and_304(void **state)
{
    struct ctx *c = *state;
    struct ad_http_fetch *f = client(c, NULL);
    char url[300], etag[128];
    struct got g;
    snprintf(url, sizeof url, "%s/a.txt", c->url);

    get(c, f, &(struct ad_http_request){.url = url}, &g);
    assert_int_equal(g.r.result, AD_HTTP_OK);
    assert_int_equal(g.r.status, 200);
    assert_string_equal(g.body, "hello");
    assert_int_equal(g.r.body_len, 5);
    assert_true(g.etag[0] == '"');
    snprintf(etag, sizeof etag, "%s", g.etag);

    get(c, f, &(struct ad_http_request){.url = url, .if_none_match = etag}, &g);
    assert_int_equal(g.r.result, AD_HTTP_OK);
    assert_int_equal(g.r.status, 304);
    assert_int_equal(g.r.body_len, 0);
    wait_log(c, "GET /a.txt 304", 1);
    wait_log(c, "GET /a.txt 200", 1);
    assert_int_equal(ad_http_fetch_in_flight(f), 0);
    ad_http_fetch_destroy(f);
}

static void test_not_found_is_an_answer(void **state)
{
    struct ctx *c = *state;
    struct ad_http_fetch *f = client(c, NULL);
    char url[300];
    struct got g;
    snprintf(url, sizeof url, "%s/missing", c->url);
    get(c, f, &(struct ad_http_request){.url = url}, &g);
    assert_int_equal(g.r.result, AD_HTTP_OK);
    assert_int_equal(g.r.status, 404);
    ad_http_fetch_destroy(f);
}

static void test_body_limit(void **state)
{
    struct ctx *c = *state;
    struct ad_http_fetch *f = client(c, NULL);
    char url[300];
    struct got g;
    snprintf(url, sizeof url, "%s/big.bin", c->url);
    get(c, f, &(struct ad_http_request){.url = url, .max_body = 1000}, &g);
    assert_int_equal(g.r.result, AD_HTTP_TOO_LARGE);
    assert_string_equal(ad_http_result_name(g.r.result), "too_large");
    assert_non_null(strstr(g.error, "1000 bytes"));

    get(c, f, &(struct ad_http_request){.url = url, .max_body = 100000}, &g);
    assert_int_equal(g.r.result, AD_HTTP_OK);
    assert_int_equal(g.r.body_len, 100000);
    ad_http_fetch_destroy(f);
}

static void test_headers_sent(void **state)
{
    struct ctx *c = *state;
    char url[300];
    struct got g;
    char *keys[] = {"X-Test"};
    struct ad_secret values[] = {{.value = "from the config"}};
    struct ad_settings_http bearer = {.timeout = 5000,
                                      .bearer_token = {.value = "s3cret"},
                                      .headers = {.keys = keys, .values = values, .len = 1}};
    struct ad_settings_http basic = {
        .timeout = 5000, .basic_username = "user", .basic_password = {.value = "pass"}};
    snprintf(url, sizeof url, "%s/a.txt", c->url);

    struct ad_http_fetch *f = client(c, &bearer);
    get(c, f, &(struct ad_http_request){.url = url, .if_none_match = "\"x\""}, &g);
    assert_int_equal(g.r.status, 200);
    ad_http_fetch_destroy(f);
    wait_log(c, "GET /a.txt 200 \"Bearer s3cret\" \"from the config\" \"\\x22x\\x22\"", 1);

    f = client(c, &basic);
    get(c, f, &(struct ad_http_request){.url = url}, &g);
    ad_http_fetch_destroy(f);
    wait_log(c, "\"Basic dXNlcjpwYXNz\"", 1); /* base64("user:pass") */

    char *bad_keys[] = {"X-Bad"};
    struct ad_secret bad_values[] = {{.value = "a\r\nInjected: 1"}};
    struct ad_settings_http bad = {.headers = {.keys = bad_keys, .values = bad_values, .len = 1}};
    char err[256];
    assert_null(ad_http_fetch_new(c->base, &bad, err, sizeof err));
    assert_non_null(strstr(err, "X-Bad"));
    assert_null(strstr(err, "Injected")); /* values may be secrets: never quoted */
}

static int listener(int *port, bool do_listen)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    if (do_listen)
        assert_int_equal(listen(fd, 8), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_connection_refused(void **state)
{
    struct ctx *c = *state;
    struct ad_http_fetch *f = client(c, NULL);
    char url[300];
    struct got g;
    int port, fd = listener(&port, false); /* bound, not listening: connections are refused */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/a.txt", port);
    get(c, f, &(struct ad_http_request){.url = url}, &g);
    close(fd);
    assert_int_equal(g.r.result, AD_HTTP_CONNECT);
    assert_int_equal(g.r.status, 0);
    assert_true(g.error[0] != '\0');
    ad_http_fetch_destroy(f);
}

static void test_timeout(void **state)
{
    struct ctx *c = *state;
    struct ad_http_fetch *f = client(c, NULL);
    char url[300];
    struct got g;
    int port, fd = listener(&port, true); /* the kernel accepts; nobody answers */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/a.txt", port);
    get(c, f, &(struct ad_http_request){.url = url, .timeout_ms = 200}, &g);
    assert_int_equal(g.r.result, AD_HTTP_TIMEOUT);
    close(fd);
    ad_http_fetch_destroy(f);
}

/* A raw server on the loop: accepts one connection, reads the request, writes its canned
 * answer and closes (or resets). Nothing here blocks: the client runs on the same loop. */
struct raw {
    int fd, conn;
    const char *answer;
    bool reset;         /* end with a reset (RST) rather than a clean close */
    char request[4096]; /* what the client sent */
    struct event *ev, *conn_ev;
};

static void raw_answer(evutil_socket_t fd, short what, void *arg)
{
    struct raw *r = arg;
    (void)what;
    ssize_t n = recv(fd, r->request, sizeof r->request - 1, 0);
    r->request[n > 0 ? n : 0] = '\0';
    n = send(fd, r->answer, strlen(r->answer), MSG_NOSIGNAL);
    (void)n;
    if (r->reset) {
        /* A zero linger time makes close() send a RST: the client reads the answer so far,
         * then ECONNRESET. */
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close(fd);
        r->conn = -1;
    } else {
        shutdown(fd, SHUT_WR);
    }
}

static void raw_accept(evutil_socket_t fd, short what, void *arg)
{
    struct raw *r = arg;
    (void)what;
    if (r->conn >= 0 || r->conn_ev)
        return;
    r->conn = accept(fd, NULL, NULL);
    if (r->conn < 0)
        return;
    r->conn_ev = event_new(event_get_base(r->ev), r->conn, EV_READ, raw_answer, r);
    event_add(r->conn_ev, NULL);
}

/* A GET of r's server (r->answer and r->reset set by the caller) with req's options. */
static void raw_get(struct ctx *c, struct raw *r, struct ad_http_request req, struct got *g)
{
    struct ad_http_fetch *f = client(c, NULL);
    char url[300];
    int port;
    r->fd = listener(&port, true);
    r->conn = -1;
    r->ev = event_new(c->base, r->fd, EV_READ | EV_PERSIST, raw_accept, r);
    event_add(r->ev, NULL);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
    req.url = url;
    get(c, f, &req, g);
    event_free(r->ev);
    if (r->conn_ev)
        event_free(r->conn_ev);
    if (r->conn >= 0)
        close(r->conn);
    close(r->fd);
    ad_http_fetch_destroy(f);
}

static void test_truncated_body(void **state)
{
    struct got g;
    struct raw r = {.answer = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"};
    raw_get(*state, &r, (struct ad_http_request){0}, &g);
    assert_int_equal(g.r.result, AD_HTTP_TRUNCATED);
    assert_int_equal(g.r.status, 200);
}

/* A reset after the status line is told apart from a clean close before the end: the
 * Prometheus source counts the one as "connect" and the other as "malformed". */
static void test_reset_mid_body(void **state)
{
    struct got g;
    struct raw r = {.answer = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
                    .reset = true};
    raw_get(*state, &r, (struct ad_http_request){0}, &g);
    assert_int_equal(g.r.result, AD_HTTP_RESET);
    assert_string_equal(ad_http_result_name(g.r.result), "reset");
    assert_int_equal(g.r.status, 200);
}

static void test_not_http(void **state)
{
    struct got g;
    struct raw r = {.answer = "SSH-2.0-OpenSSH_9.2\r\n"};
    raw_get(*state, &r, (struct ad_http_request){0}, &g);
    assert_int_equal(g.r.result, AD_HTTP_MALFORMED);
}

/* The Accept header comes first, before the client's own headers. */
static void test_accept_header(void **state)
{
    struct got g;
    struct raw r = {.answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"};
    raw_get(*state, &r, (struct ad_http_request){.accept = "application/json"}, &g);
    assert_int_equal(g.r.result, AD_HTTP_OK);
    assert_non_null(strstr(r.request, "\r\nAccept: application/json\r\n"));
    assert_null(strstr(r.request, "Accept: */*"));

    char err[256];
    struct ad_http_fetch *f = client(*state, NULL);
    assert_null(ad_http_fetch_get(
        f, &(struct ad_http_request){.url = "http://127.0.0.1:1/", .accept = "a\r\nX: 1"},
        on_response, &g, err, sizeof err));
    assert_non_null(strstr(err, "line break"));
    ad_http_fetch_destroy(f);
}

static void never(void *arg, struct ad_http_response *r)
{
    (void)r;
    (*(int *)arg)++;
}

static void test_cancel_and_destroy(void **state)
{
    struct ctx *c = *state;
    struct ad_http_fetch *f = client(c, NULL);
    char url[300], err[256];
    int called = 0, port, fd = listener(&port, true);
    struct got g;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/a.txt", port);
    struct ad_http_transfer *t =
        ad_http_fetch_get(f, &(struct ad_http_request){.url = url, .timeout_ms = 100}, never,
                          &called, err, sizeof err);
    assert_non_null(t);
    assert_int_equal(ad_http_fetch_in_flight(f), 1);
    ad_http_transfer_cancel(t);
    assert_int_equal(ad_http_fetch_in_flight(f), 0);

    /* A later request still works, and the cancelled one never answers (it would time out
     * well before this one's answer). */
    char ok[300];
    snprintf(ok, sizeof ok, "%s/a.txt", c->url);
    get(c, f, &(struct ad_http_request){.url = ok}, &g);
    get(c, f, &(struct ad_http_request){.url = url, .timeout_ms = 300}, &g);
    assert_int_equal(g.r.result, AD_HTTP_TIMEOUT);
    assert_int_equal(called, 0);

    /* Destroyed with a transfer in flight: no callback, nothing leaks (ASan). */
    assert_non_null(ad_http_fetch_get(f, &(struct ad_http_request){.url = url}, never, &called, err,
                                      sizeof err));
    ad_http_fetch_destroy(f);
    event_base_loop(c->base, EVLOOP_NONBLOCK);
    assert_int_equal(called, 0);
    close(fd);
}

static void test_redact(void **state)
{
    (void)state;
    char *s = ad_http_redact_url("https://user:pw@store.example:9000/models");
    assert_non_null(s);
    assert_null(strstr(s, "pw"));
    assert_non_null(strstr(s, "user@store.example:9000/models"));
    free(s);
}

int main(void)
{
    if (!nginx_fixture_available()) {
        fprintf(stderr, "skipped: nginx is not installed\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_etag_and_304, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_is_an_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_sent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_mid_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_http, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accept_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_and_destroy, setup, teardown),
        cmocka_unit_test(test_redact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
