/*
 * The Redis sink, its connection and the subscriber against a real redis-server, started by
 * each test on a free loopback port in a temporary folder and stopped afterwards (also when
 * the test fails: cmocka runs the teardown, and the server dies with this process).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"
#include "stream/redis_conn.h"
#include "stream/redis_sink.h"
#include "stream/redis_sub.h"
#include "net_fixture.h"

/* A bound on every wait, so a broken build fails instead of hanging; no assertion is about
 * how long anything takes. */
#define WAIT_MS 30000

/* ---- redis-server ---- */

struct server {
    pid_t pid;
    int port;
    char dir[PATH_MAX];
    char sock[PATH_MAX + 16];
    const char *password; /* requirepass, or NULL */
    bool aof;             /* appendonly with fsync on every write: survives kill -9 */
    bool unix_socket;
    const char *replica_of; /* "host port" of a master, or NULL */
};

/* A synchronous client for checking what the sink wrote (the test may block; the sink not). */
static redisContext *client(const struct server *srv, int db)
{
    struct timeval tv = {.tv_sec = 2};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", srv->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, (struct timeval){.tv_sec = 10});
    if (srv->password) {
        redisReply *r = redisCommand(c, "AUTH %s", srv->password);
        if (r)
            freeReplyObject(r);
    }
    if (db) {
        redisReply *r = redisCommand(c, "SELECT %d", db);
        if (r)
            freeReplyObject(r);
    }
    return c;
}

/* Runs redis-server on srv->port and waits until it answers. */
static int server_run(struct server *srv)
{
    char port[16], log[PATH_MAX + 16];
    const char *argv[32];
    int n = 0;

    snprintf(port, sizeof port, "%d", srv->port);
    snprintf(log, sizeof log, "%s/redis.log", srv->dir);
    argv[n++] = "redis-server";
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--dir";
    argv[n++] = srv->dir;
    argv[n++] = "--logfile";
    argv[n++] = log;
    argv[n++] = "--appendonly";
    argv[n++] = srv->aof ? "yes" : "no";
    if (srv->aof) {
        argv[n++] = "--appendfsync";
        argv[n++] = "always";
    }
    if (srv->unix_socket) {
        argv[n++] = "--unixsocket";
        argv[n++] = srv->sock;
        argv[n++] = "--unixsocketperm";
        argv[n++] = "700";
    }
    if (srv->replica_of) {
        argv[n++] = "--replicaof";
        argv[n++] = srv->replica_of;
    }
    if (srv->password) {
        argv[n++] = "--requirepass";
        argv[n++] = srv->password;
    }
    argv[n] = NULL;

    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Dies with the test, whatever happens to it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    srv->pid = pid;
    int64_t deadline = ad_clock_mono_ms() + 10000;
    while (ad_clock_mono_ms() < deadline) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            srv->pid = 0;
            if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
                fail_msg("redis-server is not installed (scripts/deps installs it)");
            return -1; /* the port was taken meanwhile */
        }
        redisContext *c = client(srv, 0);
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            bool up = r && (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR);
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (up)
                return 0;
        }
        usleep(20000);
    }
    return -1;
}

static int server_start(struct server *srv)
{
    snprintf(srv->dir, sizeof srv->dir, "/tmp/ad-redis-test-XXXXXX");
    if (!mkdtemp(srv->dir))
        return -1;
    snprintf(srv->sock, sizeof srv->sock, "%s/redis.sock", srv->dir);
    for (int tries = 0; tries < 5; tries++) {
        srv->port = net_fixture_free_port();
        if (srv->port > 0 && server_run(srv) == 0)
            return 0;
    }
    return -1;
}

