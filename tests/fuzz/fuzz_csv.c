/*
 * libFuzzer target: arbitrary bytes as one CSV record (a replay's input row). Splitting must
 * return a count or -1, never crash or read outside the line, and every field it returns must
 * lie inside the line or the unescaping buffer.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "stream/csv.h"

#define MAX 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    const char *fields[MAX];
    size_t lens[MAX];
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    ssize_t n = ad_csv_split(line, size, buf, fields, lens, MAX);
    if (n == 0 || n < -1)
        __builtin_trap(); /* a record has at least one field */
    for (ssize_t i = 0; i < n && i < MAX; i++) {
        const char *f = fields[i];
        bool in_line = f >= line && f + lens[i] <= line + size;
        bool in_buf = f >= buf && f + lens[i] <= buf + size;
        if (!in_line && !in_buf)
            __builtin_trap();
    }
    free(buf);
    return 0;
}
