"""TinyCL accelerator model: window orders, closed forms vs walked counts, values vs the engine."""

import argparse
import contextlib
import io
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tinycl import from_torch
from tinycl.errors import TinyclError, UnsupportedLayerError
from tinycl.hw.accel_tinycl import (ControlUnit, ProcessingUnit, conv_counts, epoch_summary, expected_inserts,
                                    load_arch, plan, positions, step_counts, walk_reads, walk_window_uses)
from tinycl.hw.accel_tinycl.arch import DEFAULT_FILE
from tinycl.hw.accel_tinycl.commands import add_tinycl_parser
from tinycl.kernels.conv import conv2d_backward_input, conv2d_backward_weight, conv2d_forward
from tinycl.kernels.optim import SGD
from tinycl.models.registry import create

ARCH = load_arch()
T, F = True, False


def ones(n):
    return [True] * n


# ------------------------------------------------------------------ hand-worked counts

def test_orders_visit_every_position_once_snake_reverses():
    assert list(positions("raster", 2, 3)) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert list(positions("snake", 2, 3)) == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]
    with pytest.raises(TinyclError, match="window order"):
        list(positions("zigzag", 2, 2))


def test_hand_counts_4x4_k3():
    # raster: per row a full 9-load then 1 step of 3 -> 12; 2 rows -> 24.
    # snake: 9 + 3 (right) + 3 (down, keeps 2 rows) + 3 (left) = 18.
    assert walk_reads("raster", ones(4), ones(4), 2, 2, 3, 3) == 24
    assert walk_reads("snake", ones(4), ones(4), 2, 2, 3, 3) == 18
    assert walk_window_uses(ones(4), ones(4), 2, 2, 3, 3) == 36


def test_hand_counts_cifar_conv_plane():
    # 32x32 input, 3x3 valid conv, 30x30 windows.
    # raster = 30 * (9 + 29*3) = 2880; snake = 9 + 29*3 + 29 * (3 + 29*3) = 2706.
    assert walk_reads("raster", ones(32), ones(32), 30, 30, 3, 3) == 2880
    assert walk_reads("snake", ones(32), ones(32), 30, 30, 3, 3) == 2706


def test_hand_counts_padding_zeros_not_read():
    # 3x3 input, padding 1 (canvas 5x5, rows/cols 1..3 real), 3x3 windows, 3x3 outputs.
    # raster: window rows hold 2,3,2 real rows; each row = 2 (first load, 2 real cols) + 1 + 0 -> 7*3 = 21.
    # snake: row0 2*3=6; down to row1 at col2: 1 new real row x 2 cols = 2; left: 3 rows x (1 + 0) = 3;
    #        down to row2 at col0: new row is padding = 0; right: 2 rows x (1 + 0) = 2 -> 13.
    v = [F, T, T, T, F]
    assert walk_reads("raster", v, v, 3, 3, 3, 3) == 21
    assert walk_reads("snake", v, v, 3, 3, 3, 3) == 13
    assert walk_window_uses(v, v, 3, 3, 3, 3) == 4 * 4 + 4 * 6 + 9   # corners 4 uses, edges 6, centre 9


def test_hand_counts_stride_not_smaller_than_kernel():
    # 6x6, 2x2 kernel, stride 3: 4 disjoint windows, nothing to reuse in either order.
    for order in ("raster", "snake"):
        assert walk_reads(order, ones(6), ones(6), 2, 2, 2, 2, 3, 3) == 16


def test_hand_conv_pass_counts_small_layer():
    # Cin 2, Cout 3, 5x6 input, 3x3 valid: 3x4 outputs; raster plane 3*(9+3*3)=54, snake 9+9+2*(3+9)=42.
    for order, plane in (("raster", 54), ("snake", 42)):
        f = conv_counts(ARCH, "conv_fwd", order, 2, 3, 5, 6, 3, 3)
        assert f.reads["activations"] == 2 * plane
        assert f.reads["weights"] == 3 * 2 * 9 + 3          # kernels once (fit registers) + bias
        assert f.writes["activations"] == 3 * 12
        assert f.macs == 3 * 2 * 9 * 12
        assert f.compute_cycles == 12 * 6                  # 9 MACs = one 3x3 pair per cycle, 6 pairs
        d = conv_counts(ARCH, "conv_dw", order, 2, 3, 5, 6, 3, 3)
        assert d.reads["gradients"] == 36 and d.writes["gradients"] == 54 + 3


