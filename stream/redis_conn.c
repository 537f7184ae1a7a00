#include "stream/redis_conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/util.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/units.h"

#define AD_LOG_MODULE "redis"
#include "base/log.h"

#define DEFAULT_MIN_BACKOFF_MS   100
#define DEFAULT_MAX_BACKOFF_MS   30000
#define DEFAULT_REPLY_TIMEOUT_MS 30000
#define JITTER                   0.2
/* TCP keepalive: a peer that vanished without a FIN or RST (a node gone, a partition) is
 * noticed after about 15 + 3 * 5 s even on a connection that only listens (a subscriber). */
#define KEEPALIVE_IDLE_S     15
#define KEEPALIVE_INTERVAL_S 5
#define KEEPALIVE_COUNT      3
#define MAX_ADDRESSES        8
/* A connection counts as healthy once it has stayed ready this long: only then does the
 * backoff start over, so a server that accepts and then drops every connection (a replica
 * answering READONLY, a subscription refused) is retried ever more slowly, not every 100 ms. */
#define STABLE_MS 10000

enum state { STATE_WAITING, STATE_RESOLVING, STATE_CONNECTING, STATE_HANDSHAKE, STATE_READY };

static const char *const state_names[] = {"waiting", "resolving", "connecting", "handshake",
                                          "ready"};

enum reason {
    REASON_RESOLVE,
    REASON_CONNECT,
    REASON_TIMEOUT,
    REASON_AUTH,
    REASON_HANDSHAKE,
    REASON_LOST,
    REASON_PROTOCOL,
    N_REASONS
};

static const char *const reason_names[N_REASONS] = {
    "resolve", "connect", "timeout", "auth", "handshake", "lost", "protocol",
};

/* The callback of one command; freed by on_reply whatever happens to the connection. */
struct pending {
    ad_redis_reply_fn fn;
    void *arg;
};

/* A channel subscribed to; owned by the connection and sent again after each reconnect. */
struct subscription {
    struct subscription *next;
    ad_redis_reply_fn fn;
    void *arg;
    char channel[];
};

/* One name lookup. It may outlive its attempt (a timeout, a destroy): then conn is NULL and
 * the answer only frees it, since libevent's resolver cannot cancel without calling back. */
struct lookup {
    struct ad_redis_conn *conn;
};

struct ad_redis_conn {
    struct event_base *base;
    char *name;
    char *host; /* without the brackets of an IPv6 literal; NULL with a socket path */
    char *socket_path;
    int port, db;
    char *username, *password;
    char *address; /* for logs and /status: no credentials */
    int64_t connect_timeout, min_backoff, max_backoff, reply_timeout;
    struct ad_redis_conn_handler handler;

    enum state state;
    redisAsyncContext *ac;
    struct evdns_base *dns;
    struct lookup *lookup;
    struct event *retry_timer, *connect_timer, *reply_timer, *stable_timer;
    uint64_t attempts;
    unsigned failures; /* failed attempts and losses since the connection was last stable */
    /* Replies awaited, and when one last arrived: a server that stops answering is lost. */
    size_t outstanding;
    int64_t last_progress;
    struct subscription *subs;
    uint64_t rng;

    char last_error[256];
    int64_t last_error_at; /* wall ms; 0: none */
    char logged_error[256];
    bool logged;    /* a failure of the current streak has been logged */
    bool log_ready; /* the next ready gets a line: it follows a failure that got one */
    uint64_t suppressed;
    uint64_t errors;

    struct ad_gauge *connected;
    struct ad_counter *reconnects;
    struct ad_counter *error_counters[N_REASONS];
};

/* ---- helpers ---- */

