/* The learner: INT8 front per sample, latent quantizer, packed replay memory with
 * reservoir replacement, a back of tc_t tensors (FP32, or FP16 with TC_FP16: float master
 * weights and momenta, optional loss scaling) trained by SGD; all buffers carved from one arena.
 * Arena order (export/planner.py mirrors it): front tensors (at the planner's offsets:
 * tensors never alive together share bytes), latent codes, back activations, back gradients,
 * a scratch gradient (largest tensor but the input), parameter gradients, BN batch statistics,
 * batch labels, two lists of replay slots, one row of codes, gradient flags, and with TC_FP16
 * one float latent row and one float pool plane; every block rounded up to 8 bytes. */
#include <math.h>
#include <string.h>
#include "tc_engine.h"

#define ES sizeof(tc_t)

/* sample s's float latent row: its row of act[0], or with TC_FP16 a float row then rounded into act[0] */
#if TC_FP16
#define LROW(c, s, L) ((c)->lrow)
#else
#define LROW(c, s, L) ((c)->act[0] + (size_t)(s) * (L))
#endif

#define ALIGN8(v) (((v) + 7u) & ~(size_t)7u)

static int batch_max(const tc_model *m) { return m->max_new + m->replay_batch; }

/* floats of the largest channel plane a pool backward sums into */
static size_t pool_plane(const tc_model *m)
{
    size_t big = 0;
    int i;
    for (i = 0; i < m->n_bops; i++) {
        const tc_bop *o = &m->bops[i];
        if ((o->kind == B_MAXPOOL || o->kind == B_AVGPOOL) && (size_t)o->g.h * o->g.w > big)
            big = (size_t)o->g.h * o->g.w;
    }
    return big;
}

static size_t walk(const tc_model *m, tc_ctx *c, char *base)
{
    size_t off = 0, big = 0;
    int t, B = batch_max(m);
#define TAKE(ptr, type, bytes) do { if (c) ptr = (type)(void *)(base + off); off += ALIGN8((size_t)(bytes)); } while (0)
    if (c) for (t = 0; t < m->n_ft; t++) c->ft[t] = (int8_t *)(void *)(base + off + m->foff[t]);
    off += ALIGN8((size_t)m->front_bytes);
    TAKE(c->latcodes, int8_t *, (size_t)m->max_new * m->bnumel[0]);
    for (t = 0; t < m->n_bt; t++) TAKE(c->act[t], tc_t *, (size_t)B * m->bnumel[t] * ES);
    for (t = 1; t < m->n_bt; t++) TAKE(c->grad[t], tc_t *, (size_t)B * m->bnumel[t] * ES);
    for (t = 1; t < m->n_bt; t++) if ((size_t)m->bnumel[t] > big) big = (size_t)m->bnumel[t];
    TAKE(c->tmp, tc_t *, (size_t)B * big * ES);
    for (t = 0; t < m->n_params; t++) TAKE(c->pgrad[t], tc_t *, (size_t)m->params[t].numel * ES);
    for (t = 0; t < m->n_bn; t++) TAKE(c->bnsave[t], float *, (size_t)m->bns[t].c * 8);
    TAKE(c->blabels, int32_t *, (size_t)B * 4);
    TAKE(c->idx, int32_t *, (size_t)m->capacity * 4);
    TAKE(c->idx2, int32_t *, (size_t)m->capacity * 4);
    TAKE(c->codes, uint8_t *, m->bnumel[0]);
    TAKE(c->gset, uint8_t *, m->n_bt);
    TAKE(c->lrow, float *, TC_FP16 ? (size_t)m->bnumel[0] * 4 : 0);
    TAKE(c->plane, float *, TC_FP16 ? pool_plane(m) * 4 : 0);
#undef TAKE
    return off;
}

size_t tc_arena_need(const tc_model *m) { return walk(m, 0, 0); }

/* the kernels' copies of the weights: each master weight rounded to tc_t (nothing with float) */
static void refresh_weights(const tc_model *m)
{
    int i, k;
    for (i = 0; i < m->n_params; i++) {
        const tc_param *p = &m->params[i];
        if ((const void *)p->w != (const void *)p->value)
            for (k = 0; k < p->numel; k++) p->w[k] = (tc_t)p->value[k];
    }
}

