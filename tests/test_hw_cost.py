"""Cost model on hand-made targets: cycles, latency, energy and tiling by hand."""

import math

import pytest
import yaml
from hypothesis import given, settings, strategies as st
from torch import nn

from tinycl.errors import TinyclError
from tinycl.hw.cost import learning_event_cost, profile
from tinycl.hw.energy import battery_life_hours
from tinycl.hw.target import load_target, parse_target
from tinycl.hw.tiling import tile_step
from tinycl.hw.workload import build_workload

A = "assumption: test"


def N(v):
    """A tagged test number: an assumption with a range around its value."""
    return {"value": v, "source": A, "range": [0, 2 * v]}


TOY = {
    "schema": 1, "name": "toy", "kind": "flat", "precisions": ["fp32"],
    "clock_hz": N(1000), "cores": N(1),
    "memory": [{"name": "RAM", "size_bytes": N(1 << 20)}],
    "efficiency": [{"precision": "fp32", "primitive": "conv", "cores": 1, "forward": 2,
                    "backward_input": 2, "backward_weight": 2, "source": A,
                    "range": [0.5, 2.0]}],
    "elementwise_ops_per_cycle": {"fp32": N(1)},
    "copy_elements_per_cycle": N(1),
    "overheads": {"layer_cycles": N(0), "tile_cycles": N(0)},
    "power": {"active_w": N(2.0), "idle_w": N(0)},
}


def lin():
    m = nn.Sequential()
    m.add_module("fc", nn.Linear(4, 3))
    return m


def test_flat_latency_and_energy_by_hand():
    t = parse_target(TOY)
    p = profile(lin(), (4,), t, "fp32", None, batch=1)
    # forward 12 MAC / 2 = 6 cycles, no input gradient, weight grad 12 / 2 = 6, update 15 ops / 1 = 15
    assert p["layers"][0]["step_cycles"] == {"forward": 6, "backward_input": 0, "backward_weight": 6, "update": 15}
    assert p["total"]["cycles"] == 27
    assert p["total"]["latency_s"] == pytest.approx(0.027)
    assert p["total"]["energy_j"] == pytest.approx(2.0 * 0.027)
    # 3 replays of the raw input: 4 training steps of 1 sample
    p4 = profile(lin(), (4,), t, "fp32", None, batch=1, n_replays=3)
    assert p4["steps"] == 4 and p4["total"]["cycles"] == 4 * 27


def test_memory_bound_when_bandwidth_given():
    raw = yaml.safe_load(yaml.safe_dump(TOY))
    raw["memory"][0]["bandwidth_bytes_per_cycle"] = N(1)
    p = profile(lin(), (4,), parse_target(raw), "fp32", None, batch=1)
    # forward reads x 16 B + W 60 B, writes y 12 B = 88 B at 1 B/cycle > 6 compute cycles
    assert p["layers"][0]["step_cycles"]["forward"] == 88


def test_per_op_energy_model():
    raw = yaml.safe_load(yaml.safe_dump(TOY))
    raw["energy_pj_per_mac"] = {"fp32": N(1e6)}   # 1 uJ per MAC
    p = profile(lin(), (4,), parse_target(raw), "fp32", None, batch=1)
    assert p["layers"][0]["energy_j"] == pytest.approx((12 + 12 + 15) * 1e-6)


def test_battery_life_by_hand():
    # 1 J a minute on 1000 mAh at 3.7 V = 13,320 J at 1/60 W -> 799,200 s = 222 h
    assert battery_life_hours(1.0, 1, 1000, 3.7) == pytest.approx(222.0)
    assert battery_life_hours(1.0, 1, 1000, 3.7, idle_power_w=1 / 60) == pytest.approx(111.0)
    with pytest.raises(TinyclError):
        battery_life_hours(1.0, 1, 0, 3.7)


@settings(max_examples=12, deadline=None)
@given(cin=st.sampled_from([3, 16, 64, 256]), cout=st.sampled_from([8, 32, 128]), hw=st.sampled_from([4, 16, 32]),
       k=st.sampled_from([1, 3]), step=st.sampled_from(["forward", "backward_input", "backward_weight"]))
