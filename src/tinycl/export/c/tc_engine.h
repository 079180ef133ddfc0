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

typedef struct {            /* one back op on a batch (tensors of tc_t) */
    int kind, in0, in1, out, pw, pb, bn, bn_train;
    tc_conv g;
    float eps, keep, mom;
} tc_bop;

/* value: the float master weight; mom: its float momentum; w: the compute copy the kernels
 * read (w == value when tc_t is float; with TC_FP16, value rounded to _Float16 after each step) */
typedef struct { float *value, *mom; tc_t *w; int32_t numel; } tc_param;
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
    int scaler;                           /* loss scaling: 0 none, 1 static, 2 dynamic */
    float *scale;                         /* the loss scale (state) */
    int32_t *good_steps, *skipped;        /* dynamic: clean steps since the last change; skipped steps */
    int32_t growth;                       /* dynamic: clean steps before the scale doubles */
    float min_scale, max_scale;
} tc_model;

typedef struct {            /* arena pointers, set by tc_init */
    int8_t **ft, *latcodes;
    tc_t **act, **grad, **pgrad, *tmp;
    float **bnsave;
    float *lrow, *plane;    /* TC_FP16 only: one float latent row, one float channel plane (pools) */
    int32_t *blabels, *idx, *idx2;
    uint8_t *codes, *gset;
    int ready;
} tc_ctx;

size_t tc_arena_need(const tc_model *m);
int tc_init(const tc_model *m, tc_ctx *c, int8_t **ft, tc_t **act, tc_t **grad, tc_t **pgrad,
            float **bnsave, void *arena, size_t size);
int tc_learn(const tc_model *m, tc_ctx *c, const float *x, const int32_t *labels, int n, float *loss);
int tc_logits(const tc_model *m, tc_ctx *c, const float *x, float *logits);
int tc_predict(const tc_model *m, tc_ctx *c, const float *x, int32_t *cls);
int tc_set_experience(const tc_model *m, int32_t e);
#endif
