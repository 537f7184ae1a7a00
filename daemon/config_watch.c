#include "daemon/config_watch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/file.h"
#include "base/fs_events.h"
#include "base/sha256.h"
#include "config/config.h"

#define AD_LOG_MODULE "config_watch"
#include "base/log.h"

/* IN_ATTRIB: a chmod can make an unreadable file readable. IN_MODIFY is left out: a writer
 * still busy with the file ends with IN_CLOSE_WRITE, which is the moment worth reading it. */
#define FOLDER_EVENTS                                                                   \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB | \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

struct folder {
    char *path;
    int wd; /* -1: not watched */
};

struct ad_config_watch {
    struct event_base *base;
    char *path;
    int fd;
    struct event *inotify_ev, *timer;
    /* [0]: the path's folder; [1]: the folder the path resolves into, when it is another. */
    struct folder folders[2];
    bool have_seen;
    char seen[AD_SHA256_HEX_LEN + 1];
    bool pending;
    int64_t first_event_ms; /* monotonic; when the pending check was first asked for */
    int quiet_ms;
    bool watch_failed_logged;
    ad_config_watch_fn on_change;
    void *arg;
};

/* The folder part of path: "." without a slash, "/" for a file at the root. */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* The file's sha256 in hex. A file that cannot be loaded for what it is (not a regular file,
 * larger than the loader accepts) gets the digest of that reason instead, so that the reload
 * that reports it (and counts it as failed) runs once, not at every event. Returns 0, or -1
 * with errno when it cannot be read now (gone for a moment while an editor replaces it). */
static int hash_file(const char *path, char hex[AD_SHA256_HEX_LEN + 1])
{
    char why[256];
    size_t len = 0;
    /* Without blocking: a FIFO in the file's place must not stall the loop. */
    char *text = ad_file_read(path, AD_CONFIG_MAX_BYTES, &len, NULL, why, sizeof why);
    if (!text && errno != EINVAL && errno != EFBIG)
        return -1;
    if (text)
        ad_sha256_hex(text, len, hex);
    else
        ad_sha256_hex(why, strlen(why), hex);
    free(text);
    return 0;
}

static int add_watch(struct ad_config_watch *w, const char *folder)
{
    int wd = inotify_add_watch(w->fd, folder, FOLDER_EVENTS);
    if (wd < 0 && !w->watch_failed_logged) {
        /* ENOSPC: fs.inotify.max_user_watches is spent. Logged once; SIGHUP still reloads. */
        w->watch_failed_logged = true;
        AD_WARN_KV("cannot watch the config file's folder; reload with SIGHUP",
                   AD_KV_STR("folder", folder), AD_KV_STR("error", strerror(errno)));
    }
    return wd;
}

static void unwatch_target(struct ad_config_watch *w)
{
    struct folder *t = &w->folders[1];
    if (t->wd >= 0 && t->wd != w->folders[0].wd)
        inotify_rm_watch(w->fd, t->wd);
    t->wd = -1;
    free(t->path);
    t->path = NULL;
}

/* Watches the folder the path resolves into now, when it is not the path's own folder. A path
 * that does not resolve (mid-swap, removed) keeps what is watched. */
static void follow_link(struct ad_config_watch *w)
{
    struct folder *t = &w->folders[1];
    char *real = realpath(w->path, NULL);
    if (!real)
        return;
    char *folder = folder_of(real);
    free(real);
    if (!folder)
        return;
    if (t->path && t->wd >= 0 && strcmp(t->path, folder) == 0) {
        free(folder);
        return;
    }
    unwatch_target(w);
    if (strcmp(folder, w->folders[0].path) == 0) {
        free(folder);
        return;
    }
    int wd = add_watch(w, folder);
    /* The same folder reached by another name gives the same watch descriptor. */
    if (wd < 0 || wd == w->folders[0].wd) {
        free(folder);
        return;
    }
    t->path = folder;
    t->wd = wd;
    AD_DEBUG_KV("watching the config file's target folder too", AD_KV_STR("folder", folder));
}

static void arm(struct ad_config_watch *w)
{
    int64_t now = ad_clock_mono_ms();
    if (!w->pending) {
        w->pending = true;
        w->first_event_ms = now;
    }
    int64_t wait = w->quiet_ms;
    /* A folder that never goes quiet (a busy neighbour file) still gets its check. */
    int64_t left = w->first_event_ms + 10 * (int64_t)w->quiet_ms - now;
    if (left < wait)
        wait = left > 0 ? left : 0;
    struct timeval tv = {.tv_sec = (time_t)(wait / 1000),
                         .tv_usec = (suseconds_t)((wait % 1000) * 1000)};
    /* Adding a pending timer again moves it: the quiet period starts over. */
    evtimer_add(w->timer, &tv);
}

