/* tinycl C runtime: shared declarations (C99, no malloc).
 * Float kernels use a fixed summation order (k = 0..K-1, one rounding per
 * multiply and per add); build with -ffp-contract=off so no FMA is formed. */
#ifndef TINYCL_RT_H
#define TINYCL_RT_H

#include <float.h>
#include <stddef.h>
#include <stdint.h>
#include "tc_config.h"   /* generated: TC_FP16 */

/* Element type of the back's tensors (activations, gradients, the weights' compute copies).
 * The kernels are written once for tc_t: every operation runs in float (a load widens
 * exactly), each result is rounded once to tc_t when it is stored. TC_FP16 = 1: IEEE
 * binary16 storage (_Float16), so FP16 values are multiplied exactly in float and summed in
 * float (fp32 accumulation of fp16 products); master weights and momenta stay float. */
#ifndef TC_FP16
#define TC_FP16 0
#endif
#if TC_FP16
#if !defined(__FLT16_MAX__)
#error "this tinycl learner is FP16 and needs _Float16: gcc >= 12 on x86-64, or arm-none-eabi-gcc with -mfp16-format=ieee"
#endif
typedef _Float16 tc_t;
#else
typedef float tc_t;
#endif

/* bit-exactness needs plain IEEE single operations: no excess precision (x87), no fast-math */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "tinycl needs FLT_EVAL_METHOD == 0 (e.g. SSE2 on x86, -mfpu=fpv4-sp-d16 on Cortex-M4)"
#endif
#ifdef __FAST_MATH__
#error "tinycl must not be built with -ffast-math"
#endif

/* status codes returned by the API */
#define TINYCL_OK 0
#define TINYCL_ENULL (-1)      /* a null pointer argument */
#define TINYCL_ELABEL (-2)     /* a label out of range */
#define TINYCL_EARENA (-3)     /* arena too small (or misaligned) */
#define TINYCL_EBATCH (-4)     /* bad sample count */
#define TINYCL_EINIT (-5)      /* tinycl_init not called */
#define TINYCL_EEXP (-6)       /* experience id out of 0..32767 or decreasing (ar1) */

/* ---------------------------------------------------------------- rng (PCG32) */
typedef struct { uint64_t state, inc; } tc_rng;
void tc_rng_seed(tc_rng *r, uint64_t seed, uint64_t seq);
uint32_t tc_rng_next(tc_rng *r);
uint32_t tc_rng_below(tc_rng *r, uint32_t n);

/* ---------------------------------------------------------------- portable math */
float tc_expf(float x);
float tc_logf(float x);
float tc_rne(float x);

/* ---------------------------------------------------------------- float kernels */
typedef struct {           /* conv geometry; tensors are NCHW float32 */
    int32_t cin, h, w, cout, ho, wo, kh, kw, sh, sw, ph, pw, groups;
} tc_conv;

void tc_conv_fwd(const tc_conv *g, int n, const tc_t *x, const tc_t *wt, const tc_t *b, tc_t *y);
void tc_conv_bwd_in(const tc_conv *g, int n, const tc_t *dy, const tc_t *wt, tc_t *dx);
void tc_conv_bwd_w(const tc_conv *g, int n, const tc_t *dy, const tc_t *x, tc_t *dw, tc_t *db);
void tc_linear_fwd(int n, int fin, int fout, const tc_t *x, const tc_t *wt, const tc_t *b, tc_t *y);
void tc_linear_bwd_in(int n, int fin, int fout, const tc_t *dy, const tc_t *wt, tc_t *dx);
void tc_linear_bwd_w(int n, int fin, int fout, const tc_t *dy, const tc_t *x, tc_t *dw, tc_t *db);
void tc_bn_train_fwd(int n, int c, int hw, const tc_t *x, const tc_t *gam, const tc_t *bet, float eps,
                     float keep, float mom, float *rmean, float *rvar, float *mean, float *inv, tc_t *y);
void tc_bn_train_bwd(int n, int c, int hw, const tc_t *dy, const tc_t *x, const tc_t *gam,
                     const float *mean, const float *inv, tc_t *dx, tc_t *dg, tc_t *db);
