/* The learner: INT8 front per sample, latent quantizer, packed replay memory with
 * reservoir replacement, FP32 back trained by SGD; all buffers carved from one arena.
 * Arena order (export/planner.py mirrors it): front tensors (at the planner's offsets:
 * tensors never alive together share bytes), latent codes, back
 * activations, back gradients, a scratch gradient (largest tensor but the
 * input), parameter gradients, BN batch
 * statistics, batch labels, two lists of replay slots, one row of codes,
 * gradient flags;
 * every block rounded up to 8 bytes. */
#include <string.h>
#include "tc_engine.h"

#define ALIGN8(v) (((v) + 7u) & ~(size_t)7u)

static int batch_max(const tc_model *m) { return m->max_new + m->replay_batch; }

static size_t walk(const tc_model *m, tc_ctx *c, char *base)
{
    size_t off = 0, big = 0;
    int t, B = batch_max(m);
#define TAKE(ptr, type, bytes) do { if (c) ptr = (type)(void *)(base + off); off += ALIGN8((size_t)(bytes)); } while (0)
    if (c) for (t = 0; t < m->n_ft; t++) c->ft[t] = (int8_t *)(void *)(base + off + m->foff[t]);
    off += ALIGN8((size_t)m->front_bytes);
    TAKE(c->latcodes, int8_t *, (size_t)m->max_new * m->bnumel[0]);
    for (t = 0; t < m->n_bt; t++) TAKE(c->act[t], float *, (size_t)B * m->bnumel[t] * 4);
    for (t = 1; t < m->n_bt; t++) TAKE(c->grad[t], float *, (size_t)B * m->bnumel[t] * 4);
    for (t = 1; t < m->n_bt; t++) if ((size_t)m->bnumel[t] > big) big = (size_t)m->bnumel[t];
    TAKE(c->tmp, float *, (size_t)B * big * 4);
    for (t = 0; t < m->n_params; t++) TAKE(c->pgrad[t], float *, (size_t)m->params[t].numel * 4);
    for (t = 0; t < m->n_bn; t++) TAKE(c->bnsave[t], float *, (size_t)m->bns[t].c * 8);
    TAKE(c->blabels, int32_t *, (size_t)B * 4);
    TAKE(c->idx, int32_t *, (size_t)m->capacity * 4);
    TAKE(c->idx2, int32_t *, (size_t)m->capacity * 4);
    TAKE(c->codes, uint8_t *, m->bnumel[0]);
    TAKE(c->gset, uint8_t *, m->n_bt);
#undef TAKE
    return off;
}

size_t tc_arena_need(const tc_model *m) { return walk(m, 0, 0); }

int tc_init(const tc_model *m, tc_ctx *c, int8_t **ft, float **act, float **grad, float **pgrad,
            float **bnsave, void *arena, size_t size)
{
    if (!m || !c || !arena) return TINYCL_ENULL;
    if (((uintptr_t)arena & 7u) || size < tc_arena_need(m)) return TINYCL_EARENA;  /* nothing changed */
    c->ft = ft; c->act = act; c->grad = grad; c->pgrad = pgrad; c->bnsave = bnsave;
    grad[0] = 0;
    walk(m, c, (char *)arena);
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
        const float *x = c->act[o->in0];
        float *y = c->act[o->out];
        int len = B * m->bnumel[o->out], hw = o->g.h * o->g.w;
        const float *w = o->pw >= 0 ? m->params[o->pw].value : 0, *b = o->pb >= 0 ? m->params[o->pb].value : 0;
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
        default: memcpy(y, x, (size_t)len * 4); break;
        }
    }
}

/* grad[t] = g (first contribution) or grad[t] + g (later ones, existing + new) */
static void give(const tc_model *m, tc_ctx *c, int t, int B, const float *g)
{
    int i, len = B * m->bnumel[t];
    if (t == 0) return;
    if (!c->gset[t]) { if (c->grad[t] != g) memcpy(c->grad[t], g, (size_t)len * 4); c->gset[t] = 1; return; }
    for (i = 0; i < len; i++) c->grad[t][i] = c->grad[t][i] + g[i];
}

