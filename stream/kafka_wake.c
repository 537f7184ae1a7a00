#include "stream/kafka_wake.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/errstr.h"

struct ad_kafka_wake {
    int fds[2]; /* read end, write end */
    struct event *read_event, *again_event;
    ad_kafka_wake_fn poll;
    void *arg;
};

static void drain(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct ad_kafka_wake *w = arg;
    (void)what;
    drain(fd);
    w->poll(w->arg);
}

static void on_again(evutil_socket_t fd, short what, void *arg)
{
    struct ad_kafka_wake *w = arg;
    (void)fd;
    (void)what;
    w->poll(w->arg);
}

struct ad_kafka_wake *ad_kafka_wake_new(struct event_base *base, ad_kafka_wake_fn poll, void *arg,
                                        char *errstr, size_t errstr_size)
{
    struct ad_kafka_wake *w = calloc(1, sizeof *w);
    if (!w) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    w->fds[0] = w->fds[1] = -1;
    w->poll = poll;
    w->arg = arg;
    if (pipe(w->fds) < 0) {
        ad_errstr_set(errstr, errstr_size, "pipe: %s", strerror(errno));
        goto err;
    }
    /* librdkafka must never block on a full pipe, and drain() stops when it is empty. */
    for (int i = 0; i < 2; i++) {
        fcntl(w->fds[i], F_SETFL, O_NONBLOCK);
        fcntl(w->fds[i], F_SETFD, FD_CLOEXEC);
    }
    w->read_event = event_new(base, w->fds[0], EV_READ | EV_PERSIST, on_read, w);
    w->again_event = event_new(base, -1, 0, on_again, w);
    if (!w->read_event || !w->again_event || event_add(w->read_event, NULL) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot register loop events");
        goto err;
    }
    return w;

err:
    ad_kafka_wake_destroy(w);
    return NULL;
}

void ad_kafka_wake_destroy(struct ad_kafka_wake *w)
{
    if (!w)
        return;
    if (w->read_event)
        event_free(w->read_event);
    if (w->again_event)
        event_free(w->again_event);
    for (int i = 0; i < 2; i++)
        if (w->fds[i] >= 0)
            close(w->fds[i]);
    free(w);
}

void ad_kafka_wake_watch(struct ad_kafka_wake *w, rd_kafka_queue_t *queue)
{
    rd_kafka_queue_io_event_enable(queue, w->fds[1], "w", 1);
}

void ad_kafka_wake_again(struct ad_kafka_wake *w)
{
    event_active(w->again_event, EV_TIMEOUT, 0);
}

void ad_kafka_wake_drain(struct ad_kafka_wake *w)
{
    drain(w->fds[0]);
}
