"""Graph-op kernels vs torch autograd (float64): elementwise with broadcasting, activations,
shape ops, reductions, stochastic depth, and the op-count / geometry formulas in kernels.macs.

Layers with geometry (norms, conv1d, pools, upsampling) are in test_kernels_graph_layers.py.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.kernels import activations as A
from tinycl.kernels import elementwise as E
from tinycl.kernels import macs
from tinycl.kernels import misc as M
from tinycl.kernels import reduce as R
from tinycl.kernels import shape as S

D = torch.float64


def close(a, b, tol=1e-10):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    if a.numel():
        assert (a - b).abs().max() <= tol * b.abs().max().clamp_min(1.0), float((a - b).abs().max())


def rand(shape, seed, scale=1.0):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed)) * scale


def grads_of(fn, *xs, seed=0):
    """``fn`` on leaf copies of the float tensors in ``xs`` (other items pass through); returns
    ``(y, dy, grads)`` with a gradient (or None) per item."""
    leaves = [x.detach().clone().requires_grad_(True) if isinstance(x, torch.Tensor) and x.is_floating_point()
              else x for x in xs]   # integer tensors (indices) pass through, with no gradient
    y = fn(*leaves)
    dy = rand(y.shape, seed)
    y.backward(dy)
    return y.detach(), dy, [x.grad if isinstance(x, torch.Tensor) else None for x in leaves]


# ---------------------------------------------------------------------------------------------
# elementwise with broadcasting
# ---------------------------------------------------------------------------------------------

@st.composite
def broadcast_pair(draw):
    """Two operands that broadcast to a drawn shape; either may be a Python number (not both)."""
    nd = draw(st.integers(0, 4))
    out = [draw(st.integers(1, 4)) for _ in range(nd)]

    def operand():
        lead = draw(st.integers(0, nd))
        return tuple(1 if draw(st.booleans()) else s for s in out[lead:])

    sa, sb = operand(), operand()
    scalar = draw(st.sampled_from([None, "a", "b"]))
    return sa, sb, scalar


OPS = {"add": (E.add_forward, E.add_backward, torch.add), "sub": (E.sub_forward, E.sub_backward, torch.sub),
       "mul": (E.mul_forward, E.mul_backward, torch.mul), "div": (E.div_forward, E.div_backward, torch.div)}


@pytest.mark.parametrize("kind", list(OPS))
@given(broadcast_pair(), st.integers(0, 100))
def test_binary_broadcast(kind, shapes, seed):
    sa, sb, scalar = shapes
    fwd, bwd, ref = OPS[kind]
    a, b = rand(sa, seed), rand(sb, seed + 1)
    if kind == "div":
        b = b.sign().masked_fill(b == 0, 1.0) * (b.abs() + 0.5)
    if scalar == "a":
        a = 1.75
    elif scalar == "b":
        b = -2.5
    y, dy, (ga, gb) = grads_of(ref, a, b)
    close(fwd(a, b), y)
    da, db = bwd(dy, a, b)
    for g, want in ((da, ga), (db, gb)):
        if want is None:
            assert g is None
        else:
            close(g, want)
    if kind in ("add", "sub"):  # from the operands' shapes only (what the engine saves)
        shape = lambda t: t.shape if isinstance(t, torch.Tensor) else t  # noqa: E731
        for g, want in zip(bwd(dy, shape(a), shape(b)), (ga, gb)):
            assert (g is None) == (want is None)
            if want is not None:
                close(g, want)
    if kind == "div":  # the output-saving form
        da2, db2 = E.div_backward(dy, a, b, y)
        if gb is not None:
            close(db2, gb)


def test_binary_errors_and_unbroadcast():
    with pytest.raises(TinyclError, match="do not broadcast"):
        E.add_forward(torch.ones(2, 3), torch.ones(4))
    with pytest.raises(TinyclError, match="tensor"):
        E.mul_forward(2.0, 3.0)
    g = torch.arange(24, dtype=D).reshape(2, 3, 4)
    close(E.unbroadcast(g, (3, 1)), g.sum(0).sum(1, keepdim=True))
    close(E.unbroadcast(g, ()), g.sum())
    assert E.unbroadcast(g, (2, 3, 4)) is g


# ---------------------------------------------------------------------------------------------
# activations (torch's conventions at the kinks)
# ---------------------------------------------------------------------------------------------

ACTS = {
    "hardswish": (A.hardswish_forward, A.hardswish_backward, F.hardswish, "x"),
    "hardsigmoid": (A.hardsigmoid_forward, A.hardsigmoid_backward, F.hardsigmoid, "x"),
    "sigmoid": (A.sigmoid_forward, A.sigmoid_backward, torch.sigmoid, "y"),
    "tanh": (A.tanh_forward, A.tanh_backward, torch.tanh, "y"),
    "silu": (A.silu_forward, A.silu_backward, F.silu, "x"),
    "gelu": (A.gelu_forward, A.gelu_backward, F.gelu, "x"),
    "gelu_tanh": (lambda x: A.gelu_forward(x, "tanh"), lambda dy, x: A.gelu_backward(dy, x, "tanh"),
                  lambda x: F.gelu(x, approximate="tanh"), "x"),
}


@pytest.mark.parametrize("name", list(ACTS))
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(0, 100))
def test_activations_vs_autograd(name, shape, seed):
    fwd, bwd, ref, source = ACTS[name]
    x = rand(shape, seed, 4.0)
    kinks = torch.tensor([-3.0, 3.0, 0.0, -0.0, 2.999, -3.001, 6.0, -6.0], dtype=D)
    x.view(-1)[: min(x.numel(), 8)] = kinks[: min(x.numel(), 8)]
    y, dy, (dx,) = grads_of(ref, x)
    yy = fwd(x)
    close(yy, y, 1e-14)
    close(bwd(dy, yy if source == "y" else x), dx, 1e-14)


def test_hard_activation_kinks_exact():
    """torch's conventions: hardsigmoid' = 0 at +-3; hardswish' = 0 at -3 and 1 at 3 (the outer sides)."""
    x = torch.tensor([-3.0, 3.0], dtype=D)
    dy = torch.ones(2, dtype=D)
    assert A.hardsigmoid_backward(dy, x).tolist() == [0.0, 0.0]
    assert A.hardswish_backward(dy, x).tolist() == [0.0, 1.0]
    with pytest.raises(TinyclError, match="approximate"):
        A.gelu_forward(x, "erf")


