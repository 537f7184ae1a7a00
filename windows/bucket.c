#include "windows/bucket.h"

int64_t ad_bucket_index(int64_t t, int64_t step)
{
    int64_t q = t / step;
    /* C division truncates toward zero; the grid needs floor. */
    if (t % step != 0 && t < 0)
        q--;
    return q;
}

int64_t ad_bucket_start(int64_t t, int64_t step)
{
    return ad_bucket_index(t, step) * step;
}

int64_t ad_bucket_end(int64_t t, int64_t step)
{
    return ad_bucket_start(t, step) + step;
}

int ad_bucket_closable(int64_t bucket_start, int64_t step, int64_t allowed_lateness,
                       int64_t watermark)
{
    return watermark >= bucket_start + step + allowed_lateness;
}
