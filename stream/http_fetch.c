#include "stream/http_fetch.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "base/errstr.h"
#include "base/grow.h"
#include "base/version.h"

#define DEFAULT_MAX_BODY (64u * 1024 * 1024)
/* Below this rate for stall_timeout_ms a transfer counts as stalled. */
#define STALL_BYTES_PER_SECOND 1024L

/* A socket curl asked us to watch. */
struct sock {
    struct event *ev;
    struct sock *prev, *next;
};

struct ad_http_transfer {
    struct ad_http_fetch *f;
    struct ad_http_transfer *prev, *next;
    CURL *easy;
    struct curl_slist *headers; /* the client's plus If-None-Match */
    ad_http_fetch_cb cb;
    void *arg;
    size_t max_body;
    uint8_t *body;
    size_t body_len, body_cap;
    bool too_large, no_memory;
    struct timespec started;
    char curl_err[CURL_ERROR_SIZE];
};

struct ad_http_fetch {
    struct event_base *base;
    bool curl_initialised;
    CURLM *multi;
    struct event *timer;
    struct sock *socks;
    struct ad_http_transfer *transfers;
    size_t n_transfers;
    struct curl_slist *headers;
    int64_t timeout_ms;
    char *username, *password;
    char *ca_file, *cert_file, *key_file;
    bool insecure;
};

static const char *const result_names[] = {
    [AD_HTTP_OK] = "ok",
    [AD_HTTP_CONNECT] = "connect",
    [AD_HTTP_TIMEOUT] = "timeout",
    [AD_HTTP_TOO_LARGE] = "too_large",
    [AD_HTTP_TRUNCATED] = "truncated",
    [AD_HTTP_RESET] = "reset",
    [AD_HTTP_MALFORMED] = "malformed",
    [AD_HTTP_INTERNAL] = "internal",
};

const char *ad_http_result_name(enum ad_http_result r)
{
    return (size_t)r < sizeof result_names / sizeof result_names[0] ? result_names[r] : "unknown";
}

/* ---- secrets ---- */

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

static void free_headers(struct curl_slist *list)
{
    for (struct curl_slist *l = list; l; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(list);
}

/* Appends a copy of "fmt" formatted; the formatted text is wiped. Returns 0 or -1. */
static int append_header(struct curl_slist **list, const char *fmt, const char *a, const char *b)
{
    char *line = NULL;
    if (asprintf(&line, fmt, a, b) < 0)
        return -1;
    struct curl_slist *next = curl_slist_append(*list, line);
    free_secret(line);
    if (!next)
        return -1;
    *list = next;
    return 0;
}

static bool has_line_break(const char *s)
{
    return s && strpbrk(s, "\r\n");
}

/* The client's headers; values may be secrets, so errors never quote them. */
static int build_headers(struct ad_http_fetch *f, const struct ad_settings_http *h, char *errstr,
                         size_t errstr_size)
{
    if (h->bearer_token.value) {
        if (has_line_break(h->bearer_token.value)) {
            ad_errstr_set(errstr, errstr_size, "bearer_token holds a line break");
            return -1;
        }
        if (append_header(&f->headers, "Authorization: Bearer %s%s", h->bearer_token.value, "") < 0)
            goto oom;
    }
    for (size_t i = 0; i < h->headers.len; i++) {
        const char *name = h->headers.keys[i], *value = h->headers.values[i].value;
        if (!*name || strpbrk(name, ":\r\n \t") || has_line_break(value)) {
            ad_errstr_set(errstr, errstr_size,
                          "header \"%s\": bad name or a line break in the value", name);
            return -1;
        }
        /* "Name;" is curl's way to send a header with an empty value ("Name:" removes it). */
        if (append_header(&f->headers, value && *value ? "%s: %s" : "%s;%s", name,
                          value && *value ? value : "") < 0)
            goto oom;
    }
    return 0;
oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
    return -1;
}

/* ---- one transfer ---- */

static double since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct ad_http_transfer *t = arg;
    size_t len = size * n;

    if (len > t->max_body - t->body_len) {
        t->too_large = true;
        return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
    }
    size_t need = t->body_len + len + 1;
    /* A declared length sizes the buffer once: a large model file is not copied over and over
     * while it grows. */
    curl_off_t declared = -1;
    if (!t->body_cap &&
        curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &declared) == CURLE_OK &&
        declared > 0 && (uint64_t)declared <= t->max_body && (size_t)declared + 1 > need)
        need = (size_t)declared + 1;
    if (ad_grow(&t->body, &t->body_cap, need, 1) < 0) {
        t->no_memory = true;
        return 0;
    }
    memcpy(t->body + t->body_len, data, len);
    t->body_len += len;
    return len;
}

