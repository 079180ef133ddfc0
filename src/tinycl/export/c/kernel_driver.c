/* Test driver of the runtime's float kernels (used by tests/test_export_kernels.py), built for
 * one element type tc_t (tc_config.h). stdin: int32 op, int32 ni, ni int32 args, int32 na, then
 * na arrays (int32 length, float32 values). stdout: arrays (int32 length, float32 values).
 * A[i] is array i as float, T[i] the same values stored as tc_t; tc_t outputs are widened to
 * float32 (exact) when emitted. Not part of a project. */
#include <stdio.h>
#include <stdlib.h>
#include "tinycl_rt.h"

#define MAXA 8
#define CAP (1 << 22)
static float pool[CAP], outp[CAP], plane[1 << 16];
static tc_t tpool[CAP], toutp[CAP];
static float *A[MAXA];
static tc_t *T[MAXA];
static int32_t alen[MAXA], I[32];
static size_t used, oused, toused;

static void rd(void *p, size_t n) { if (fread(p, 1, n, stdin) != n) exit(3); }
static float *out(size_t n) { float *p = outp + oused; oused += n; return p; }
static tc_t *tout(size_t n) { tc_t *p = toutp + toused; toused += n; return p; }
static void emit(const float *p, int32_t n) { fwrite(&n, 4, 1, stdout); fwrite(p, 4, (size_t)n, stdout); }
static void emit_t(const tc_t *p, int32_t n)
{
    int32_t i;
    fwrite(&n, 4, 1, stdout);
    for (i = 0; i < n; i++) { float v = (float)p[i]; fwrite(&v, 4, 1, stdout); }
}

