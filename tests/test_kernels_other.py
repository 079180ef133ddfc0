"""Linear, activations, pooling, batch norm, dropout, flatten, losses, optimizers vs torch (float64)."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tinycl.kernels import activations as A
from tinycl.kernels import linear as L
from tinycl.kernels import loss as LOSS
from tinycl.kernels import misc as M
from tinycl.kernels import norm as N
from tinycl.kernels import pool as P
from tinycl.kernels.optim import SGD, Adam

D = torch.float64


def close(a, b, tol=1e-10):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max() <= tol * b.abs().max().clamp_min(1.0), float((a - b).abs().max())


def grads_of(fn, *xs, seed=0):
    xs = [x.detach().clone().requires_grad_(True) for x in xs]
    y = fn(*xs)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=D)
    y.backward(dy)
    return y.detach(), dy, [x.grad for x in xs]


@given(st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.booleans())
def test_linear(n, fin, fout, bias):
    g = torch.Generator().manual_seed(n * 100 + fin)
    x, w, b = torch.randn(n, fin, dtype=D, generator=g), torch.randn(fout, fin, dtype=D, generator=g), \
        torch.randn(fout, dtype=D, generator=g)
    args = (x, w, b) if bias else (x, w)
    y, dy, gr = grads_of(lambda *a: F.linear(*a), *args)
    close(L.linear_forward(x, w, b if bias else None), y)
    close(L.linear_backward_input(dy, w), gr[0])
    dw, db = L.linear_backward_weight(dy, x, bias)
    close(dw, gr[1])
    if bias:
        close(db, gr[2])


@pytest.mark.parametrize("name", ["relu", "relu6", "leaky"])
def test_activations(name):
    x = torch.randn(3, 4, 5, 5, dtype=D) * 5
    x[0, 0, 0, :3] = torch.tensor([0.0, 6.0, -0.0], dtype=D)  # edges
    if name == "relu":
        y, dy, (dx,) = grads_of(F.relu, x)
        close(A.relu_forward(x), y); close(A.relu_backward(dy, A.relu_forward(x)), dx)
    elif name == "relu6":
        y, dy, (dx,) = grads_of(F.relu6, x)
        close(A.relu6_forward(x), y); close(A.relu6_backward(dy, x), dx)
    else:
        y, dy, (dx,) = grads_of(lambda t: F.leaky_relu(t, 0.1), x)
        close(A.leaky_relu_forward(x, 0.1), y); close(A.leaky_relu_backward(dy, x, 0.1), dx)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(2, 3), st.integers(1, 3), st.integers(0, 1),
       st.integers(0, 4), st.booleans())
def test_pools(n, c, k, s, p, extra, avg):
    p = min(p, k // 2)
    h = k + extra
    x = torch.randn(n, c, h, h + 1, dtype=D, generator=torch.Generator().manual_seed(h * 7 + k))
    if avg:
        y, dy, (dx,) = grads_of(lambda t: F.avg_pool2d(t, k, s, p), x)
        close(P.avgpool_forward(x, k, s, p), y)
        close(P.avgpool_backward(dy, x.shape, k, s, p), dx)
    else:
        y, dy, (dx,) = grads_of(lambda t: F.max_pool2d(t, k, s, p), x)
        yy, idx = P.maxpool_forward(x, k, s, p)
        close(yy, y)
        close(P.maxpool_backward(dy, idx, x.shape), dx)


def test_global_avgpool_flatten():
    x = torch.randn(2, 3, 5, 7, dtype=D)
    y, dy, (dx,) = grads_of(lambda t: F.adaptive_avg_pool2d(t, 1), x)
    close(P.global_avgpool_forward(x), y)
    close(P.global_avgpool_backward(dy, x.shape), dx)
    y, dy, (dx,) = grads_of(lambda t: torch.flatten(t, 1), x)
    close(M.flatten_forward(x), y)
    close(M.flatten_backward(dy, x.shape), dx)


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 5))
def test_batchnorm_train(n, c, hw):
    if n * hw * hw == 1:
        n = 2
    g = torch.Generator().manual_seed(n + 10 * c + 100 * hw)
    x = torch.randn(n, c, hw, hw, dtype=D, generator=g) * 3 + 1
    gamma, beta = torch.randn(c, dtype=D, generator=g), torch.randn(c, dtype=D, generator=g)
    rm, rv = torch.zeros(c, dtype=D), torch.ones(c, dtype=D)
    rm_ref, rv_ref = rm.clone(), rv.clone()
    y, dy, (dx, dg, db) = grads_of(lambda t, a, b: F.batch_norm(t, rm_ref, rv_ref, a, b, True, 0.1, 1e-5),
                                   x, gamma, beta)
    yy, cache = N.batchnorm_forward_train(x, gamma, beta, 1e-5)
    N.batchnorm_update_running(rm, rv, cache[2], cache[3], n * hw * hw, 0.1)
    close(yy, y, 1e-9)
    close(rm, rm_ref); close(rv, rv_ref)
    ddx, ddg, ddb = N.batchnorm_backward_train(dy, gamma, cache)
    close(ddx, dx, 1e-8); close(ddg, dg, 1e-9); close(ddb, db)


def test_batchnorm_eval():
    x = torch.randn(3, 4, 5, 5, dtype=D)
    gamma, beta, rm, rv = torch.randn(4, dtype=D), torch.randn(4, dtype=D), torch.randn(4, dtype=D), torch.rand(4, dtype=D) + .5
    y, dy, (dx, dg, db) = grads_of(lambda t, a, b: F.batch_norm(t, rm, rv, a, b, False, 0.1, 1e-5), x, gamma, beta)
    yy, inv = N.batchnorm_forward_eval(x, gamma, beta, rm, rv, 1e-5)
    close(yy, y)
    ddx, ddg, ddb = N.batchnorm_backward_eval(dy, x, gamma, rm, inv)
    close(ddx, dx); close(ddg, dg); close(ddb, db)


def test_dropout_and_add():
    x = torch.randn(4, 100, dtype=D)
    y, mask = M.dropout_forward(x, 0.3, torch.Generator().manual_seed(0))
    assert set(mask.unique().tolist()) <= {0.0, 1 / 0.7}
    close(y, x * mask)
    dy = torch.randn_like(x)
    close(M.dropout_backward(dy, mask), dy * mask)
    assert 0.2 < (mask == 0).double().mean() < 0.4
    a, b = torch.randn(3, dtype=D), torch.randn(3, dtype=D)
    close(M.add_forward(a, b), a + b)


@given(st.integers(1, 6), st.integers(2, 7))
def test_losses(n, k):
    g = torch.Generator().manual_seed(n * k)
    logits = torch.randn(n, k, dtype=D, generator=g) * 10
    t = torch.randint(0, k, (n,), generator=g)
    lg = logits.clone().requires_grad_(True)
    ref = F.cross_entropy(lg, t)
    ref.backward()
    loss, probs = LOSS.cross_entropy_forward(logits, t)
    close(loss, ref.detach())
    close(LOSS.cross_entropy_backward(probs, t), lg.grad)
    y = torch.randn(n, k, dtype=D, generator=g)
    yg = y.clone().requires_grad_(True)
    ref = F.mse_loss(yg, logits)
    ref.backward()
    close(LOSS.mse_forward(y, logits), ref.detach())
    close(LOSS.mse_backward(y, logits), yg.grad)


@pytest.mark.parametrize("kw", [dict(momentum=0.0), dict(momentum=0.9, weight_decay=5e-4),
                                dict(momentum=0.9, nesterov=True), dict(momentum=0.5, dampening=0.1)])
def test_sgd_matches_torch(kw):
    p0 = torch.randn(5, 3, dtype=D)
    tp = p0.clone().requires_grad_(True)
    opt_t = torch.optim.SGD([tp], lr=0.1, **kw)
    ours, p = SGD(lr=0.1, **kw), p0.clone()
    for i in range(4):
        g = torch.randn(5, 3, dtype=D, generator=torch.Generator().manual_seed(i))
        tp.grad = g.clone()
        opt_t.step()
        p = ours.step_one("w", p, g)
    close(p, tp.detach())


def test_adam_matches_torch():
    p0 = torch.randn(7, dtype=D)
    tp = p0.clone().requires_grad_(True)
    opt_t = torch.optim.Adam([tp], lr=0.01, weight_decay=1e-3)
    ours, p = Adam(lr=0.01, weight_decay=1e-3), p0.clone()
    for i in range(5):
        g = torch.randn(7, dtype=D, generator=torch.Generator().manual_seed(i))
        tp.grad = g.clone()
        opt_t.step()
        p = ours.step_one("w", p, g)
    close(p, tp.detach())


def test_batchnorm_aten_path_matches_autograd():
    x = torch.randn(3, 4, 5, 5, dtype=D) * 2 + 1
    gamma, beta = torch.randn(4, dtype=D), torch.randn(4, dtype=D)
    rm, rv = torch.zeros(4, dtype=D), torch.ones(4, dtype=D)
    rm_ref, rv_ref = rm.clone(), rv.clone()
    y, dy, (dx, dg, db) = grads_of(lambda t, a, b: F.batch_norm(t, rm_ref, rv_ref, a, b, True, 0.1, 1e-5),
                                   x, gamma, beta)
    yy, cache = N.batchnorm_train_aten(x, gamma, beta, rm, rv, 1e-5, 0.1)
    close(yy, y, 1e-9); close(rm, rm_ref); close(rv, rv_ref)
    ddx, ddg, ddb = N.batchnorm_backward_aten(dy, gamma, cache)
    close(ddx, dx, 1e-8); close(ddg, dg, 1e-9); close(ddb, db)


@pytest.mark.parametrize("kw", [dict(momentum=0.0), dict(momentum=0.9, weight_decay=5e-4),
                                dict(momentum=0.9, nesterov=True)])
def test_sgd_multi_tensor_step_matches_torch(kw):
    shapes = [(5, 3), (7,), (2, 2, 3)]
    ps = [torch.randn(s, dtype=D) for s in shapes]
    tps = [p.clone().requires_grad_(True) for p in ps]
    opt_t = torch.optim.SGD(tps, lr=0.1, **kw)
    ours = SGD(lr=0.1, **kw)
    for i in range(4):
        gs = [torch.randn(s, dtype=D, generator=torch.Generator().manual_seed(i * 10 + j)) for j, s in enumerate(shapes)]
        for tp, g in zip(tps, gs):
            tp.grad = g.clone()
        opt_t.step()
        ps = ours.step(["a", "b", "c"], ps, gs)
    for p, tp in zip(ps, tps):
        close(p, tp.detach())


def test_batchnorm_eval_aten_matches_autograd():
    x = torch.randn(3, 4, 5, 5, dtype=D)
    gamma, beta, rm, rv = torch.randn(4, dtype=D), torch.randn(4, dtype=D), torch.randn(4, dtype=D), torch.rand(4, dtype=D) + .5
    y, dy, (dx, dg, db) = grads_of(lambda t, a, b: F.batch_norm(t, rm, rv, a, b, False, 0.1, 1e-5), x, gamma, beta)
    close(N.batchnorm_eval_aten(x, gamma, beta, rm, rv), y)
    ddx, ddg, ddb = N.batchnorm_backward_eval_aten(dy, x, gamma, rm, rv)
    close(ddx, dx); close(ddg, dg); close(ddb, db)


def test_op_counts_by_hand():
    # 2x2 max pool over a 1x3x8x8 input -> 48 outputs, 4 compares each
    assert P.pool_ops(48, (2, 2))["forward"] == 192
    assert P.pool_ops(3, None, in_numel=192)["forward"] == 192
    assert M.elementwise_ops(10)["backward_input"] == 10 and M.elementwise_ops(10, False)["backward_input"] == 0
    assert A.elementwise_ops(7) == {"forward": 7, "backward_input": 7, "backward_weight": 0, "update": 0}
    assert N.batchnorm_ops(100, 4)["update"] == 8
    assert SGD(lr=0.1, momentum=0.9, weight_decay=1e-4).ops_per_param() == 4


def test_dropout_p1_gives_zeros_like_torch():
    x = torch.randn(3, 4, dtype=D)
    y, mask = M.dropout_forward(x, 1.0)
    assert torch.equal(y, torch.zeros_like(x)) and torch.equal(M.dropout_backward(torch.ones_like(x), mask), mask)