static void backward(const tc_model *m, tc_ctx *c, int B)
{
    int i;
    for (i = m->n_bops - 1; i >= 0; i--) {
        const tc_bop *o = &m->bops[i];
        const float *x = c->act[o->in0], *dy = c->grad[o->out];
        float *dx = o->in0 ? (c->gset[o->in0] ? c->tmp : c->grad[o->in0]) : 0;
        int len = B * m->bnumel[o->out], hw = o->g.h * o->g.w;
        float *dw = o->pw >= 0 ? c->pgrad[o->pw] : 0, *db = o->pb >= 0 ? c->pgrad[o->pb] : 0;
        if (!c->gset[o->out]) continue;
        switch (o->kind) {
        case B_CONV:
            if (dx) tc_conv_bwd_in(&o->g, B, dy, m->params[o->pw].value, dx);
            tc_conv_bwd_w(&o->g, B, dy, x, dw, db); break;
        case B_LINEAR:
            if (dx) tc_linear_bwd_in(B, o->g.cin, o->g.cout, dy, m->params[o->pw].value, dx);
            tc_linear_bwd_w(B, o->g.cin, o->g.cout, dy, x, dw, db); break;
        case B_BN: {
            tc_bnstate *s = &m->bns[o->bn];
            float *mean = c->bnsave[o->bn], *inv = mean + s->c;
            if (o->bn_train) tc_bn_train_bwd(B, s->c, hw, dy, x, m->params[o->pw].value, mean, inv, dx, dw, db);
            else tc_bn_eval_bwd(B, s->c, hw, dy, x, m->params[o->pw].value, s->rmean, inv, dx, dw, db);
            break; }
        case B_RELU: if (dx) tc_relu_bwd(len, c->act[o->out], dy, dx); break;
        case B_RELU6: if (dx) tc_relu6_bwd(len, x, dy, dx); break;
        case B_ADD: give(m, c, o->in0, B, dy); give(m, c, o->in1, B, dy); continue;
        case B_MAXPOOL: if (dx) tc_maxpool_bwd(&o->g, B, x, dy, dx); break;
        case B_AVGPOOL: if (dx) tc_avgpool_bwd(&o->g, B, dy, dx); break;
        case B_GAP: if (dx) tc_gap_bwd(B, o->g.cin, hw, dy, dx); break;
        default: if (dx) memcpy(dx, dy, (size_t)B * m->bnumel[o->in0] * 4); break;
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

static void draw_replays(const tc_model *m, tc_ctx *c, int n, int k)
{
    int i, L = m->bnumel[0];
    for (i = 0; i < *m->size; i++) c->idx[i] = i;
    for (i = 0; i < k; i++) {
        int j = i + (int)tc_rng_below(m->rng, (uint32_t)(*m->size - i)), t = c->idx[i];
        c->idx[i] = c->idx[j]; c->idx[j] = t;
    }
    for (i = 0; i < k; i++) {
        tc_unpack(L, m->bits, m->rows + (size_t)c->idx[i] * m->row_bytes, c->codes);
        tc_latent_decode(L, m->lat_hw, m->per_channel, c->codes, m->qscale, m->qzp, c->act[0] + (size_t)(n + i) * L);
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
        (*m->seen)++;
        if (dest < 0) continue;
        tc_latent_encode(L, m->lat_hw, m->per_channel, c->act[0] + (size_t)s * L, m->qscale, m->qzp,
                         (1 << m->bits) - 1, c->codes);
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

int tc_learn(const tc_model *m, tc_ctx *c, const float *x, const int32_t *labels, int n, float *loss)
{
    int s, i, k, B, L = m->bnumel[0];
    float l;
    if (!m || !c || !x || !labels) return TINYCL_ENULL;
    if (!c->ready) return TINYCL_EINIT;
    if (n < 1 || n > m->max_new) return TINYCL_EBATCH;
    for (s = 0; s < n; s++) if (labels[s] < 0 || labels[s] >= m->classes) return TINYCL_ELABEL;
    k = *m->size < m->replay_batch ? *m->size : m->replay_batch;
    B = n + k;
    if (B < 2 && has_bn_train(m)) return TINYCL_EBATCH;
    for (s = 0; s < n; s++) {
        const int8_t *q = front(m, c, x + (size_t)s * m->fnumel[0]);
        memcpy(c->latcodes + (size_t)s * L, q, (size_t)L);
        for (i = 0; i < L; i++)
            c->act[0][(size_t)s * L + i] = (float)((double)((int32_t)q[i] - m->lat_zp) * m->lat_scale);
        if (m->quantize_new) {   /* train on the new latent as the memory would return it */
            tc_latent_encode(L, m->lat_hw, m->per_channel, c->act[0] + (size_t)s * L, m->qscale, m->qzp,
                             (1 << m->bits) - 1, c->codes);
            tc_latent_decode(L, m->lat_hw, m->per_channel, c->codes, m->qscale, m->qzp, c->act[0] + (size_t)s * L);
        }
        c->blabels[s] = labels[s];
    }
    draw_replays(m, c, n, k);
    forward(m, c, B, 1);
    memset(c->gset, 0, (size_t)m->n_bt);
    l = tc_softmax_ce(B, m->classes, c->act[m->n_bt - 1], c->blabels, c->grad[m->n_bt - 1]);
    c->gset[m->n_bt - 1] = 1;
    backward(m, c, B);
    for (i = 0; i < m->n_params; i++)
        tc_sgd(m->params[i].numel, m->params[i].value, m->params[i].mom, c->pgrad[i], m->lr, m->momentum, m->wd);
    remember(m, c, n, labels);
    if (loss) *loss = l;
    return TINYCL_OK;
}

int tc_logits(const tc_model *m, tc_ctx *c, const float *x, float *logits)
{
    int i, L;
    const int8_t *q;
    if (!m || !c || !x || !logits) return TINYCL_ENULL;
    if (!c->ready) return TINYCL_EINIT;
    L = m->bnumel[0];
    q = front(m, c, x);
    for (i = 0; i < L; i++) c->act[0][i] = (float)((double)((int32_t)q[i] - m->lat_zp) * m->lat_scale);
    forward(m, c, 1, 0);
    memcpy(logits, c->act[m->n_bt - 1], (size_t)m->classes * 4);
    return TINYCL_OK;
}

int tc_predict(const tc_model *m, tc_ctx *c, const float *x, int32_t *cls)
{
    int k, r;
    const float *l;
    if (!cls) return TINYCL_ENULL;
    r = tc_logits(m, c, x, c && c->ready ? c->tmp : 0);
    if (r != TINYCL_OK) return r;
    l = c->tmp;
    *cls = 0;
    for (k = 1; k < m->classes; k++) if (l[k] > l[*cls]) *cls = k;
    return TINYCL_OK;
}
