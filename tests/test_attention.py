"""Attention: matmul of two activations, softmax and scaled dot-product attention kernels vs torch
autograd in float64 (hypothesis), their engine ops in captured graphs, and reshapes that fold the batch."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.kernels import attention as K

D = torch.float64


def rand(shape, seed, scale=1.0):
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed)) * scale


def close(a, b, tol=1e-10):
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.numel():
        assert (a - b).abs().max() <= tol * b.abs().max().clamp_min(1.0), float((a - b).abs().max())


def autograd(fn, *xs, seed=0):
    leaves = [x.detach().clone().requires_grad_(True) if isinstance(x, torch.Tensor) and x.is_floating_point()
              else x for x in xs]
    y = fn(*leaves)
    dy = rand(y.shape, seed)
    y.backward(dy)
    return y.detach(), dy, [x.grad if isinstance(x, torch.Tensor) else None for x in leaves]


@st.composite
def matmul_shapes(draw):
    """Operand shapes of a valid ``a @ b``: ranks 1 to 4, leading dims that broadcast."""
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    lead = [draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2)))]

    def batch():
        cut = draw(st.integers(0, len(lead)))
        return [1 if draw(st.booleans()) else s for s in lead[cut:]]

    ra, rb = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    a = [k] if ra == 1 else batch() + [m, k]
    b = [k] if rb == 1 else batch() + [k, n]
    return tuple(a), tuple(b)


@given(matmul_shapes(), st.integers(0, 1000))
def test_matmul_of_two_activations_matches_autograd(shapes, seed):
    sa, sb = shapes
    a, b = rand(sa, seed), rand(sb, seed + 1)
    y_ref, dy, (ga, gb) = autograd(torch.matmul, a, b, seed=seed + 2)
    close(K.matmul_forward(a, b), y_ref)
    da, db = K.matmul_backward(dy, a, b)
    close(da, ga)
    close(db, gb)
    assert K.matmul_backward(dy, a, b, need_a=False)[0] is None


def test_matmul_refuses_mismatched_inner_sizes():
    with pytest.raises(TinyclError, match="inner sizes differ"):
        K.matmul_forward(torch.ones(2, 3), torch.ones(4, 2))


@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(0, 1000), st.data())
def test_softmax_along_any_dim_matches_autograd(shape, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = rand(shape, seed, 3.0)
    y_ref, dy, (gx,) = autograd(lambda t: torch.softmax(t, dim), x, seed=seed + 1)
    y = K.softmax_forward(x, dim)
    close(y, y_ref)
    close(K.softmax_backward(dy, y, dim), gx)


@st.composite
def sdpa_case(draw):
    lead = [draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2)))]
    L, S, E, Ev = (draw(st.integers(1, 5)) for _ in range(4))
    kv_lead = [1 if draw(st.booleans()) else s for s in lead]   # keys / values broadcast over heads
    mask = draw(st.sampled_from(["none", "float", "float_row", "bool", "causal"]))
    scale = draw(st.sampled_from([None, 0.3]))
    return tuple(lead + [L, E]), tuple(kv_lead + [S, E]), tuple(kv_lead + [S, Ev]), mask, scale


@given(sdpa_case(), st.integers(0, 1000))
def test_sdpa_matches_autograd(case, seed):
    sq, sk, sv, mask, scale = case
    q, k, v = rand(sq, seed), rand(sk, seed + 1), rand(sv, seed + 2)
    L, S = sq[-2], sk[-2]
    m, causal = None, mask == "causal"
    if mask == "float":
        m = rand((L, S), seed + 3)
    elif mask == "float_row":
        m = rand((*sq[:-2], 1, S), seed + 3)
    elif mask == "bool":
        m = torch.rand(L, S, generator=torch.Generator().manual_seed(seed)) > 0.3
        m[:, 0] = True   # no fully masked row (torch gives NaN there)

    def ref(q, k, v, m):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal, scale=scale)

    y_ref, dy, (gq, gk, gv, gm) = autograd(ref, q, k, v, m, seed=seed + 4)
    y, p = K.sdpa_forward(q, k, v, m, causal, scale)
    close(y, y_ref)
    float_mask = m is not None and m.is_floating_point()
    dq, dk, dv, dm = K.sdpa_backward(dy, q, k, v, p, scale, m.shape if float_mask else None)
    close(dq, gq)
    close(dk, gk)
    close(dv, gv)
    if float_mask:
        close(dm, gm)


def test_sdpa_refuses_mask_and_causal_together():
    q = torch.ones(2, 3, 4)
    with pytest.raises(TinyclError, match="not both"):
        K.sdpa_forward(q, q, q, torch.zeros(3, 3), True)
