"""The back's FP32 kernels in the C runtime's fixed summation order (the bit-exact reference).

Each sum starts at +0 and adds one term at a time, k = 0..K-1, with separate float32
torch multiplies and adds (each IEEE-rounded, never fused), vectorised over the
outputs; the C in ``export/c/tc_f32*.c`` runs the same operations in loops. Orders:

- conv forward: k over the im2col rows (cin of the group, kh, kw); bias added after;
- conv input gradient: the conv of the zero-inserted, padded dy with the flipped,
  transposed kernel, k over (cout of the group, kh, kw);
- conv / linear weight gradient: k over (sample, output position); bias: the same;
- batch norm: per channel over (sample, position);
- pools: window in row-major order; backward scatters outputs in row-major order.

Against float64 autograd the tests see relative errors near ``K * 2^-24`` (the
usual bound for a recursive sum of K terms), see tests/test_export_ref.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinycl.kernels.conv import _dilate_pad, _transposed_kernel

F32 = torch.float32


def c32(v: float) -> torch.Tensor:
    """A float32 0-d tensor (a constant of the fixed-order arithmetic)."""
    return torch.tensor(float(v), dtype=F32)


def sqrt32(v: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 square root (as C's ``sqrtf``): torch's float32 CPU sqrt
    is not always correctly rounded (about 15% of random inputs differ by an ulp here);
    sqrt in float64 rounded once to float32 is (53 >= 2 * 24 + 2: double rounding is
    innocuous)."""
    return torch.sqrt(v.to(torch.float64)).to(F32)


def _seqsum(terms) -> torch.Tensor:
    acc = None
    for t in terms:
        acc = torch.zeros_like(t) + t if acc is None else acc + t
    return acc


