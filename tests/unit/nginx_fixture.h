#ifndef AD_TEST_NGINX_FIXTURE_H
#define AD_TEST_NGINX_FIXTURE_H

/*
 * A real nginx for HTTP tests: serves a folder on a free loopback port from a temporary
 * prefix (its config, logs and temp folders), started with `daemon off` as a child of the test
 * that dies with it. The access log has one line per request:
 *
 *     GET /m/CURRENT 304 "Bearer tok" "x-test value" "\"etag\""
 *
 * (method, URI, status, Authorization, X-Test, If-None-Match), so tests can assert what the
 * client sent and what the server answered. Everything under /fail503/ answers 503.
 */

#include <stdbool.h>
#include <stddef.h>

struct nginx_fixture;

/* Whether an nginx binary can be found ($NGINX, $PATH, /usr/sbin). */
bool nginx_fixture_available(void);

/* Starts nginx serving root; waits until it accepts connections. NULL (and a message on
 * stderr) when it cannot start. */
struct nginx_fixture *nginx_fixture_start(const char *root);
int nginx_fixture_port(const struct nginx_fixture *n);
/* Stops it (SIGTERM, then waits); the port and logs stay for a restart. Returns 0 or -1. */
int nginx_fixture_stop(struct nginx_fixture *n);
/* Starts it again on the same port. Returns 0 or -1. */
int nginx_fixture_restart(struct nginx_fixture *n);
/* Access log lines holding needle. */
size_t nginx_fixture_count(const struct nginx_fixture *n, const char *needle);
/* Stops it and removes its prefix. Accepts NULL. */
void nginx_fixture_destroy(struct nginx_fixture *n);

#endif