def test_step_cycles_tinycl_net_hand():
    # Hand: conv fwd/dw 900*24+100 = 21,700 each; relu fwd ceil(7200/9)+100 = 900; dense fwd 10*800+100;
    # loss 20*10 + 1 (memory) + 100 = 301; dense dx 7200*ceil(10/9)+100 = 14,500; dense dw 8000+100;
    # relu bwd 900; update ceil(72,234/9)=8,026 (= ceil(144,468 words / 18 per cycle)) +100.
    m = create("tinycl-net")
    step = step_counts(ARCH, plan(m, m.input_shape), "snake")
    cycles = [pc.cycles(ARCH) for pc in step]
    assert cycles == [21_700, 900, 8_100, 301, 14_500, 8_100, 900, 21_700, 8_126]
    s = epoch_summary(ARCH, m, m.input_shape, ("snake",), samples=50_000, replays=0)
    # per new sample: 3072 words into activations at 18 words/cycle -> 171 + 100; an insert 3072/9 -> 342.
    want = (84_327 * 50_000 + 271 * 50_000 + 342 * expected_inserts(50_000, 128)) / 100e6
    assert s["total"]["snake"]["epoch_latency_s"] == pytest.approx(want, rel=1e-12)


def test_expected_inserts_hand():
    assert expected_inserts(4, 2) == pytest.approx(2 + 2 / 3 + 2 / 4)
    assert expected_inserts(3, 5) == 3


# ------------------------------------------------------------------ walked == closed form, snake <= raster

shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7),
                   st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2))


def _ok(h, w, kh, kw, s, p):
    return (h + 2 * p - kh) // s + 1 >= 1 and (w + 2 * p - kw) // s + 1 >= 1


