#ifndef AD_FS_EVENTS_H
#define AD_FS_EVENTS_H

/*
 * Reading an inotify descriptor, shared by the watchers of the config file (config_watch) and
 * of the model store (model_watch).
 */

#include <stddef.h>
#include <sys/inotify.h>

/* Called once per event; ev is borrowed for the call. */
typedef void (*ad_fs_event_fn)(const struct inotify_event *ev, void *arg);

/* Reads every event queued on the non-blocking inotify descriptor fd and hands each to fn.
 * Returns how many there were. */
size_t ad_fs_events_drain(int fd, ad_fs_event_fn fn, void *arg);

#endif
