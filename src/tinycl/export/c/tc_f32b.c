/* Kernels of the back (continued): batch norm, activations, add, pools, loss, SGD; element
 * type tc_t as in tc_f32.c (float arithmetic, one rounding to tc_t per stored result).
 * Per-channel sums run over (sample, position) in that order, starting at +0.0f. */
#include <math.h>
#include "tinycl_rt.h"

#define CH(p, s, c, C, HW) ((p) + ((size_t)(s) * (C) + (c)) * (HW))

void tc_bn_inv_std(int c, const float *var, float eps, float *inv)
{
    int k;
    for (k = 0; k < c; k++)
        inv[k] = 1.0f / sqrtf(var[k] + eps);
}

/* batch statistics; keep = 1 - momentum; running var gets var * m / (m - 1) */
void tc_bn_train_fwd(int n, int c, int hw, const tc_t *x, const tc_t *gam, const tc_t *bet, float eps,
                     float keep, float mom, float *rmean, float *rvar, float *mean, float *inv, tc_t *y)
{
    float m = (float)(n * hw), unb = m / (m - 1.0f);
    int k, s, p;
    for (k = 0; k < c; k++) {
        float acc = 0.0f, mu, var;
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++)
                acc = acc + (float)CH(x, s, k, c, hw)[p];
        mu = acc / m;
        acc = 0.0f;
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++) {
                float d = (float)CH(x, s, k, c, hw)[p] - mu;
                acc = acc + d * d;
            }
        var = acc / m;
        mean[k] = mu;
        inv[k] = 1.0f / sqrtf(var + eps);
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++) {
                float xh = ((float)CH(x, s, k, c, hw)[p] - mu) * inv[k];
                CH(y, s, k, c, hw)[p] = (tc_t)(xh * (float)gam[k] + (float)bet[k]);
            }
        rmean[k] = rmean[k] * keep + mu * mom;
        rvar[k] = rvar[k] * keep + (var * unb) * mom;
    }
}

void tc_bn_train_bwd(int n, int c, int hw, const tc_t *dy, const tc_t *x, const tc_t *gam,
                     const float *mean, const float *inv, tc_t *dx, tc_t *dg, tc_t *db)
{
    float m = (float)(n * hw);
    int k, s, p;
    for (k = 0; k < c; k++) {
        float sb = 0.0f, sg = 0.0f, kk, a, b;
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++)
                sb = sb + (float)CH(dy, s, k, c, hw)[p];
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++) {
                float xh = ((float)CH(x, s, k, c, hw)[p] - mean[k]) * inv[k];
                sg = sg + (float)CH(dy, s, k, c, hw)[p] * xh;
            }
        db[k] = (tc_t)sb;
        dg[k] = (tc_t)sg;
        kk = (float)gam[k] * inv[k];
        a = sb / m;
        b = sg / m;
        if (!dx) continue;
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++) {
                float xh = ((float)CH(x, s, k, c, hw)[p] - mean[k]) * inv[k];
                CH(dx, s, k, c, hw)[p] = (tc_t)(kk * (((float)CH(dy, s, k, c, hw)[p] - a) - xh * b));
            }
    }
}

void tc_bn_eval_fwd(int n, int c, int hw, const tc_t *x, const tc_t *gam, const tc_t *bet,
                    const float *rmean, const float *inv, tc_t *y)
{
    int k, s, p;
    for (s = 0; s < n; s++)
        for (k = 0; k < c; k++)
            for (p = 0; p < hw; p++)
                CH(y, s, k, c, hw)[p] = (tc_t)((((float)CH(x, s, k, c, hw)[p] - rmean[k]) * inv[k]) * (float)gam[k]
                                               + (float)bet[k]);
}

void tc_bn_eval_bwd(int n, int c, int hw, const tc_t *dy, const tc_t *x, const tc_t *gam,
                    const float *rmean, const float *inv, tc_t *dx, tc_t *dg, tc_t *db)
{
    int k, s, p;
    for (k = 0; k < c; k++) {
        float sb = 0.0f, sg = 0.0f, kk = (float)gam[k] * inv[k];
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++) {
                float d = (float)CH(dy, s, k, c, hw)[p];
                float xh = ((float)CH(x, s, k, c, hw)[p] - rmean[k]) * inv[k];
                sb = sb + d;
                sg = sg + d * xh;
                if (dx) CH(dx, s, k, c, hw)[p] = (tc_t)(d * kk);
            }
        db[k] = (tc_t)sb;
        dg[k] = (tc_t)sg;
    }
}

/* activations select or clamp: exact in any element type */
void tc_relu_fwd(int len, const tc_t *x, tc_t *y)
{
    int i;
    for (i = 0; i < len; i++) y[i] = (float)x[i] > 0.0f ? x[i] : (tc_t)0.0f;
}