def test_activation_op_counts():
    for name, (f, b) in macs.ACTIVATION_OPS.items():
        assert macs.activation_ops(name, 10) == {"forward": 10 * f, "backward_input": 10 * b,
                                                 "backward_weight": 0, "update": 0}
    assert macs.activation_ops("hardswish", 6)["forward"] == 30  # add, 2 compares, 2 multiplies each
    assert macs.activation_ops("sigmoid", 3)["backward_input"] == 9  # dy * y * (1 - y)


# ---------------------------------------------------------------------------------------------
# shape ops
# ---------------------------------------------------------------------------------------------

@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(0, 3), st.lists(st.integers(1, 4),
       min_size=1, max_size=3), st.integers(0, 50))
def test_cat(base, dim, sizes, seed):
    dim = dim % len(base)
    xs = []
    for i, n in enumerate(sizes):
        shape = list(base)
        shape[dim] = n
        xs.append(rand(shape, seed + i))
    y, dy, grads = grads_of(lambda *t: torch.cat(t, dim), *xs)
    close(S.cat_forward(xs, dim), y)
    for g, want in zip(S.cat_backward(dy, sizes, dim), grads):
        close(g, want)


@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(-4, 3), st.integers(1, 4),
       st.booleans(), st.data())
def test_split_chunk(shape, dim, k, use_chunk, data):
    dim = dim % len(shape) - (len(shape) if dim < 0 else 0)
    x = rand(shape, k)
    if use_chunk:
        ref_pieces = torch.chunk(x, k, dim)
        pieces = S.chunk_forward(x, k, dim)
    else:
        size = shape[dim]
        arg = k if data.draw(st.booleans()) else _sections(size, data)
        ref_pieces = torch.split(x, arg, dim)
        pieces = S.split_forward(x, arg, dim)
    assert len(pieces) == len(ref_pieces)
    for p, r in zip(pieces, ref_pieces):
        close(p, r)
    used = data.draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    used[0] = True
    dys = [rand(p.shape, i) if u else None for i, (p, u) in enumerate(zip(pieces, used))]
    xl = x.clone().requires_grad_(True)
    outs = torch.chunk(xl, k, dim) if use_chunk else torch.split(xl, arg, dim)
    sum((o * g).sum() for o, g in zip(outs, dys) if g is not None).backward()
    dx = S.chunk_backward(dys, x.shape, k, dim) if use_chunk else S.split_backward(dys, x.shape, arg, dim)
    close(dx, xl.grad)


