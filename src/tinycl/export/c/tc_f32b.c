/* FP32 kernels of the back (continued): batch norm, activations, add, pools, loss, SGD.
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
void tc_bn_train_fwd(int n, int c, int hw, const float *x, const float *gam, const float *bet, float eps,
                     float keep, float mom, float *rmean, float *rvar, float *mean, float *inv, float *y)
{
    float m = (float)(n * hw), unb = m / (m - 1.0f);
    int k, s, p;
    for (k = 0; k < c; k++) {
        float acc = 0.0f, mu, var;
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++)
                acc = acc + CH(x, s, k, c, hw)[p];
        mu = acc / m;
        acc = 0.0f;
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++) {
                float d = CH(x, s, k, c, hw)[p] - mu;
                acc = acc + d * d;
            }
        var = acc / m;
        mean[k] = mu;
        inv[k] = 1.0f / sqrtf(var + eps);
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++) {
                float xh = (CH(x, s, k, c, hw)[p] - mu) * inv[k];
                CH(y, s, k, c, hw)[p] = xh * gam[k] + bet[k];
            }
        rmean[k] = rmean[k] * keep + mu * mom;
        rvar[k] = rvar[k] * keep + (var * unb) * mom;
    }
}

void tc_bn_train_bwd(int n, int c, int hw, const float *dy, const float *x, const float *gam,
                     const float *mean, const float *inv, float *dx, float *dg, float *db)
{
    float m = (float)(n * hw);
    int k, s, p;
    for (k = 0; k < c; k++) {
        float sb = 0.0f, sg = 0.0f, kk, a, b;
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++)
                sb = sb + CH(dy, s, k, c, hw)[p];
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++) {
                float xh = (CH(x, s, k, c, hw)[p] - mean[k]) * inv[k];
                sg = sg + CH(dy, s, k, c, hw)[p] * xh;
            }
        db[k] = sb;
        dg[k] = sg;
        kk = gam[k] * inv[k];
        a = sb / m;
        b = sg / m;
        if (!dx) continue;
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++) {
                float xh = (CH(x, s, k, c, hw)[p] - mean[k]) * inv[k];
                CH(dx, s, k, c, hw)[p] = kk * ((CH(dy, s, k, c, hw)[p] - a) - xh * b);
            }
    }
}

void tc_bn_eval_fwd(int n, int c, int hw, const float *x, const float *gam, const float *bet,
                    const float *rmean, const float *inv, float *y)
{
    int k, s, p;
    for (s = 0; s < n; s++)
        for (k = 0; k < c; k++)
            for (p = 0; p < hw; p++)
                CH(y, s, k, c, hw)[p] = ((CH(x, s, k, c, hw)[p] - rmean[k]) * inv[k]) * gam[k] + bet[k];
}

void tc_bn_eval_bwd(int n, int c, int hw, const float *dy, const float *x, const float *gam,
                    const float *rmean, const float *inv, float *dx, float *dg, float *db)
{
    int k, s, p;
    for (k = 0; k < c; k++) {
        float sb = 0.0f, sg = 0.0f, kk = gam[k] * inv[k];
        for (s = 0; s < n; s++)
            for (p = 0; p < hw; p++) {
                float d = CH(dy, s, k, c, hw)[p];
                float xh = (CH(x, s, k, c, hw)[p] - rmean[k]) * inv[k];
                sb = sb + d;
                sg = sg + d * xh;
                if (dx) CH(dx, s, k, c, hw)[p] = d * kk;
            }
        db[k] = sb;
        dg[k] = sg;
    }
}

void tc_relu_fwd(int len, const float *x, float *y)
{
    int i;
    for (i = 0; i < len; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void tc_relu_bwd(int len, const float *y, const float *dy, float *dx)
{
    int i;
    for (i = 0; i < len; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void tc_relu6_fwd(int len, const float *x, float *y)
{
    int i;
    for (i = 0; i < len; i++) y[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : 0.0f;
}

void tc_relu6_bwd(int len, const float *x, const float *dy, float *dx)
{
    int i;
    for (i = 0; i < len; i++) dx[i] = (x[i] > 0.0f && x[i] < 6.0f) ? dy[i] : 0.0f;
}

void tc_add_fwd(int len, const float *a, const float *b, float *y)
{
    int i;
    for (i = 0; i < len; i++) y[i] = a[i] + b[i];
}

/* max over the window in row-major order, the first maximum wins; padding never wins */
static size_t argmax_win(const tc_conv *g, const float *xc, int oh, int ow)
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
            if (!found || xc[at] > xc[best]) { best = at; found = 1; }
        }
    }
    return best;
}

void tc_maxpool_fwd(const tc_conv *g, int n, const float *x, float *y)
{
    int s, c, oh, ow;
    for (s = 0; s < n; s++)
        for (c = 0; c < g->cin; c++) {
            const float *xc = CH(x, s, c, g->cin, g->h * g->w);
            float *yc = CH(y, s, c, g->cin, g->ho * g->wo);
            for (oh = 0; oh < g->ho; oh++)
                for (ow = 0; ow < g->wo; ow++)
                    yc[oh * g->wo + ow] = xc[argmax_win(g, xc, oh, ow)];
        }
}