void tc_bn_eval_fwd(int n, int c, int hw, const tc_t *x, const tc_t *gam, const tc_t *bet,
                    const float *rmean, const float *inv, tc_t *y);
void tc_bn_eval_bwd(int n, int c, int hw, const tc_t *dy, const tc_t *x, const tc_t *gam,
                    const float *rmean, const float *inv, tc_t *dx, tc_t *dg, tc_t *db);
void tc_bn_inv_std(int c, const float *var, float eps, float *inv);
void tc_relu_fwd(int len, const tc_t *x, tc_t *y);
void tc_relu_bwd(int len, const tc_t *y, const tc_t *dy, tc_t *dx);
void tc_relu6_fwd(int len, const tc_t *x, tc_t *y);
void tc_relu6_bwd(int len, const tc_t *x, const tc_t *dy, tc_t *dx);
void tc_add_fwd(int len, const tc_t *a, const tc_t *b, tc_t *y);
void tc_maxpool_fwd(const tc_conv *g, int n, const tc_t *x, tc_t *y);
/* pool backward: overlapping windows sum in float; with TC_FP16 the sums go through
 * plane (one channel plane of h * w floats), then are rounded once; plane unused otherwise */
void tc_maxpool_bwd(const tc_conv *g, int n, const tc_t *x, const tc_t *dy, tc_t *dx, float *plane);
void tc_avgpool_fwd(const tc_conv *g, int n, const tc_t *x, tc_t *y);
void tc_avgpool_bwd(const tc_conv *g, int n, const tc_t *dy, tc_t *dx, float *plane);
void tc_gap_fwd(int n, int c, int hw, const tc_t *x, tc_t *y);
void tc_gap_bwd(int n, int c, int hw, const tc_t *dy, tc_t *dx);
/* mean loss; dlogits = (softmax - onehot) / n, times scale (the loss scale) when scale != 1 */
float tc_softmax_ce(int n, int classes, const tc_t *logits, const int32_t *labels, float scale, tc_t *dlogits);
/* g / scale (when scale != 1), then torch.optim.SGD on the float master weights p */
void tc_sgd(int len, float *p, float *mom_buf, const tc_t *g, float scale, float lr, float momentum, float wd);

/* ---------------------------------------------------------------- int8 kernels */
int32_t tc_mbqm(int64_t x, int32_t mult, int32_t shift);
void tc_conv_int8(const tc_conv *g, const int8_t *x, int32_t x_zp, const int8_t *wt, const int32_t *bias,
                  const int32_t *mult, const int32_t *shift, int32_t out_zp, int32_t qmin, int32_t qmax,
                  int8_t *y);
void tc_linear_int8(int fin, int fout, const int8_t *x, int32_t x_zp, const int8_t *wt, const int32_t *bias,
                    const int32_t *mult, const int32_t *shift, int32_t out_zp, int32_t qmin, int32_t qmax,
                    int8_t *y);
void tc_add_int8(int len, const int8_t *a, int32_t a_zp, const int8_t *b, int32_t b_zp, const int32_t *p,
                 int32_t out_zp, int32_t qmin, int32_t qmax, int8_t *y);
void tc_maxpool_int8(const tc_conv *g, const int8_t *x, int8_t *y);
void tc_avgpool_int8(const tc_conv *g, const int8_t *x, int32_t zp, int include_pad, int8_t *y);
void tc_gap_int8(int c, int hw, const int8_t *x, int32_t zp, int8_t *y);
void tc_clamp_int8(int len, const int8_t *x, int32_t lo, int32_t hi, int8_t *y);
int8_t tc_quantize_input(float x, double scale, int32_t zp);

/* ---------------------------------------------------------------- latents, packing */
void tc_latent_encode(int len, int hw, int per_channel, const float *x, const float *scale,
                      const float *zp, int qmax, uint8_t *codes);
void tc_latent_decode(int len, int hw, int per_channel, const uint8_t *codes, const float *scale,
                      const float *zp, float *x);
void tc_pack(int len, int bits, const uint8_t *codes, uint8_t *out);
void tc_unpack(int len, int bits, const uint8_t *packed, uint8_t *codes);

#endif