def _sections(size, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, size), max_size=3)))
    bounds = [0] + cuts + [size]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def test_chunk_sizes_like_torch():
    for size in range(0, 12):
        for chunks in range(1, 7):
            want = [t.shape[0] for t in torch.chunk(torch.empty(size), chunks)]
            assert S.chunk_sizes(size, chunks) == want, (size, chunks)
    with pytest.raises(TinyclError, match="sum"):
        S.split_sizes(5, [2, 2])


@given(st.lists(st.integers(1, 4), min_size=1, max_size=5), st.data())
def test_permute_transpose(shape, data):
    x = rand(shape, len(shape))
    perm = data.draw(st.permutations(range(len(shape))))
    y, dy, (dx,) = grads_of(lambda t: t.permute(perm), x)
    close(S.permute_forward(x, perm), y)
    close(S.permute_backward(dy, perm), dx)
    d0, d1 = data.draw(st.integers(-len(shape), len(shape) - 1)), data.draw(st.integers(0, len(shape) - 1))
    y, dy, (dx,) = grads_of(lambda t: t.transpose(d0, d1), x)
    close(S.transpose_forward(x, d0, d1), y)
    close(S.transpose_backward(dy, d0, d1), dx)
    with pytest.raises(TinyclError, match="permutation"):
        S.permute_forward(x, list(perm) + [0])


@given(st.lists(st.integers(1, 4), min_size=1, max_size=5), st.data())
def test_reshape_flatten(shape, data):
    x = rand(shape, 3)
    nd = len(shape)
    s, e = sorted([data.draw(st.integers(0, nd - 1)), data.draw(st.integers(0, nd - 1))])
    s_arg = s - nd if data.draw(st.booleans()) else s
    y, dy, (dx,) = grads_of(lambda t: torch.flatten(t, s_arg, e), x)
    close(S.flatten_dims_forward(x, s_arg, e), y)
    close(S.flatten_dims_backward(dy, x.shape), dx)
    target = (-1,) + tuple(shape[1:][::-1])
    y, dy, (dx,) = grads_of(lambda t: t.reshape(target), x)
    close(S.reshape_forward(x, target), y)
    close(S.view_forward(x, target), y)
    close(S.reshape_backward(dy, x.shape), dx)
    close(S.contiguous_forward(x.transpose(0, -1)), x.transpose(0, -1).contiguous())
    assert S.contiguous_backward(dy) is dy
    with pytest.raises(TinyclError, match="reshape"):
        S.reshape_forward(x, (x.numel() + 1,))


@given(st.lists(st.integers(1, 7), min_size=1, max_size=4), st.data())
def test_slice_select(shape, data):
    x = rand(shape, 5)
    dim = data.draw(st.integers(0, len(shape) - 1))
    n = shape[dim]
    start = data.draw(st.one_of(st.none(), st.integers(-n - 2, n + 2)))
    stop = data.draw(st.one_of(st.none(), st.integers(-n - 2, n + 2)))
    step = data.draw(st.one_of(st.none(), st.integers(1, 3)))
    idx = (slice(None),) * dim + (slice(start, stop, step),)
    xl = x.clone().requires_grad_(True)
    y = xl[idx]
    dy = rand(y.shape, 9)
    y.backward(dy)
    close(S.slice_forward(x, dim, start, stop, step), y.detach())
    close(S.slice_backward(dy, x.shape, dim, start, stop, step), xl.grad)
    i = data.draw(st.integers(-n, n - 1))
    y, dy, (dx,) = grads_of(lambda t: t.select(dim, i), x)
    close(S.select_forward(x, dim, i), y)
    close(S.select_backward(dy, x.shape, dim, i), dx)


# ---------------------------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------------------------

@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.booleans(), st.booleans(), st.data())
def test_sum_mean(shape, keepdim, mean, data):
    x = rand(shape, len(shape))
    nd = len(shape)
    dims = data.draw(st.one_of(st.none(), st.lists(st.integers(-nd, nd - 1), min_size=1, max_size=nd,
                                                     unique_by=lambda d: d % nd)))
    ref = torch.mean if mean else torch.sum
    fwd, bwd = (R.mean_forward, R.mean_backward) if mean else (R.sum_forward, R.sum_backward)
    fn = (lambda t: ref(t)) if dims is None else (lambda t: ref(t, dim=tuple(dims), keepdim=keepdim))
    kd = False if dims is None else keepdim
    y, dy, (dx,) = grads_of(fn, x)
    close(fwd(x, dims, kd), y)
    g = bwd(dy, x.shape, dims, kd)
    close(g, dx)
    g.add_(1.0)  # a new tensor: safe to accumulate into in place


