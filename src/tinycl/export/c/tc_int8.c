/* INT8 front kernels (twins of kernels/int8.py and numerics/quant.py), the input
 * quantizer, the latent quantizer and the N-bit packing of numerics/packing.py.
 * Integer results are exact, so these match the emulation byte for byte.
 * Right shifts of negative int64 values are arithmetic (gcc on every target). */
#include <math.h>
#include "tinycl_rt.h"

#define I32_MIN (-2147483647 - 1)
#define I32_MAX 2147483647

static int64_t sat32(int64_t v) { return v < I32_MIN ? I32_MIN : (v > I32_MAX ? I32_MAX : v); }
static int32_t clampi(int64_t v, int32_t lo, int32_t hi) { return (int32_t)(v < lo ? lo : (v > hi ? hi : v)); }

/* TFLite MultiplyByQuantizedMultiplier: round(x * mult * 2^(shift - 31)) */
int32_t tc_mbqm(int64_t x, int32_t mult, int32_t shift)
{
    int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int64_t ab, v;
    if (left > 0)
        x = sat32(x * ((int64_t)1 << left));
    if (x == I32_MIN && mult == I32_MIN)
        v = I32_MAX;
    else {
        ab = x * (int64_t)mult;
        v = (ab + ((int64_t)1 << 30)) >> 31;            /* ties toward +infinity */
    }
    if (right > 0)                                       /* ties away from zero */
        v = (v + (v < 0 ? -1 : 0) + (((int64_t)1 << right) >> 1)) >> right;
    return (int32_t)v;
}

/* acc = bias + sum (x - x_zp) * w (padding is real 0); out = clamp(mbqm(acc) + out_zp) */
void tc_conv_int8(const tc_conv *g, const int8_t *x, int32_t x_zp, const int8_t *wt, const int32_t *bias,
                  const int32_t *mult, const int32_t *shift, int32_t out_zp, int32_t qmin, int32_t qmax,
                  int8_t *y)
{
    int cg = g->cin / g->groups, og = g->cout / g->groups;
    int co, oh, ow, ci, i, j;
    for (co = 0; co < g->cout; co++) {
        const int8_t *wc = wt + (size_t)co * cg * g->kh * g->kw;
        const int8_t *xg = x + (size_t)(co / og) * cg * g->h * g->w;
        for (oh = 0; oh < g->ho; oh++) {
            int top = oh * g->sh - g->ph;
            int i0 = top < 0 ? -top : 0, i1 = g->h - top < g->kh ? g->h - top : g->kh;
            for (ow = 0; ow < g->wo; ow++) {
                int left = ow * g->sw - g->pw;
                int j0 = left < 0 ? -left : 0, j1 = g->w - left < g->kw ? g->w - left : g->kw;
                int32_t acc = bias ? bias[co] : 0;
                for (ci = 0; ci < cg; ci++)
                    for (i = i0; i < i1; i++) {  /* taps inside the image; padding adds 0 */
                        const int8_t *xr = xg + ((size_t)ci * g->h + top + i) * g->w + left;
                        const int8_t *wr = wc + ((size_t)ci * g->kh + i) * g->kw;
                        for (j = j0; j < j1; j++)
                            acc += ((int32_t)xr[j] - x_zp) * (int32_t)wr[j];
                    }
                y[((size_t)co * g->ho + oh) * g->wo + ow] =
                    (int8_t)clampi((int64_t)tc_mbqm(acc, mult[co], shift[co]) + out_zp, qmin, qmax);
            }
        }
    }
}

void tc_linear_int8(int fin, int fout, const int8_t *x, int32_t x_zp, const int8_t *wt, const int32_t *bias,
                    const int32_t *mult, const int32_t *shift, int32_t out_zp, int32_t qmin, int32_t qmax,
                    int8_t *y)
{
    int o, k;
    for (o = 0; o < fout; o++) {
        int32_t acc = bias ? bias[o] : 0;
        for (k = 0; k < fin; k++)
            acc += ((int32_t)x[k] - x_zp) * (int32_t)wt[(size_t)o * fin + k];
        y[o] = (int8_t)clampi((int64_t)tc_mbqm(acc, mult[o], shift[o]) + out_zp, qmin, qmax);
    }
}

/* TFLite int8 ADD; p = {left_shift, a_mult, a_shift, b_mult, b_shift, out_mult, out_shift} */
void tc_add_int8(int len, const int8_t *a, int32_t a_zp, const int8_t *b, int32_t b_zp, const int32_t *p,
                 int32_t out_zp, int32_t qmin, int32_t qmax, int8_t *y)
{
    int i;
    for (i = 0; i < len; i++) {
        int64_t a2 = ((int64_t)a[i] - a_zp) * ((int64_t)1 << p[0]);
        int64_t b2 = ((int64_t)b[i] - b_zp) * ((int64_t)1 << p[0]);
        int64_t s = (int64_t)tc_mbqm(a2, p[1], p[2]) + tc_mbqm(b2, p[3], p[4]);
        y[i] = (int8_t)clampi((int64_t)tc_mbqm(s, p[5], p[6]) + out_zp, qmin, qmax);
    }
}

