/*
 * The ground floor's one-job helpers: UTF-8 validation, decimal syntax before strtod, arrays
 * that double, the constructors' error text, reading a file without blocking, and RFC 3339
 * times.
 */

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "base/errstr.h"
#include "base/file.h"
#include "base/grow.h"
#include "base/number.h"
#include "base/utf8.h"

static void test_utf8(void **state)
{
    (void)state;
    assert_int_equal(ad_utf8_sequence("a", 1), 1);
    assert_int_equal(ad_utf8_sequence("\xc3\xa9", 2), 2);         /* é */
    assert_int_equal(ad_utf8_sequence("\xe2\x82\xac", 3), 3);     /* € */
    assert_int_equal(ad_utf8_sequence("\xf0\x9f\x98\x80", 4), 4); /* 😀 */
    assert_int_equal(ad_utf8_sequence("\xc3\xa9", 1), 0);         /* cut short */
    assert_int_equal(ad_utf8_sequence("\xc0\xaf", 2), 0);         /* overlong */
    assert_int_equal(ad_utf8_sequence("\xed\xa0\x80", 3), 0);     /* a surrogate */
    assert_int_equal(ad_utf8_sequence("\xf4\x90\x80\x80", 4), 0); /* past U+10FFFF */
    assert_int_equal(ad_utf8_sequence("\xc3", SIZE_MAX), 0);      /* the NUL ends it */
    assert_true(ad_utf8_valid("caf\xc3\xa9", 5));
    assert_false(ad_utf8_valid("caf\xc3", 4));
    assert_false(ad_utf8_valid("\xff", 1));
    assert_true(ad_utf8_valid("", 0));
}

static void test_number(void **state)
{
    (void)state;
    static const char *const good[] = {"0", "-3", "+4.5", ".5", "5.", "1e3", "2.5E-3", "-0.0"};
    static const double values[] = {0, -3, 4.5, 0.5, 5, 1000, 0.0025, -0.0};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        double v = NAN;
        assert_true(ad_number_parse(good[i], strlen(good[i]), &v));
        assert_float_equal(v, values[i], 1e-12);
    }
    static const char *const bad[] = {"",    "-",   ".",  "e3", "1e",    "1e+", "0x10",
                                      "inf", "nan", " 1", "1 ", "1.2.3", "1,5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        double v = 42;
        assert_false(ad_number_parse(bad[i], strlen(bad[i]), &v));
        assert_float_equal(v, 42, 0);
    }
    /* Only len bytes count: "12" of "123". */
    double v;
    assert_true(ad_number_parse("123", 2, &v));
    assert_float_equal(v, 12, 0);
    /* Beyond a double: infinite, for the caller to refuse. */
    assert_true(ad_number_parse("1e999", 5, &v));
    assert_true(isinf(v));
    /* Longer than the parser's own buffer. */
    char longer[200];
    memset(longer, '0', sizeof longer - 2);
    longer[sizeof longer - 2] = '7';
    longer[sizeof longer - 1] = '\0';
    assert_true(ad_number_parse(longer, strlen(longer), &v));
    assert_float_equal(v, 7, 0);
}

static void test_grow(void **state)
{
    (void)state;
    int *items = NULL;
    size_t cap = 0;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(ad_grow(&items, &cap, (size_t)i + 1, sizeof *items), 0);
        assert_true(cap >= (size_t)i + 1);
        items[i] = i;
    }
    for (int i = 0; i < 1000; i++)
        assert_int_equal(items[i], i);
    size_t before = cap;
    /* Doubling: a thousand appends take a handful of reallocations. */
    assert_true(before < 2048);
    /* Enough room already: nothing changes. */
    int *same = items;
    assert_int_equal(ad_grow(&items, &cap, 10, sizeof *items), 0);
    assert_ptr_equal(items, same);
    assert_int_equal(cap, before);
    /* A size past SIZE_MAX is refused and leaves the array alone. */
    assert_int_equal(ad_grow(&items, &cap, SIZE_MAX / 2, sizeof *items), -1);
    assert_ptr_equal(items, same);
    assert_int_equal(cap, before);
    free(items);
}

static void test_errstr(void **state)
{
    (void)state;
    char errstr[16];
    assert_int_equal(ad_errstr_set(errstr, sizeof errstr, "bad %s", "line\nbreak"), -1);
    assert_string_equal(errstr, "bad line break");
    assert_int_equal(ad_errstr_set(errstr, sizeof errstr, "%s", "a sentence longer than that"), -1);
    assert_string_equal(errstr, "a sentence long");
    assert_int_equal(ad_errstr_set(NULL, 0, "nothing is written"), -1);
}

static void *write_fifo(void *arg)
{
    int fd = open(arg, O_WRONLY | O_CLOEXEC); /* waits for the reader */
    if (fd >= 0) {
        if (write(fd, "a,b\n", 4) != 4)
            abort();
        close(fd);
    }
    return NULL;
}

/* Regular files are read whole within their limit; FIFOs, folders and devices are refused at
 * once, saying what they are (the alarm turns a blocked open into a failure); a FIFO is read
 * when the caller takes one. */
