/* Training kernels of the back, NCHW, fixed summation order, written once for the
 * element type tc_t (float, or _Float16 with TC_FP16: see tinycl_rt.h). Every sum is a
 * float that starts at +0.0f and adds one product (or term) at a time in the order
 * stated; a bias is added after the sum; the result is rounded once to tc_t. Convs read their input through an implicit
 * im2col (no buffer): the reduction index k runs over (cin of the group, kh, kw),
 * the im2col row order; padding terms are skipped, which gives the same bits as
 * adding their 0 * w products (acc + 0 == acc, and acc is never -0). */
#include "tinycl_rt.h"

#define AT4(p, c, h, w, H, W) ((p)[(((size_t)(c) * (H) + (h)) * (W)) + (w)])

/* y[n, co, oh, ow] = sum_{ci, i, j} w[co, ci, i, j] * x[n, g*cg + ci, oh*sh - ph + i, ow*sw - pw + j] + b[co] */
void tc_conv_fwd(const tc_conv *g, int n, const tc_t *x, const tc_t *wt, const tc_t *b, tc_t *y)
{
    int cg = g->cin / g->groups, og = g->cout / g->groups;
    int s, co, oh, ow, ci, i, j;
    for (s = 0; s < n; s++) {
        const tc_t *xs = x + (size_t)s * g->cin * g->h * g->w;
        tc_t *ys = y + (size_t)s * g->cout * g->ho * g->wo;
        for (co = 0; co < g->cout; co++) {
            const tc_t *wc = wt + (size_t)co * cg * g->kh * g->kw;
            const tc_t *xg = xs + (size_t)(co / og) * cg * g->h * g->w;
            for (oh = 0; oh < g->ho; oh++) {
                int top = oh * g->sh - g->ph;
                int i0 = top < 0 ? -top : 0, i1 = g->h - top < g->kh ? g->h - top : g->kh;
                for (ow = 0; ow < g->wo; ow++) {
                    int left = ow * g->sw - g->pw;
                    int j0 = left < 0 ? -left : 0, j1 = g->w - left < g->kw ? g->w - left : g->kw;
                    float acc = 0.0f;
                    for (ci = 0; ci < cg; ci++)
                        for (i = i0; i < i1; i++) {   /* k = (ci, i, j) ascending, padding skipped */
                            const tc_t *xr = xg + ((size_t)ci * g->h + top + i) * g->w + left;
                            const tc_t *wr = wc + ((size_t)ci * g->kh + i) * g->kw;
                            for (j = j0; j < j1; j++)
                                acc = acc + (float)wr[j] * (float)xr[j];
                        }
                    AT4(ys, co, oh, ow, g->ho, g->wo) = (tc_t)(b ? acc + (float)b[co] : acc);
                }
            }
        }
    }
}

/* dx[n, c, h, w] = sum over (co of the group, i, j) of the flipped, transposed kernel
 * w[co, ci, kh-1-i, kw-1-j] times the zero-inserted, padded dy at (h + i, w + j). */
void tc_conv_bwd_in(const tc_conv *g, int n, const tc_t *dy, const tc_t *wt, tc_t *dx)
{
    int cg = g->cin / g->groups, og = g->cout / g->groups;
    int top = g->kh - 1 - g->ph, left = g->kw - 1 - g->pw;
    int s, c, h, w, col, i, j;
    for (s = 0; s < n; s++) {
        const tc_t *dys = dy + (size_t)s * g->cout * g->ho * g->wo;
        tc_t *dxs = dx + (size_t)s * g->cin * g->h * g->w;
        for (c = 0; c < g->cin; c++) {
            int grp = c / cg, cl = c % cg;
            for (h = 0; h < g->h; h++)
                for (w = 0; w < g->w; w++) {
                    float acc = 0.0f;
                    for (col = 0; col < og; col++) {
                        int co = grp * og + col;
                        for (i = 0; i < g->kh; i++) {
                            int r = h + i - top, oh;
                            if (r < 0 || r % g->sh) continue;
                            oh = r / g->sh;
                            if (oh >= g->ho) continue;
                            for (j = 0; j < g->kw; j++) {
                                int q = w + j - left, ow;
                                if (q < 0 || q % g->sw) continue;
                                ow = q / g->sw;
                                if (ow >= g->wo) continue;
                                acc = acc + (float)wt[(((size_t)co * cg + cl) * g->kh + (g->kh - 1 - i)) * g->kw + (g->kw - 1 - j)]
                                            * (float)AT4(dys, co, oh, ow, g->ho, g->wo);
                            }
                        }
                    }
                    AT4(dxs, c, h, w, g->h, g->w) = (tc_t)acc;
                }
        }
    }
}

