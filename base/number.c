#include "base/number.h"

#include <stdlib.h>
#include <string.h>

static size_t digits(const char *s, size_t i, size_t len)
{
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    return i;
}

bool ad_number_syntax(const char *s, size_t len)
{
    size_t i = 0, start;
    if (i < len && (s[i] == '+' || s[i] == '-'))
        i++;
    start = i;
    i = digits(s, i, len);
    bool whole = i > start;
    bool fraction = false;
    if (i < len && s[i] == '.') {
        start = ++i;
        i = digits(s, i, len);
        fraction = i > start;
    }
    if (!whole && !fraction)
        return false;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        start = i;
        i = digits(s, i, len);
        if (i == start)
            return false;
    }
    return i == len;
}

bool ad_number_parse(const char *s, size_t len, double *out)
{
    char small[64];
    if (!ad_number_syntax(s, len))
        return false;
    /* strtod needs a terminated string; the syntax check bounds what it reads to len bytes
     * either way, but a copy keeps it from reading past them. */
    char *text = len < sizeof small ? small : malloc(len + 1);
    if (!text)
        return false;
    memcpy(text, s, len);
    text[len] = '\0';
    *out = strtod(text, NULL);
    if (text != small)
        free(text);
    return true;
}