/* xorshift64*: jitter needs no more than this, and no shared state. */
static double random_unit(struct ad_redis_conn *c)
{
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return (double)((c->rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

/* min_backoff doubling per consecutive failure up to max_backoff, then ±20%, so clients that
 * failed together (a Redis restart) do not come back in lockstep. */
static int64_t backoff_ms(struct ad_redis_conn *c)
{
    double b = (double)c->min_backoff;
    for (unsigned i = 1; i < c->failures && b < (double)c->max_backoff; i++)
        b *= 2;
    if (b > (double)c->max_backoff)
        b = (double)c->max_backoff;
    return (int64_t)(b * (1.0 - JITTER + 2 * JITTER * random_unit(c)));
}

static void timer_add_ms(struct event *ev, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* Server and library texts end up in log lines and JSON: one line of printable bytes. */
static void sanitize(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            *s = ' ';
}

/* ---- losing the connection ---- */

/* Lets go of the hiredis context. Replies and callbacks still in it are dropped: with data
 * cleared, on_reply, on_push and on_disconnect know the context is no longer ours. From
 * inside a hiredis callback the free happens once that callback returns. */
static void drop_context(struct ad_redis_conn *c)
{
    redisAsyncContext *ac = c->ac;
    if (!ac)
        return;
    c->ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

static void fail(struct ad_redis_conn *c, enum reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Ends the current attempt or connection, counts and (on a change) logs why, and schedules
 * the next attempt. */
static void fail(struct ad_redis_conn *c, enum reason reason, const char *fmt, ...)
{
    char text[sizeof c->last_error];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sanitize(text);

    drop_context(c);
    if (c->lookup) {
        c->lookup->conn = NULL;
        c->lookup = NULL;
    }
    evtimer_del(c->connect_timer);
    evtimer_del(c->reply_timer);
    evtimer_del(c->stable_timer);
    c->outstanding = 0;
    bool was_ready = c->state == STATE_READY;
    c->state = STATE_WAITING;

    c->failures++;
    c->errors++;
    ad_counter_inc(c->error_counters[reason]);
    snprintf(c->last_error, sizeof c->last_error, "%s", text);
    c->last_error_at = ad_clock_wall_ms();

    int64_t retry = backoff_ms(c);
    /* Once per change, not per retry: Redis down for an hour, or a connection that is dropped
     * right after every handshake, is one line (the counters and /status have the rest). */
    if (!c->logged || strcmp(text, c->logged_error) != 0) {
        AD_WARN_KV(was_ready ? "redis connection lost" : "redis connection failed",
                   AD_KV_STR("connection", c->name), AD_KV_STR("address", c->address),
                   AD_KV_STR("reason", reason_names[reason]), AD_KV_STR("error", text),
                   AD_KV_INT("failures", c->failures), AD_KV_INT("suppressed", c->suppressed),
                   AD_KV_DOUBLE("retry_in_seconds", (double)retry / 1000.0));
        c->logged = true;
        c->log_ready = true;
        c->suppressed = 0;
        snprintf(c->logged_error, sizeof c->logged_error, "%s", text);
    } else {
        c->suppressed++;
    }
    timer_add_ms(c->retry_timer, retry);

    if (was_ready) {
        ad_gauge_add(c->connected, -1);
        if (c->handler.on_lost)
            c->handler.on_lost(c->handler.arg, text);
    }
}

/* ---- hiredis callbacks ---- */

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct pending p = *(struct pending *)privdata;
    struct ad_redis_conn *c = ac->data;

    free(privdata);
    /* NULL: the context is being freed (a loss, a drop, a destroy): on_lost has it covered. */
    if (!c || !reply)
        return;
    if (c->outstanding)
        c->outstanding--;
    c->last_progress = ad_clock_mono_ms();
    p.fn(p.arg, reply);
}

static void on_push(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct ad_redis_conn *c = ac->data;
    /* privdata may already be freed when data is NULL (a destroy): check that first. */
    if (!c || !reply)
        return;
    struct subscription *sub = privdata;
    sub->fn(sub->arg, reply);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct ad_redis_conn *c = ac->data;
    if (!c || c->ac != ac)
        return;
    if (status == REDIS_OK) {
        c->state = STATE_HANDSHAKE;
        return;
    }
    /* hiredis frees the context after this returns. */
    c->ac = NULL;
    fail(c, REASON_CONNECT, "%s", ac->errstr ? ac->errstr : "connection failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct ad_redis_conn *c = ac->data;
    (void)status;
    if (!c || c->ac != ac)
        return;
    c->ac = NULL; /* being freed by hiredis */
    fail(c, REASON_LOST, "%s",
         ac->err && ac->errstr && *ac->errstr ? ac->errstr : "connection closed");
}

/* ---- commands ---- */

static int send_command(struct ad_redis_conn *c, ad_redis_reply_fn fn, void *arg, int argc,
                        const char **argv, const size_t *argvlen)
{
    struct pending *p = malloc(sizeof *p);
    if (!p)
        return -1;
    p->fn = fn;
    p->arg = arg;
    if (redisAsyncCommandArgv(c->ac, on_reply, p, argc, argv, argvlen) != REDIS_OK) {
        free(p);
        return -1;
    }
    if (c->outstanding++ == 0) {
        c->last_progress = ad_clock_mono_ms();
        timer_add_ms(c->reply_timer, c->reply_timeout);
    }
    return 0;
}

static int send_subscribe(struct ad_redis_conn *c, struct subscription *sub)
{
    const char *argv[] = {"SUBSCRIBE", sub->channel};
    return redisAsyncCommandArgv(c->ac, on_push, sub, 2, argv, NULL) == REDIS_OK ? 0 : -1;
}

static void become_ready(struct ad_redis_conn *c)
{
    evtimer_del(c->connect_timer);
    c->state = STATE_READY;
    if (c->log_ready) {
        AD_INFO_KV("redis connected", AD_KV_STR("connection", c->name),
                   AD_KV_STR("address", c->address), AD_KV_INT("failures", c->failures),
                   AD_KV_INT("suppressed", c->suppressed));
        c->log_ready = false;
    }
    timer_add_ms(c->stable_timer, STABLE_MS);
    ad_gauge_add(c->connected, 1);
    for (struct subscription *sub = c->subs; sub; sub = sub->next)
        if (send_subscribe(c, sub) != 0) {
            fail(c, REASON_PROTOCOL, "cannot send SUBSCRIBE");
            return;
        }
    if (c->handler.on_ready)
        c->handler.on_ready(c->handler.arg);
}

/* A handshake reply: an error ends the attempt (the commands behind it never get answered,
 * since the context goes); PING's answer, always last, makes the connection ready. */
static bool handshake_failed(struct ad_redis_conn *c, const redisReply *r, enum reason reason,
                             const char *what)
{
    if (r->type != REDIS_REPLY_ERROR)
        return false;
    fail(c, reason, "%s failed: %.*s", what, (int)r->len, r->str);
    return true;
}

static void on_auth_reply(void *arg, const redisReply *r)
{
    handshake_failed(arg, r, REASON_AUTH, "AUTH");
}

static void on_select_reply(void *arg, const redisReply *r)
{
    handshake_failed(arg, r, REASON_HANDSHAKE, "SELECT");
}

static void on_ping_reply(void *arg, const redisReply *r)
{
    struct ad_redis_conn *c = arg;
    if (!handshake_failed(c, r, REASON_HANDSHAKE, "PING"))
        become_ready(c);
}

static int send_handshake(struct ad_redis_conn *c)
{
    if (c->password || c->username) {
        /* A user without a password authenticates only if it is "nopass", which takes any. */
        const char *argv[3] = {"AUTH"};
        int argc = 1;
        if (c->username)
            argv[argc++] = c->username;
        argv[argc++] = c->password ? c->password : "";
        if (send_command(c, on_auth_reply, c, argc, argv, NULL) != 0)
            return -1;
    }
    if (c->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->db);
        const char *argv[] = {"SELECT", db};
        if (send_command(c, on_select_reply, c, 2, argv, NULL) != 0)
            return -1;
    }
    const char *argv[] = {"PING"};
    return send_command(c, on_ping_reply, c, 1, argv, NULL);
}

/* ---- attempts ---- */

static void set_keepalive(int fd)
{
    int on = 1, idle = KEEPALIVE_IDLE_S, interval = KEEPALIVE_INTERVAL_S, count = KEEPALIVE_COUNT;
    /* Best effort: a connection without keepalive still works. */
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

/* Connects to ip (a numeric address) or the socket path, without blocking. */
static void connect_now(struct ad_redis_conn *c, const char *ip)
{
    redisAsyncContext *ac =
        c->socket_path ? redisAsyncConnectUnix(c->socket_path) : redisAsyncConnect(ip, c->port);
    if (!ac) {
        fail(c, REASON_CONNECT, "out of memory");
        return;
    }
    if (ac->err) {
        char err[128];
        snprintf(err, sizeof err, "%s", ac->errstr ? ac->errstr : "cannot connect");
        redisAsyncFree(ac);
        fail(c, REASON_CONNECT, "%s", err);
        return;
    }
    if (!c->socket_path)
        set_keepalive(ac->c.fd);
    ac->data = c;
    if (redisLibeventAttach(ac, c->base) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        fail(c, REASON_CONNECT, "cannot watch the socket");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = STATE_CONNECTING;
    /* Written as soon as the socket connects; hiredis queues them until then. */
    if (send_handshake(c) != 0)
        fail(c, REASON_CONNECT, "cannot queue the handshake");
}

static void on_resolved(int err, struct evutil_addrinfo *ai, void *arg)
{
    struct lookup *l = arg;
    struct ad_redis_conn *c = l->conn;
    const struct evutil_addrinfo *addrs[MAX_ADDRESSES];
    size_t n = 0;
    char ip[64] = "";

    free(l);
    if (!c) { /* the attempt was given up, or the connection destroyed */
        if (ai)
            evutil_freeaddrinfo(ai);
        return;
    }
    c->lookup = NULL;
    if (err) {
        fail(c, REASON_RESOLVE, "cannot resolve %s: %s", c->host, evutil_gai_strerror(err));
        return;
    }
    for (const struct evutil_addrinfo *a = ai; a && n < MAX_ADDRESSES; a = a->ai_next)
        if (a->ai_family == AF_INET || a->ai_family == AF_INET6)
            addrs[n++] = a;
    if (n) {
        /* Successive failed attempts take the next address, so one that does not answer
         * (an IPv6 address of a server bound to IPv4 only) does not block the others. */
        const struct evutil_addrinfo *a = addrs[c->failures % n];
        const void *bytes =
            a->ai_family == AF_INET
                ? (const void *)&((const struct sockaddr_in *)a->ai_addr)->sin_addr
                : (const void *)&((const struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
        evutil_inet_ntop(a->ai_family, bytes, ip, sizeof ip);
    }
    if (ai)
        evutil_freeaddrinfo(ai);
    if (!*ip) {
        fail(c, REASON_RESOLVE, "cannot resolve %s: no address", c->host);
        return;
    }
    connect_now(c, ip);
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return evutil_inet_pton(AF_INET, host, buf) == 1 || evutil_inet_pton(AF_INET6, host, buf) == 1;
}

static void start_attempt(struct ad_redis_conn *c)
{
    if (c->attempts++ > 0)
        ad_counter_inc(c->reconnects);
    c->outstanding = 0;
    timer_add_ms(c->connect_timer, c->connect_timeout);
    if (c->socket_path || is_ip_literal(c->host)) {
        connect_now(c, c->host);
        return;
    }
    if (!c->dns) {
        c->dns = evdns_base_new(c->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!c->dns) {
            fail(c, REASON_RESOLVE, "cannot set up the resolver for %s", c->host);
            return;
        }
    }
    struct lookup *l = calloc(1, sizeof *l);
    if (!l) {
        fail(c, REASON_RESOLVE, "out of memory");
        return;
    }
    struct evutil_addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
    l->conn = c;
    c->lookup = l;
    c->state = STATE_RESOLVING;
    /* May answer (and free l) before it returns: from /etc/hosts, or with an error. */
    evdns_getaddrinfo(c->dns, c->host, NULL, &hints, on_resolved, l);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_attempt(arg);
}

static void on_connect_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ad_redis_conn *c = arg;
    char d[32];
    (void)fd;
    (void)what;
    if (c->state == STATE_READY || c->state == STATE_WAITING)
        return;
    ad_duration_format(c->connect_timeout, d, sizeof d);
    fail(c, REASON_TIMEOUT, "not connected within %s (%s)", d, state_names[c->state]);
}

/* Ready for STABLE_MS: the failure streak is over. */
static void on_stable_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ad_redis_conn *c = arg;
    (void)fd;
    (void)what;
    if (c->state != STATE_READY)
        return;
    if (c->suppressed)
        AD_INFO_KV("redis connection stable", AD_KV_STR("connection", c->name),
                   AD_KV_STR("address", c->address), AD_KV_INT("failures", c->failures),
                   AD_KV_INT("suppressed", c->suppressed));
    c->failures = 0;
    c->logged = false;
    c->suppressed = 0;
}

static void on_reply_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ad_redis_conn *c = arg;
    char d[32];
    (void)fd;
    (void)what;
    if (c->state != STATE_READY || c->outstanding == 0)
        return;
    int64_t waited = ad_clock_mono_ms() - c->last_progress;
    if (waited < c->reply_timeout) {
        timer_add_ms(c->reply_timer, c->reply_timeout - waited);
        return;
    }
    ad_duration_format(c->reply_timeout, d, sizeof d);
    fail(c, REASON_TIMEOUT, "no reply within %s", d);
}

/* ---- set-up ---- */

static char *make_address(const struct ad_settings_redis_sink *s)
{
    char *out = NULL;
    int n;
    if (s->socket_path)
        n = s->db ? asprintf(&out, "unix://%s?db=%d", s->socket_path, s->db)
                  : asprintf(&out, "unix://%s", s->socket_path);
    else
        n = asprintf(&out, "redis://%s:%d/%d", s->host, s->port, s->db);
    return n < 0 ? NULL : out;
}

static void register_metrics(struct ad_redis_conn *c, struct ad_metrics *m)
{
    if (!m)
        return;
    c->connected = ad_metrics_gauge(m, "anomalyd_redis_connected",
                                    "Redis connections that are ready (1 per sink or subscriber).",
                                    "connection", c->name, NULL);
    c->reconnects =
        ad_metrics_counter(m, "anomalyd_redis_reconnects_total",
                           "Redis connection attempts after a failed attempt or a lost connection.",
                           "connection", c->name, NULL);
    for (int r = 0; r < N_REASONS; r++)
        c->error_counters[r] =
            ad_metrics_counter(m, "anomalyd_redis_connection_errors_total",
                               "Failed Redis connection attempts and lost connections, by reason.",
                               "connection", c->name, "reason", reason_names[r], NULL);
}

struct ad_redis_conn *ad_redis_conn_new(const struct ad_redis_conn_options *opts, char *errstr,
                                        size_t errstr_size)
{
    const struct ad_settings_redis_sink *s = opts->settings;
    struct ad_redis_conn *c = NULL;

    if (!opts->base || !s || (!s->socket_path && (!s->host || !*s->host)) ||
        (!s->socket_path && (s->port <= 0 || s->port > 65535)) || s->db < 0 ||
        s->connect_timeout <= 0 || opts->min_backoff_ms < 0 || opts->max_backoff_ms < 0 ||
        opts->reply_timeout_ms < 0) {
        ad_errstr_set(errstr, errstr_size,
                      "a Redis connection needs a loop, a host and port or a socket path, a "
                      "positive connect timeout and no negative durations");
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (!c)
        goto oom;
    c->base = opts->base;
    c->handler = opts->handler;
    c->port = s->port;
    c->db = s->db;
    c->connect_timeout = s->connect_timeout;
    c->min_backoff = opts->min_backoff_ms ? opts->min_backoff_ms : DEFAULT_MIN_BACKOFF_MS;
    c->max_backoff = opts->max_backoff_ms ? opts->max_backoff_ms : DEFAULT_MAX_BACKOFF_MS;
    if (c->max_backoff < c->min_backoff)
        c->max_backoff = c->min_backoff;
    c->reply_timeout = opts->reply_timeout_ms ? opts->reply_timeout_ms : DEFAULT_REPLY_TIMEOUT_MS;
    c->log_ready = true;
    c->rng = (uint64_t)ad_clock_wall_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
    if (!c->rng)
        c->rng = 1;
    if (!(c->name = strdup(opts->name ? opts->name : "redis")) || !(c->address = make_address(s)))
        goto oom;
    if (s->socket_path) {
        if (!(c->socket_path = strdup(s->socket_path)))
            goto oom;
    } else {
        /* The URL parser keeps an IPv6 literal in brackets; hiredis and the resolver want it
         * bare. */
        size_t len = strlen(s->host);
        bool bracketed = len >= 2 && s->host[0] == '[' && s->host[len - 1] == ']';
        c->host = bracketed ? strndup(s->host + 1, len - 2) : strdup(s->host);
        if (!c->host)
            goto oom;
    }
    if ((s->username.value && !(c->username = strdup(s->username.value))) ||
        (s->password.value && !(c->password = strdup(s->password.value))))
        goto oom;
    c->retry_timer = evtimer_new(c->base, on_retry_timer, c);
    c->connect_timer = evtimer_new(c->base, on_connect_timer, c);
    c->reply_timer = evtimer_new(c->base, on_reply_timer, c);
    c->stable_timer = evtimer_new(c->base, on_stable_timer, c);
    if (!c->retry_timer || !c->connect_timer || !c->reply_timer || !c->stable_timer)
        goto oom;
    register_metrics(c, opts->metrics);
    timer_add_ms(c->retry_timer, 0);
    return c;

oom:
    ad_errstr_set(errstr, errstr_size, "out of memory");
    ad_redis_conn_destroy(c);
    return NULL;
}

void ad_redis_conn_destroy(struct ad_redis_conn *c)
{
    if (!c)
        return;
    drop_context(c);
    if (c->lookup)
        c->lookup->conn = NULL;
    /* Lookups in flight are answered (with an error) on a later loop iteration and free
     * themselves. */
    if (c->dns)
        evdns_base_free(c->dns, 1);
    if (c->state == STATE_READY)
        ad_gauge_add(c->connected, -1);
    if (c->retry_timer)
        event_free(c->retry_timer);
    if (c->connect_timer)
        event_free(c->connect_timer);
    if (c->reply_timer)
        event_free(c->reply_timer);
    if (c->stable_timer)
        event_free(c->stable_timer);
    while (c->subs) {
        struct subscription *next = c->subs->next;
        free(c->subs);
        c->subs = next;
    }
    free_secret(c->username);
    free_secret(c->password);
    free(c->host);
    free(c->socket_path);
    free(c->address);
    free(c->name);
    free(c);
}

/* ---- use ---- */

bool ad_redis_conn_ready(const struct ad_redis_conn *c)
{
    return c->state == STATE_READY && c->ac;
}

int ad_redis_conn_command(struct ad_redis_conn *c, ad_redis_reply_fn fn, void *arg, int argc,
                          const char **argv, const size_t *argvlen)
{
    if (!ad_redis_conn_ready(c) || !fn)
        return -1;
    return send_command(c, fn, arg, argc, argv, argvlen);
}

int ad_redis_conn_subscribe(struct ad_redis_conn *c, const char *channel, ad_redis_reply_fn fn,
                            void *arg)
{
    size_t len = strlen(channel);
    struct subscription *sub = malloc(sizeof *sub + len + 1);
    if (!sub)
        return -1;
    sub->fn = fn;
    sub->arg = arg;
    memcpy(sub->channel, channel, len + 1);
    sub->next = c->subs;
    c->subs = sub;
    if (ad_redis_conn_ready(c) && send_subscribe(c, sub) != 0)
        fail(c, REASON_PROTOCOL, "cannot send SUBSCRIBE");
    return 0;
}

void ad_redis_conn_reset(struct ad_redis_conn *c, const char *reason)
{
    if (c->state == STATE_WAITING)
        return;
    fail(c, REASON_PROTOCOL, "%s", reason);
}

const char *ad_redis_conn_address(const struct ad_redis_conn *c)
{
    return c->address;
}

const char *ad_redis_conn_last_error(const struct ad_redis_conn *c)
{
    return c->last_error_at ? c->last_error : NULL;
}

uint64_t ad_redis_conn_errors(const struct ad_redis_conn *c)
{
    return c->errors;
}

void ad_redis_conn_status(const struct ad_redis_conn *c, json_t *out)
{
    char when[64];
    json_object_set_new(out, "address", json_string(c->address));
    json_object_set_new(out, "state", json_string(state_names[c->state]));
    json_object_set_new(out, "consecutive_failures", json_integer(c->failures));
    json_object_set_new(out, "errors", json_integer((json_int_t)c->errors));
    /* The text is sanitized ASCII from hiredis or Redis; a byte over 0x7f could still make it
     * invalid UTF-8, which json_string refuses. */
    json_t *err = c->last_error_at ? json_string(c->last_error) : json_null();
    json_object_set_new(out, "last_error", err ? err : json_string("(not UTF-8)"));
    if (c->last_error_at) {
        ad_clock_format(c->last_error_at, when, sizeof when);
        json_object_set_new(out, "last_error_at", json_string(when));
    }
}
