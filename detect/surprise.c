#include "detect/surprise.h"

#include <math.h>

void ad_surprise_init(struct ad_surprise *s, double prior_mean, double prior_std)
{
    *s = (struct ad_surprise){.long_mean = prior_mean,
                              .long_var = prior_std * prior_std,
                              .floor = fmax(AD_SURPRISE_FLOOR * prior_std, 1e-6)};
}

double ad_surprise_of_z(double z)
{
    if (z < 37.0)
        return -log10(0.5 * erfc(z / sqrt(2.0)));
    /* Q(z) ≈ φ(z)/z · (1 − 1/z² + 3/z⁴) where erfc underflows. */
    return (0.5 * z * z + log(z * sqrt(2 * M_PI)) - log(1 - 1 / (z * z) + 3 / (z * z * z * z))) /
           M_LN10;
}

double ad_surprise_likelihood(double surprise)
{
    return 1.0 - pow(10.0, -surprise);
}

/* The gate's bar: GATE_K times the GATE_Q quantile of the histogram, interpolated inside its
 * bin from the top. */
static double gate_bar(const struct ad_surprise *s)
{
    double need = (1.0 - AD_SURPRISE_GATE_Q) * s->total, above = 0;
    for (int b = AD_SURPRISE_BINS; b >= 0; b--) {
        double c = s->hist[b];
        if (c > 0 && above + c >= need)
            return AD_SURPRISE_GATE_K * (b + 1 - (need - above) / c) * AD_SURPRISE_BIN;
        above += c;
    }
    return 0;
}

double ad_surprise_update(struct ad_surprise *s, double score, double *gated)
{
    s->n++;
    s->short_mean +=
        (score - s->short_mean) / (s->n < AD_SURPRISE_SHORT ? s->n : AD_SURPRISE_SHORT);
    double std = sqrt(s->long_var);
    double z = (s->short_mean - s->long_mean) / (std > s->floor ? std : s->floor);
    double surprise = ad_surprise_of_z(z);
    if (!(surprise > 0)) /* also NaN: a spread that overflowed */
        surprise = 0;

    double weight = 1.0 / (double)(s->n + AD_SURPRISE_PRIOR);
    if (weight < 1.0 / AD_SURPRISE_LONG)
        weight = 1.0 / AD_SURPRISE_LONG;
    double delta = s->short_mean - s->long_mean;
    s->long_mean += weight * delta;
    s->long_var = (1.0 - weight) * (s->long_var + weight * delta * delta);

    double bar = s->seen >= AD_SURPRISE_GATE_MIN ? gate_bar(s) : 0;
    const float keep = 1.0f - 1.0f / AD_SURPRISE_GATE_KEEP;
    for (int b = 0; b <= AD_SURPRISE_BINS; b++)
        s->hist[b] *= keep;
    s->total = s->total * keep + 1.0f;
    double bin = floor(surprise / AD_SURPRISE_BIN);
    s->hist[bin < AD_SURPRISE_BINS ? (int)bin : AD_SURPRISE_BINS] += 1.0f;
    s->seen++;
    if (gated)
        *gated = surprise >= bar ? surprise : 0;
    return surprise;
}
