#ifndef AD_FILE_H
#define AD_FILE_H

/*
 * Reading the files the daemon is given (the config, secret files, the model store's CURRENT,
 * manifests and weights, a replay's inputs): opened without ever blocking and refused unless
 * they are regular files. A FIFO put where a file was expected would otherwise block open(2)
 * until a writer comes (the loop, a --check-config, the model loading thread and with it a
 * stop), and a device could be read forever.
 */

#include <stddef.h>
#include <sys/stat.h>

/* ad_file_open's flags. */
enum {
    /* A named pipe (or /dev/stdin, a process substitution) is taken too and opened again,
     * blocking until a writer comes, as a shell's `<` does: for a replay's inputs, read by a
     * command that may wait, never by the daemon. */
    AD_FILE_FIFO_OK = 1 << 0,
};

/* What a file of mode is, for messages: "a FIFO", "a directory", "a character device", "a
 * block device", "a socket", "a regular file", ... */
const char *ad_file_kind(mode_t mode);

/*
 * Opens path for reading: open(2) with O_NONBLOCK (which cannot wait for a FIFO's writer or a
 * device), then fstat, then O_NONBLOCK cleared for the reads. Returns the descriptor (the
 * caller closes it) with *st filled (st may be NULL), or -1 with errno set (open's or fstat's,
 * EINVAL for a file that is not a regular one) and errstr filled with the reason, without the
 * path: "is a FIFO, not a regular file", "No such file or directory".
 */
int ad_file_open(const char *path, int flags, struct stat *st, char *errstr, size_t errstr_size);

/*
 * Reads the whole regular file at path, at most limit bytes, through ad_file_open. Returns a
 * buffer of *len bytes followed by a NUL that the caller frees, with *st filled (st may be
 * NULL), or NULL with errno set as ad_file_open sets it, EFBIG for a file over limit, ENOMEM,
 * or read's; errstr gets the reason without the path.
 */
char *ad_file_read(const char *path, size_t limit, size_t *len, struct stat *st, char *errstr,
                   size_t errstr_size);

#endif
