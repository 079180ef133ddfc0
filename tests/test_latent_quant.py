"""LatentQuantizer: hand-worked grids, round trips, error bounds, MSE clipping, checkpoints."""

import io

import pytest
import torch
from hypothesis import given, settings, strategies as st

from tinycl.errors import TinyclError
from tinycl.numerics.latent_quant import LatentQuantizer


def sq_err(q, x):
    return float(((q.decode(q.encode(x)) - x) ** 2).sum())


def test_hand_worked_unsigned_grid():
    q = LatentQuantizer(2).fit(torch.tensor([[0.0, 3.0]]))
    assert q.scale.tolist() == [1.0] and q.zero_point.tolist() == [0.0]
    x = torch.tensor([[0.0, 0.4, 0.6, 1.5, 2.5, 3.0, 5.0, -1.0]])
    # round half to even: 1.5 -> 2, 2.5 -> 2; clamp to [0, 3]
    assert q.encode(x).tolist() == [[0, 0, 1, 2, 2, 3, 3, 0]]
    assert q.decode(q.encode(x)).tolist() == [[0.0, 0.0, 1.0, 2.0, 2.0, 3.0, 3.0, 0.0]]


def test_hand_worked_ranges_always_contain_zero():
    # positive data [1, 3]: range widened to [0, 3] -> scale 1, zero point 0
    q = LatentQuantizer(2).fit(torch.tensor([[1.0, 3.0]]))
    assert (q.scale.item(), q.zero_point.item()) == (1.0, 0.0)
    # signed data [-1, 2] at 2 bits: scale 1, zero point 1
    q = LatentQuantizer(2).fit(torch.tensor([[-1.0, 2.0]]))
    assert (q.scale.item(), q.zero_point.item()) == (1.0, 1.0)
    assert q.encode(torch.tensor([[-1.0, 0.0, 2.0]])).tolist() == [[0, 1, 3]]
    # negative data [-3, -1]: range [-3, 0], zero point 3
    q = LatentQuantizer(2).fit(torch.tensor([[-3.0, -1.0]]))
    assert (q.scale.item(), q.zero_point.item()) == (1.0, 3.0)
    assert q.decode(q.encode(torch.tensor([[-3.0, -1.0]]))).tolist() == [[-3.0, -1.0]]


def test_post_relu_uses_every_code_on_the_positive_range():
    x = torch.relu(torch.randn(50, 4, 3, 3, generator=torch.Generator().manual_seed(0)))
    q = LatentQuantizer(3).fit(x)
    assert q.zero_point.item() == 0.0
    assert q.scale.item() == pytest.approx(float(x.max()) / 7)
    c = q.encode(x)
    assert int(c.min()) == 0 and int(c.max()) == 7


def test_per_channel_scales_are_per_dim1():
    x = torch.zeros(2, 3, 2)
    x[:, 0] = torch.tensor([0.0, 15.0])
    x[:, 1] = torch.tensor([0.0, 1.5])
    x[:, 2] = torch.tensor([-3.0, 12.0])
    q = LatentQuantizer(4, granularity="channel").fit(x)
    assert q.scale.tolist() == pytest.approx([1.0, 0.1, 1.0])
    assert q.zero_point.tolist() == [0.0, 0.0, 3.0]
    assert q.metadata_nbytes() == 3 * 8
    assert torch.allclose(q.decode(q.encode(x)), x, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 8), gran=st.sampled_from(["tensor", "channel"]),
       clip=st.sampled_from(["minmax", "mse"]), n=st.integers(1, 5), c=st.integers(1, 4),
       hw=st.integers(1, 5), shift=st.floats(-3, 3), spread=st.floats(1e-3, 1e3), seed=st.integers(0, 999))
def test_round_trip_and_half_step_error_bound(bits, gran, clip, n, c, hw, shift, spread, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, hw, generator=g) + shift) * spread
    q = LatentQuantizer(bits, gran, clip).fit(x)
    # decode(encode(decode(c))) == decode(c) for every code
    codes = torch.randint(0, 1 << bits, x.shape, generator=g).to(torch.uint8)
    d = q.decode(codes)
    assert torch.equal(q.encode(d), codes)
    assert torch.equal(q.decode(q.encode(d)), d)
    # inside the clip range the error is at most half a step
    lo, hi = q.clip_range()
    shape = [1, -1, 1] if gran == "channel" else [1, 1, 1]
    lo, hi, s = lo.view(shape), hi.view(shape), q.scale.view(shape)
    inside = torch.minimum(torch.maximum(x, lo), hi)
    err = (q.decode(q.encode(inside)) - inside).abs()
    assert bool((err <= s / 2 * (1 + 1e-5) + 1e-6 * inside.abs()).all())
    # MSE clipping is never worse than minmax on its own calibration data
    if clip == "mse":
        assert sq_err(q, x) <= sq_err(LatentQuantizer(bits, gran, "minmax").fit(x), x) * (1 + 1e-6)


