#ifndef AD_TEST_NET_FIXTURE_H
#define AD_TEST_NET_FIXTURE_H

/* For tests that start a real server (nginx, redis-server, alertmanager) on loopback. */

/* A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int net_fixture_free_port(void);

#endif