static void on_quiet(evutil_socket_t fd, short what, void *arg)
{
    struct ad_config_watch *w = arg;
    char now[AD_SHA256_HEX_LEN + 1];
    (void)fd;
    (void)what;

    w->pending = false;
    if (w->folders[0].wd < 0)
        w->folders[0].wd = add_watch(w, w->folders[0].path);
    follow_link(w);
    if (hash_file(w->path, now) < 0) {
        AD_DEBUG_KV("the config file cannot be read; waiting for it to come back",
                    AD_KV_STR("path", w->path), AD_KV_STR("error", strerror(errno)));
        return;
    }
    if (w->have_seen && strcmp(now, w->seen) == 0)
        return;
    memcpy(w->seen, now, sizeof now);
    w->have_seen = true;
    /* Last: the callback may destroy the watch (a reload that turns it off). */
    w->on_change(w->arg);
}

static void forget_wd(struct ad_config_watch *w, int wd)
{
    for (size_t i = 0; i < 2; i++)
        if (w->folders[i].wd == wd)
            w->folders[i].wd = -1;
}

static void on_event(const struct inotify_event *ev, void *arg)
{
    struct ad_config_watch *w = arg;
    if (ev->mask & IN_MOVE_SELF) {
        /* The folder lives on elsewhere; its path is watched again at the check. */
        inotify_rm_watch(w->fd, ev->wd);
        forget_wd(w, ev->wd);
    } else if (ev->mask & IN_IGNORED) {
        forget_wd(w, ev->wd);
    }
}

static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    /* Any event may be the change: the check after the quiet period decides. */
    if (ad_fs_events_drain(fd, on_event, arg) > 0)
        arm(arg);
}

struct ad_config_watch *ad_config_watch_new(struct event_base *base, const char *path,
                                            const char *seen_sha256, int quiet_ms,
                                            ad_config_watch_fn on_change, void *arg, char *errstr,
                                            size_t errstr_size)
{
    struct ad_config_watch *w = calloc(1, sizeof *w);
    if (!w) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        return NULL;
    }
    w->base = base;
    w->fd = -1;
    w->folders[0].wd = w->folders[1].wd = -1;
    w->quiet_ms = quiet_ms > 0 ? quiet_ms : 1;
    w->on_change = on_change;
    w->arg = arg;
    w->path = strdup(path);
    w->folders[0].path = folder_of(path);
    if (!w->path || !w->folders[0].path) {
        ad_errstr_set(errstr, errstr_size, "out of memory");
        goto err;
    }
    if (seen_sha256 && strlen(seen_sha256) == AD_SHA256_HEX_LEN) {
        memcpy(w->seen, seen_sha256, sizeof w->seen);
        w->have_seen = true;
    } else {
        w->have_seen = hash_file(path, w->seen) == 0;
    }

    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) {
        ad_errstr_set(errstr, errstr_size, "inotify: %s", strerror(errno));
        goto err;
    }
    w->folders[0].wd = inotify_add_watch(w->fd, w->folders[0].path, FOLDER_EVENTS);
    if (w->folders[0].wd < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot watch %s: %s", w->folders[0].path,
                      strerror(errno));
        goto err;
    }
    follow_link(w);
    w->inotify_ev = event_new(base, w->fd, EV_READ | EV_PERSIST, on_inotify, w);
    w->timer = evtimer_new(base, on_quiet, w);
    if (!w->inotify_ev || !w->timer || event_add(w->inotify_ev, NULL) < 0) {
        ad_errstr_set(errstr, errstr_size, "cannot add the inotify event to the loop");
        goto err;
    }
    return w;

err:
    ad_config_watch_destroy(w);
    return NULL;
}

void ad_config_watch_destroy(struct ad_config_watch *w)
{
    if (!w)
        return;
    if (w->inotify_ev)
        event_free(w->inotify_ev);
    if (w->timer)
        event_free(w->timer);
    if (w->fd >= 0)
        close(w->fd); /* drops every watch */
    free(w->folders[0].path);
    free(w->folders[1].path);
    free(w->path);
    free(w);
}

void ad_config_watch_mark_seen(struct ad_config_watch *w)
{
    if (!w)
        return;
    w->have_seen = hash_file(w->path, w->seen) == 0;
}

size_t ad_config_watch_folders(const struct ad_config_watch *w, const char *folders[2])
{
    size_t n = 0;
    for (size_t i = 0; i < 2; i++)
        if (w->folders[i].path && w->folders[i].wd >= 0)
            folders[n++] = w->folders[i].path;
    return n;
}
