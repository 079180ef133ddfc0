/* tinycl C runtime: the learner described by tables (generated model.c fills them). */
#ifndef TC_ENGINE_H
#define TC_ENGINE_H
#include "tinycl_rt.h"

enum { F_CONV, F_LINEAR, F_ADD, F_MAXPOOL, F_AVGPOOL, F_GAP, F_CLAMP, F_FLATTEN };
enum { B_CONV, B_LINEAR, B_BN, B_RELU, B_RELU6, B_ADD, B_MAXPOOL, B_AVGPOOL, B_GAP, B_FLATTEN };

typedef struct {            /* one INT8 front op on one sample */
    int kind, in0, in1, out;
    tc_conv g;              /* linear: cin = fin, cout = fout */
    const int8_t *w;
    const int32_t *bias, *mult, *shift, *add;
    int32_t x_zp, b_zp, out_zp, qmin, qmax, include_pad;
} tc_fop;

typedef struct {            /* one FP32 back op on a batch */
    int kind, in0, in1, out, pw, pb, bn, bn_train;
    tc_conv g;
    float eps, keep, mom;
} tc_bop;

typedef struct { float *value, *mom; int32_t numel; } tc_param;
typedef struct { float *rmean, *rvar; int32_t c; } tc_bnstate;

typedef struct {
    int n_fops, n_ft, n_bops, n_bt, n_params, n_bn;
    const tc_fop *fops;
    const int32_t *fnumel, *bnumel;       /* numel per sample of each tensor */
    const int32_t *foff;                  /* byte offset of each front tensor (planner) */
    int32_t front_bytes;
    const tc_bop *bops;
    tc_param *params;
    tc_bnstate *bns;
    double in_scale, lat_scale;
    int32_t in_zp, lat_zp, classes, max_new, replay_batch;
    float lr, momentum, wd;
    int bits, per_channel, lat_hw;        /* latent quantizer */
    const float *qscale, *qzp;
    int capacity, row_bytes;              /* replay memory */
    int policy, quantize_new;             /* policy: 0 reservoir, 1 ar1 */
    uint8_t *rows;
    int16_t *labels, *exps;
    int32_t *size, *seen, *cur_exp, *cur_seen, *experience;
    tc_rng *rng;
} tc_model;

typedef struct {            /* arena pointers, set by tc_init */
    int8_t **ft, *latcodes;
    float **act, **grad, **pgrad, **bnsave, *tmp;
    int32_t *blabels, *idx, *idx2;
    uint8_t *codes, *gset;
    int ready;
} tc_ctx;

size_t tc_arena_need(const tc_model *m);
int tc_init(const tc_model *m, tc_ctx *c, int8_t **ft, float **act, float **grad, float **pgrad,
            float **bnsave, void *arena, size_t size);
int tc_learn(const tc_model *m, tc_ctx *c, const float *x, const int32_t *labels, int n, float *loss);
int tc_logits(const tc_model *m, tc_ctx *c, const float *x, float *logits);
int tc_predict(const tc_model *m, tc_ctx *c, const float *x, int32_t *cls);
int tc_set_experience(const tc_model *m, int32_t e);
#endif