int main(void)
{
    int32_t op, ni, na, i;
    tc_conv g;
    rd(&op, 4); rd(&ni, 4); rd(I, (size_t)ni * 4); rd(&na, 4);
    for (i = 0; i < na; i++) {
        rd(&alen[i], 4);
        A[i] = pool + used; used += (size_t)alen[i];
        rd(A[i], (size_t)alen[i] * 4);
        T[i] = tpool + (A[i] - pool);
        { int32_t k; for (k = 0; k < alen[i]; k++) T[i][k] = (tc_t)A[i][k]; }
    }
    g.cin = I[0]; g.h = I[1]; g.w = I[2]; g.cout = I[3]; g.ho = I[4]; g.wo = I[5]; g.kh = I[6]; g.kw = I[7];
    g.sh = I[8]; g.sw = I[9]; g.ph = I[10]; g.pw = I[11]; g.groups = I[12];
    {
        int n = I[13], ny = n * g.cout * g.ho * g.wo, nx = n * g.cin * g.h * g.w, c = I[14], hw = I[15];
        float *z, *u, *v;
        tc_t *y, *y2, *y3;
        switch (op) {
        case 1: y = tout((size_t)ny); tc_conv_fwd(&g, n, T[0], T[1], na > 2 ? T[2] : 0, y); emit_t(y, ny); break;
        case 2: y = tout((size_t)nx); tc_conv_bwd_in(&g, n, T[0], T[1], y); emit_t(y, nx); break;
        case 3: y = tout((size_t)alen[2]); y2 = tout((size_t)g.cout);
            tc_conv_bwd_w(&g, n, T[0], T[1], y, y2); emit_t(y, alen[2]); emit_t(y2, g.cout); break;
        case 4: y = tout((size_t)n * c); tc_linear_fwd(n, hw, c, T[0], T[1], T[2], y); emit_t(y, n * c); break;
        case 5: y = tout((size_t)n * hw); tc_linear_bwd_in(n, hw, c, T[0], T[1], y); emit_t(y, n * hw); break;
        case 6: y = tout((size_t)c * hw); y2 = tout((size_t)c);
            tc_linear_bwd_w(n, hw, c, T[0], T[1], y, y2); emit_t(y, c * hw); emit_t(y2, c); break;
        case 7: y = tout((size_t)n * c * hw); z = out((size_t)c); u = out((size_t)c);
            tc_bn_train_fwd(n, c, hw, T[0], T[1], T[2], A[5][0], A[5][1], A[5][2], A[3], A[4], z, u, y);
            emit_t(y, n * c * hw); emit(z, c); emit(u, c); emit(A[3], c); emit(A[4], c); break;
        case 8: y = tout((size_t)n * c * hw); y2 = tout((size_t)c); y3 = tout((size_t)c);
            tc_bn_train_bwd(n, c, hw, T[0], T[1], T[2], A[3], A[4], y, y2, y3);
            emit_t(y, n * c * hw); emit_t(y2, c); emit_t(y3, c); break;
        case 9: y = tout((size_t)n * c * hw); z = out((size_t)c);
            tc_bn_inv_std(c, A[4], A[5][0], z);
            tc_bn_eval_fwd(n, c, hw, T[0], T[1], T[2], A[3], z, y); emit_t(y, n * c * hw); emit(z, c); break;
        case 10: y = tout((size_t)n * c * hw); y2 = tout((size_t)c); y3 = tout((size_t)c);
            tc_bn_eval_bwd(n, c, hw, T[0], T[1], T[2], A[3], A[4], y, y2, y3);
            emit_t(y, n * c * hw); emit_t(y2, c); emit_t(y3, c); break;
        case 11: y = tout((size_t)n * g.cin * g.ho * g.wo); tc_maxpool_fwd(&g, n, T[0], y); emit_t(y, n * g.cin * g.ho * g.wo); break;
        case 12: y = tout((size_t)nx); tc_maxpool_bwd(&g, n, T[0], T[1], y, plane); emit_t(y, n * g.cin * g.h * g.w); break;
        case 13: y = tout((size_t)n * g.cin * g.ho * g.wo); tc_avgpool_fwd(&g, n, T[0], y); emit_t(y, n * g.cin * g.ho * g.wo); break;
        case 14: y = tout((size_t)nx); tc_avgpool_bwd(&g, n, T[0], y, plane); emit_t(y, n * g.cin * g.h * g.w); break;
        case 15: y = tout((size_t)n * c); tc_gap_fwd(n, c, hw, T[0], y); emit_t(y, n * c); break;
        case 16: y = tout((size_t)n * c * hw); tc_gap_bwd(n, c, hw, T[0], y); emit_t(y, n * c * hw); break;
        case 17: {   /* A[2][0], when given: the loss scale */
            int32_t lab[4096];
            for (i = 0; i < n; i++) lab[i] = (int32_t)A[1][i];
            y = tout((size_t)n * c); z = out(1);
            z[0] = tc_softmax_ce(n, c, T[0], lab, na > 2 ? A[2][0] : 1.0f, y); emit(z, 1); emit_t(y, n * c); break; }
        case 18: u = out((size_t)alen[0]); z = out((size_t)alen[0]);
            for (i = 0; i < alen[0]; i++) { u[i] = tc_expf(A[0][i]); z[i] = A[0][i] > 0.0f ? tc_logf(A[0][i]) : 0.0f; }
            emit(u, alen[0]); emit(z, alen[0]); break;
        case 19: tc_sgd(alen[0], A[0], A[1], T[2], alen[3] > 3 ? A[3][3] : 1.0f, A[3][0], A[3][1], A[3][2]);
            emit(A[0], alen[0]); emit(A[1], alen[0]); break;
        case 20: { tc_rng r; uint32_t *o = (uint32_t *)(void *)out((size_t)I[2]);
            tc_rng_seed(&r, (uint64_t)(uint32_t)I[0], (uint64_t)(uint32_t)I[1]);
            for (i = 0; i < I[2]; i++) o[i] = tc_rng_below(&r, (uint32_t)I[3 + (i % 4)]);
            emit((float *)(void *)o, I[2]); break; }
        case 21: v = out((size_t)alen[0]); u = out((size_t)alen[0]);
            { uint8_t *codes = (uint8_t *)(void *)v, *packed = (uint8_t *)(void *)u;
              for (i = 0; i < alen[0]; i++) codes[i] = (uint8_t)A[0][i];
              tc_pack(alen[0], I[0], codes, packed);
              for (i = 0; i < (alen[0] * I[0] + 7) / 8; i++) v[i] = packed[i]; }
            emit(v, (alen[0] * I[0] + 7) / 8); break;
        case 22: { const int32_t *xa = (const int32_t *)(const void *)A[0], *ma = (const int32_t *)(const void *)A[1];
            const int32_t *sa = (const int32_t *)(const void *)A[2];
            int32_t *o = (int32_t *)(void *)out((size_t)alen[0]);
            for (i = 0; i < alen[0]; i++) o[i] = tc_mbqm(xa[i], ma[i], sa[i]);
            emit((float *)(void *)o, alen[0]); break; }
        default: return 2;
        }
    }
    fflush(stdout);
    return 0;
}
