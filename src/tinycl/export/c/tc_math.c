/* Portable expf / logf / round-half-even in float32 operations only, so that glibc
 * and newlib give the same bits; export/ref.py performs the same operations.
 * expf: Cephes range reduction x = k ln2 + r (ln2 split in two), degree-5 polynomial,
 * times 2^k built from bits; input clamped to [-87, 88]. logf: x = m 2^e with
 * m in [sqrt(1/2), sqrt(2)), f = m - 1, s = f / (2 + f), fdlibm's degree-4 series. */
#include <string.h>
#include "tinycl_rt.h"

static float f_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float floor_f(float x)
{
    float t = tc_rne(x);
    return (t > x) ? t - 1.0f : t;
}

float tc_rne(float x)
{
    const float big = 0x1p23f;
    if (!(x < big && x > -big))
        return x;                       /* already an integer (or NaN) */
    if (x >= 0.0f)
        return (x + big) - big;
    return (x - big) + big;
}

float tc_expf(float x)
{
    float k, r, z, p, y;
    if (x < -87.0f) x = -87.0f;
    if (x > 88.0f) x = 88.0f;
    k = floor_f(x * 0x1.715476p+0f + 0.5f);
    r = x - k * 0x1.63p-1f;
    r = r - k * -0x1.bd0106p-13f;
    z = r * r;
    p = 0x1.a0d2cep-13f;
    p = p * r + 0x1.6e879cp-10f;
    p = p * r + 0x1.11121p-7f;
    p = p * r + 0x1.555382p-5f;
    p = p * r + 0x1.555554p-3f;
    p = p * r + 0x1p-1f;
    y = p * z + r + 1.0f;
    return y * f_from_bits((uint32_t)((int32_t)k + 127) << 23);
}

float tc_logf(float x)
{
    uint32_t u = bits_of(x);
    int32_t e = (int32_t)(u >> 23) - 127;
    float m = f_from_bits((u & 0x7fffffu) | 0x3f800000u);
    float f, s, z, r, hfsq, lm, ef;
    if (m > 0x1.6a09e6p+0f) { m = m * 0.5f; e += 1; }
    f = m - 1.0f;
    s = f / (2.0f + f);
    z = s * s;
    r = z * (0x1.555554p-1f + z * (0x1.999c26p-2f + z * (0x1.23d3dcp-2f + z * 0x1.f13c4cp-3f)));
    hfsq = 0.5f * f * f;
    lm = f - (hfsq - s * (hfsq + r));
    ef = (float)e;
    return ef * 0x1.62e3p-1f + (lm + ef * 0x1.2fefa2p-17f);
}