static void test_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/anomalyd-file-XXXXXX", path[256], fifo[256], err[256];
    size_t len = 99;
    struct stat st;
    assert_non_null(mkdtemp(dir));
    alarm(30);
    snprintf(path, sizeof path, "%s/text", dir);
    FILE *fp = fopen(path, "w");
    for (int i = 0; i < 3000; i++)
        fputs("0123456789", fp);
    fclose(fp);
    char *text = ad_file_read(path, 30000, &len, &st, err, sizeof err);
    assert_non_null(text);
    assert_int_equal(len, 30000);
    assert_int_equal(st.st_size, 30000);
    assert_int_equal(text[len], '\0');
    assert_memory_equal(text + 29990, "0123456789", 10);
    free(text);
    assert_null(ad_file_read(path, 29999, &len, NULL, err, sizeof err));
    assert_int_equal(errno, EFBIG);
    assert_string_equal(err, "30000 bytes, more than the 29999 allowed");

    /* /proc shows a size of 0: the content decides, growing the buffer as it goes. */
    text = ad_file_read("/proc/self/status", 1 << 20, &len, NULL, err, sizeof err);
    assert_non_null(text);
    assert_true(len > 0 && strncmp(text, "Name:", 5) == 0);
    free(text);
    assert_null(ad_file_read("/proc/self/status", 16, &len, NULL, err, sizeof err));
    assert_int_equal(errno, EFBIG);
    assert_string_equal(err, "more than the 16 bytes allowed");

    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_null(ad_file_read(fifo, 100, &len, NULL, err, sizeof err));
    assert_int_equal(errno, EINVAL);
    assert_string_equal(err, "is a FIFO, not a regular file");
    assert_int_equal(ad_file_open(dir, 0, NULL, err, sizeof err), -1);
    assert_string_equal(err, "is a directory, not a regular file");
    assert_int_equal(ad_file_open("/dev/zero", 0, NULL, err, sizeof err), -1);
    assert_string_equal(err, "is a character device, not a regular file");
    snprintf(path, sizeof path, "%s/missing", dir);
    assert_int_equal(ad_file_open(path, 0, NULL, err, sizeof err), -1);
    assert_int_equal(errno, ENOENT);
    assert_string_equal(err, strerror(ENOENT));

    /* A caller that may wait (a replay) takes the FIFO: the open waits for the writer. */
    pthread_t writer;
    assert_int_equal(pthread_create(&writer, NULL, write_fifo, fifo), 0);
    int fd = ad_file_open(fifo, AD_FILE_FIFO_OK, &st, err, sizeof err);
    assert_true(fd >= 0);
    assert_true(S_ISFIFO(st.st_mode));
    char got[8] = {0};
    size_t n = 0;
    for (ssize_t r; n < 4 && (r = read(fd, got + n, sizeof got - 1 - n)) > 0;)
        n += (size_t)r;
    assert_string_equal(got, "a,b\n");
    close(fd);
    pthread_join(writer, NULL);
    assert_int_equal(ad_file_open(dir, AD_FILE_FIFO_OK, NULL, err, sizeof err), -1);
    alarm(0);

    unlink(fifo);
    snprintf(path, sizeof path, "%s/text", dir);
    unlink(path);
    rmdir(dir);
}

/* Parses text from a heap copy of exactly its length, so that ASan sees any read past it. */
static int parse_exact(const char *text, size_t len, int64_t *ms)
{
    char *copy = malloc(len + 1);
    assert_non_null(copy);
    memcpy(copy, text, len);
    copy[len] = '\0';
    int rc = ad_clock_parse(copy, ms);
    free(copy);
    return rc;
}

static void test_clock_parse(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(ad_clock_parse("2026-11-22T05:01:02Z", &ms), 0);
    assert_int_equal(ms, 1795323662000);
    assert_int_equal(ad_clock_parse("2026-11-22T06:01:02.5+01:00", &ms), 0);
    assert_int_equal(ms, 1795323662500);
    assert_int_equal(ad_clock_parse("2026-11-22t05:01:02.123456z", &ms), 0);
    assert_int_equal(ms, 1795323662123);
    assert_int_equal(ad_clock_parse("2016-12-31T23:59:60Z", &ms), 0); /* a leap second */
    assert_int_equal(ms, 1483228799000);
    assert_int_equal(ad_clock_parse("2025-02-29T00:00:00Z", &ms), -1);
    assert_int_equal(ad_clock_parse("2025-01%01T00:00:00Z", &ms), -1);
    assert_int_equal(ad_clock_parse("2025-01-01T24:00:00Z", &ms), -1);
    assert_int_equal(ad_clock_parse("2025-01-01T00:00:00+01:60", &ms), -1);
    /* Every prefix of valid times is refused without a read past its end (a fuzzed config's
     * maintenance window found one). */
    const char *valid[] = {"2026-11-22T05:01:02Z", "2026-11-22T06:01:02.5+01:00"};
    for (size_t v = 0; v < sizeof valid / sizeof *valid; v++)
        for (size_t len = 0; len < strlen(valid[v]); len++)
            if (parse_exact(valid[v], len, &ms) != -1)
                fail_msg("the prefix of %zu bytes of %s parsed", len, valid[v]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8), cmocka_unit_test(test_number),
        cmocka_unit_test(test_grow), cmocka_unit_test(test_errstr),
        cmocka_unit_test(test_file), cmocka_unit_test(test_clock_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