/* dx starts at zero; outputs add their dy to their arg max in row-major output order */
void tc_maxpool_bwd(const tc_conv *g, int n, const float *x, const float *dy, float *dx)
{
    int s, c, oh, ow, p, hw = g->h * g->w;
    for (s = 0; s < n; s++)
        for (c = 0; c < g->cin; c++) {
            const float *xc = CH(x, s, c, g->cin, hw);
            const float *dyc = CH(dy, s, c, g->cin, g->ho * g->wo);
            float *dxc = CH(dx, s, c, g->cin, hw);
            for (p = 0; p < hw; p++) dxc[p] = 0.0f;
            for (oh = 0; oh < g->ho; oh++)
                for (ow = 0; ow < g->wo; ow++) {
                    size_t at = argmax_win(g, xc, oh, ow);
                    dxc[at] = dxc[at] + dyc[oh * g->wo + ow];
                }
        }
}

/* average with padding counted (count_include_pad): window sum in row-major order / (kh*kw) */
void tc_avgpool_fwd(const tc_conv *g, int n, const float *x, float *y)
{
    float cnt = (float)(g->kh * g->kw);
    int s, c, oh, ow, i, j;
    for (s = 0; s < n; s++)
        for (c = 0; c < g->cin; c++) {
            const float *xc = CH(x, s, c, g->cin, g->h * g->w);
            float *yc = CH(y, s, c, g->cin, g->ho * g->wo);
            for (oh = 0; oh < g->ho; oh++)
                for (ow = 0; ow < g->wo; ow++) {
                    float acc = 0.0f;
                    for (i = 0; i < g->kh; i++) {
                        int ih = oh * g->sh - g->ph + i;
                        if (ih < 0 || ih >= g->h) continue;
                        for (j = 0; j < g->kw; j++) {
                            int iw = ow * g->sw - g->pw + j;
                            if (iw < 0 || iw >= g->w) continue;
                            acc = acc + xc[ih * g->w + iw];
                        }
                    }
                    yc[oh * g->wo + ow] = acc / cnt;
                }
        }
}

/* dx starts at zero; each output adds dy / (kh*kw) to its window, outputs in row-major order */
void tc_avgpool_bwd(const tc_conv *g, int n, const float *dy, float *dx)
{
    float cnt = (float)(g->kh * g->kw);
    int s, c, oh, ow, i, j, p, hw = g->h * g->w;
    for (s = 0; s < n; s++)
        for (c = 0; c < g->cin; c++) {
            const float *dyc = CH(dy, s, c, g->cin, g->ho * g->wo);
            float *dxc = CH(dx, s, c, g->cin, hw);
            for (p = 0; p < hw; p++) dxc[p] = 0.0f;
            for (oh = 0; oh < g->ho; oh++)
                for (ow = 0; ow < g->wo; ow++) {
                    float v = dyc[oh * g->wo + ow] / cnt;
                    for (i = 0; i < g->kh; i++) {
                        int ih = oh * g->sh - g->ph + i;
                        if (ih < 0 || ih >= g->h) continue;
                        for (j = 0; j < g->kw; j++) {
                            int iw = ow * g->sw - g->pw + j;
                            if (iw < 0 || iw >= g->w) continue;
                            dxc[ih * g->w + iw] = dxc[ih * g->w + iw] + v;
                        }
                    }
                }
        }
}

void tc_gap_fwd(int n, int c, int hw, const float *x, float *y)
{
    float cnt = (float)hw;
    int s, k, p;
    for (s = 0; s < n; s++)
        for (k = 0; k < c; k++) {
            float acc = 0.0f;
            for (p = 0; p < hw; p++) acc = acc + CH(x, s, k, c, hw)[p];
            y[(size_t)s * c + k] = acc / cnt;
        }
}

void tc_gap_bwd(int n, int c, int hw, const float *dy, float *dx)
{
    float cnt = (float)hw;
    int s, k, p;
    for (s = 0; s < n; s++)
        for (k = 0; k < c; k++) {
            float v = dy[(size_t)s * c + k] / cnt;
            for (p = 0; p < hw; p++) CH(dx, s, k, c, hw)[p] = v;
        }
}

/* mean softmax cross-entropy; dlogits = (softmax - onehot) / n; returns the mean loss */
float tc_softmax_ce(int n, int classes, const float *logits, const int32_t *labels, float *dlogits)
{
    float total = 0.0f, fn = (float)n;
    int s, k;
    for (s = 0; s < n; s++) {
        const float *l = logits + (size_t)s * classes;
        float *d = dlogits + (size_t)s * classes;
        float mx = l[0], sum = 0.0f;
        for (k = 1; k < classes; k++) if (l[k] > mx) mx = l[k];
        for (k = 0; k < classes; k++) { d[k] = tc_expf(l[k] - mx); sum = sum + d[k]; }
        total = total + (tc_logf(sum) - (l[labels[s]] - mx));
        for (k = 0; k < classes; k++) {
            float p = d[k] / sum;
            d[k] = (k == labels[s] ? p - 1.0f : p) / fn;
        }
    }
    return total / fn;
}

/* torch.optim.SGD with a zero-initialised momentum buffer (the first step then gives buf = g) */
void tc_sgd(int len, float *p, float *mom_buf, const float *g, float lr, float momentum, float wd)
{
    int i;
    for (i = 0; i < len; i++) {
        float gi = g[i];
        if (wd != 0.0f) gi = gi + wd * p[i];
        if (momentum != 0.0f) { mom_buf[i] = mom_buf[i] * momentum + gi; gi = mom_buf[i]; }
        p[i] = p[i] - lr * gi;
    }
}