def test_tiles_fit_l1_and_move_at_least_the_step_bytes(cin, cout, hw, k, step):
    m = nn.Sequential()
    m.add_module("pre", nn.Conv2d(cin, cin, 1))
    m.add_module("conv", nn.Conv2d(cin, cout, k, padding=k // 2))
    w = build_workload(m, (cin, hw, hw), None, "fp32")
    vega = load_target("vega")
    layer = w.layers[1]
    tp = tile_step(layer, step, vega, "fp32", 1)
    assert tp.fits and tp.tiles >= 1 and tp.l1_bytes <= vega.level("L1").size_bytes
    assert tp.dma_bytes >= layer.bytes_written[step]
    assert tp.cycles >= tp.compute_cycles
    assert tp.cycles >= tp.dma_bytes / vega.level("L2").bandwidth_bytes_per_cycle


def test_fp16_faster_and_int8_front_cheaper():
    m = nn.Sequential()
    m.add_module("a", nn.Conv2d(16, 32, 3, padding=1))
    m.add_module("b", nn.Conv2d(32, 32, 3, padding=1))
    c32 = profile(m, (16, 16, 16), "vega", "fp32", None)["total"]["cycles"]
    c16 = profile(m, (16, 16, 16), "vega", "fp16", None)["total"]["cycles"]
    assert 1.0 < c32 / c16 <= 2.0
    froz = profile(m, (16, 16, 16), "vega", "fp32", "a")
    assert froz["layers"][0]["frozen"] and froz["layers"][0]["step_cycles"]["backward_weight"] == 0


def test_learning_event_cost_and_errors():
    r = learning_event_cost(lin(), (4,), None, "stm32l4", "fp32", 1, 0, 8)
    assert set(r) >= {"latency_s", "energy_j", "peak_memory_bytes", "fits"}
    assert r["fits"] and set(r["peak_memory_bytes"]) == {"SRAM", "FLASH"}
    assert r["energy_j"] == pytest.approx(r["latency_s"] * load_target("stm32l4").active_power_w)
    with pytest.raises(TinyclError, match="does not support precision"):
        profile(lin(), (4,), parse_target(TOY), "fp16")
    assert math.isfinite(r["latency_s"])


def test_per_byte_energy_is_applied():
    # it once received no bytes, so memory energy was silently 0 J
    raw = yaml.safe_load(yaml.safe_dump(TOY))
    raw["energy_pj_per_mac"] = {"fp32": N(1e6)}                 # 1 uJ per MAC
    raw["memory"][0]["energy_pj_per_byte"] = N(1e6)             # 1 uJ per byte
    p = profile(lin(), (4,), parse_target(raw), "fp32", None, batch=1)
    # bytes: forward x 16 + W 60 read, y 12 written = 88; weight gradient dY 12 + x 16 read, dW 60 written
    # = 88; update W and dW 120 read, W 60 written = 180 (no input gradient in the first layer)
    assert p["layers"][0]["bytes_by_level"] == {"RAM": 88 + 88 + 180}
    assert p["layers"][0]["energy_j"] == pytest.approx((12 + 12 + 15) * 1e-6 + 356 * 1e-6)
    assert p["total"]["bytes_moved"] == 356
    raw.pop("energy_pj_per_mac")                                  # per byte alone would be ignored: refused
    with pytest.raises(TinyclError, match="energy_pj_per_byte"):
        parse_target(raw)


def test_accelerator_targets_run_their_one_model():
    from tinycl.hw.accel_eta import eta_training_step, load_array
    from tinycl.hw.accel_tinycl import epoch_summary, load_arch
    from tinycl.models.registry import create
    net = create("tinycl-net")
    p = profile(net, net.input_shape, "tinycl-asic", "fp32", None, batch=1)
    s = epoch_summary(load_arch(), net, net.input_shape, ("snake",), samples=50_000, replays=0)["total"]["snake"]
    assert p["mapping"] == "tinycl-pu"
    assert sum(r["cycles"] for r in p["layers"]) == s["step_cycles"]      # the PU's own step, pass for pass
    assert p["total"]["latency_s"] * 50_000 == pytest.approx(s["epoch_latency_s"], rel=1e-3)
    assert p["total"]["energy_j"] * 50_000 == pytest.approx(s["epoch_energy_j"], rel=1e-3)
    net = create("resnet20")
    p = profile(net, net.input_shape, "eta-fpga", "int8", None, batch=32)
    r = eta_training_step(net, net.input_shape, load_array())
    assert p["mapping"] == "eta-array" and p["total"]["cycles"] == r["cycles"]


def test_step_overhead_and_overrides():
    net = lin()
    base = profile(net, (4,), "p100", "fp32", None, batch=1, n_replays=3)
    more = profile(net, (4,), "p100", "fp32", None, batch=1, n_replays=3, overrides={"p100:overheads.step_cycles": 1000})
    assert more["total"]["cycles"] - base["total"]["cycles"] == pytest.approx(4 * 1000)   # 4 steps
    with pytest.raises(TinyclError, match="bogus"):
        profile(net, (4,), "p100", "fp32", overrides={"p100:bogus": 1})