int tc_init(const tc_model *m, tc_ctx *c, int8_t **ft, tc_t **act, tc_t **grad, tc_t **pgrad,
            float **bnsave, void *arena, size_t size)
{
    if (!m || !c || !arena) return TINYCL_ENULL;
    if (((uintptr_t)arena & 7u) || size < tc_arena_need(m)) return TINYCL_EARENA;  /* nothing changed */
    c->ft = ft; c->act = act; c->grad = grad; c->pgrad = pgrad; c->bnsave = bnsave;
    grad[0] = 0;
    walk(m, c, (char *)arena);
    refresh_weights(m);
    c->ready = 1;
    return TINYCL_OK;
}

/* one sample through the INT8 front; returns the front's output tensor */
static const int8_t *front(const tc_model *m, tc_ctx *c, const float *x)
{
    int i;
    for (i = 0; i < m->fnumel[0]; i++) c->ft[0][i] = tc_quantize_input(x[i], m->in_scale, m->in_zp);
    for (i = 0; i < m->n_fops; i++) {
        const tc_fop *o = &m->fops[i];
        const int8_t *a = c->ft[o->in0];
        int8_t *y = c->ft[o->out];
        switch (o->kind) {
        case F_CONV: tc_conv_int8(&o->g, a, o->x_zp, o->w, o->bias, o->mult, o->shift, o->out_zp, o->qmin, o->qmax, y); break;
        case F_LINEAR: tc_linear_int8(o->g.cin, o->g.cout, a, o->x_zp, o->w, o->bias, o->mult, o->shift, o->out_zp, o->qmin, o->qmax, y); break;
        case F_ADD: tc_add_int8(m->fnumel[o->out], a, o->x_zp, c->ft[o->in1], o->b_zp, o->add, o->out_zp, o->qmin, o->qmax, y); break;
        case F_MAXPOOL: tc_maxpool_int8(&o->g, a, y); break;
        case F_AVGPOOL: tc_avgpool_int8(&o->g, a, o->x_zp, o->include_pad, y); break;
        case F_GAP: tc_gap_int8(o->g.cin, o->g.h * o->g.w, a, o->x_zp, y); break;
        case F_CLAMP: tc_clamp_int8(m->fnumel[o->out], a, o->qmin, o->qmax, y); break;
        default: memcpy(y, a, (size_t)m->fnumel[o->out]); break;
        }
    }
    return c->ft[m->n_ft - 1];
}

static void forward(const tc_model *m, tc_ctx *c, int B, int train)
{
    int i;
    for (i = 0; i < m->n_bops; i++) {
        const tc_bop *o = &m->bops[i];
        const tc_t *x = c->act[o->in0];
        tc_t *y = c->act[o->out];
        int len = B * m->bnumel[o->out], hw = o->g.h * o->g.w;
        const tc_t *w = o->pw >= 0 ? m->params[o->pw].w : 0, *b = o->pb >= 0 ? m->params[o->pb].w : 0;
        switch (o->kind) {
        case B_CONV: tc_conv_fwd(&o->g, B, x, w, b, y); break;
        case B_LINEAR: tc_linear_fwd(B, o->g.cin, o->g.cout, x, w, b, y); break;
        case B_BN: {
            tc_bnstate *s = &m->bns[o->bn];
            float *mean = c->bnsave[o->bn], *inv = mean + s->c;
            if (o->bn_train && train)
                tc_bn_train_fwd(B, s->c, hw, x, w, b, o->eps, o->keep, o->mom, s->rmean, s->rvar, mean, inv, y);
            else {
                tc_bn_inv_std(s->c, s->rvar, o->eps, inv);
                tc_bn_eval_fwd(B, s->c, hw, x, w, b, s->rmean, inv, y);
            }
            break; }
        case B_RELU: tc_relu_fwd(len, x, y); break;
        case B_RELU6: tc_relu6_fwd(len, x, y); break;
        case B_ADD: tc_add_fwd(len, x, c->act[o->in1], y); break;
        case B_MAXPOOL: tc_maxpool_fwd(&o->g, B, x, y); break;
        case B_AVGPOOL: tc_avgpool_fwd(&o->g, B, x, y); break;
        case B_GAP: tc_gap_fwd(B, o->g.cin, hw, x, y); break;
        default: memcpy(y, x, (size_t)len * ES); break;
        }
    }
}

