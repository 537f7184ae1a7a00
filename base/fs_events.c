#include "base/fs_events.h"

#include <unistd.h>

size_t ad_fs_events_drain(int fd, ad_fs_event_fn fn, void *arg)
{
    /* Aligned for the struct, large enough for a burst: the kernel hands whole events only. */
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    size_t count = 0;

    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            fn(ev, arg);
            count++;
            p += sizeof *ev + ev->len;
        }
    }
    return count;
}
