#ifndef AD_SHA256_H
#define AD_SHA256_H

/*
 * SHA-256 (FIPS 180-4), for the digests anomalyd reports and checks: the loaded config file
 * and model weights. The context is a plain value so it can live on the stack.
 */

#include <stddef.h>
#include <stdint.h>

#define AD_SHA256_HEX_LEN 64

struct ad_sha256 {
    uint32_t state[8];
    uint64_t total_len;
    uint8_t block[64];
    size_t block_len;
};

void ad_sha256_init(struct ad_sha256 *ctx);
void ad_sha256_update(struct ad_sha256 *ctx, const void *data, size_t len);
void ad_sha256_final(struct ad_sha256 *ctx, uint8_t digest[32]);

/* One-shot digest of data as 64 lowercase hex digits plus NUL. */
void ad_sha256_hex(const void *data, size_t len, char hex[AD_SHA256_HEX_LEN + 1]);

#endif