static void unlink_transfer(struct ad_http_transfer *t)
{
    struct ad_http_fetch *f = t->f;
    if (t->prev)
        t->prev->next = t->next;
    else
        f->transfers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    f->n_transfers--;
}

static void free_transfer(struct ad_http_transfer *t)
{
    if (t->easy) {
        curl_multi_remove_handle(t->f->multi, t->easy);
        curl_easy_cleanup(t->easy);
    }
    free_headers(t->headers);
    free(t->body);
    free(t);
}

/*
 * What each curl failure counts as. After the status line arrived, a connection closed before
 * the end of the body broke off ("truncated") and one that failed was reset ("reset"): callers
 * may blame the server for the one and the network for the other. A transfer that ends before
 * any answer counts as "connect", as does everything else that keeps an answer from arriving,
 * TLS included (a peer that rejects our client certificate after the handshake ends the
 * stream before any answer).
 */
static enum ad_http_result classify(const struct ad_http_transfer *t, CURLcode code, long status)
{
    switch (code) {
    case CURLE_OK:
        return AD_HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return AD_HTTP_TIMEOUT;
    case CURLE_FILESIZE_EXCEEDED:
        return AD_HTTP_TOO_LARGE;
    case CURLE_WRITE_ERROR:
        return t->too_large ? AD_HTTP_TOO_LARGE : t->no_memory ? AD_HTTP_INTERNAL : AD_HTTP_CONNECT;
    case CURLE_OUT_OF_MEMORY:
        return AD_HTTP_INTERNAL;
    case CURLE_UNSUPPORTED_PROTOCOL: /* "Received HTTP/0.9 when not allowed" */
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
        return AD_HTTP_MALFORMED;
    case CURLE_PARTIAL_FILE:
        return status > 0 ? AD_HTTP_TRUNCATED : AD_HTTP_CONNECT;
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2_STREAM:
        return status > 0 ? AD_HTTP_RESET : AD_HTTP_CONNECT;
    default:
        return AD_HTTP_CONNECT;
    }
}

/* A transfer ended: hands the outcome to its callback, then frees it. */
static void finish(struct ad_http_transfer *t, CURLcode code)
{
    struct ad_http_response r = {.error = ""};
    char error[CURL_ERROR_SIZE + 64], *etag = NULL;
    struct curl_header *h = NULL;

    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &r.status);
    r.result = classify(t, code, r.status);
    if (r.result == AD_HTTP_OK &&
        curl_easy_header(t->easy, "ETag", 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h->value)
        etag = strdup(h->value); /* the handle and its headers go before the callback */
    r.etag = etag;
    if (r.result == AD_HTTP_TOO_LARGE)
        snprintf(error, sizeof error, "the body is larger than %zu bytes", t->max_body);
    else if (r.result != AD_HTTP_OK)
        snprintf(error, sizeof error, "%s",
                 t->curl_err[0] ? t->curl_err : curl_easy_strerror(code));
    else
        error[0] = '\0';
    r.error = error;
    r.seconds = since(&t->started);
    if (r.result == AD_HTTP_OK) {
        if (!t->body && !(t->body = malloc(1))) {
            r.result = AD_HTTP_INTERNAL;
            r.error = "out of memory";
        } else {
            t->body[t->body_len] = '\0';
            r.body = t->body;
            r.body_len = t->body_len;
            t->body = NULL;
        }
    }
    unlink_transfer(t);
    ad_http_fetch_cb cb = t->cb;
    void *arg = t->arg;
    free_transfer(t);
    cb(arg, &r);
    free(r.body);
    free(etag);
}

