#ifndef AD_CONFIG_WATCH_H
#define AD_CONFIG_WATCH_H

/*
 * Notices that the config file's content changed, so that an edit reloads the daemon as SIGHUP
 * does (daemon.watch_config).
 *
 * inotify watches the file's folder, not the file: editors and Kubernetes' atomic writer
 * replace the file, or a link on the way to it (a ConfigMap volume swaps its `..data` link),
 * by a rename that a watch on the old inode would never report. When the path resolves into
 * another folder (a symlink), that folder is watched too, and the resolution is redone after
 * every change, so the watch follows the link.
 *
 * Events are debounced: the file is read once the folder has been quiet for quiet_ms (and at
 * the latest ten times that after the first event), and on_change is called only when its bytes
 * differ from the last ones seen. Other files in the folder, a touch, or a rewrite with the same
 * content reload nothing, and a bad edit is tried once rather than at every event. A file that
 * cannot be read (between an editor's delete and create) is no change: the watch waits for it to
 * come back.
 *
 * Everything runs on the loop thread of the event_base given.
 */

#include <stddef.h>

#include <event2/event.h>

/* The daemon's quiet period: long enough for an editor's or a copy's burst of writes, short
 * enough that nobody waits for it. */
#define AD_CONFIG_WATCH_QUIET_MS 300

struct ad_config_watch;

/* Called on the loop when the file's content changed. */
typedef void (*ad_config_watch_fn)(void *arg);

/*
 * Starts watching path. seen_sha256 is the hex sha256 of the content in force (the bytes the
 * running config was loaded from), or NULL to take the file as it is now. path and
 * seen_sha256 are copied. Returns NULL with errstr filled when inotify cannot be set up (no
 * inotify, fs.inotify.max_user_instances or max_user_watches spent, the folder missing).
 */
struct ad_config_watch *ad_config_watch_new(struct event_base *base, const char *path,
                                            const char *seen_sha256, int quiet_ms,
                                            ad_config_watch_fn on_change, void *arg, char *errstr,
                                            size_t errstr_size);
/* Accepts NULL. */
void ad_config_watch_destroy(struct ad_config_watch *w);

/*
 * Takes the file as it is now as seen. Every reload calls it, whatever started it, so that an
 * edit already reloaded by SIGHUP is not reloaded again when the debounce ends. Accepts NULL.
 */
void ad_config_watch_mark_seen(struct ad_config_watch *w);

/* The folders watched now (1 or 2), for /status; borrowed, valid until the next change. */
size_t ad_config_watch_folders(const struct ad_config_watch *w, const char *folders[2]);

#endif