void tc_maxpool_int8(const tc_conv *g, const int8_t *x, int8_t *y)
{
    int c, oh, ow, i, j;
    for (c = 0; c < g->cin; c++)
        for (oh = 0; oh < g->ho; oh++)
            for (ow = 0; ow < g->wo; ow++) {
                int best = -129;
                for (i = 0; i < g->kh; i++) {
                    int ih = oh * g->sh - g->ph + i;
                    if (ih < 0 || ih >= g->h) continue;
                    for (j = 0; j < g->kw; j++) {
                        int iw = ow * g->sw - g->pw + j, v;
                        if (iw < 0 || iw >= g->w) continue;
                        v = x[((size_t)c * g->h + ih) * g->w + iw];
                        if (v > best) best = v;
                    }
                }
                y[((size_t)c * g->ho + oh) * g->wo + ow] = (int8_t)best;
            }
}

static int64_t round_div_away(int64_t num, int64_t den)
{
    return num >= 0 ? (num + den / 2) / den : (num - den / 2) / den;
}

void tc_avgpool_int8(const tc_conv *g, const int8_t *x, int32_t zp, int include_pad, int8_t *y)
{
    int c, oh, ow, i, j;
    for (c = 0; c < g->cin; c++)
        for (oh = 0; oh < g->ho; oh++)
            for (ow = 0; ow < g->wo; ow++) {
                int64_t sum = 0, cnt = 0;
                for (i = 0; i < g->kh; i++) {
                    int ih = oh * g->sh - g->ph + i;
                    if (ih < 0 || ih >= g->h) continue;
                    for (j = 0; j < g->kw; j++) {
                        int iw = ow * g->sw - g->pw + j;
                        if (iw < 0 || iw >= g->w) continue;
                        sum += (int64_t)x[((size_t)c * g->h + ih) * g->w + iw] - zp;
                        cnt++;
                    }
                }
                if (include_pad) cnt = (int64_t)g->kh * g->kw;
                y[((size_t)c * g->ho + oh) * g->wo + ow] = (int8_t)clampi(round_div_away(sum, cnt) + zp, -128, 127);
            }
}

void tc_gap_int8(int c, int hw, const int8_t *x, int32_t zp, int8_t *y)
{
    int k, p;
    for (k = 0; k < c; k++) {
        int64_t sum = 0;
        for (p = 0; p < hw; p++) sum += (int64_t)x[(size_t)k * hw + p] - zp;
        y[k] = (int8_t)clampi(round_div_away(sum, hw) + zp, -128, 127);
    }
}

void tc_clamp_int8(int len, const int8_t *x, int32_t lo, int32_t hi, int8_t *y)
{
    int i;
    for (i = 0; i < len; i++) y[i] = (int8_t)clampi(x[i], lo, hi);
}

/* clamp(round_half_away(x / scale) + zp, -128, 127) in double, as numerics/quant.quantize */
int8_t tc_quantize_input(float x, double scale, int32_t zp)
{
    double v = (double)x / scale;
    double r = floor(fabs(v) + 0.5);
    if (v < 0.0) r = -r;
    r = r + (double)zp;
    return (int8_t)(r < -128.0 ? -128 : (r > 127.0 ? 127 : (int)r));
}

/* codes = clamp(rne(x / s) + z, 0, qmax); channel = (i / hw) when per_channel */
void tc_latent_encode(int len, int hw, int per_channel, const float *x, const float *scale,
                      const float *zp, int qmax, uint8_t *codes)
{
    int i;
    for (i = 0; i < len; i++) {
        int g = per_channel ? i / hw : 0;
        float q = tc_rne(x[i] / scale[g]) + zp[g];
        codes[i] = (uint8_t)(q < 0.0f ? 0 : (q > (float)qmax ? qmax : (int)q));
    }
}

void tc_latent_decode(int len, int hw, int per_channel, const uint8_t *codes, const float *scale,
                      const float *zp, float *x)
{
    int i;
    for (i = 0; i < len; i++) {
        int g = per_channel ? i / hw : 0;
        x[i] = ((float)codes[i] - zp[g]) * scale[g];
    }
}

/* one little-endian bitstream: code i at bits [i*bits, (i+1)*bits), LSB first; last byte zero-padded */
void tc_pack(int len, int bits, const uint8_t *codes, uint8_t *out)
{
    int nbytes = (len * bits + 7) / 8, i, b;
    for (i = 0; i < nbytes; i++) out[i] = 0;
    for (i = 0; i < len; i++)
        for (b = 0; b < bits; b++) {
            long k = (long)i * bits + b;
            if ((codes[i] >> b) & 1u) out[k >> 3] = (uint8_t)(out[k >> 3] | (1u << (k & 7)));
        }
}

void tc_unpack(int len, int bits, const uint8_t *packed, uint8_t *codes)
{
    int i, b;
    for (i = 0; i < len; i++) {
        unsigned v = 0;
        for (b = 0; b < bits; b++) {
            long k = (long)i * bits + b;
            v |= (unsigned)((packed[k >> 3] >> (k & 7)) & 1u) << b;
        }
        codes[i] = (uint8_t)v;
    }
}