static int configure(struct ad_http_transfer *t, const struct ad_http_request *req)
{
    struct ad_http_fetch *f = t->f;
    CURL *e = t->easy;
    int64_t timeout = req->timeout_ms == 0 ? f->timeout_ms : req->timeout_ms;

    if (curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PRIVATE, t) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->curl_err) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, t) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)t->max_body) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_USERAGENT, "anomalyd/" AD_VERSION) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers) != CURLE_OK)
        return -1;
    if (timeout > 0 && curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout) != CURLE_OK)
        return -1;
    if (f->timeout_ms > 0 &&
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)f->timeout_ms) != CURLE_OK)
        return -1;
    if (req->stall_timeout_ms > 0) {
        long seconds = (long)((req->stall_timeout_ms + 999) / 1000);
        if (curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, STALL_BYTES_PER_SECOND) != CURLE_OK ||
            curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, seconds) != CURLE_OK)
            return -1;
    }
    if (f->username &&
        (curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC) != CURLE_OK ||
         curl_easy_setopt(e, CURLOPT_USERNAME, f->username) != CURLE_OK ||
         curl_easy_setopt(e, CURLOPT_PASSWORD, f->password ? f->password : "") != CURLE_OK))
        return -1;
    if ((f->ca_file && curl_easy_setopt(e, CURLOPT_CAINFO, f->ca_file) != CURLE_OK) ||
        (f->cert_file && curl_easy_setopt(e, CURLOPT_SSLCERT, f->cert_file) != CURLE_OK) ||
        (f->key_file && curl_easy_setopt(e, CURLOPT_SSLKEY, f->key_file) != CURLE_OK))
        return -1;
    if (f->insecure && (curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK ||
                        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK))
        return -1;
    /* COPYPOSTFIELDS takes a copy, so the caller's body may go as soon as the call returns. */
    if (req->body &&
        (curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len) != CURLE_OK ||
         curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body) != CURLE_OK))
        return -1;
    return 0;
}

/* Accept, a copy of the client's headers, then If-None-Match; *ok false when out of memory. */
static struct curl_slist *request_headers(const struct ad_http_fetch *f,
                                          const struct ad_http_request *req, bool *ok)
{
    struct curl_slist *list = NULL;
    *ok = false;
    if (req->accept && append_header(&list, "Accept: %s%s", req->accept, "") < 0)
        goto oom;
    for (const struct curl_slist *l = f->headers; l; l = l->next) {
        struct curl_slist *next = curl_slist_append(list, l->data);
        if (!next)
            goto oom;
        list = next;
    }
    if (req->if_none_match &&
        append_header(&list, "If-None-Match: %s%s", req->if_none_match, "") < 0)
        goto oom;
    /* curl asks a server for "100 Continue" before a body over 1 KiB and waits a second for
     * an answer many servers never send; the bodies here are small enough to send at once. */
    if (req->body &&
        (append_header(&list, "Content-Type: %s%s",
                       req->content_type ? req->content_type : "application/octet-stream",
                       "") < 0 ||
         append_header(&list, "Expect:%s%s", "", "") < 0))
        goto oom;
    *ok = true;
    return list;
oom:
    free_headers(list);
    return NULL;
}

