"""ETA PE-array model: cycles, MACs and saved MACs against hand-worked counts on small layers."""

import argparse
import contextlib
import io
import json

import pytest
import torch
import yaml
from hypothesis import given, settings, strategies as st
from torch import nn

from tinycl.errors import TinyclError
from tinycl.hw.accel_eta import ArrayConfig, ConvShape, conv_layer_step, eta_training_step, load_array
from tinycl.hw.accel_eta.commands import add_eta_parser
from tinycl.hw.accel_eta.config import DEFAULT_FILE
from tinycl.hw.accel_eta.model import step_bytes, step_compute_cycles
from tinycl.hw.target import load_target


def cfg(**kw):
    base = dict(name="t", clock_hz=1e8, clusters=2, rows=4, cols=4, macs_per_pe=1, noc_bytes_per_cycle=1e9,
                dram_bytes_per_cycle=1e9, buffer_bytes=1 << 20, core_lanes=4, master_bytes_per_param=4,
                layer_overhead_cycles=0, resend_pixels=1024, batch=32)
    base.update(kw)
    return ArrayConfig(**base)


def test_compute_cycles_hand_worked_full_utilisation():
    # n1, cin 8, cout 4, 4x4, 3x3, pad 1: 4608 MACs; 2 x 4 x 4 = 32 PEs -> 144 cycles for every step
    s = ConvShape(1, 8, 4, 4, 4, 3, 3, 1, 1)
    c = cfg()
    # forward: ceil(8/4) * ceil(4/4) * ceil(16/2) * 9 = 2 * 1 * 8 * 9
    assert step_compute_cycles(s, c, "forward") == 144
    assert step_compute_cycles(s, c, "backward_input") == 1 * 2 * 8 * 9
    # weight gradient: ceil(16/4) * ceil(4/4) * ceil(72/2)
    assert step_compute_cycles(s, c, "backward_weight") == 4 * 1 * 36
    r = conv_layer_step("c", s, c)
    assert r.macs == {"forward": 4608, "backward_input": 4608, "backward_weight": 4608}
    assert r.cycles == {"forward": 144, "backward_input": 144, "backward_weight": 144}


def test_compute_cycles_partial_tiles():
    # cin 3 on 4 rows, cout 5 on 4 cols (2 tiles), 3 output pixels on 2 clusters (2 passes), 1x1
    s = ConvShape(1, 3, 5, 1, 3)
    assert step_compute_cycles(s, cfg(), "forward") == 1 * 2 * 2 * 1
    assert step_compute_cycles(s, cfg(macs_per_pe=2), "forward") == 2


def test_strided_input_gradient_saving_hand_worked():
    # n1, cin 2, cout 3, 5x5 input, 3x3, stride 2, pad 1 -> 3x3 output
    s = ConvShape(1, 2, 3, 5, 5, 3, 3, 2, 1)
    r = conv_layer_step("c", s, cfg())
    # useful: 3 * 9 dY pixels * 2 * 9 taps = 486; dense: 2 * 25 dX pixels * 3 * 9 = 1350
    assert r.macs["backward_input"] == 486
    assert r.macs_saved_strided == 1350 - 486
    # cycles: aware ceil(3/4)*ceil(2/4)*ceil(9/2)*9 = 45; dense ceil(25/2)*9 = 117
    assert r.cycles_saved_strided == 117 - 45
    assert conv_layer_step("c", ConvShape(1, 2, 3, 5, 5, 3, 3, 1, 1), cfg()).macs_saved_strided == 0
    assert conv_layer_step("c", s, cfg(), need_input_grad=False).macs_saved_strided == 0


def _nonzero_taps_brute_force(h, w, k, stride, pad):
    """Count (dX pixel, tap) pairs of the dense zero-inserted conv that read a real dY sample."""
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    count = 0
    for y in range(h):
        for x in range(w):
            for a in range(k):
                for b in range(k):
                    oy, ox = y + pad - a, x + pad - b   # forward: y = oy*stride + a - pad
                    if oy % stride == 0 and ox % stride == 0 and 0 <= oy // stride < ho and 0 <= ox // stride < wo:
                        count += 1
    return count


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 9), st.integers(3, 9), st.sampled_from([1, 3]), st.sampled_from([1, 2, 3]), st.integers(0, 1))
def test_saved_macs_bound_the_zero_work(h, w, k, stride, pad):
    if k == 1:
        pad = 0
    s = ConvShape(1, 1, 1, h, w, k, k, stride, pad)
    r = conv_layer_step("c", s, cfg())
    dense = h * w * k * k
    useful_nonzero = _nonzero_taps_brute_force(h, w, k, stride, pad)
    # the dense conv reads exactly dense - useful_nonzero zeros; the stride-aware PE reads none of them
    # (its count may include taps on padding, so it is at least the non-zero count)
    assert r.macs["backward_input"] >= useful_nonzero
    assert r.macs_saved_strided == (dense - r.macs["backward_input"] if stride > 1 else 0)


def test_memory_bound_step_hand_worked():
    s = ConvShape(1, 8, 4, 4, 4, 3, 3, 1, 1)
    # forward DRAM bytes: x 128 + w 288 + y 64 = 480; at 1 B/cycle and 100 cycles overhead
    r = conv_layer_step("c", s, cfg(dram_bytes_per_cycle=1.0, layer_overhead_cycles=100))
    assert r.cycles["forward"] == 580
    assert r.bytes_dram == 3 * 480