/* grad[t] = g (first contribution) or grad[t] + g (later ones, existing + new) */
static void give(const tc_model *m, tc_ctx *c, int t, int B, const tc_t *g)
{
    int i, len = B * m->bnumel[t];
    if (t == 0) return;
    if (!c->gset[t]) { if (c->grad[t] != g) memcpy(c->grad[t], g, (size_t)len * ES); c->gset[t] = 1; return; }
    for (i = 0; i < len; i++) c->grad[t][i] = (tc_t)((float)c->grad[t][i] + (float)g[i]);
}

static void backward(const tc_model *m, tc_ctx *c, int B)
{
    int i;
    for (i = m->n_bops - 1; i >= 0; i--) {
        const tc_bop *o = &m->bops[i];
        const tc_t *x = c->act[o->in0], *dy = c->grad[o->out];
        tc_t *dx = o->in0 ? (c->gset[o->in0] ? c->tmp : c->grad[o->in0]) : 0;
        int len = B * m->bnumel[o->out], hw = o->g.h * o->g.w;
        tc_t *dw = o->pw >= 0 ? c->pgrad[o->pw] : 0, *db = o->pb >= 0 ? c->pgrad[o->pb] : 0;
        if (!c->gset[o->out]) continue;
        switch (o->kind) {
        case B_CONV:
            if (dx) tc_conv_bwd_in(&o->g, B, dy, m->params[o->pw].w, dx);
            tc_conv_bwd_w(&o->g, B, dy, x, dw, db); break;
        case B_LINEAR:
            if (dx) tc_linear_bwd_in(B, o->g.cin, o->g.cout, dy, m->params[o->pw].w, dx);
            tc_linear_bwd_w(B, o->g.cin, o->g.cout, dy, x, dw, db); break;
        case B_BN: {
            tc_bnstate *s = &m->bns[o->bn];
            float *mean = c->bnsave[o->bn], *inv = mean + s->c;
            if (o->bn_train) tc_bn_train_bwd(B, s->c, hw, dy, x, m->params[o->pw].w, mean, inv, dx, dw, db);
            else tc_bn_eval_bwd(B, s->c, hw, dy, x, m->params[o->pw].w, s->rmean, inv, dx, dw, db);
            break; }
        case B_RELU: if (dx) tc_relu_bwd(len, c->act[o->out], dy, dx); break;
        case B_RELU6: if (dx) tc_relu6_bwd(len, x, dy, dx); break;
        case B_ADD: give(m, c, o->in0, B, dy); give(m, c, o->in1, B, dy); continue;
        case B_MAXPOOL: if (dx) tc_maxpool_bwd(&o->g, B, x, dy, dx, c->plane); break;
        case B_AVGPOOL: if (dx) tc_avgpool_bwd(&o->g, B, dy, dx, c->plane); break;
        case B_GAP: if (dx) tc_gap_bwd(B, o->g.cin, hw, dy, dx); break;
        default: if (dx) memcpy(dx, dy, (size_t)B * m->bnumel[o->in0] * ES); break;
        }
        if (dx) give(m, c, o->in0, B, dx);
    }
}

static int has_bn_train(const tc_model *m)
{
    int i;
    for (i = 0; i < m->n_bops; i++) if (m->bops[i].kind == B_BN && m->bops[i].bn_train) return 1;
    return 0;
}

/* a float row rounded into tc_t storage (nothing when the row is that storage) */
static void store_row(tc_t *dst, const float *row, int L)
{
    int i;
    if ((const void *)dst != (const void *)row)
        for (i = 0; i < L; i++) dst[i] = (tc_t)row[i];
}

/* the float latent of INT8 codes q (dequantized in double, rounded to float), through the
 * replay quantizer when quantize is set */
static void new_latent(const tc_model *m, tc_ctx *c, const int8_t *q, int quantize, float *row)
{
    int i, L = m->bnumel[0];
    for (i = 0; i < L; i++) row[i] = (float)((double)((int32_t)q[i] - m->lat_zp) * m->lat_scale);
    if (quantize) {   /* the new latent as the memory would return it */
        tc_latent_encode(L, m->lat_hw, m->per_channel, row, m->qscale, m->qzp, (1 << m->bits) - 1, c->codes);
        tc_latent_decode(L, m->lat_hw, m->per_channel, c->codes, m->qscale, m->qzp, row);
    }
}