@settings(max_examples=30, deadline=None)
@given(shapes, st.sampled_from(["raster", "snake"]))
def test_walked_counts_equal_closed_form_and_values_equal_engine(shape, order):
    cin, cout, h, w, kh, kw, s, p = shape
    if not _ok(h, w, kh, kw, s, p):
        return
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(1, cin, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(cout, cin, kh, kw, generator=g, dtype=torch.float64)
    b = torch.randn(cout, generator=g, dtype=torch.float64)
    pu = ProcessingUnit(ARCH, order)
    y, pf = pu.conv_forward(x[0], wt, b, s, p)
    yr = conv2d_forward(x, wt, b, s, p)
    dy = torch.randn(yr.shape, generator=g, dtype=torch.float64)
    dx, pdx = pu.conv_backward_input(dy[0], wt, x.shape[1:], s, p)
    (dw, db), pdw = pu.conv_backward_weight(dy[0], x[0], wt.shape, s, p)
    dwr, dbr = conv2d_backward_weight(dy, x, wt.shape, s, p)
    torch.testing.assert_close(y, yr[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, conv2d_backward_input(dy, wt, x.shape, s, p)[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dw, dwr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(db, dbr, rtol=1e-12, atol=1e-12)
    for walked, op in ((pf, "conv_fwd"), (pdx, "conv_dx"), (pdw, "conv_dw")):
        closed = conv_counts(ARCH, op, order, cin, cout, h, w, kh, kw, s, p)
        assert walked.same_counts(closed), (op, walked, closed)


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_snake_never_reads_more_than_raster(shape):
    cin, cout, h, w, kh, kw, s, p = shape
    if not _ok(h, w, kh, kw, s, p):
        return
    for op in ("conv_fwd", "conv_dx", "conv_dw"):
        r = conv_counts(ARCH, op, "raster", cin, cout, h, w, kh, kw, s, p)
        n = conv_counts(ARCH, op, "snake", cin, cout, h, w, kh, kw, s, p)
        assert n.total_reads <= r.total_reads
        assert n.macs == r.macs and n.writes == r.writes


def test_kernels_streamed_when_registers_too_small():
    small = load_arch()
    small.register_file_words = 4
    x, wt, dy = torch.randn(2, 5, 5), torch.randn(3, 2, 3, 3), torch.randn(3, 3, 3)
    pu = ProcessingUnit(small, "snake")
    _, pf = pu.conv_forward(x, wt, None)
    assert pf.reads["weights"] == 54 * 9                  # 54 kernel words at each of 9 positions
    (dw, _), pd = pu.conv_backward_weight(dy, x, wt.shape, bias=False)
    assert pd.writes["gradients"] == 54 * 9 and pd.reads["gradients"] == 27 + 54 * 8
    assert pd.same_counts(conv_counts(small, "conv_dw", "snake", 2, 3, 5, 5, 3, 3, bias=False))
    torch.testing.assert_close(dw, conv2d_backward_weight(dy[None], x[None], wt.shape, bias=False)[0])


# ------------------------------------------------------------------ control unit vs the engine

def test_control_unit_matches_engine_fp32_and_closed_form():
    torch.manual_seed(0)
    m = create("tinycl-net", input_shape=(3, 9, 8), channels=4)
    ref = create("tinycl-net", input_shape=(3, 9, 8), channels=4)
    ref.load_state_dict(m.state_dict())
    cu = ControlUnit(ARCH, m, (3, 9, 8), "snake", lr=0.05, replays=2, capacity=3, seed=3)
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(7, 3, 9, 8, generator=g), torch.randint(0, 10, (7,), generator=g)
    for x, y in zip(xs, ys):
        cu.observe(x, int(y))
    kinds = [k for k, _ in cu.log]
    assert kinds.count("new") == 7 and kinds.count("replay") == 12       # no replay before the first insert
    assert len(cu.memory) == 3 and cu.log[:2] == [("new", 0), ("new", 1)]
    net, opt = from_torch(ref, (3, 9, 8)), SGD(lr=0.05)
    for _, k in cu.log:
        net.train_step(xs[k:k + 1], ys[k:k + 1], opt)
    for k, v in net.named_parameters().items():
        torch.testing.assert_close(cu.params[k], v, rtol=1e-5, atol=1e-6)
    _, pcs = cu.train_step(xs[0], int(ys[0]))
    closed = step_counts(ARCH, plan(m, (3, 9, 8)), "snake")
    assert [p.key() for p in pcs] == [p.key() for p in closed]
    assert all(p.same_counts(q) for p, q in zip(pcs, closed))


def test_reservoir_keeps_stored_labels():
    m = create("tinycl-net", input_shape=(1, 4, 4), channels=1, num_classes=3)
    cu = ControlUnit(ARCH, m, (1, 4, 4), replays=0, capacity=2, seed=0)
    for i in range(6):
        cu.observe(torch.full((1, 4, 4), float(i)), i % 3)
    for k, x, y in cu.memory:
        assert y == k % 3 and float(x[0, 0, 0]) == k


# ------------------------------------------------------------------ CLI and errors

def _cli(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    add_tinycl_parser(sub.add_parser("accel").add_subparsers())
    args = p.parse_args(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = args.func(args)
    return rc, out.getvalue()


def test_cli_json_table_and_plot(tmp_path):
    png = tmp_path / "acc.png"
    rc, out = _cli(["accel", "tinycl", "--json", "--samples", "1000", "--plot", str(png)])
    d = json.loads(out)
    assert rc == 0 and png.stat().st_size > 1000
    for o in ("raster", "snake"):
        t = d["total"][o]
        assert t["epoch_latency_s"] > 0 and t["epoch_energy_j"] > 0 and "accesses" in t
    assert d["total"]["snake"]["accesses"]["reads"] < d["total"]["raster"]["accesses"]["reads"]
    conv = [r for r in d["layers"] if r["op"] == "conv_fwd"][0]
    # hand: raster 3*2880 + 224 kernel/bias words, snake 3*2706 + 224 (see test_hand_counts_cifar_conv_plane)
    assert conv["snake_read_saving"] == pytest.approx((8640 - 8118) / (8640 + 224))
    rc, out = _cli(["accel", "tinycl", "--order", "snake", "--samples", "10"])
    assert rc == 0 and "total snake" in out and "total raster" not in out


def test_errors_are_one_line(tmp_path):
    with pytest.raises(TinyclError, match="unknown model"):
        _cli(["accel", "tinycl", "--model", "nope"])
    bad = tmp_path / "a.yaml"
    bad.write_text(DEFAULT_FILE.read_text().replace("mac_units: {value: 9,", "mac_units: {value: -9,"))
    with pytest.raises(TinyclError, match="mac_units"):
        load_arch(bad)
    with pytest.raises(TinyclError, match="not found"):
        load_arch(tmp_path / "missing.yaml")
    with pytest.raises(UnsupportedLayerError, match="MaxPool2d"):
        plan(nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2)), (1, 8, 8))
    with pytest.raises(UnsupportedLayerError, match="groups"):
        ProcessingUnit(ARCH).conv_forward(torch.zeros(2, 4, 4), torch.zeros(2, 1, 3, 3), groups=2)
