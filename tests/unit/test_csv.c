/* Splitting CSV records (stream/csv.h). */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "stream/csv.h"

#define MAX 8

struct split {
    ssize_t n;
    const char *fields[MAX];
    size_t lens[MAX];
    char buf[256];
};

static struct split split(const char *line)
{
    struct split s;
    memset(&s, 0, sizeof s);
    s.n = ad_csv_split(line, strlen(line), s.buf, s.fields, s.lens, MAX);
    return s;
}

static void assert_field(const struct split *s, size_t i, const char *want)
{
    assert_true((ssize_t)i < s->n);
    assert_int_equal(s->lens[i], strlen(want));
    assert_memory_equal(s->fields[i], want, s->lens[i]);
}

/* Records and the fields they hold. */
static void test_fields(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        const char *fields[5];
    } cases[] = {
        {"1795323600000,checkout,12,0.5", {"1795323600000", "checkout", "12", "0.5"}},
        /* Empty fields anywhere, and a record that is one empty field. */
        {",a,,", {"", "a", "", ""}},
        {"", {""}},
        /* Commas and doubled quotes inside quotes, as Python's csv writer writes them. */
        {"\"a,b\",\"say \"\"hi\"\"\",\"\",x", {"a,b", "say \"hi\"", "", "x"}},
        {"\"last\"", {"last"}},
        /* A quote inside an unquoted field is an ordinary character, as Python reads it. */
        {"a\"b,c", {"a\"b", "c"}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct split s = split(cases[c].line);
        size_t n = 0;
        while (n < 5 && cases[c].fields[n])
            n++;
        assert_int_equal(s.n, n);
        for (size_t i = 0; i < n; i++)
            assert_field(&s, i, cases[c].fields[i]);
    }
}

static void test_malformed(void **state)
{
    (void)state;
    assert_int_equal(split("\"never ends").n, -1);
    assert_int_equal(split("a,\"b").n, -1);
    assert_int_equal(split("\"a\"b,c").n, -1);  /* text after the closing quote */
    assert_int_equal(split("\"a\"\",c").n, -1); /* the doubled quote leaves it open */
}

static void test_more_fields_than_room(void **state)
{
    (void)state;
    struct split s = split("0,1,2,3,4,5,6,7,8,9");
    assert_int_equal(s.n, 10);
    assert_field(&s, 7, "7");
}

static void test_nul_is_data(void **state)
{
    (void)state;
    const char line[] = "a\0b,c";
    struct split s;
    s.n = ad_csv_split(line, sizeof line - 1, s.buf, s.fields, s.lens, MAX);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.lens[0], 3);
    assert_memory_equal(s.fields[0], "a\0b", 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_more_fields_than_room),
        cmocka_unit_test(test_nul_is_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