static void draw_replays(const tc_model *m, tc_ctx *c, int n, int k)
{
    int i, L = m->bnumel[0];
    for (i = 0; i < *m->size; i++) c->idx[i] = i;
    for (i = 0; i < k; i++) {
        int j = i + (int)tc_rng_below(m->rng, (uint32_t)(*m->size - i)), t = c->idx[i];
        c->idx[i] = c->idx[j]; c->idx[j] = t;
    }
    for (i = 0; i < k; i++) {
        float *row = LROW(c, n + i, L);
        tc_unpack(L, m->bits, m->rows + (size_t)c->idx[i] * m->row_bytes, c->codes);
        tc_latent_decode(L, m->lat_hw, m->per_channel, c->codes, m->qscale, m->qzp, row);
        store_row(c->act[0] + (size_t)(n + i) * L, row, L);
        c->blabels[n + i] = m->labels[c->idx[i]];
    }
}

/* reservoir sampling over all offered samples (Algorithm R) */
static int dest_reservoir(const tc_model *m)
{
    int dest = -1;
    if (*m->size < m->capacity) dest = (*m->size)++;
    else {
        uint32_t j = tc_rng_below(m->rng, (uint32_t)*m->seen + 1u);
        if (j < (uint32_t)m->capacity) dest = (int)j;
    }
    return dest;
}

/* AR1*: experience e keeps a reservoir sample of quota = capacity / (e + 1) slots; a kept
 * sample takes a free slot, else a random slot of an earlier experience. cur / old list the
 * slots of this / other experiences (ascending, then swap-removal), as cl/memory.py. */
static int dest_ar1(const tc_model *m, tc_ctx *c, int t, int *ncur, int *nold)
{
    int32_t quota = m->capacity / (*m->experience + 1), slot;
    if (*ncur < quota) {
        if (*m->size < m->capacity) slot = (*m->size)++;
        else if (*nold == 0) return -1;   /* cannot happen: a full memory below quota has old slots */
        else {
            int k = (int)tc_rng_below(m->rng, (uint32_t)*nold);
            slot = c->idx2[k];
            c->idx2[k] = c->idx2[--(*nold)];
        }
        c->idx[(*ncur)++] = slot;
        return slot;
    } else {
        uint32_t j = tc_rng_below(m->rng, (uint32_t)(*m->cur_seen + t) + 1u);
        return j < (uint32_t)quota ? c->idx[j] : -1;
    }
}

static void remember(const tc_model *m, tc_ctx *c, int n, const int32_t *labels)
{
    int s, ncur = 0, nold = 0, L = m->bnumel[0];
    if (m->policy == 1) {
        if (*m->experience > *m->cur_exp) { *m->cur_exp = *m->experience; *m->cur_seen = 0; }
        for (s = 0; s < *m->size; s++) {
            if (m->exps[s] == *m->experience) c->idx[ncur++] = s;
            else c->idx2[nold++] = s;
        }
    }
    for (s = 0; s < n; s++) {
        int dest = m->policy == 1 ? dest_ar1(m, c, s, &ncur, &nold) : dest_reservoir(m);
        float *row = LROW(c, s, L);
        (*m->seen)++;
        if (dest < 0) continue;
        if (TC_FP16) new_latent(m, c, c->latcodes + (size_t)s * L, m->quantize_new, row);
        tc_latent_encode(L, m->lat_hw, m->per_channel, row, m->qscale, m->qzp, (1 << m->bits) - 1, c->codes);
        tc_pack(L, m->bits, c->codes, m->rows + (size_t)dest * m->row_bytes);
        m->labels[dest] = (int16_t)labels[s];
        m->exps[dest] = (int16_t)*m->experience;
    }
    if (m->policy == 1) *m->cur_seen += n;
}

int tc_set_experience(const tc_model *m, int32_t e)
{
    if (!m) return TINYCL_ENULL;
    if (e < 0 || e > 32767 || (m->policy == 1 && e < *m->cur_exp)) return TINYCL_EEXP;
    *m->experience = e;
    return TINYCL_OK;
}

/* the loss scaler's verdict on this step (numerics/lossscale.py, LossScaler.update): 1 = take
 * the step; dynamic: an overflow halves the scale (not below min), growth clean steps double it */
