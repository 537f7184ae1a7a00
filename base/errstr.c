#include "base/errstr.h"

#include <stdarg.h>
#include <stdio.h>

int ad_errstr_set(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    va_list ap;
    if (!errstr || !errstr_size)
        return -1;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
    for (char *p = errstr; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return -1;
}