static struct ad_http_transfer *start(struct ad_http_fetch *f, const struct ad_http_request *req,
                                      ad_http_fetch_cb cb, void *arg, char *errstr,
                                      size_t errstr_size)
{
    struct ad_http_transfer *t = NULL;
    bool ok;

    if (!req->url || !cb) {
        ad_errstr_set(errstr, errstr_size, "a request needs a URL and a callback");
        return NULL;
    }
    if (has_line_break(req->if_none_match)) {
        ad_errstr_set(errstr, errstr_size, "the ETag holds a line break");
        return NULL;
    }
    if (has_line_break(req->accept) || has_line_break(req->content_type)) {
        ad_errstr_set(errstr, errstr_size, "a header value holds a line break");
        return NULL;
    }
    t = calloc(1, sizeof *t);
    if (!t)
        goto oom;
    t->f = f;
    t->cb = cb;
    t->arg = arg;
    t->max_body = req->max_body ? req->max_body : DEFAULT_MAX_BODY;
    t->headers = request_headers(f, req, &ok);
    if (!ok)
        goto oom;
    t->easy = curl_easy_init();
    if (!t->easy)
        goto oom;
    if (configure(t, req) < 0) {
        ad_errstr_set(errstr, errstr_size, "libcurl refused the request for %s", req->url);
        goto fail;
    }
    clock_gettime(CLOCK_MONOTONIC, &t->started);
    if (curl_multi_add_handle(f->multi, t->easy) != CURLM_OK) {
        curl_easy_cleanup(t->easy);
        t->easy = NULL;
        goto oom;
    }
    t->next = f->transfers;
    if (f->transfers)
        f->transfers->prev = t;
    f->transfers = t;
    f->n_transfers++;
    return t;

oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
fail:
    if (t)
        free_transfer(t);
    return NULL;
}

struct ad_http_transfer *ad_http_fetch_get(struct ad_http_fetch *f,
                                           const struct ad_http_request *req, ad_http_fetch_cb cb,
                                           void *arg, char *errstr, size_t errstr_size)
{
    if (req->body) {
        ad_errstr_set(errstr, errstr_size, "a GET has no body");
        return NULL;
    }
    return start(f, req, cb, arg, errstr, errstr_size);
}

struct ad_http_transfer *ad_http_fetch_post(struct ad_http_fetch *f,
                                            const struct ad_http_request *req, ad_http_fetch_cb cb,
                                            void *arg, char *errstr, size_t errstr_size)
{
    if (!req->body) {
        ad_errstr_set(errstr, errstr_size, "a POST needs a body");
        return NULL;
    }
    return start(f, req, cb, arg, errstr, errstr_size);
}

void ad_http_transfer_cancel(struct ad_http_transfer *t)
{
    if (!t)
        return;
    unlink_transfer(t);
    free_transfer(t);
}

size_t ad_http_fetch_in_flight(const struct ad_http_fetch *f)
{
    return f->n_transfers;
}

/* ---- curl's multi-socket interface on the loop (curl's hiperfifo.c) ---- */

static void collect_done(struct ad_http_fetch *f)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(f->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        /* msg is invalid once its handle is removed: copy first. */
        CURLcode code = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        finish((struct ad_http_transfer *)priv, code);
    }
}

static void on_socket_ready(evutil_socket_t fd, short what, void *arg)
{
    struct ad_http_fetch *f = arg;
    int mask =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(f->multi, fd, mask, &running);
    collect_done(f);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct ad_http_fetch *f = arg;
    int running;
    (void)fd;
    (void)what;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    collect_done(f);
}

