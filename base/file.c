#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/errstr.h"

const char *ad_file_kind(mode_t mode)
{
    if (S_ISREG(mode))
        return "a regular file";
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISLNK(mode))
        return "a symbolic link";
    return "not a regular file";
}

/* Opens path with O_NONBLOCK and stats it; -1 with errno and errstr. */
static int open_nonblocking(const char *path, struct stat *st, char *errstr, size_t errstr_size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return ad_errstr_set(errstr, errstr_size, "%s", strerror(errno));
    if (fstat(fd, st) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return ad_errstr_set(errstr, errstr_size, "%s", strerror(saved));
    }
    return fd;
}

int ad_file_open(const char *path, int flags, struct stat *st, char *errstr, size_t errstr_size)
{
    struct stat own;
    if (!st)
        st = &own;
    int fd = open_nonblocking(path, st, errstr, errstr_size);
    if (fd < 0)
        return -1;
    if (S_ISFIFO(st->st_mode) && (flags & AD_FILE_FIFO_OK)) {
        /* The non-blocking descriptor would read an end of file until the writer comes. */
        close(fd);
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, st) < 0) {
            int saved = errno;
            if (fd >= 0)
                close(fd);
            errno = saved;
            return ad_errstr_set(errstr, errstr_size, "%s", strerror(saved));
        }
        return fd;
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        errno = EINVAL;
        return ad_errstr_set(errstr, errstr_size, "is %s, not a regular file",
                             ad_file_kind(st->st_mode));
    }
    /* Reads of a regular file never wait for a writer; clearing the flag keeps them plain. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

char *ad_file_read(const char *path, size_t limit, size_t *len, struct stat *st, char *errstr,
                   size_t errstr_size)
{
    struct stat own;
    char *buf = NULL;
    size_t cap = 0, used = 0;
    int saved = 0;
    if (!st)
        st = &own;
    int fd = ad_file_open(path, 0, st, errstr, errstr_size);
    if (fd < 0)
        return NULL;
    if ((uint64_t)st->st_size > limit) { /* refused before reading, however large */
        saved = EFBIG;
        ad_errstr_set(errstr, errstr_size, "%lld bytes, more than the %zu allowed",
                      (long long)st->st_size, limit);
        goto fail;
    }
    /* The size is a hint only (a file may grow while it is read; /proc shows 0); one byte
     * more than it lets the end of the file be seen without growing the buffer. */
    cap = (st->st_size > 0 ? (size_t)st->st_size : (limit < 4096 ? limit : 4096)) + 1;
    buf = malloc(cap + 1);
    for (;;) {
        if (buf && used == cap) { /* then cap <= limit: more would have failed below */
            size_t bigger = cap > limit / 2 ? limit + 1 : cap * 2;
            char *grown = realloc(buf, bigger + 1);
            if (!grown) {
                memset(buf, 0, cap + 1); /* it may be a secret */
                free(buf);
            } else {
                cap = bigger;
            }
            buf = grown;
        }
        if (!buf) {
            saved = ENOMEM;
            ad_errstr_set(errstr, errstr_size, "out of memory");
            goto fail;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            saved = errno;
            ad_errstr_set(errstr, errstr_size, "%s", strerror(saved));
            goto fail;
        }
        if (n == 0)
            break;
        used += (size_t)n;
        if (used > limit) {
            saved = EFBIG;
            ad_errstr_set(errstr, errstr_size, "more than the %zu bytes allowed", limit);
            goto fail;
        }
    }
    close(fd);
    buf[used] = '\0';
    *len = used;
    return buf;

fail:
    close(fd);
    if (buf) /* it may be a secret */
        memset(buf, 0, cap + 1);
    free(buf);
    errno = saved;
    return NULL;
}