def test_reduce_errors_and_counts():
    with pytest.raises(TinyclError, match="twice"):
        R.sum_forward(torch.ones(2, 3), (1, -1))
    with pytest.raises(TinyclError, match="out of range"):
        R.mean_forward(torch.ones(2, 3), (2,))
    # 2x3x4 summed over the last dim: 6 outputs of 3 adds each
    assert macs.reduce_ops(24, 6) == {"forward": 18, "backward_input": 0, "backward_weight": 0, "update": 0}
    assert macs.reduce_ops(24, 6, mean=True)["forward"] == 24


# ---------------------------------------------------------------------------------------------
# stochastic depth
# ---------------------------------------------------------------------------------------------

def _torchvision_stochastic_depth(x, p, mode, training=True):
    """torchvision.ops.stochastic_depth (torchvision 0.2x), verbatim apart from the name."""
    if p < 0.0 or p > 1.0:
        raise ValueError
    if not training or p == 0.0:
        return x
    survival_rate = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return x * noise


@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.8, 1.0])
def test_stochastic_depth(mode, p):
    x = rand((16, 3, 2, 2), 1)
    for seed in range(4):
        torch.manual_seed(seed)
        y, dy, (dx,) = grads_of(lambda t: _torchvision_stochastic_depth(t, p, mode), x)
        yy, mask = M.stochastic_depth_forward(x, p, mode, True, torch.Generator().manual_seed(seed))
        close(yy, y)
        close(M.stochastic_depth_backward(dy, mask), dx)
        if mask is not None:
            assert mask.shape == ((16, 1, 1, 1) if mode == "row" else (1, 1, 1, 1))
    y, mask = M.stochastic_depth_forward(x, p, mode, training=False)
    assert y is x and mask is None
    with pytest.raises(TinyclError, match="mode"):
        M.stochastic_depth_forward(x, 0.1, "col")
    assert macs.stochastic_depth_ops(10) == {"forward": 10, "backward_input": 10, "backward_weight": 0, "update": 0}


# ---------------------------------------------------------------------------------------------
# op counts of the binary ops (hand counts)
# ---------------------------------------------------------------------------------------------

def test_binary_op_counts():
    # SE gate: x (2,4,3,3) * s (2,4,1,1): 72 multiplies; dx = dy * s (72), ds = sum(dy * x) (72 + 64 adds)
    assert macs.binary_ops("mul", (2, 4, 3, 3), (2, 4, 3, 3), (2, 4, 1, 1)) == {
        "forward": 72, "backward_input": 72 + 72 + 64, "backward_weight": 0, "update": 0}
    # residual add of equal shapes: no backward arithmetic
    assert macs.binary_ops("add", (2, 5), (2, 5), (2, 5))["backward_input"] == 0
    # x - 1.0: the number gets no gradient
    assert macs.binary_ops("sub", (3,), (3,), None)["backward_input"] == 0
    # a / b with b of shape (3,): da 6 divides, db 3 ops * 6 + 3 adds
    assert macs.binary_ops("div", (2, 3), (2, 3), (3,))["backward_input"] == 6 + 18 + 3


def test_float32_runs():
    """Every op keeps float32 and agrees with its float64 result."""
    a64, b64 = rand((2, 3, 4), 0), rand((3, 1), 1).abs() + 0.5
    a, b = a64.float(), b64.float()
    cases = [
        lambda x, y: E.div_backward(torch.ones_like(x), x, y)[1],
        lambda x, y: E.mul_backward(torch.ones_like(x), x, y)[1],
        lambda x, y: A.hardswish_backward(x, x * 2),
        lambda x, y: A.gelu_backward(x, x, "tanh"),
        lambda x, y: A.silu_forward(x),
        lambda x, y: A.sigmoid_backward(x, A.sigmoid_forward(x)),
        lambda x, y: S.split_backward([None, x[:, :2]], (2, 5, 4), [3, 2], 1),
        lambda x, y: S.slice_backward(x, (2, 3, 9), -1, 1, None, 2),
        lambda x, y: R.mean_backward(R.mean_forward(x, (0, 2)), x.shape, (0, 2)),
        lambda x, y: M.stochastic_depth_forward(x, 0.5, "row", True, torch.Generator().manual_seed(0))[0],
    ]
    for f in cases:
        y, y64 = f(a, b), f(a64, b64)
        assert y.dtype == torch.float32
        assert (y.double() - y64).abs().max() <= 1e-5 * y64.abs().max().clamp_min(1.0)
    assert S.identity_forward(a) is a and S.identity_backward(b) is b
