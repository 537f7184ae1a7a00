#include "detect/seasonal.h"

#include <math.h>
#include <string.h>

#include "gpu/score.h"

#define DAY_MS 86400000LL

/* Per feature: the scale, how many residuals it has seen, then the profile's slots (NaN: no
 * value yet). */
struct feature {
    float scale; /* NaN: no residual yet */
    uint32_t seen;
    float profile[];
};

size_t ad_seasonal_slots(int64_t step_ms)
{
    int64_t per_day = step_ms > 0 ? DAY_MS / step_ms : 1;
    if (per_day < 1)
        return 1;
    return per_day < AD_SEASONAL_SLOTS ? (size_t)per_day : AD_SEASONAL_SLOTS;
}

static size_t feature_size(int64_t step_ms)
{
    return sizeof(struct feature) + ad_seasonal_slots(step_ms) * sizeof(float);
}

size_t ad_seasonal_size(size_t features, int64_t step_ms)
{
    return features * feature_size(step_ms);
}

static struct feature *feature_at(void *mem, size_t f, int64_t step_ms)
{
    return (struct feature *)((char *)mem + f * feature_size(step_ms));
}

void ad_seasonal_init(void *mem, size_t features, int64_t step_ms)
{
    size_t slots = ad_seasonal_slots(step_ms);
    for (size_t f = 0; f < features; f++) {
        struct feature *ft = feature_at(mem, f, step_ms);
        ft->scale = NAN;
        ft->seen = 0;
        for (size_t k = 0; k < slots; k++)
            ft->profile[k] = NAN;
    }
}

double ad_seasonal_update(void *mem, size_t features, int64_t step_ms, int64_t bucket_ms,
                          const float *values, const uint8_t *observed,
                          const struct ad_feature_control *controls, float *shares)
{
    size_t slots = ad_seasonal_slots(step_ms);
    int64_t of_day = ((bucket_ms % DAY_MS) + DAY_MS) % DAY_MS;
    size_t slot = (size_t)(of_day * (int64_t)slots / DAY_MS);
    double sum = 0;
    size_t scored = 0;
    for (size_t f = 0; f < features; f++) {
        struct feature *ft = feature_at(mem, f, step_ms);
        float *p = &ft->profile[slot];
        double z = NAN;
        if (shares)
            shares[f] = 0;
        if (!observed[f] || !isfinite(values[f]))
            continue;
        double x = values[f];
        if (isnan(*p)) {
            *p = (float)x;
            continue;
        }
        double expected = *p, r = fabs(x - expected);
        if (isnan(ft->scale))
            ft->scale = (float)r;
        ft->seen++;
        if (ft->scale > 0)
            z = r / ft->scale;
        else
            z = r == 0 ? 0 : AD_SEASONAL_FAR;
        ft->scale += (float)((r - ft->scale) /
                             (ft->seen < AD_SEASONAL_SCALE ? ft->seen : AD_SEASONAL_SCALE));
        *p += (float)(AD_SEASONAL_ALPHA * (x - *p));
        if (!isfinite(z))
            z = AD_SEASONAL_FAR;
        if (controls && !ad_score_counts(&controls[f], x, expected))
            z = 0; /* a deviation that does not matter */
        if (shares)
            shares[f] = (float)(z * z);
        sum += z * z;
        scored++;
    }
    if (!scored)
        return NAN;
    for (size_t f = 0; shares && sum > 0 && f < features; f++)
        shares[f] = (float)(shares[f] / sum);
    return sqrt(sum / (double)scored);
}
