#include "stream/csv.h"

#include <string.h>

ssize_t ad_csv_split(const char *line, size_t len, char *buf, const char **fields, size_t *lens,
                     size_t max)
{
    size_t n = 0, i = 0, used = 0;
    for (;;) {
        const char *field;
        size_t flen;
        if (i < len && line[i] == '"') {
            /* Quoted: unescape "" into buf up to the closing quote. */
            field = buf + used;
            flen = 0;
            for (i++;; i++) {
                if (i == len)
                    return -1;
                if (line[i] == '"') {
                    if (i + 1 < len && line[i + 1] == '"') {
                        buf[used + flen++] = '"';
                        i++;
                        continue;
                    }
                    i++;
                    break;
                }
                buf[used + flen++] = line[i];
            }
            used += flen;
            if (i < len && line[i] != ',')
                return -1;
        } else {
            /* Unquoted: up to the next comma; a quote inside is an ordinary character, as
             * Python's reader takes it. */
            const char *comma = memchr(line + i, ',', len - i);
            size_t end = comma ? (size_t)(comma - line) : len;
            field = line + i;
            flen = end - i;
            i = end;
        }
        if (n < max) {
            fields[n] = field;
            lens[n] = flen;
        }
        n++;
        if (i == len)
            return (ssize_t)n;
        i++; /* the comma */
    }
}