/* dw[co, ci, i, j] = sum_{n, oh, ow} dy[n, co, oh, ow] * x[...]; db[co] = sum_{n, oh, ow} dy (order n, oh, ow) */
void tc_conv_bwd_w(const tc_conv *g, int n, const tc_t *dy, const tc_t *x, tc_t *dw, tc_t *db)
{
    int cg = g->cin / g->groups, og = g->cout / g->groups;
    size_t xs = (size_t)g->cin * g->h * g->w, ys = (size_t)g->cout * g->ho * g->wo;
    int co, ci, i, j, s, oh, ow;
    for (co = 0; co < g->cout; co++) {
        int c0 = (co / og) * cg;
        for (ci = 0; ci < cg; ci++)
            for (i = 0; i < g->kh; i++)
                for (j = 0; j < g->kw; j++) {
                    float acc = 0.0f;
                    for (s = 0; s < n; s++)
                        for (oh = 0; oh < g->ho; oh++) {
                            int ih = oh * g->sh - g->ph + i;
                            if (ih < 0 || ih >= g->h) continue;
                            for (ow = 0; ow < g->wo; ow++) {
                                int iw = ow * g->sw - g->pw + j;
                                if (iw < 0 || iw >= g->w) continue;
                                acc = acc + (float)AT4(dy + s * ys, co, oh, ow, g->ho, g->wo)
                                            * (float)AT4(x + s * xs, c0 + ci, ih, iw, g->h, g->w);
                            }
                        }
                    dw[(((size_t)co * cg + ci) * g->kh + i) * g->kw + j] = (tc_t)acc;
                }
        if (db) {
            float acc = 0.0f;
            for (s = 0; s < n; s++)
                for (oh = 0; oh < g->ho * g->wo; oh++)
                    acc = acc + (float)dy[s * ys + (size_t)co * g->ho * g->wo + oh];
            db[co] = (tc_t)acc;
        }
    }
}

void tc_linear_fwd(int n, int fin, int fout, const tc_t *x, const tc_t *wt, const tc_t *b, tc_t *y)
{
    int s, o, k;
    for (s = 0; s < n; s++)
        for (o = 0; o < fout; o++) {
            float acc = 0.0f;
            for (k = 0; k < fin; k++)
                acc = acc + (float)x[(size_t)s * fin + k] * (float)wt[(size_t)o * fin + k];
            y[(size_t)s * fout + o] = (tc_t)(b ? acc + (float)b[o] : acc);
        }
}

void tc_linear_bwd_in(int n, int fin, int fout, const tc_t *dy, const tc_t *wt, tc_t *dx)
{
    int s, o, k;
    for (s = 0; s < n; s++)
        for (k = 0; k < fin; k++) {
            float acc = 0.0f;
            for (o = 0; o < fout; o++)
                acc = acc + (float)dy[(size_t)s * fout + o] * (float)wt[(size_t)o * fin + k];
            dx[(size_t)s * fin + k] = (tc_t)acc;
        }
}

void tc_linear_bwd_w(int n, int fin, int fout, const tc_t *dy, const tc_t *x, tc_t *dw, tc_t *db)
{
    int s, o, k;
    for (o = 0; o < fout; o++) {
        for (k = 0; k < fin; k++) {
            float acc = 0.0f;
            for (s = 0; s < n; s++)
                acc = acc + (float)dy[(size_t)s * fout + o] * (float)x[(size_t)s * fin + k];
            dw[(size_t)o * fin + k] = (tc_t)acc;
        }
        if (db) {
            float acc = 0.0f;
            for (s = 0; s < n; s++)
                acc = acc + (float)dy[(size_t)s * fout + o];
            db[o] = (tc_t)acc;
        }
    }
}