@pytest.mark.parametrize("gran", ["tensor", "channel"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_mse_clipping_beats_minmax_on_long_tails(bits, gran):
    # post-ReLU latents with exponential tails (half zeros), channels of different sizes
    g = torch.Generator().manual_seed(bits)
    u = torch.rand(2, 400, 8, 4, 4, generator=g)
    x = torch.where(u[1] < 0.5, 0.0, -torch.log(u[0])) * torch.linspace(0.2, 2, 8).view(1, 8, 1, 1)
    e_mse = sq_err(LatentQuantizer(bits, gran, "mse").fit(x), x)
    e_mm = sq_err(LatentQuantizer(bits, gran, "minmax").fit(x), x)
    # at 8 bits the step is already small, so clipping gains little, but must gain
    assert e_mse < (0.8 if bits <= 4 else 1.0) * e_mm, (e_mse, e_mm)


def test_mse_search_close_to_brute_force_optimum():
    # 1-bit unsigned grid {0, t}: brute force over t is an independent reference
    g = torch.Generator().manual_seed(3)
    x = torch.relu(torch.randn(2000, generator=g) ** 3).view(1, -1)
    q = LatentQuantizer(1, clipping="mse").fit(x)
    best = min(float(((torch.where(x > t / 2, t, 0.0) - x) ** 2).sum()) for t in torch.linspace(0.01, 1, 2000) * x.max())
    assert sq_err(q, x) <= best * 1.01


def test_stratified_search_on_big_data_is_checked_against_minmax():
    g = torch.Generator().manual_seed(5)
    x = torch.relu(torch.randn(300, 4, 8, 8, generator=g)) * torch.tensor([1.0, 10.0, 0.1, 3.0]).view(1, 4, 1, 1)
    for gran in ("tensor", "channel"):
        for bits in (2, 8):
            q = LatentQuantizer(bits, gran, "mse", max_search_values=4096).fit(x)  # searches a subset
            assert sq_err(q, x) <= sq_err(LatentQuantizer(bits, gran).fit(x), x)


def test_uint8_images_are_lossless_at_8_bits():
    g = torch.Generator().manual_seed(0)
    u = torch.randint(10, 200, (20, 3, 8, 8), generator=g, dtype=torch.uint8)  # 0 and 255 absent
    for gran in ("tensor", "channel"):
        for clip in ("minmax", "mse"):
            q = LatentQuantizer(8, gran, clip).fit(u)
            every = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
            assert torch.equal(q.encode(every), every)
            assert torch.equal(q.decode(q.encode(u)), u.float())
    # float data spanning exactly 0..255 is also identity
    f = torch.arange(256.0).view(1, 256)
    q = LatentQuantizer(8).fit(f)
    assert torch.equal(q.decode(q.encode(f)), f)


def test_float_formats():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)) * 1000
    q32 = LatentQuantizer("fp32").fit(x)
    assert q32.encode(x).dtype == torch.float32 and torch.equal(q32.decode(q32.encode(x)), x)
    q16 = LatentQuantizer("fp16")
    assert q16.encode(x).dtype == torch.float16
    assert torch.equal(q16.decode(q16.encode(x)), x.half().float())
    assert q16.decode(q16.encode(torch.tensor([[1e6, -1e6]]))).tolist() == [[65504.0, -65504.0]]
    assert q16.metadata_nbytes() == 0 and q16.storage_bits == 16 and q32.storage_bits == 32


def test_state_dict_round_trip_through_torch_save():
    x = torch.randn(30, 5, 2, generator=torch.Generator().manual_seed(2))
    q = LatentQuantizer(5, "channel", "mse").fit(x)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    q2 = LatentQuantizer("fp32")
    q2.load_state_dict(torch.load(buf, weights_only=True))
    assert (q2.bits, q2.granularity, q2.clipping) == (5, "channel", "mse")
    assert torch.equal(q2.encode(x), q.encode(x))


def test_errors_are_clear():
    with pytest.raises(TinyclError, match="bits"):
        LatentQuantizer(9)
    with pytest.raises(TinyclError, match="bits"):
        LatentQuantizer("int4")
    with pytest.raises(TinyclError, match="granularity"):
        LatentQuantizer(4, granularity="row")
    with pytest.raises(TinyclError, match="clipping"):
        LatentQuantizer(4, clipping="kl")
    with pytest.raises(TinyclError, match="not calibrated"):
        LatentQuantizer(4).encode(torch.ones(2, 2))
    with pytest.raises(TinyclError, match="NaN"):
        LatentQuantizer(4).fit(torch.tensor([[1.0, float("nan")]]))
    q = LatentQuantizer(4, "channel").fit(torch.ones(2, 3))
    with pytest.raises(TinyclError, match="3 channels"):
        q.encode(torch.ones(2, 4))
    with pytest.raises(TinyclError, match="bad state dict"):
        q.load_state_dict({"bits": 4})
    with pytest.raises(TinyclError, match="bad state dict"):
        q.load_state_dict({**q.state_dict(), "scale": torch.tensor([-1.0, 1.0, 1.0])})