def conv_fwd(x, w, b, stride, padding, groups):
    n, cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    ho = (h + 2 * padding[0] - kh) // stride[0] + 1
    wo = (wd + 2 * padding[1] - kw) // stride[1] + 1
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride).view(n, groups, cg * kh * kw, ho * wo)
    wm = w.reshape(groups, cout // groups, cg * kh * kw)
    acc = torch.zeros(n, groups, cout // groups, ho * wo, dtype=F32)
    for k in range(cg * kh * kw):
        acc = acc + wm[:, :, k].reshape(1, groups, -1, 1) * cols[:, :, k, :].reshape(n, groups, 1, -1)
    y = acc.reshape(n, cout, ho, wo)
    return y if b is None else y + b.view(1, -1, 1, 1)


def conv_bwd_in(dy, w, x_shape, stride, padding, groups):
    dyp = _dilate_pad(dy, x_shape[-2:], tuple(w.shape[-2:]), stride, padding)
    return conv_fwd(dyp, _transposed_kernel(w, groups), None, (1, 1), (0, 0), groups)


def conv_bwd_w(dy, x, w_shape, stride, padding, groups, bias):
    n = x.shape[0]
    cout, cg, kh, kw = w_shape
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)
    L = cols.shape[-1]
    cols = cols.view(n, groups, cg * kh * kw, L).permute(1, 0, 3, 2).reshape(groups, n * L, cg * kh * kw)
    dym = dy.reshape(n, groups, cout // groups, L).permute(1, 2, 0, 3).reshape(groups, cout // groups, n * L)
    dw = torch.zeros(groups, cout // groups, cg * kh * kw, dtype=F32)
    for t in range(n * L):
        dw = dw + dym[:, :, t:t + 1] * cols[:, t:t + 1, :]
    db = _seqsum(dym[:, :, t] for t in range(n * L)).reshape(cout) if bias else None
    return dw.reshape(w_shape), db


def linear_fwd(x, w, b):
    acc = torch.zeros(x.shape[0], w.shape[0], dtype=F32)
    for k in range(w.shape[1]):
        acc = acc + x[:, k:k + 1] * w[:, k].view(1, -1)
    return acc if b is None else acc + b.view(1, -1)


def linear_bwd_in(dy, w):
    acc = torch.zeros(dy.shape[0], w.shape[1], dtype=F32)
    for o in range(w.shape[0]):
        acc = acc + dy[:, o:o + 1] * w[o].view(1, -1)
    return acc


def linear_bwd_w(dy, x, bias):
    acc = torch.zeros(dy.shape[1], x.shape[1], dtype=F32)
    for s in range(x.shape[0]):
        acc = acc + dy[s].view(-1, 1) * x[s].view(1, -1)
    db = _seqsum(dy[s] for s in range(dy.shape[0])) if bias else None
    return acc, db


def _per_channel(x):
    """(C, N*H*W) view with the (sample, position) order of the C loops."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def _chsum(t):
    return _seqsum(t[:, i] for i in range(t.shape[1]))


def _v(t):
    return t.view(1, -1, 1, 1)


def bn_train_fwd(x, g, b, eps, mom, rmean, rvar):
    """Returns ``(y, mean, inv, new_rmean, new_rvar)``."""
    m = c32(x.numel() // x.shape[1])
    xt = _per_channel(x)
    mean = _chsum(xt) / m
    d = xt - mean.view(-1, 1)
    var = _chsum(d * d) / m
    inv = c32(1.0) / sqrt32(var + c32(eps))
    y = ((x - _v(mean)) * _v(inv)) * _v(g) + _v(b)
    keep, mo = c32(1.0 - mom), c32(mom)
    unb = m / (m - c32(1.0))
    return y, mean, inv, rmean * keep + mean * mo, rvar * keep + (var * unb) * mo


def bn_train_bwd(dy, x, g, mean, inv):
    m = c32(x.numel() // x.shape[1])
    sb = _chsum(_per_channel(dy))
    xhat = (x - _v(mean)) * _v(inv)
    sg = _chsum(_per_channel(dy * xhat))
    dx = _v(g * inv) * ((dy - _v(sb / m)) - xhat * _v(sg / m))
    return dx, sg, sb


def bn_eval_fwd(x, g, b, rmean, rvar, eps):
    inv = c32(1.0) / sqrt32(rvar + c32(eps))
    return ((x - _v(rmean)) * _v(inv)) * _v(g) + _v(b), inv


def bn_eval_bwd(dy, x, g, rmean, inv):
    xhat = (x - _v(rmean)) * _v(inv)
    return dy * _v(g * inv), _chsum(_per_channel(dy * xhat)), _chsum(_per_channel(dy))


def relu_fwd(x):
    return torch.where(x > 0, x, torch.zeros_like(x))


def relu_bwd(y, dy):
    return torch.where(y > 0, dy, torch.zeros_like(dy))


def relu6_fwd(x):
    return torch.where(x > 0, torch.where(x < 6, x, torch.full_like(x, 6.0)), torch.zeros_like(x))


def relu6_bwd(x, dy):
    return torch.where((x > 0) & (x < 6), dy, torch.zeros_like(dy))


def _windows(x, k, s, p, fill):
    """(N*C, K, L) windows of x padded with ``fill``, and the flat input index of each entry (-1: pad)."""
    n, c, h, w = x.shape
    xp = F.pad(x.reshape(n * c, 1, h, w), (p[1], p[1], p[0], p[0]), value=fill)
    cols = F.unfold(xp, k, stride=s)
    pos = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)
    idx = F.unfold(F.pad(pos, (p[1], p[1], p[0], p[0]), value=-1.0), k, stride=s)[0].to(torch.int64)
    return cols, idx


def _out_hw(shape, k, s, p):
    return (shape[2] + 2 * p[0] - k[0]) // s[0] + 1, (shape[3] + 2 * p[1] - k[1]) // s[1] + 1


def maxpool_fwd(x, k, s, p):
    """Returns ``(y, argmax)``; the first maximum of a row-major window wins."""
    n, c = x.shape[:2]
    cols, idx = _windows(x, k, s, p, float("-inf"))
    best, arg = cols[:, 0].clone(), idx[0].expand(n * c, -1).clone()
    for j in range(1, cols.shape[1]):
        upd = cols[:, j] > best
        best = torch.where(upd, cols[:, j], best)
        arg = torch.where(upd, idx[j].expand(n * c, -1), arg)
    ho, wo = _out_hw(x.shape, k, s, p)
    return best.view(n, c, ho, wo), arg


def maxpool_bwd(dy, arg, x_shape):
    n, c, h, w = x_shape
    dx = torch.zeros(n * c, h * w, dtype=F32)
    rows = torch.arange(n * c)
    d = dy.reshape(n * c, -1)
    for q in range(d.shape[1]):
        dx[rows, arg[:, q]] = dx[rows, arg[:, q]] + d[:, q]
    return dx.view(x_shape)


def avgpool_fwd(x, k, s, p):
    n, c = x.shape[:2]
    cols, _ = _windows(x, k, s, p, 0.0)
    ho, wo = _out_hw(x.shape, k, s, p)
    return (_seqsum(cols[:, j] for j in range(cols.shape[1])) / c32(k[0] * k[1])).view(n, c, ho, wo)


def avgpool_bwd(dy, x_shape, k, s, p):
    n, c, h, w = x_shape
    _, idx = _windows(torch.zeros(1, 1, h, w), k, s, p, 0.0)
    g = (dy / c32(k[0] * k[1])).reshape(n * c, -1)
    dx = torch.zeros(n * c, h * w, dtype=F32)
    for q in range(g.shape[1]):
        for j in range(idx.shape[0]):
            at = int(idx[j, q])
            if at >= 0:
                dx[:, at] = dx[:, at] + g[:, q]
    return dx.view(x_shape)


def gap_fwd(x):
    n, c = x.shape[:2]
    t = x.reshape(n, c, -1)
    return (_seqsum(t[:, :, i] for i in range(t.shape[2])) / c32(t.shape[2])).view(n, c, 1, 1)


def gap_bwd(dy, x_shape):
    hw = x_shape[2] * x_shape[3]
    return (dy.reshape(x_shape[0], x_shape[1], 1, 1) / c32(hw)).expand(x_shape).contiguous()


# ----------------------------------------------------------------------------- exp, log, loss

_H = float.fromhex
LOG2E, C1, C2 = _H("0x1.715476p+0"), _H("0x1.63p-1"), _H("-0x1.bd0106p-13")
PS = [_H(v) for v in ("0x1.a0d2cep-13", "0x1.6e879cp-10", "0x1.11121p-7", "0x1.555382p-5", "0x1.555554p-3",
                      "0x1p-1")]
LG = [_H(v) for v in ("0x1.555554p-1", "0x1.999c26p-2", "0x1.23d3dcp-2", "0x1.f13c4cp-3")]
LN2_HI, LN2_LO, SQRT2 = _H("0x1.62e3p-1"), _H("0x1.2fefa2p-17"), _H("0x1.6a09e6p+0")


def expf(x: torch.Tensor) -> torch.Tensor:
    """The C runtime's ``tc_expf`` (Cephes expf) in the same float32 operations."""
    x = x.clamp(-87.0, 88.0)
    k = torch.floor(x * c32(LOG2E) + c32(0.5))
    r = x - k * c32(C1)
    r = r - k * c32(C2)
    z = r * r
    p = torch.full_like(x, PS[0])
    for c in PS[1:]:
        p = p * r + c32(c)
    y = p * z + r + c32(1.0)
    scale = ((k.to(torch.int32) + 127) << 23).view(F32)
    return y * scale


def logf(x: torch.Tensor) -> torch.Tensor:
    """The C runtime's ``tc_logf`` (positive normal inputs) in the same float32 operations."""
    u = x.contiguous().view(torch.int32)
    e = (u >> 23) - 127
    m = ((u & 0x7FFFFF) | 0x3F800000).view(F32)
    big = m > c32(SQRT2)
    m = torch.where(big, m * c32(0.5), m)
    e = e + big.to(torch.int32)
    f = m - c32(1.0)
    s = f / (c32(2.0) + f)
    z = s * s
    r = z * (c32(LG[0]) + z * (c32(LG[1]) + z * (c32(LG[2]) + z * c32(LG[3]))))
    hfsq = c32(0.5) * f * f
    lm = f - (hfsq - s * (hfsq + r))
    ef = e.to(F32)
    return ef * c32(LN2_HI) + (lm + ef * c32(LN2_LO))


def softmax_ce(logits: torch.Tensor, labels: torch.Tensor):
    """``(mean loss, dlogits)`` as ``tc_softmax_ce``."""
    n, classes = logits.shape
    mx = logits.max(dim=1, keepdim=True).values
    e = expf(logits - mx)
    s = _seqsum(e[:, k] for k in range(classes))
    ly = logits.gather(1, labels.view(-1, 1)).view(-1)
    per = logf(s) - (ly - mx.view(-1))
    total = _seqsum(per[i:i + 1] for i in range(n))
    p = e / s.view(-1, 1)
    onehot = torch.zeros_like(p, dtype=torch.bool)
    onehot[torch.arange(n), labels] = True
    d = torch.where(onehot, p - c32(1.0), p) / c32(n)
    return (total / c32(n))[0], d


def sgd(p, buf, g, lr, momentum, wd):
    """``(new p, new buf)`` as ``tc_sgd`` (buf starts at zero: the first step gives buf = g)."""
    if wd != 0:
        g = g + c32(wd) * p
    if momentum != 0:
        buf = buf * c32(momentum) + g
        g = buf
    return p - c32(lr) * g, buf
