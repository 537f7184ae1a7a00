#ifndef AD_HTTP_FETCH_H
#define AD_HTTP_FETCH_H

/*
 * One-shot HTTP GET and POST requests on the loop: a libcurl multi handle driven by the loop's
 * event_base (CURLMOPT_SOCKETFUNCTION and CURLMOPT_TIMERFUNCTION, as curl's hiperfifo example
 * does), with the authentication, TLS and extra headers of a `struct ad_settings_http`.
 *
 * Each request ends with exactly one call of its callback, on the loop thread and never from
 * inside ad_http_fetch_get, unless it is cancelled first or the client is destroyed. A request
 * may carry an ETag from an earlier answer (If-None-Match: the server answers 304 when nothing
 * changed), an Accept header, a body size limit and timeouts. Redirects are not followed: a 3xx
 * is an answer. Requests send User-Agent: anomalyd/<version> and accept compressed answers.
 *
 * Every function runs on the loop thread.
 */

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "config/settings.h"

struct ad_http_fetch;
struct ad_http_transfer;

/* How a request ended. Anything but AD_HTTP_OK means no (complete) answer arrived. */
enum ad_http_result {
    AD_HTTP_OK,        /* an answer arrived, whatever its status */
    AD_HTTP_CONNECT,   /* none arrived: refused, reset, name lookup, TLS, closed early */
    AD_HTTP_TIMEOUT,   /* the request's timeout passed, or the transfer stalled */
    AD_HTTP_TOO_LARGE, /* the body is over the request's limit */
    AD_HTTP_TRUNCATED, /* the answer broke off: a body shorter than its Content-Length */
    AD_HTTP_RESET,     /* the connection failed after the status line (reset, HTTP/2 stream) */
    AD_HTTP_MALFORMED, /* not HTTP, or a body that cannot be decoded */
    AD_HTTP_INTERNAL,  /* out of memory */
};

/* "ok", "connect", "timeout", "too_large", "truncated", "reset", "malformed", "internal". */
const char *ad_http_result_name(enum ad_http_result r);

struct ad_http_response {
    enum ad_http_result result;
    long status; /* the HTTP status; 0 when no answer arrived */
    /*
     * With AD_HTTP_OK the body, whatever the status (NUL-terminated; the NUL is not counted
     * in body_len); NULL otherwise. Owned by the client until the callback returns; the
     * callback may take it by setting body to NULL, and then frees it with free().
     */
    uint8_t *body;
    size_t body_len;
    const char *etag;  /* the answer's ETag, or NULL; borrowed for the callback */
    const char *error; /* why, when result is not AD_HTTP_OK; "" otherwise */
    double seconds;    /* how long the request took */
};

/* r and everything it points to are valid for the call; the transfer is gone once it runs. */
typedef void (*ad_http_fetch_cb)(void *arg, struct ad_http_response *r);

struct ad_http_request {
    const char *url;
    const char *if_none_match; /* an ETag from an earlier answer, or NULL */
    const char *accept;        /* the Accept header's value; NULL: curl's default */
    size_t max_body;           /* 0: 64 MiB */
    int64_t timeout_ms;        /* the whole request; 0: the settings' timeout; -1: none */
    /* The request ends (AD_HTTP_TIMEOUT) when fewer than 1 KiB/s arrive for this long;
     * 0: no such check. Curl measures it in whole seconds (at least 1 s). */
    int64_t stall_timeout_ms;
    /* ad_http_fetch_post only: the body (body_len bytes, copied) and its Content-Type. */
    const void *body;
    size_t body_len;
    const char *content_type;
};

/*
 * A client on base with the settings' authentication, TLS and headers (copied: http may go
 * away after the call; its timeout also bounds each connection attempt). Returns NULL with
 * err filled when a header is malformed or memory runs out.
 */
struct ad_http_fetch *ad_http_fetch_new(struct event_base *base,
                                        const struct ad_settings_http *http, char *errstr,
                                        size_t errstr_size);
/* Aborts every transfer without calling its callback. Accepts NULL. Not from a callback. */
void ad_http_fetch_destroy(struct ad_http_fetch *f);

/*
 * Starts a GET of req->url (req is copied). Returns the transfer, valid until its callback
 * runs or it is cancelled, or NULL with err filled (out of memory, a URL curl refuses).
 */
struct ad_http_transfer *ad_http_fetch_get(struct ad_http_fetch *f,
                                           const struct ad_http_request *req, ad_http_fetch_cb cb,
                                           void *arg, char *errstr, size_t errstr_size);
/* Starts a POST of req->body (copied, with req->content_type) to req->url, otherwise as
 * ad_http_fetch_get. A POST is never retried by the client: whether to send it again is the
 * caller's decision. */
struct ad_http_transfer *ad_http_fetch_post(struct ad_http_fetch *f,
                                            const struct ad_http_request *req, ad_http_fetch_cb cb,
                                            void *arg, char *errstr, size_t errstr_size);

/* Aborts a transfer; its callback is not called. */
void ad_http_transfer_cancel(struct ad_http_transfer *t);

/* Transfers started and not yet ended. */
size_t ad_http_fetch_in_flight(const struct ad_http_fetch *f);

/* The URL without its password, for logs and /status; the caller frees it. NULL: no memory. */
char *ad_http_redact_url(const char *url);

/* s percent-encoded for a URL's query (all but A-Z a-z 0-9 - . _ ~); the caller frees it.
 * NULL: no memory. */
char *ad_http_escape(const char *s);

#endif