static void server_kill(struct server *srv, int sig)
{
    if (srv->pid <= 0)
        return;
    kill(srv->pid, sig);
    waitpid(srv->pid, NULL, 0);
    srv->pid = 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void server_stop(struct server *srv)
{
    server_kill(srv, SIGKILL);
    if (srv->dir[0])
        nftw(srv->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    srv->dir[0] = '\0';
}

/* ---- a TCP proxy that can swallow replies ---- */

/*
 * Between the sink and redis-server: forwards both ways, or, with drop_replies set, passes
 * the commands on and throws the replies away. cut closes both sides (whatever replies are
 * still unread go with them), goes back to forwarding, and takes the next connection. This
 * is how a test makes "written in Redis, reply lost" happen every time.
 */
struct proxy {
    int listen_fd, port, upstream_port;
    atomic_bool drop_replies, cut, stop;
    pthread_t thread;
    bool running;
};

static int connect_upstream(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void *proxy_main(void *arg)
{
    struct proxy *p = arg;
    char buf[65536];

    while (!atomic_load(&p->stop)) {
        struct pollfd lp = {.fd = p->listen_fd, .events = POLLIN};
        if (poll(&lp, 1, 20) <= 0)
            continue;
        int client = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0)
            continue;
        int server = connect_upstream(p->upstream_port);
        if (server < 0) {
            close(client);
            continue;
        }
        bool open = true;
        while (open && !atomic_load(&p->stop)) {
            if (atomic_load(&p->cut)) {
                atomic_store(&p->drop_replies, false);
                atomic_store(&p->cut, false);
                break;
            }
            struct pollfd fds[2] = {{.fd = client, .events = POLLIN},
                                    {.fd = server, .events = POLLIN}};
            if (poll(fds, 2, 20) <= 0)
                continue;
            for (int i = 0; i < 2 && open; i++) {
                if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                ssize_t n = read(fds[i].fd, buf, sizeof buf);
                if (n <= 0) {
                    open = false;
                    break;
                }
                if (i == 1 && atomic_load(&p->drop_replies))
                    continue;
                int to = i == 0 ? server : client;
                for (ssize_t off = 0; off < n;) {
                    ssize_t w = write(to, buf + off, (size_t)(n - off));
                    if (w <= 0) {
                        open = false;
                        break;
                    }
                    off += w;
                }
            }
        }
        close(client);
        close(server);
    }
    return NULL;
}

static int proxy_start(struct proxy *p, int upstream_port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    p->upstream_port = upstream_port;
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(p->listen_fd, 8) != 0 || getsockname(p->listen_fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    p->port = ntohs(a.sin_port);
    if (pthread_create(&p->thread, NULL, proxy_main, p) != 0)
        return -1;
    p->running = true;
    return 0;
}

static void proxy_stop(struct proxy *p)
{
    if (p->running) {
        atomic_store(&p->stop, true);
        pthread_join(p->thread, NULL);
        p->running = false;
    }
    if (p->listen_fd > 0)
        close(p->listen_fd);
    p->listen_fd = -1;
}

/* ---- the fixture ---- */

#define MAX_ACKS 20000
#define MAX_MSGS 20000

struct fixture {
    struct server srv;
    struct proxy proxy;
    struct event_base *base;
    struct event *tick;
    struct ad_metrics *metrics;
    struct ad_settings_redis_sink settings;
    char logpath[PATH_MAX + 16];
    int logfd;

    uint64_t acks[MAX_ACKS];
    size_t n_acks;
    size_t kill_at_ack; /* kill -9 the server when this many acks are in (0: never) */
    size_t acks_at_kill;
    bool killed;

    char *msgs[MAX_MSGS];
    size_t n_msgs;
    int subscribed;

    bool stop_done, flushed;
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs the loop until cond holds; fails the test if it does not within WAIT_MS. */
#define WAIT_FOR(fx, cond)                                                                     \
    do {                                                                                       \
        int64_t deadline_ = ad_clock_mono_ms() + WAIT_MS;                                      \
        while (!(cond)) {                                                                      \
            if (ad_clock_mono_ms() > deadline_)                                                \
                fail_msg("%s:%d: still not true after %d ms: %s", __FILE__, __LINE__, WAIT_MS, \
                         #cond);                                                               \
            event_base_loop((fx)->base, EVLOOP_ONCE);                                          \
        }                                                                                      \
    } while (0)

static void set_secret(struct ad_secret *s, const char *value)
{
    free(s->value);
    s->value = value ? strdup(value) : NULL;
}

static int setup_with(void **state, const char *password, bool aof, bool unix_socket,
                      const char *replica_of)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    *state = fx;
    fx->srv.password = password;
    fx->srv.aof = aof;
    fx->srv.unix_socket = unix_socket;
    fx->srv.replica_of = replica_of;
    if (server_start(&fx->srv) != 0)
        return -1;
    fx->base = event_base_new();
    fx->metrics = ad_metrics_new();
    /* The loop wakes up now and then, so WAIT_FOR checks its condition even when idle. */
    fx->tick = event_new(fx->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {.tv_usec = 10000};
    if (!fx->base || !fx->metrics || !fx->tick || event_add(fx->tick, &tv) != 0)
        return -1;
    snprintf(fx->logpath, sizeof fx->logpath, "%s/anomalyd.log", fx->srv.dir);
    fx->logfd = open(fx->logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fx->logfd < 0)
        return -1;
    ad_log_set_fd(fx->logfd);

    struct ad_settings_redis_sink *s = &fx->settings;
    s->url = strdup("redis://test");
    s->host = strdup("127.0.0.1");
    s->port = fx->srv.port;
    s->stream = strdup("t:alerts");
    s->stream_maxlen = 100000;
    s->hash = strdup("t:state");
    s->channel = strdup("t:channel");
    s->queue_limit = 10000;
    s->connect_timeout = 2000;
    return 0;
}

static int setup_plain(void **state)
{
    return setup_with(state, NULL, false, false, NULL);
}

static int setup_auth(void **state)
{
    return setup_with(state, "s3cret-pw", false, false, NULL);
}

static int setup_aof(void **state)
{
    return setup_with(state, NULL, true, false, NULL);
}

static int setup_unix(void **state)
{
    return setup_with(state, NULL, false, true, NULL);
}

/* A read-only replica whose master is nowhere (port 1): what a sink meets when its address
 * still points at the old master after a failover. */
static int setup_replica(void **state)
{
    return setup_with(state, NULL, false, false, "127.0.0.1 1");
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (!fx)
        return 0;
    ad_log_set_fd(-1);
    /* AD_TEST_SHOW_LOG=1 prints what the sink logged, for debugging. */
    if (getenv("AD_TEST_SHOW_LOG") && fx->logpath[0]) {
        FILE *f = fopen(fx->logpath, "r");
        char line[4096];
        while (f && fgets(line, sizeof line, f))
            fputs(line, stderr);
        if (f)
            fclose(f);
    }
    proxy_stop(&fx->proxy);
    server_stop(&fx->srv);
    if (fx->logfd > 0)
        close(fx->logfd);
    if (fx->tick)
        event_free(fx->tick);
    if (fx->base)
        event_base_free(fx->base);
    ad_metrics_destroy(fx->metrics);
    struct ad_settings_redis_sink *s = &fx->settings;
    free(s->url);
    free(s->host);
    free(s->socket_path);
    free(s->stream);
    free(s->hash);
    free(s->channel);
    free(s->username.value);
    free(s->password.value);
    for (size_t i = 0; i < fx->n_msgs; i++)
        free(fx->msgs[i]);
    free(fx);
    return 0;
}

/* ---- callbacks ---- */

static void on_ack(void *arg, uint64_t token)
{
    struct fixture *fx = arg;
    assert_true(fx->n_acks < MAX_ACKS);
    fx->acks[fx->n_acks++] = token;
    if (fx->kill_at_ack && fx->n_acks == fx->kill_at_ack) {
        /* Mid-stream: the rest of the batch is in flight or queued. */
        fx->acks_at_kill = fx->n_acks;
        server_kill(&fx->srv, SIGKILL);
        fx->killed = true;
    }
}

static void on_message(void *arg, const char *payload, size_t len)
{
    struct fixture *fx = arg;
    assert_true(fx->n_msgs < MAX_MSGS);
    assert_int_equal(strlen(payload), len);
    fx->msgs[fx->n_msgs++] = strndup(payload, len);
}

static void on_subscribed(void *arg)
{
    struct fixture *fx = arg;
    fx->subscribed++;
}

static void on_stopped(void *arg, bool flushed)
{
    struct fixture *fx = arg;
    fx->stop_done = true;
    fx->flushed = flushed;
}

/* ---- helpers ---- */

static struct ad_redis_sink *new_sink(struct fixture *fx)
{
    char err[256] = "";
    struct ad_redis_sink *s =
        ad_redis_sink_new(fx->base, &fx->settings, fx->metrics, on_ack, fx, err, sizeof err);
    if (!s)
        fail_msg("ad_redis_sink_new: %s", err);
    return s;
}

static struct ad_redis_sub *new_sub(struct fixture *fx)
{
    char err[256] = "";
    struct ad_redis_sub_handler h = {
        .on_message = on_message, .on_subscribed = on_subscribed, .arg = fx};
    struct ad_redis_sub *s = ad_redis_sub_new(fx->base, &fx->settings, fx->settings.channel,
                                              fx->metrics, &h, err, sizeof err);
    if (!s)
        fail_msg("ad_redis_sub_new: %s", err);
    return s;
}

static void alert_json(char *buf, size_t size, const char *id, int entity, int seq)
{
    snprintf(buf, size, "{\"id\":\"%s\",\"entity\":\"e%d\",\"seq\":%d}", id, entity, seq);
}

/* Sends alerts first..first+n-1: id "<prefix>-<i>", entity "e<i % entities>", token
 * token0 + i - first. */
static void send_alerts(struct ad_redis_sink *s, const char *prefix, int first, int n, int entities,
                        uint64_t token0)
{
    for (int i = first; i < first + n; i++) {
        char id[64], entity[32], json[256];
        snprintf(id, sizeof id, "%s-%d", prefix, i);
        snprintf(entity, sizeof entity, "e%d", i % entities);
        alert_json(json, sizeof json, id, i % entities, i);
        struct ad_alert_msg m = {
            .id = id, .detector = "det", .entity = entity, .json = json, .json_len = strlen(json)};
        assert_int_equal(ad_redis_sink_send(s, &m, token0 + (uint64_t)(i - first)), 0);
    }
}

static void assert_acks_in_order(const struct fixture *fx, size_t n)
{
    assert_int_equal(fx->n_acks, n);
    for (size_t i = 0; i < n; i++)
        if (fx->acks[i] != i)
            fail_msg("ack %zu is token %" PRIu64 ", expected %zu", i, fx->acks[i], i);
}

static long long redis_int(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type != REDIS_REPLY_INTEGER)
        fail_msg("expected an integer, got type %d: %s", r->type, r->str ? r->str : "");
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void redis_ok(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", r->str);
    freeReplyObject(r);
}

/* Reads the whole stream and checks that it holds ids "<prefix>-0".."<prefix>-(n-1)" each
 * exactly once with their fields; returns how many entries it holds. */
static size_t check_stream(redisContext *c, const char *stream, const char *prefix, int n,
                           int entities, bool in_order)
{
    redisReply *r = redisCommand(c, "XRANGE %s - +", stream);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    char *seen = calloc((size_t)n, 1);
    assert_non_null(seen);
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *fields = r->element[i]->element[1];
        assert_int_equal(fields->elements, 8);
        assert_string_equal(fields->element[0]->str, "id");
        assert_string_equal(fields->element[2]->str, "detector");
        assert_string_equal(fields->element[3]->str, "det");
        assert_string_equal(fields->element[4]->str, "entity");
        assert_string_equal(fields->element[6]->str, "alert");
        const char *id = fields->element[1]->str;
        size_t plen = strlen(prefix);
        assert_true(strncmp(id, prefix, plen) == 0 && id[plen] == '-');
        int k = atoi(id + plen + 1);
        assert_true(k >= 0 && k < n);
        if (seen[k])
            fail_msg("alert id %s is in the stream twice", id);
        seen[k] = 1;
        if (in_order)
            assert_int_equal(k, (int)i);
        char entity[32], json[256];
        snprintf(entity, sizeof entity, "e%d", k % entities);
        alert_json(json, sizeof json, id, k % entities, k);
        assert_string_equal(fields->element[5]->str, entity);
        assert_string_equal(fields->element[7]->str, json);
    }
    for (int k = 0; k < n; k++)
        if (!seen[k])
            fail_msg("alert id %s-%d is not in the stream", prefix, k);
    size_t count = r->elements;
    free(seen);
    freeReplyObject(r);
    return count;
}

/* The value of one series in the registry's exposition, or -1 when it is absent. */
static double metric(struct fixture *fx, const char *series)
{
    size_t len;
    char *text = ad_metrics_render(fx->metrics, &len);
    double v = -1;
    size_t n = strlen(series);
    for (char *line = text; line && *line;) {
        char *end = strchr(line, '\n');
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            v = strtod(line + n + 1, NULL);
            break;
        }
        line = end ? end + 1 : NULL;
    }
    free(text);
    return v;
}

static json_t *status_of(const struct ad_redis_sink *s)
{
    json_t *o = json_object();
    ad_redis_sink_status(s, o);
    return o;
}

static json_int_t status_int(const struct ad_redis_sink *s, const char *key)
{
    json_t *o = status_of(s);
    json_int_t v = json_integer_value(json_object_get(o, key));
    json_decref(o);
    return v;
}

static json_int_t connection_errors(const struct ad_redis_sink *s)
{
    json_t *o = status_of(s);
    json_int_t v = json_integer_value(json_object_get(json_object_get(o, "connection"), "errors"));
    json_decref(o);
    return v;
}

/* Everything this test logged so far (the caller frees). */
static char *read_log(struct fixture *fx)
{
    FILE *f = fopen(fx->logpath, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 20);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static size_t count_substr(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* ---- tests ---- */

/* N alerts: N stream entries in order, the hash holds each entity's latest alert, a
 * subscriber sees N messages, N acks in order; then the same ids again write nothing. */
static void test_write_publish_dedup(void **state)
{
    struct fixture *fx = *state;
    const int n = 500, entities = 10;

    struct ad_redis_sub *sub = new_sub(fx);
    WAIT_FOR(fx, fx->subscribed == 1);
    assert_true(ad_redis_sub_subscribed(sub));
    struct ad_redis_sink *sink = new_sink(fx);

    send_alerts(sink, "a", 0, n, entities, 0);
    WAIT_FOR(fx, fx->n_acks == (size_t)n && fx->n_msgs == (size_t)n);
    assert_acks_in_order(fx, (size_t)n);
    assert_int_equal(ad_redis_sink_queued(sink), 0);

    redisContext *c = client(&fx->srv, 0);
    assert_non_null(c);
    assert_int_equal(check_stream(c, "t:alerts", "a", n, entities, true), (size_t)n);
    assert_int_equal(redis_int(c, "XLEN t:alerts"), n);
    /* The hash: one field per detector|entity, the latest alert of each. */
    assert_int_equal(redis_int(c, "HLEN t:state"), entities);
    for (int e = 0; e < entities; e++) {
        char field[32], id[32], want[256];
        int last = n - entities + e;
        snprintf(field, sizeof field, "det|e%d", e);
        snprintf(id, sizeof id, "a-%d", last);
        alert_json(want, sizeof want, id, e, last);
        redisReply *r = redisCommand(c, "HGET t:state %s", field);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        assert_string_equal(r->str, want);
        freeReplyObject(r);
    }
    /* Published in order, one message per alert. */
    for (int i = 0; i < n; i++) {
        char id[32], want[256];
        snprintf(id, sizeof id, "a-%d", i);
        alert_json(want, sizeof want, id, i % entities, i);
        assert_string_equal(fx->msgs[i], want);
    }
    /* The dedup key, with its week-long TTL. */
    long long ttl = redis_int(c, "TTL t:alerts:id:a-0");
    assert_true(ttl > 0 && ttl <= 604800);
    assert_int_equal(status_int(sink, "written"), n);
    assert_int_equal(status_int(sink, "duplicates"), 0);
    assert_true(metric(fx, "anomalyd_redis_alerts_total{result=\"written\"}") == n);
    assert_true(metric(fx, "anomalyd_redis_connected{connection=\"sink\"}") == 1);
    assert_true(metric(fx, "anomalyd_redis_connected{connection=\"subscriber\"}") == 1);
    assert_true(metric(fx, "anomalyd_redis_queue_alerts") == 0);

    /* The same ids again (a restart replaying them): acknowledged, nothing written. */
    send_alerts(sink, "a", 0, n, entities, (uint64_t)n);
    WAIT_FOR(fx, fx->n_acks == 2 * (size_t)n);
    assert_acks_in_order(fx, 2 * (size_t)n);
    assert_int_equal(redis_int(c, "XLEN t:alerts"), n);
    assert_int_equal(status_int(sink, "duplicates"), n);
    assert_true(metric(fx, "anomalyd_redis_alerts_total{result=\"duplicate\"}") == n);
    assert_true(metric(fx, "anomalyd_redis_command_duration_seconds_count") == 2 * n);
    /* Nor published: a marker published after them is the only new message. */
    redis_ok(c, "PUBLISH t:channel marker");
    WAIT_FOR(fx, fx->n_msgs == (size_t)n + 1);
    assert_string_equal(fx->msgs[n], "marker");

    redisFree(c);
    ad_redis_sink_destroy(sink);
    ad_redis_sub_destroy(sub);
}

/* redis-server killed (-9) mid-stream and started again on the same port: every alert ends up
 * in the stream exactly once and every token is acknowledged once, in order. */
static void test_server_restart(void **state)
{
    struct fixture *fx = *state;
    const int n = 3000;

    struct ad_redis_sub *sub = new_sub(fx);
    struct ad_redis_sink *sink = new_sink(fx);
    WAIT_FOR(fx, fx->subscribed == 1);
    fx->kill_at_ack = 1;
    send_alerts(sink, "r", 0, n, 7, 0);
    WAIT_FOR(fx, fx->killed);
    assert_true(fx->acks_at_kill < (size_t)n);
    /* The sink notices, queues up and retries while the server is away. */
    WAIT_FOR(fx, metric(fx, "anomalyd_redis_connected{connection=\"sink\"}") == 0);
    assert_true(ad_redis_sink_queued(sink) > 0);
    assert_int_equal(server_run(&fx->srv), 0);

    WAIT_FOR(fx, fx->n_acks == (size_t)n);
    assert_acks_in_order(fx, (size_t)n);
    redisContext *c = client(&fx->srv, 0);
    assert_non_null(c);
    assert_int_equal(check_stream(c, "t:alerts", "r", n, 7, false), (size_t)n);
    assert_true(metric(fx, "anomalyd_redis_reconnects_total{connection=\"sink\"}") >= 1);
    assert_true(connection_errors(sink) >= 1);

    /* The subscriber is back on the channel too (the alerts written after the restart may
     * still be arriving before the marker). */
    WAIT_FOR(fx, fx->subscribed == 2);
    redis_ok(c, "PUBLISH t:channel after-restart");
    WAIT_FOR(fx, fx->n_msgs > 0 && strcmp(fx->msgs[fx->n_msgs - 1], "after-restart") == 0);

    redisFree(c);
    ad_redis_sink_destroy(sink);
    ad_redis_sub_destroy(sub);
}

/* A connection lost after Redis ran the writes and before their replies arrived: all of them
 * are sent again, none is written twice, each counts as a duplicate, each token is acked
 * once. */
static void test_resend_after_lost_replies(void **state)
{
    struct fixture *fx = *state;
    const int n = 100;
    assert_int_equal(proxy_start(&fx->proxy, fx->srv.port), 0);
    fx->settings.port = fx->proxy.port;
    struct ad_redis_sink *sink = new_sink(fx);
    redisContext *c = client(&fx->srv, 0);
    assert_non_null(c);

    send_alerts(sink, "l", 0, 1, 1, 0);
    WAIT_FOR(fx, fx->n_acks == 1);
    atomic_store(&fx->proxy.drop_replies, true);
    send_alerts(sink, "l", 1, n, 3, 1);
    WAIT_FOR(fx, redis_int(c, "XLEN t:alerts") == n + 1);
    assert_int_equal(fx->n_acks, 1);
    assert_int_equal(status_int(sink, "written"), 1);

    atomic_store(&fx->proxy.cut, true);
    WAIT_FOR(fx, fx->n_acks == (size_t)n + 1);
    assert_acks_in_order(fx, (size_t)n + 1);
    assert_int_equal(redis_int(c, "XLEN t:alerts"), n + 1);
    assert_int_equal(status_int(sink, "duplicates"), n);
    assert_int_equal(status_int(sink, "written"), 1);
    assert_true(metric(fx, "anomalyd_redis_reconnects_total{connection=\"sink\"}") >= 1);
    redisFree(c);
    ad_redis_sink_destroy(sink);
}

/* requirepass: the wrong password is a clear error, retried, logged once, never acked, never
 * shown; the right one (and an ACL user) works. */
static void test_auth(void **state)
{
    struct fixture *fx = *state;

    set_secret(&fx->settings.password, "wrong-pw-123");
    struct ad_redis_sink *sink = new_sink(fx);
    send_alerts(sink, "w", 0, 3, 1, 0);
    WAIT_FOR(fx, connection_errors(sink) >= 3);
    assert_int_equal(fx->n_acks, 0);
    assert_int_equal(ad_redis_sink_queued(sink), 3);
    json_t *st = status_of(sink);
    char *text = json_dumps(st, 0);
    json_decref(st);
    assert_non_null(strstr(text, "AUTH failed: WRONGPASS"));
    assert_null(strstr(text, "wrong-pw-123"));
    free(text);
    assert_true(metric(fx, "anomalyd_redis_connection_errors_total{connection=\"sink\","
                           "reason=\"auth\"}") >= 3);
    ad_redis_sink_destroy(sink);
    char *log = read_log(fx);
    assert_int_equal(count_substr(log, "msg=\"redis connection failed\""), 1);
    assert_non_null(strstr(log, "WRONGPASS"));
    assert_null(strstr(log, "wrong-pw-123"));
    assert_null(strstr(log, "s3cret-pw"));
    free(log);

    /* The right password. */
    set_secret(&fx->settings.password, "s3cret-pw");
    sink = new_sink(fx);
    send_alerts(sink, "p", 0, 20, 2, 0);
    WAIT_FOR(fx, fx->n_acks == 20);
    assert_acks_in_order(fx, 20);
    redisContext *c = client(&fx->srv, 0);
    assert_non_null(c);
    assert_int_equal(check_stream(c, "t:alerts", "p", 20, 2, true), 20);
    ad_redis_sink_destroy(sink);

    /* A user name and password (AUTH user pass). */
    redis_ok(c, "ACL SETUSER alice on >alice-pw ~* &* +@all");
    set_secret(&fx->settings.username, "alice");
    set_secret(&fx->settings.password, "alice-pw");
    fx->settings.stream[0] = 'u'; /* "u:alerts" */
    fx->n_acks = 0;
    sink = new_sink(fx);
    send_alerts(sink, "u", 0, 5, 1, 0);
    WAIT_FOR(fx, fx->n_acks == 5);
    assert_int_equal(check_stream(c, "u:alerts", "u", 5, 1, true), 5);
    ad_redis_sink_destroy(sink);
    log = read_log(fx);
    assert_null(strstr(log, "alice-pw"));
    assert_null(strstr(log, "s3cret-pw"));
    free(log);
    redisFree(c);
}

/* A database other than 0 (redis://host:port/3). */
static void test_db(void **state)
{
    struct fixture *fx = *state;
    fx->settings.db = 3;
    struct ad_redis_sink *sink = new_sink(fx);
    send_alerts(sink, "d", 0, 10, 3, 0);
    WAIT_FOR(fx, fx->n_acks == 10);
    redisContext *c3 = client(&fx->srv, 3), *c0 = client(&fx->srv, 0);
    assert_non_null(c3);
    assert_non_null(c0);
    assert_int_equal(check_stream(c3, "t:alerts", "d", 10, 3, true), 10);
    assert_int_equal(redis_int(c0, "EXISTS t:alerts t:state t:alerts:id:d-0"), 0);
    redisFree(c3);
    redisFree(c0);
    ad_redis_sink_destroy(sink);
}

/* queue_limit: full while that many are unacknowledged, not full once they are. */
static void test_queue_limit(void **state)
{
    struct fixture *fx = *state;
    fx->settings.queue_limit = 5;
    struct ad_redis_sink *sink = new_sink(fx);
    send_alerts(sink, "q", 0, 4, 1, 0);
    assert_false(ad_redis_sink_full(sink));
    send_alerts(sink, "q", 4, 1, 1, 4);
    assert_true(ad_redis_sink_full(sink));
    /* Still accepted past the limit: the pipeline pauses, nothing is dropped. */
    send_alerts(sink, "q", 5, 1, 1, 5);
    assert_true(ad_redis_sink_full(sink));
    assert_int_equal(ad_redis_sink_queued(sink), 6);
    assert_true(metric(fx, "anomalyd_redis_queue_alerts") == 6);
    WAIT_FOR(fx, ad_redis_sink_queued(sink) == 0);
    assert_false(ad_redis_sink_full(sink));
    assert_acks_in_order(fx, 6);
    ad_redis_sink_destroy(sink);
}

/* stop() flushes what is queued, then says so; with Redis away it gives up at the deadline. */
static void test_stop(void **state)
{
    struct fixture *fx = *state;
    struct ad_redis_sink *sink = new_sink(fx);
    send_alerts(sink, "s", 0, 200, 4, 0);
    ad_redis_sink_stop(sink, ad_clock_mono_ms() + WAIT_MS, on_stopped, fx);
    assert_false(fx->stop_done); /* never from inside the call */
    WAIT_FOR(fx, fx->stop_done);
    assert_true(fx->flushed);
    assert_acks_in_order(fx, 200);
    redisContext *c = client(&fx->srv, 0);
    assert_non_null(c);
    assert_int_equal(check_stream(c, "t:alerts", "s", 200, 4, true), 200);
    redisFree(c);
    ad_redis_sink_destroy(sink);

    /* Nothing listens there: the deadline passes with the alerts unwritten. */
    fx->settings.port = net_fixture_free_port();
    fx->stop_done = false;
    fx->n_acks = 0;
    sink = new_sink(fx);
    send_alerts(sink, "x", 0, 3, 1, 0);
    ad_redis_sink_stop(sink, ad_clock_mono_ms() + 300, on_stopped, fx);
    WAIT_FOR(fx, fx->stop_done);
    assert_false(fx->flushed);
    assert_int_equal(fx->n_acks, 0);
    assert_int_equal(ad_redis_sink_queued(sink), 3);
    ad_redis_sink_destroy(sink);
}

/* unix:///path/redis.sock */
static void test_unix_socket(void **state)
{
    struct fixture *fx = *state;
    free(fx->settings.host);
    fx->settings.host = NULL;
    fx->settings.port = 0;
    fx->settings.socket_path = strdup(fx->srv.sock);
    struct ad_redis_sink *sink = new_sink(fx);
    json_t *st = status_of(sink);
    assert_true(strncmp(json_string_value(json_object_get(st, "address")), "unix://", 7) == 0);
    json_decref(st);
    send_alerts(sink, "x", 0, 10, 2, 0);
    WAIT_FOR(fx, fx->n_acks == 10);
    redisContext *c = client(&fx->srv, 0);
    assert_non_null(c);
    assert_int_equal(check_stream(c, "t:alerts", "x", 10, 2, true), 10);
    redisFree(c);
    ad_redis_sink_destroy(sink);
}

/* A host name is resolved without blocking (libevent's resolver reads /etc/hosts). */
static void test_host_name(void **state)
{
    struct fixture *fx = *state;
    free(fx->settings.host);
    fx->settings.host = strdup("localhost");
    struct ad_redis_sink *sink = new_sink(fx);
    send_alerts(sink, "h", 0, 5, 1, 0);
    WAIT_FOR(fx, fx->n_acks == 5);
    assert_acks_in_order(fx, 5);
    ad_redis_sink_destroy(sink);
}

/* The script cache flushed under the sink: NOSCRIPT, then EVAL, and nothing is lost. */
static void test_noscript(void **state)
{
    struct fixture *fx = *state;
    struct ad_redis_sink *sink = new_sink(fx);
    send_alerts(sink, "n", 0, 10, 2, 0);
    WAIT_FOR(fx, fx->n_acks == 10);
    redisContext *c = client(&fx->srv, 0);
    assert_non_null(c);
    redis_ok(c, "SCRIPT FLUSH");
    send_alerts(sink, "n", 10, 90, 2, 10);
    WAIT_FOR(fx, fx->n_acks == 100);
    assert_acks_in_order(fx, 100);
    assert_int_equal(check_stream(c, "t:alerts", "n", 100, 2, true), 100);
    assert_true(metric(fx, "anomalyd_redis_command_errors_total{error=\"noscript\"}") >= 1);
    json_t *st = status_of(sink);
    assert_string_equal(json_string_value(json_object_get(st, "script")), "eval");
    json_decref(st);
    redisFree(c);
    ad_redis_sink_destroy(sink);
}

/* An error reply (the hash key holds a string) writes nothing, is retried with backoff and
 * never acknowledged; once the key is fixed every alert is written exactly once. */
static void test_error_reply_retried(void **state)
{
    struct fixture *fx = *state;
    redisContext *c = client(&fx->srv, 0);
    assert_non_null(c);
    redis_ok(c, "SET t:state not-a-hash");
    struct ad_redis_sink *sink = new_sink(fx);
    send_alerts(sink, "e", 0, 50, 5, 0);
    WAIT_FOR(fx, metric(fx, "anomalyd_redis_command_errors_total{error=\"wrongtype\"}") >= 3);
    assert_int_equal(fx->n_acks, 0);
    assert_int_equal(redis_int(c, "EXISTS t:alerts t:alerts:id:e-0"), 0);
    json_t *st = status_of(sink);
    assert_non_null(strstr(json_string_value(json_object_get(st, "last_error")), "WRONGTYPE"));
    json_decref(st);
    redis_ok(c, "DEL t:state");
    WAIT_FOR(fx, fx->n_acks == 50);
    assert_acks_in_order(fx, 50);
    assert_int_equal(check_stream(c, "t:alerts", "e", 50, 5, true), 50);
    char *log = read_log(fx);
    assert_int_equal(count_substr(log, "msg=\"redis alert write failed\""), 1);
    free(log);
    redisFree(c);
    ad_redis_sink_destroy(sink);
}

/* Connected to a read-only replica: READONLY drops the connection (the next one may reach the
 * new master), the reconnects slow down instead of looping every 100 ms, it is logged once,
 * and once the server is promoted every alert is written. */
static void test_readonly_replica(void **state)
{
    struct fixture *fx = *state;
    struct ad_redis_sink *sink = new_sink(fx);
    send_alerts(sink, "ro", 0, 20, 2, 0);
    WAIT_FOR(fx, metric(fx, "anomalyd_redis_command_errors_total{error=\"readonly\"}") >= 4);
    assert_int_equal(fx->n_acks, 0);
    assert_true(metric(fx, "anomalyd_redis_connection_errors_total{connection=\"sink\","
                           "reason=\"protocol\"}") >= 4);
    /* The streak goes on across the short-lived connections, and so does the backoff. */
    json_t *st = status_of(sink);
    assert_true(json_integer_value(json_object_get(json_object_get(st, "connection"),
                                                   "consecutive_failures")) >= 4);
    json_decref(st);
    char *log = read_log(fx);
    assert_int_equal(count_substr(log, "msg=\"redis connection lost\""), 1);
    assert_int_equal(count_substr(log, "msg=\"redis connected\""), 2);
    assert_int_equal(count_substr(log, "msg=\"redis alert write failed\""), 1);
    assert_non_null(strstr(log, "READONLY"));
    free(log);

    redisContext *c = client(&fx->srv, 0);
    assert_non_null(c);
    redis_ok(c, "REPLICAOF NO ONE");
    WAIT_FOR(fx, fx->n_acks == 20);
    assert_acks_in_order(fx, 20);
    assert_int_equal(check_stream(c, "t:alerts", "ro", 20, 2, true), 20);
    redisFree(c);
    ad_redis_sink_destroy(sink);
}

/* A server that takes the TCP connection and never answers: each attempt ends at
 * connect_timeout, counted and retried; nothing is acknowledged. */
static void test_connect_timeout(void **state)
{
    struct fixture *fx = *state;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 16), 0); /* the kernel completes handshakes; nobody reads */
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    fx->settings.port = ntohs(a.sin_port);
    fx->settings.connect_timeout = 200;

    struct ad_redis_sink *sink = new_sink(fx);
    send_alerts(sink, "t", 0, 2, 1, 0);
    WAIT_FOR(fx, connection_errors(sink) >= 2);
    assert_int_equal(fx->n_acks, 0);
    assert_true(metric(fx, "anomalyd_redis_connection_errors_total{connection=\"sink\","
                           "reason=\"timeout\"}") >= 2);
    json_t *st = status_of(sink);
    const char *err =
        json_string_value(json_object_get(json_object_get(st, "connection"), "last_error"));
    assert_non_null(err);
    assert_non_null(strstr(err, "not connected within 200ms"));
    json_decref(st);
    ad_redis_sink_destroy(sink);
    close(fd);
}

struct conn_events {
    int ready, lost, pongs;
};

static void conn_ready(void *arg)
{
    ((struct conn_events *)arg)->ready++;
}

static void conn_lost(void *arg, const char *reason)
{
    assert_non_null(reason);
    ((struct conn_events *)arg)->lost++;
}

static void conn_pong(void *arg, const redisReply *r)
{
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    assert_string_equal(r->str, "PONG");
    ((struct conn_events *)arg)->pongs++;
}

/* A server that stops answering (SIGSTOP) while a reply is awaited: the connection is given
 * up after the reply timeout, the reply never reaches its callback, and once the server runs
 * again a new connection works. */
static void test_reply_timeout(void **state)
{
    struct fixture *fx = *state;
    struct conn_events ev = {0};
    char err[256] = "";
    struct ad_redis_conn_options opts = {
        .base = fx->base,
        .settings = &fx->settings,
        .name = "test",
        .metrics = fx->metrics,
        .handler = {.on_ready = conn_ready, .on_lost = conn_lost, .arg = &ev},
        .reply_timeout_ms = 300,
    };
    fx->settings.connect_timeout = 500;
    struct ad_redis_conn *c = ad_redis_conn_new(&opts, err, sizeof err);
    assert_non_null(c);
    const char *ping[] = {"PING"};
    assert_int_equal(ad_redis_conn_command(c, conn_pong, &ev, 1, ping, NULL), -1); /* not yet */
    WAIT_FOR(fx, ev.ready == 1);
    assert_int_equal(ad_redis_conn_command(c, conn_pong, &ev, 1, ping, NULL), 0);
    WAIT_FOR(fx, ev.pongs == 1);

    kill(fx->srv.pid, SIGSTOP);
    assert_int_equal(ad_redis_conn_command(c, conn_pong, &ev, 1, ping, NULL), 0);
    WAIT_FOR(fx, ev.lost == 1);
    assert_false(ad_redis_conn_ready(c));
    assert_non_null(strstr(ad_redis_conn_last_error(c), "no reply within 300ms"));
    kill(fx->srv.pid, SIGCONT);
    WAIT_FOR(fx, ev.ready == 2);
    assert_int_equal(ev.pongs, 1);
    assert_int_equal(ad_redis_conn_command(c, conn_pong, &ev, 1, ping, NULL), 0);
    WAIT_FOR(fx, ev.pongs == 2);
    ad_redis_conn_destroy(c);
}

/* Bad settings are refused with a sentence, not a crash. */
static void test_bad_settings(void **state)
{
    struct fixture *fx = *state;
    char err[256] = "";
    fx->settings.queue_limit = 0;
    assert_null(ad_redis_sink_new(fx->base, &fx->settings, NULL, on_ack, fx, err, sizeof err));
    assert_true(strlen(err) > 0);
    fx->settings.queue_limit = 10;
    free(fx->settings.host);
    fx->settings.host = NULL;
    err[0] = '\0';
    assert_null(ad_redis_sink_new(fx->base, &fx->settings, NULL, on_ack, fx, err, sizeof err));
    assert_true(strlen(err) > 0);
    struct ad_redis_sub_handler h = {.on_message = on_message, .arg = fx};
    err[0] = '\0';
    assert_null(ad_redis_sub_new(fx->base, &fx->settings, "", NULL, &h, err, sizeof err));
    assert_true(strlen(err) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_publish_dedup, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_server_restart, setup_aof, teardown),
        cmocka_unit_test_setup_teardown(test_resend_after_lost_replies, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_auth, setup_auth, teardown),
        cmocka_unit_test_setup_teardown(test_db, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_queue_limit, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_stop, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_unix_socket, setup_unix, teardown),
        cmocka_unit_test_setup_teardown(test_host_name, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_noscript, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_error_reply_retried, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_readonly_replica, setup_replica, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_reply_timeout, setup_plain, teardown),
        cmocka_unit_test_setup_teardown(test_bad_settings, setup_plain, teardown),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
