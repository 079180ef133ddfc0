"""Memory planner: the training-step timeline by hand, placement and the fits verdict."""

import copy

import yaml
from torch import nn

from tinycl.hw.memory import plan_memory, training_timeline
from tinycl.hw.target import TARGET_DIR, parse_target
from tinycl.hw.workload import build_workload


def mlp():
    m = nn.Sequential()
    m.add_module("fc1", nn.Linear(4, 3))
    m.add_module("relu", nn.ReLU())
    m.add_module("fc2", nn.Linear(3, 2))
    return m


def test_timeline_by_hand():
    w = build_workload(mlp(), (4,), None, "fp32", batch=1)
    tl = dict(training_timeline(w, flat=False))
    # forward: fc1 holds x(4)+h(3); relu x(4, saved)+h(3)+r(3); fc2 x+r+y(2)  -> x4 bytes
    assert tl["fc1:forward"] == 28 and tl["relu:forward"] == 40 and tl["fc2:forward"] == 36
    # backward fc2: saved x,r (28) + dY 2 + dX 3 (20) + dW 8 params (32) = 80
    assert tl["fc2:backward"] == 80
    # relu: saved 28 + dY 3 + dX 3 (24) = 52; fc1: saved x (16) + dY 3 (12) + dW 15 (60) = 88
    assert tl["relu:backward"] == 52 and tl["fc1:backward"] == 88
    flat = dict(training_timeline(w, flat=True))
    assert flat["fc2:backward"] == 80 + 32      # plus the transposed W of fc2's input gradient


def _target(sram, flash, replay_ok=True):
    raw = yaml.safe_load((TARGET_DIR / "stm32l4.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["memory"][0]["size_bytes"]["value"] = sram
    raw["memory"][1]["size_bytes"]["value"] = flash
    return parse_target(raw)


def test_placement_and_fits():
    m = nn.Sequential()
    m.add_module("front", nn.Linear(16, 16, bias=False))
    m.add_module("back", nn.Linear(16, 4, bias=False))
    w = build_workload(m, (16,), "front", "fp32", batch=1, n_replays=10, lr_bits=8)
    plan = plan_memory(w, _target(4096, 4096))
    assert plan.groups["frozen_weights"] == 256 and plan.placement["frozen_weights"] == "FLASH"
    assert plan.groups["replay_memory"] == 160 and plan.placement["replay_memory"] == "SRAM"
    assert plan.groups["adaptive_weights"] == 64 * 4
    assert plan.fits and plan.peak_bytes["FLASH"] == 256
    assert plan.peak_bytes["SRAM"] == sum(v for g, v in plan.groups.items() if g != "frozen_weights")
    w2 = build_workload(m, (16,), "front", "fp32", batch=1, n_replays=1000, lr_bits=8)
    plan2 = plan_memory(w2, _target(4096, 4096))
    assert not plan2.fits and plan2.placement["replay_memory"] == "none"
    assert any("replay_memory" in n for n in plan2.notes)


def test_momentum_state_and_precision_scale_memory():
    w32 = build_workload(mlp(), (4,), None, "fp32")
    w16 = build_workload(mlp(), (4,), None, "fp16")
    t = _target(4096, 4096)
    p32, p16 = plan_memory(w32, t), plan_memory(w16, t)
    assert p32.groups["adaptive_weights"] == 2 * p16.groups["adaptive_weights"] == 23 * 4
    assert plan_memory(w32, t, "sgd-momentum").groups["optimizer_state"] == 23 * 4
    assert p32.training_peak == 2 * p16.training_peak
