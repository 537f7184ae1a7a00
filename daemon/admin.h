#ifndef AD_ADMIN_H
#define AD_ADMIN_H

/*
 * The admin HTTP server on the loop thread (evhttp):
 *   /metrics  Prometheus text exposition of the registry
 *   /healthz  200 while the loop runs (liveness)
 *   /readyz   200 when serving, 503 with the reason otherwise (readiness)
 *   /status   JSON from the status callback
 *   /         a short index
 * and hands two paths to the serve callback (the components):
 *   /metrics/entities       every entity's latest score (GET, HEAD)
 *   /alerts/<id>/feedback   an operator's mark of an alert (GET, POST)
 * A POST must carry `Authorization: Bearer <token>` when a token is set, and comes from a
 * loopback peer otherwise (403). Methods a path does not take get 405, unknown paths 404,
 * malformed requests 400 (from evhttp). Requests are counted in
 * anomalyd_admin_requests_total{handler,code}. Connections have TCP_NODELAY, and each may take 10 s
 * for a request, the wait for it included, however slowly it trickles in; then it is closed.
 */

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <jansson.h>

#include "base/component.h"
#include "base/metrics.h"

struct ad_admin;

/* Fills out (an empty object) with the /status document. */
typedef void (*ad_admin_status_fn)(void *arg, json_t *out);

/*
 * Binds listen ("host:port", "[v6]:port", ":port"; port 0 picks one) on base. metrics is
 * borrowed and must outlive the server. Returns NULL with errstr filled when the address is
 * malformed or cannot be bound.
 */
struct ad_admin *ad_admin_new(struct event_base *base, const char *listen,
                              struct ad_metrics *metrics, char *errstr, size_t errstr_size);
void ad_admin_destroy(struct ad_admin *admin);

/* The bound address, e.g. "127.0.0.1:9476", with the real port when 0 was asked for. */
const char *ad_admin_address(const struct ad_admin *admin);

/* reason is shown by /readyz while not ready; copied. */
void ad_admin_set_ready(struct ad_admin *admin, bool ready, const char *reason);

/* arg is borrowed. */
void ad_admin_set_status_fn(struct ad_admin *admin, ad_admin_status_fn fn, void *arg);

/* Answers the paths handed on; returns -1 when nothing answered (404). */
typedef int (*ad_admin_serve_fn)(void *arg, const struct ad_component_request *req,
                                 struct ad_component_reply *out);
/* arg is borrowed. */
void ad_admin_set_serve_fn(struct ad_admin *admin, ad_admin_serve_fn fn, void *arg);

/* The token POST requests must send (copied; NULL: none, loopback peers only). The old one is
 * wiped. */
void ad_admin_set_token(struct ad_admin *admin, const char *token);

#endif