void tc_relu_bwd(int len, const tc_t *y, const tc_t *dy, tc_t *dx)
{
    int i;
    for (i = 0; i < len; i++) dx[i] = (float)y[i] > 0.0f ? dy[i] : (tc_t)0.0f;
}

void tc_relu6_fwd(int len, const tc_t *x, tc_t *y)
{
    int i;
    for (i = 0; i < len; i++) {
        float v = (float)x[i];
        y[i] = v > 0.0f ? (v < 6.0f ? x[i] : (tc_t)6.0f) : (tc_t)0.0f;
    }
}

void tc_relu6_bwd(int len, const tc_t *x, const tc_t *dy, tc_t *dx)
{
    int i;
    for (i = 0; i < len; i++) dx[i] = ((float)x[i] > 0.0f && (float)x[i] < 6.0f) ? dy[i] : (tc_t)0.0f;
}

void tc_add_fwd(int len, const tc_t *a, const tc_t *b, tc_t *y)
{
    int i;
    for (i = 0; i < len; i++) y[i] = (tc_t)((float)a[i] + (float)b[i]);
}

/* max over the window in row-major order, the first maximum wins; padding never wins */
static size_t argmax_win(const tc_conv *g, const tc_t *xc, int oh, int ow)
{
    size_t best = 0;
    int i, j, found = 0;
    for (i = 0; i < g->kh; i++) {
        int ih = oh * g->sh - g->ph + i;
        if (ih < 0 || ih >= g->h) continue;
        for (j = 0; j < g->kw; j++) {
            int iw = ow * g->sw - g->pw + j;
            size_t at = (size_t)ih * g->w + iw;
            if (iw < 0 || iw >= g->w) continue;
            if (!found || (float)xc[at] > (float)xc[best]) { best = at; found = 1; }
        }
    }
    return best;
}

void tc_maxpool_fwd(const tc_conv *g, int n, const tc_t *x, tc_t *y)
{
    int s, c, oh, ow;
    for (s = 0; s < n; s++)
        for (c = 0; c < g->cin; c++) {
            const tc_t *xc = CH(x, s, c, g->cin, g->h * g->w);
            tc_t *yc = CH(y, s, c, g->cin, g->ho * g->wo);
            for (oh = 0; oh < g->ho; oh++)
                for (ow = 0; ow < g->wo; ow++)
                    yc[oh * g->wo + ow] = xc[argmax_win(g, xc, oh, ow)];
        }
}

/* the float sums of a pool backward: the channel plane itself (float), or plane (FP16) */
#if TC_FP16
#define SUMS(dxc, plane) (plane)
#else
#define SUMS(dxc, plane) ((void)(plane), (dxc))
#endif

/* rounds the plane's float sums into the channel (FP16 only: in float they are already there) */
static void store_plane(int hw, const float *acc, tc_t *dxc)
{
    int p;
    if ((const void *)acc != (const void *)dxc)
        for (p = 0; p < hw; p++) dxc[p] = (tc_t)acc[p];
}

/* dx starts at zero; outputs add their dy to their arg max in row-major output order */
void tc_maxpool_bwd(const tc_conv *g, int n, const tc_t *x, const tc_t *dy, tc_t *dx, float *plane)
{
    int s, c, oh, ow, p, hw = g->h * g->w;
    for (s = 0; s < n; s++)
        for (c = 0; c < g->cin; c++) {
            const tc_t *xc = CH(x, s, c, g->cin, hw);
            const tc_t *dyc = CH(dy, s, c, g->cin, g->ho * g->wo);
            tc_t *dxc = CH(dx, s, c, g->cin, hw);
            float *acc = SUMS(dxc, plane);
            for (p = 0; p < hw; p++) acc[p] = 0.0f;
            for (oh = 0; oh < g->ho; oh++)
                for (ow = 0; ow < g->wo; ow++) {
                    size_t at = argmax_win(g, xc, oh, ow);
                    acc[at] = acc[at] + (float)dyc[oh * g->wo + ow];
                }
            store_plane(hw, acc, dxc);
        }
}

/* average with padding counted (count_include_pad): window sum in row-major order / (kh*kw) */
void tc_avgpool_fwd(const tc_conv *g, int n, const tc_t *x, tc_t *y)
{
    float cnt = (float)(g->kh * g->kw);
    int s, c, oh, ow, i, j;
    for (s = 0; s < n; s++)
        for (c = 0; c < g->cin; c++) {
            const tc_t *xc = CH(x, s, c, g->cin, g->h * g->w);
            tc_t *yc = CH(y, s, c, g->cin, g->ho * g->wo);
            for (oh = 0; oh < g->ho; oh++)
                for (ow = 0; ow < g->wo; ow++) {
                    float acc = 0.0f;
                    for (i = 0; i < g->kh; i++) {
                        int ih = oh * g->sh - g->ph + i;
                        if (ih < 0 || ih >= g->h) continue;
                        for (j = 0; j < g->kw; j++) {
                            int iw = ow * g->sw - g->pw + j;
                            if (iw < 0 || iw >= g->w) continue;
                            acc = acc + (float)xc[ih * g->w + iw];
                        }
                    }
                    yc[oh * g->wo + ow] = (tc_t)(acc / cnt);
                }
        }
}

