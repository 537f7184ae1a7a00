/*
 * Throughput of the JSON extractor engines on realistic access-log events, one thread:
 *     bench_extract [EVENTS [ENGINE]]     (default 1000000, both engines)
 * Each event is about 200 bytes; six fields are extracted and the RFC 3339 time is parsed, as
 * a Kafka source does per message. The events are generated up front; the best of three passes
 * counts.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stream/event_time.h"
#include "stream/json_extract.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *generate(size_t n, size_t **offsets)
{
    static const char *const levels[] = {"info", "info", "info", "warn", "error", "debug"};
    static const char *const services[] = {"checkout", "cart", "payments", "search", "auth"};
    static const char *const paths[] = {"/api/v1/cart", "/api/v1/checkout", "/api/v2/search?q=x",
                                        "/healthz", "/api/v1/users/12345/orders"};
    size_t cap = n * 256, used = 0;
    char *buf = malloc(cap);
    *offsets = malloc((n + 1) * sizeof **offsets);
    if (!buf || !*offsets)
        return NULL;
    uint64_t seed = 1;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t r = (uint32_t)(seed >> 33);
        long ms = 345 + (long)i;
        (*offsets)[i] = used;
        used += (size_t)snprintf(
            buf + used, cap - used,
            "{\"ts\":\"2026-11-22T05:%02ld:%02ld.%03ldZ\",\"level\":\"%s\",\"service\":\"%s\","
            "\"instance\":\"%s-7f9c5d8b4-%05x\",\"status\":%d,\"latency_ms\":%.1f,\"kind\":"
            "\"request\","
            "\"path\":\"%s\",\"bytes\":%u}",
            ms / 60000 % 60, ms / 1000 % 60, ms % 1000, levels[r % 6], services[r % 5],
            services[r % 5], r & 0xfffff, r % 17 ? 200 : 503, (double)(r % 5000) / 10.0,
            paths[r % 5], r % 100000);
    }
    (*offsets)[n] = used;
    return buf;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    const char *texts[] = {"ts", "service", "instance", "status", "latency_ms", "kind"};
    struct ad_jpath paths[6];
    size_t *offsets;
    char *events = generate(n, &offsets);
    if (!events) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (int i = 0; i < 6; i++) {
        const char *err;
        size_t off;
        if (ad_jpath_parse(texts[i], &paths[i], &err, &off) < 0)
            return 1;
    }
    printf("%zu events, %.1f bytes each on average\n", n, (double)offsets[n] / (double)n);

    const enum ad_extract_engine engines[] = {AD_EXTRACT_SIMDJSON, AD_EXTRACT_JANSSON};
    const char *names[] = {"simdjson", "jansson"};
    for (int e = 0; e < 2; e++) {
        if (argc > 2 && strcmp(argv[2], names[e]) != 0)
            continue;
        char errstr[256];
        struct ad_extractor *x =
            ad_extractor_new(engines[e], paths, 6, 1 << 20, errstr, sizeof errstr);
        if (!x) {
            fprintf(stderr, "%s: %s\n", names[e], errstr);
            return 1;
        }
        double best = 1e9;
        int64_t check = 0;
        for (int pass = 0; pass < 3; pass++) {
            struct ad_json_value v[6];
            size_t bad = 0;
            double t0 = now();
            for (size_t i = 0; i < n; i++) {
                int64_t ms;
                if (ad_extractor_run(x, events + offsets[i], offsets[i + 1] - offsets[i], v) !=
                        AD_EXTRACT_OK ||
                    ad_event_time(&v[0], AD_TIME_RFC3339, &ms) != AD_TIME_OK ||
                    v[3].type != AD_JSON_NUMBER || v[2].type != AD_JSON_STRING) {
                    bad++;
                    continue;
                }
                check += ms + (int64_t)v[3].number + (int64_t)v[2].string_len;
            }
            double t = now() - t0;
            if (bad) {
                fprintf(stderr, "%s: %zu events failed\n", names[e], bad);
                return 1;
            }
            if (t < best)
                best = t;
        }
        printf("%-8s  %6.2f M events/s  %6.1f ns/event  %6.0f MB/s  (check %lld)\n", names[e],
               (double)n / best / 1e6, best / (double)n * 1e9, (double)offsets[n] / best / 1e6,
               (long long)check);
        ad_extractor_destroy(x);
    }
    for (int i = 0; i < 6; i++)
        ad_jpath_free(&paths[i]);
    free(events);
    free(offsets);
    return 0;
}