def test_training_step_totals_tiny_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
    r = eta_training_step(model, (3, 8, 8), cfg(), batch=2)
    conv = 2 * 4 * 16 * 3 * 9        # n * cout * ho*wo * cin * k*k
    lin = 2 * 64 * 10
    # first layer needs no input gradient
    assert r["macs"] == 2 * conv + 3 * lin
    assert r["macs_saved_strided"] == 0
    assert r["gops"] == pytest.approx(2 * r["macs"] / r["latency_s"] / 1e9)
    assert r["latency_s"] == pytest.approx(r["cycles"] / 1e8)
    kinds = [l["kind"] for l in r["layers"]]
    assert kinds == ["conv", "norm", "elementwise", "conv", "update"]
    # update: params 108 + 8 + 650 = 766; DRAM 766 * (2*4 + 2) bytes at 1e9 B/cycle; ops 2*766/4 lanes
    assert r["layers"][-1]["cycles"]["update"] == 383
    # norm on the unified core: 2*4*16 = 128 elements, 6/4/2 ops each, 4 lanes
    assert r["layers"][1]["cycles"] == {"forward": 192, "backward_input": 128, "backward_weight": 64}


def test_builtin_array_and_errors(tmp_path):
    a = load_array()
    assert a.pes == a.clusters * a.rows * a.cols and a.peak_gops == pytest.approx(2 * a.pes * a.clock_hz / 1e9)
    assert all(v.split(":")[0] in ("assumption", "datasheet", "calibrated") for v in a.sources.values())
    raw = yaml.safe_load(DEFAULT_FILE.read_text())
    raw["noc"]["bytes_per_cycle"]["value"] = -1
    bad = tmp_path / "a.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(TinyclError, match="noc.bytes_per_cycle"):
        load_array(bad)
    raw = yaml.safe_load(DEFAULT_FILE.read_text())
    raw["noc"]["resend_pixels"].pop("range")
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(TinyclError, match="resend_pixels.*range"):
        load_array(bad)
    raw = yaml.safe_load(DEFAULT_FILE.read_text())
    raw["clock_hz"] = {"value": 1e8, "source": "assumption: x", "range": [1e8, 2e8]}   # the device's, not here
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(TinyclError, match="clock_hz"):
        load_array(bad)
    with pytest.raises(TinyclError, match="not found"):
        load_array(tmp_path / "missing.yaml")
    with pytest.raises(TinyclError):
        eta_training_step(nn.Sequential(nn.Linear(2, 2)), (2,), a, batch=0)


def test_cli_json():
    ap = argparse.ArgumentParser()
    add_eta_parser(ap.add_subparsers())
    args = ap.parse_args(["eta", "--model", "resnet20", "--batch", "2", "--json"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    d = json.loads(out.getvalue())
    assert {"gops", "latency_s", "macs_saved_strided", "layers"} <= set(d)
    # resnet20's two stride-2 3x3 convs and two stride-2 1x1 shortcuts, batch 2:
    # 3x3 16->32 on 32x32: dense 2*16*1024*32*9 - useful 2*32*256*16*9; 3x3 32->64 on 16x16 likewise
    s1 = 2 * 16 * 1024 * 32 * 9 - 2 * 32 * 256 * 16 * 9
    s2 = 2 * 32 * 256 * 64 * 9 - 2 * 64 * 64 * 32 * 9
    p1 = 2 * 16 * 1024 * 32 - 2 * 32 * 256 * 16
    p2 = 2 * 32 * 256 * 64 - 2 * 64 * 64 * 32
    assert d["macs_saved_strided"] == s1 + s2 + p1 + p2
    args = ap.parse_args(["eta", "--model", "resnet8", "--batch", "1"])
    with contextlib.redirect_stdout(io.StringIO()) as o:
        args.func(args)
    assert "GOPS" in o.getvalue()


def test_ddr_bandwidth_is_its_source_figure():
    # 29.9 GB/s (2 x 64-bit DDR3-1866) at the 200 MHz clock is 149.5 B/cycle (the file once said 75)
    t = load_target("eta-fpga")
    assert t.level("DDR3").bandwidth_bytes_per_cycle * t.clock_hz == pytest.approx(29.9e9)
    a = load_array()
    assert a.dram_bytes_per_cycle == t.level("DDR3").bandwidth_bytes_per_cycle and a.clock_hz == t.clock_hz


def test_resend_period_and_batch_come_from_the_file():
    a = load_array()
    assert a.resend_pixels == 1024 and a.batch == 32
    assert a.params["noc.resend_pixels"].tag == "assumption" and a.params["noc.resend_pixels"].range
    assert a.params["training.batch"].fitted_to == "ETA GOPS, resnet20"
    # the weights are re-sent once per clusters x resend_pixels output pixels: hand-worked
    s = ConvShape(1, 8, 4, 40, 40, 3, 3, 1, 1)        # 1600 output pixels, w = 288 B
    small = cfg(clusters=2, resend_pixels=100)          # ceil(1600 / 200) = 8 sends
    big = cfg(clusters=2, resend_pixels=1000)           # ceil(1600 / 2000) = 1 send
    assert step_bytes(s, "forward", small)[0] - step_bytes(s, "forward", big)[0] == 7 * 288
    over = load_array(overrides={"eta-array:noc.resend_pixels": 256})
    assert over.resend_pixels == 256
    r32 = eta_training_step(nn.Sequential(nn.Linear(2, 2)), (2,), a)
    assert r32["batch"] == 32