static int scaler_update(const tc_model *m, tc_ctx *c)
{
    int i, k, finite = 1;
    if (!m->scaler) return 1;
    for (i = 0; i < m->n_params && finite; i++)
        for (k = 0; k < m->params[i].numel; k++) {
            float v = (float)c->pgrad[i][k];
            if (*m->scale != 1.0f) v = v / *m->scale;
            if (!isfinite(v)) { finite = 0; break; }
        }
    if (!finite) {
        if (m->scaler == 2) {
            float half = *m->scale / 2.0f;
            *m->scale = half < m->min_scale ? m->min_scale : half;
            *m->good_steps = 0;
        }
        (*m->skipped)++;
        return 0;
    }
    if (m->scaler == 2 && ++*m->good_steps >= m->growth) {
        float twice = *m->scale * 2.0f;
        *m->scale = twice > m->max_scale ? m->max_scale : twice;
        *m->good_steps = 0;
    }
    return 1;
}

int tc_learn(const tc_model *m, tc_ctx *c, const float *x, const int32_t *labels, int n, float *loss)
{
    int s, i, k, B, L;
    float l, scale;
    if (!m || !c || !x || !labels) return TINYCL_ENULL;
    if (!c->ready) return TINYCL_EINIT;
    if (n < 1 || n > m->max_new) return TINYCL_EBATCH;
    for (s = 0; s < n; s++) if (labels[s] < 0 || labels[s] >= m->classes) return TINYCL_ELABEL;
    k = *m->size < m->replay_batch ? *m->size : m->replay_batch;
    B = n + k;
    L = m->bnumel[0];
    if (B < 2 && has_bn_train(m)) return TINYCL_EBATCH;
    for (s = 0; s < n; s++) {
        const int8_t *q = front(m, c, x + (size_t)s * m->fnumel[0]);
        float *row = LROW(c, s, L);
        memcpy(c->latcodes + (size_t)s * L, q, (size_t)L);
        new_latent(m, c, q, m->quantize_new, row);
        store_row(c->act[0] + (size_t)s * L, row, L);
        c->blabels[s] = labels[s];
    }
    draw_replays(m, c, n, k);
    forward(m, c, B, 1);
    memset(c->gset, 0, (size_t)m->n_bt);
    scale = m->scaler ? *m->scale : 1.0f;
    l = tc_softmax_ce(B, m->classes, c->act[m->n_bt - 1], c->blabels, scale, c->grad[m->n_bt - 1]);
    c->gset[m->n_bt - 1] = 1;
    backward(m, c, B);
    if (scaler_update(m, c)) {
        for (i = 0; i < m->n_params; i++)
            tc_sgd(m->params[i].numel, m->params[i].value, m->params[i].mom, c->pgrad[i], scale, m->lr,
                   m->momentum, m->wd);
        refresh_weights(m);
    }
    remember(m, c, n, labels);
    if (loss) *loss = l;
    return TINYCL_OK;
}

/* evaluation-mode forward of one sample: its logits end up in act[n_bt - 1] */
static int eval_one(const tc_model *m, tc_ctx *c, const float *x)
{
    const int8_t *q;
    float *row;
    if (!m || !c || !x) return TINYCL_ENULL;
    if (!c->ready) return TINYCL_EINIT;
    q = front(m, c, x);
    row = LROW(c, 0, m->bnumel[0]);
    new_latent(m, c, q, 0, row);
    store_row(c->act[0], row, m->bnumel[0]);
    forward(m, c, 1, 0);
    return TINYCL_OK;
}

int tc_logits(const tc_model *m, tc_ctx *c, const float *x, float *logits)
{
    int k, r;
    if (!logits) return TINYCL_ENULL;
    r = eval_one(m, c, x);
    if (r != TINYCL_OK) return r;
    for (k = 0; k < m->classes; k++) logits[k] = (float)c->act[m->n_bt - 1][k];
    return TINYCL_OK;
}

int tc_predict(const tc_model *m, tc_ctx *c, const float *x, int32_t *cls)
{
    int k, r;
    const tc_t *l;
    if (!cls) return TINYCL_ENULL;
    r = eval_one(m, c, x);
    if (r != TINYCL_OK) return r;
    l = c->act[m->n_bt - 1];
    *cls = 0;
    for (k = 1; k < m->classes; k++) if ((float)l[k] > (float)l[*cls]) *cls = k;
    return TINYCL_OK;
}