static void sock_free(struct ad_http_fetch *f, struct sock *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else
        f->socks = k->next;
    if (k->next)
        k->next->prev = k->prev;
    if (k->ev)
        event_free(k->ev);
    free(k);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct ad_http_fetch *f = userp;
    struct sock *k = socketp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (k)
            sock_free(f, k);
        return 0;
    }
    short events = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                   ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (!k) {
        k = calloc(1, sizeof *k);
        if (!k)
            return -1;
        k->next = f->socks;
        if (f->socks)
            f->socks->prev = k;
        f->socks = k;
        k->ev = event_new(f->base, fd, events, on_socket_ready, f);
        if (!k->ev) {
            sock_free(f, k);
            return -1;
        }
        curl_multi_assign(f->multi, fd, k);
    } else {
        event_del(k->ev);
        event_assign(k->ev, f->base, fd, events, on_socket_ready, f);
    }
    return event_add(k->ev, NULL) == 0 ? 0 : -1;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct ad_http_fetch *f = userp;
    (void)multi;
    if (timeout_ms < 0)
        return evtimer_del(f->timer) == 0 ? 0 : -1;
    /* 0 means at once; curl must not be called back from inside this callback, so it runs
     * on the next loop iteration (which is also why no callback runs inside _get). */
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    return evtimer_add(f->timer, &tv) == 0 ? 0 : -1;
}

/* ---- the client ---- */

static int copy_string(char **dst, const char *src)
{
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

struct ad_http_fetch *ad_http_fetch_new(struct event_base *base,
                                        const struct ad_settings_http *http, char *errstr,
                                        size_t errstr_size)
{
    struct ad_http_fetch *f = NULL;

    if (!base || !http) {
        ad_errstr_set(errstr, errstr_size, "an HTTP client needs a loop and settings");
        return NULL;
    }
    f = calloc(1, sizeof *f);
    if (!f)
        goto oom;
    f->base = base;
    f->timeout_ms = http->timeout;
    f->insecure = http->tls.insecure_skip_verify;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ad_errstr_set(errstr, errstr_size, "cannot initialise libcurl");
        goto fail;
    }
    f->curl_initialised = true;
    if (copy_string(&f->username, http->basic_username) < 0 ||
        (http->basic_username &&
         copy_string(&f->password, http->basic_password.value ? http->basic_password.value : "") <
             0) ||
        copy_string(&f->ca_file, http->tls.ca_file) < 0 ||
        copy_string(&f->cert_file, http->tls.cert_file) < 0 ||
        copy_string(&f->key_file, http->tls.key_file) < 0)
        goto oom;
    if (build_headers(f, http, errstr, errstr_size) < 0)
        goto fail;
    f->multi = curl_multi_init();
    f->timer = evtimer_new(base, on_timeout, f);
    if (!f->multi || !f->timer)
        goto oom;
    if (curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f) != CURLM_OK ||
        curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f) != CURLM_OK) {
        ad_errstr_set(errstr, errstr_size, "cannot set up the libcurl multi handle");
        goto fail;
    }
    return f;

oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
fail:
    ad_http_fetch_destroy(f);
    return NULL;
}

void ad_http_fetch_destroy(struct ad_http_fetch *f)
{
    if (!f)
        return;
    while (f->transfers)
        ad_http_transfer_cancel(f->transfers);
    /* Closing the cached connections may still call on_curl_socket and on_curl_timer, so
     * their state goes only after this. */
    if (f->multi)
        curl_multi_cleanup(f->multi);
    while (f->socks)
        sock_free(f, f->socks);
    if (f->timer)
        event_free(f->timer);
    free_headers(f->headers);
    free(f->username);
    free_secret(f->password);
    free(f->ca_file);
    free(f->cert_file);
    free(f->key_file);
    if (f->curl_initialised)
        curl_global_cleanup();
    free(f);
}

char *ad_http_redact_url(const char *url)
{
    CURLU *u = curl_url();
    char *text = NULL, *out = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_URL, &text, 0) == CURLUE_OK)
        out = strdup(text);
    else
        out = strdup("(unparsable URL)");
    curl_free(text);
    curl_url_cleanup(u);
    return out;
}

char *ad_http_escape(const char *s)
{
    /* Since curl 7.82 the handle is not needed; curl's string is freed with curl_free(). */
    char *escaped = curl_easy_escape(NULL, s, 0);
    char *out = escaped ? strdup(escaped) : NULL;
    curl_free(escaped);
    return out;
}
