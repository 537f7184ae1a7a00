/* Reading lines of a file (stream/line_reader.h): line ends, bounds, NUL bytes, small reads. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "stream/line_reader.h"

/* A pipe holding text, its writing end closed: reads come back in pieces a pipe chooses. */
static int pipe_of(const char *text, size_t len)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], text, len), (ssize_t)len);
    close(fds[1]);
    return fds[0];
}

static void expect_line(struct ad_line_reader *r, const char *want, size_t want_len)
{
    const char *line;
    size_t len;
    assert_int_equal(ad_line_reader_next(r, &line, &len), AD_LINE_OK);
    assert_int_equal(len, want_len);
    assert_memory_equal(line, want, len);
}

static void test_line_ends(void **state)
{
    (void)state;
    const char text[] = "first\nsecond\r\n\nlast without a break";
    int fd = pipe_of(text, sizeof text - 1);
    struct ad_line_reader *r = ad_line_reader_new(fd, 64);
    const char *line;
    size_t len;
    expect_line(r, "first", 5);
    expect_line(r, "second", 6);
    expect_line(r, "", 0);
    expect_line(r, "last without a break", 20);
    assert_int_equal(ad_line_reader_number(r), 4);
    assert_int_equal(ad_line_reader_next(r, &line, &len), AD_LINE_END);
    assert_int_equal(ad_line_reader_next(r, &line, &len), AD_LINE_END);
    ad_line_reader_destroy(r);
    close(fd);
}

static void test_nul_bytes_are_kept(void **state)
{
    (void)state;
    const char text[] = "{\"a\":1}\0x\n";
    int fd = pipe_of(text, sizeof text - 1);
    struct ad_line_reader *r = ad_line_reader_new(fd, 64);
    expect_line(r, "{\"a\":1}\0x", 9);
    ad_line_reader_destroy(r);
    close(fd);
}

/* A file holding text, read from its start (unlinked: it goes with the descriptor). */
static int file_of(const char *text, size_t len)
{
    char path[] = "/tmp/test_line_reader_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

/* Lines over the bound are reported with their length, whether their end is in the first
 * block read or far beyond it, and the lines after them come through whole. */
static void test_too_long(void **state)
{
    (void)state;
    size_t huge = 300 * 1024; /* several blocks */
    size_t size = 16 + 11 + huge + 1 + 3;
    char *text = malloc(size);
    size_t n = 0;
    memcpy(text + n, "ok\n", 3), n += 3;
    memcpy(text + n, "0123456789X\n", 12), n += 12; /* 11 bytes, the bound is 10 */
    memset(text + n, 'y', huge), n += huge;
    text[n++] = '\n';
    memcpy(text + n, "end", 3), n += 3;

    int fd = file_of(text, n);
    struct ad_line_reader *r = ad_line_reader_new(fd, 10);
    const char *line;
    size_t len;
    expect_line(r, "ok", 2);
    assert_int_equal(ad_line_reader_next(r, &line, &len), AD_LINE_TOO_LONG);
    assert_null(line);
    assert_int_equal(len, 11);
    assert_int_equal(ad_line_reader_next(r, &line, &len), AD_LINE_TOO_LONG);
    assert_int_equal(len, huge);
    expect_line(r, "end", 3);
    assert_int_equal(ad_line_reader_number(r), 4);
    assert_int_equal(ad_line_reader_next(r, &line, &len), AD_LINE_END);
    ad_line_reader_destroy(r);
    close(fd);
    free(text);
}

/* The last line too long, without a break after it. */
static void test_too_long_at_the_end(void **state)
{
    (void)state;
    size_t huge = 100 * 1024;
    char *text = malloc(huge);
    memset(text, 'z', huge);
    int fd = file_of(text, huge);
    struct ad_line_reader *r = ad_line_reader_new(fd, 1000);
    const char *line;
    size_t len;
    assert_int_equal(ad_line_reader_next(r, &line, &len), AD_LINE_TOO_LONG);
    assert_int_equal(len, huge);
    assert_int_equal(ad_line_reader_next(r, &line, &len), AD_LINE_END);
    ad_line_reader_destroy(r);
    close(fd);
    free(text);
}

static void test_read_error(void **state)
{
    (void)state;
    struct ad_line_reader *r = ad_line_reader_new(-1, 10);
    const char *line;
    size_t len;
    assert_int_equal(ad_line_reader_next(r, &line, &len), AD_LINE_ERROR);
    ad_line_reader_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_ends),  cmocka_unit_test(test_nul_bytes_are_kept),
        cmocka_unit_test(test_too_long),   cmocka_unit_test(test_too_long_at_the_end),
        cmocka_unit_test(test_read_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