/* dx starts at zero; each output adds dy / (kh*kw) to its window, outputs in row-major order */
void tc_avgpool_bwd(const tc_conv *g, int n, const tc_t *dy, tc_t *dx, float *plane)
{
    float cnt = (float)(g->kh * g->kw);
    int s, c, oh, ow, i, j, p, hw = g->h * g->w;
    for (s = 0; s < n; s++)
        for (c = 0; c < g->cin; c++) {
            const tc_t *dyc = CH(dy, s, c, g->cin, g->ho * g->wo);
            tc_t *dxc = CH(dx, s, c, g->cin, hw);
            float *acc = SUMS(dxc, plane);
            for (p = 0; p < hw; p++) acc[p] = 0.0f;
            for (oh = 0; oh < g->ho; oh++)
                for (ow = 0; ow < g->wo; ow++) {
                    float v = (float)dyc[oh * g->wo + ow] / cnt;
                    for (i = 0; i < g->kh; i++) {
                        int ih = oh * g->sh - g->ph + i;
                        if (ih < 0 || ih >= g->h) continue;
                        for (j = 0; j < g->kw; j++) {
                            int iw = ow * g->sw - g->pw + j;
                            if (iw < 0 || iw >= g->w) continue;
                            acc[ih * g->w + iw] = acc[ih * g->w + iw] + v;
                        }
                    }
                }
            store_plane(hw, acc, dxc);
        }
}

void tc_gap_fwd(int n, int c, int hw, const tc_t *x, tc_t *y)
{
    float cnt = (float)hw;
    int s, k, p;
    for (s = 0; s < n; s++)
        for (k = 0; k < c; k++) {
            float acc = 0.0f;
            for (p = 0; p < hw; p++) acc = acc + (float)CH(x, s, k, c, hw)[p];
            y[(size_t)s * c + k] = (tc_t)(acc / cnt);
        }
}

void tc_gap_bwd(int n, int c, int hw, const tc_t *dy, tc_t *dx)
{
    float cnt = (float)hw;
    int s, k, p;
    for (s = 0; s < n; s++)
        for (k = 0; k < c; k++) {
            tc_t v = (tc_t)((float)dy[(size_t)s * c + k] / cnt);
            for (p = 0; p < hw; p++) CH(dx, s, k, c, hw)[p] = v;
        }
}

/* mean softmax cross-entropy; dlogits = (softmax - onehot) / n, times the loss scale when it is
 * not 1; returns the mean loss. Float tensors keep each exp in dlogits until its probability;
 * FP16 ones cannot (it would round), so the exp is evaluated again (same bits). */
float tc_softmax_ce(int n, int classes, const tc_t *logits, const int32_t *labels, float scale, tc_t *dlogits)
{
    float total = 0.0f, fn = (float)n;
    int s, k;
    for (s = 0; s < n; s++) {
        const tc_t *l = logits + (size_t)s * classes;
        tc_t *d = dlogits + (size_t)s * classes;
        float mx = (float)l[0], sum = 0.0f;
        for (k = 1; k < classes; k++) if ((float)l[k] > mx) mx = (float)l[k];
        for (k = 0; k < classes; k++) {
            float e = tc_expf((float)l[k] - mx);
            if (!TC_FP16) d[k] = (tc_t)e;
            sum = sum + e;
        }
        total = total + (tc_logf(sum) - ((float)l[labels[s]] - mx));
        for (k = 0; k < classes; k++) {
            float p = (TC_FP16 ? tc_expf((float)l[k] - mx) : (float)d[k]) / sum;
            float v = (k == labels[s] ? p - 1.0f : p) / fn;
            d[k] = (tc_t)(scale != 1.0f ? v * scale : v);
        }
    }
    return total / fn;
}

static void sgd_one(float *p, float *mom_buf, float gi, float lr, float momentum, float wd)
{
    if (wd != 0.0f) gi = gi + wd * *p;
    if (momentum != 0.0f) { *mom_buf = *mom_buf * momentum + gi; gi = *mom_buf; }
    *p = *p - lr * gi;
}

/* the step of the engine's Network.step: g / scale (the loss scale, when not 1), then
 * torch.optim.SGD with a zero-initialised momentum buffer (the first step gives buf = g) */
void tc_sgd(int len, float *p, float *mom_buf, const tc_t *g, float scale, float lr, float momentum, float wd)
{
    int i;
    if (scale != 1.0f)
        for (i = 0; i < len; i++) sgd_one(p + i, mom_buf + i, (float)g[i] / scale, lr, momentum, wd);
    else
        for (i = 0; i < len; i++) sgd_one(p + i, mom_buf + i, (float)g[i], lr, momentum, wd);
}
