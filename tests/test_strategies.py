"""The strategies of tinycl.cl.strategies: losses against autograd, footprints by hand, small runs."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cl_fixtures import make_image_folder, tiny_config
from tinycl.cl import losses as L
from tinycl.cl.config import validate
from tinycl.cl.runner import run
from tinycl.cl.setup import build
from tinycl.cl.strategies import REGISTRY
from tinycl.cl.strategies.derpp import derpp_loss
from tinycl.cl.strategies.er_ace import ace_loss
from tinycl.cl.strategies.lwf import lwf_loss
from tinycl.errors import TinyclError

NEW = ("lwf", "ewc", "si", "derpp", "er_ace", "gdumb", "ncm")
shapes = st.tuples(st.integers(2, 9), st.integers(2, 7), st.integers(0, 2 ** 16))


def _batch(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    return z, torch.randint(0, k, (n,), generator=g), g


def _autograd(fn, z):
    z = z.clone().requires_grad_(True)
    v = fn(z)
    v.backward()
    return v.detach(), z.grad


# ----------------------------------------------------------------- losses vs autograd, float64
@settings(max_examples=25, deadline=None)
@given(shapes)
def test_masked_cross_entropy_matches_autograd(s):
    z, y, _ = _batch(*s)
    present = torch.unique(y)
    remap = torch.full((z.shape[1],), -1, dtype=torch.long)
    remap[present] = torch.arange(len(present))
    v, g = L.masked_cross_entropy(z, y)
    rv, rg = _autograd(lambda t: F.cross_entropy(t[:, present], remap[y]), z)
    torch.testing.assert_close(v, rv)
    torch.testing.assert_close(g, rg)


@settings(max_examples=25, deadline=None)
@given(shapes, st.floats(0.5, 4.0))
def test_lwf_distillation_gradient_matches_autograd(s, temp):
    z, y, g0 = _batch(*s)
    teacher = torch.randn(z.shape, generator=g0, dtype=torch.float64) * 2
    units = torch.arange(max(1, z.shape[1] - 1))
    ref = lambda t: F.kl_div(F.log_softmax(t[:, units] / temp, 1), F.softmax(teacher[:, units] / temp, 1),  # noqa: E731
                             reduction="batchmean")
    v, g = L.distillation(z, teacher, units, temp)
    rv, rg = _autograd(ref, z)
    torch.testing.assert_close(v, rv)
    torch.testing.assert_close(g, rg)
    v, g = lwf_loss(z, y, teacher, units, 0.7, temp)
    rv, rg = _autograd(lambda t: F.cross_entropy(t, y) + 0.7 * ref(t), z)
    torch.testing.assert_close(v, rv)
    torch.testing.assert_close(g, rg)


@settings(max_examples=25, deadline=None)
@given(shapes, st.integers(0, 9))
def test_der_and_er_ace_losses_match_autograd(s, n_new):
    z, y, g0 = _batch(*s)
    n_new = min(n_new, len(y))
    stored = torch.randn(len(y) - n_new, z.shape[1], generator=g0, dtype=torch.float64)

    def der_ref(t):
        v = F.cross_entropy(t[:n_new], y[:n_new]) if n_new else t.sum() * 0
        if n_new == len(y):
            return v
        return v + 0.3 * F.mse_loss(t[n_new:], stored) + 0.6 * F.cross_entropy(t[n_new:], y[n_new:])

    v, g = derpp_loss(z, y, n_new, stored, 0.3, 0.6)
    rv, rg = _autograd(der_ref, z)
    torch.testing.assert_close(v, rv)
    torch.testing.assert_close(g, rg)

    def ace_ref(t):
        if n_new in (0, len(y)):
            return F.cross_entropy(t, y)
        cur = torch.unique(y[:n_new])
        oh = F.one_hot(y[:n_new], t.shape[1])[:, cur].to(t.dtype)
        new = -(oh * F.log_softmax(t[:n_new, cur], 1)).sum(1).mean()  # Avalanche's ACECriterion
        return (F.cross_entropy(t[n_new:], y[n_new:]) + new) / 2

    v, g = ace_loss(z, y, n_new)
    rv, rg = _autograd(ace_ref, z)
    torch.testing.assert_close(v, rv)
    torch.testing.assert_close(g, rg)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 4)), min_size=1, max_size=3),
       st.floats(0.01, 10.0), st.integers(0, 2 ** 16))
def test_ewc_si_penalty_gradient_matches_autograd(dims, strength, seed):
    g = torch.Generator().manual_seed(seed)
    w = {f"p{i}": torch.randn(d, generator=g, dtype=torch.float64) for i, d in enumerate(dims)}
    imp = {k: torch.rand(v.shape, generator=g, dtype=torch.float64) for k, v in w.items()}
    anchor = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in w.items()}
    v, grads = L.quadratic_penalty(w, imp, anchor, strength)
    leaf = {k: t.clone().requires_grad_(True) for k, t in w.items()}
    ref = strength * sum((imp[k] * (leaf[k] - anchor[k]) ** 2).sum() for k in leaf)
    ref.backward()
    torch.testing.assert_close(v, ref.detach())
    for k in w:
        torch.testing.assert_close(grads[k], leaf[k].grad)


# ----------------------------------------------------------------- small runs on a tiny image folder
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = make_image_folder(tmp_path_factory.mktemp("imgs"))
    base = tiny_config(folder)
    where = tmp_path_factory.mktemp("setup")
    return base, build(validate(base), where, progress=False), where


def _run(setup, out, stop_after=None, **kw):
    base, s, _ = setup
    return run(dict(base, **kw), out, progress=False, setup=s, stop_after=stop_after)


N_BACK = 4 * 1568 + 4          # tinycl-net cut at relu: the back is fc, 4 classes x 8*14*14 latents
D = 8 * 14 * 14


def _extra(fp: dict) -> dict:
    from tinycl.cl.footprint import footprint  # noqa: F401 - the base keys
    base = {"front_weights", "back_weights", "back_master_weights", "back_gradients", "optimizer_state",
            "replay_memory", "latent_batch", "total"}
    assert fp["total"] == sum(v for k, v in fp.items() if k != "total")
    return {k: v for k, v in fp.items() if k not in base}


@pytest.mark.parametrize("strategy, extra", [
    ("lwf", {"lwf_teacher": 4 * N_BACK}),
    ("ewc", {"ewc_importance": 4 * N_BACK, "ewc_anchor": 4 * N_BACK}),
    ("si", {"si_importance": 4 * N_BACK, "si_anchor": 4 * N_BACK, "si_omega": 4 * N_BACK,
            "si_start_weights": 4 * N_BACK}),
    ("gdumb", {"gdumb_initial_back": 4 * N_BACK}),
    ("ncm", {"ncm_means": 4 * 4 * D, "ncm_counts": 4 * 4}),
    ("er_ace", {}),
    ("derpp", {}),
])
def test_each_method_runs_and_counts_its_memory(setup, tmp_path, strategy, extra):
    res = _run(setup, tmp_path / strategy, strategy=strategy)
    assert json.loads((tmp_path / strategy / "results.json").read_text())["strategy"] == strategy
    assert len(res["accuracy_matrix"]) == 3 and 0.0 <= res["average_accuracy"] <= 1.0
    fp = res["footprint_bytes"]
    assert _extra(fp) == extra
    latent_mem = 20 * (math.ceil(D * 4 / 8) + 4) + 8 * 8   # 20 slots of 4-bit rows, ids, per-channel metadata
    if strategy in ("er_ace", "gdumb"):
        assert fp["replay_memory"] == latent_mem
    if strategy == "derpp":  # + 20 rows of 4 logits at 4 bits (2 bytes) and one fp32 scale and zero point
        assert fp["replay_memory"] == latent_mem + 20 * 2 + 8
        assert res["replay_memory_bytes"]["logits"] == 20 * 2
    if strategy == "ncm":
        assert fp["back_weights"] == fp["back_gradients"] == fp["optimizer_state"] == 0
        assert res["learning_event"] is None
    ev = res["learning_event_extra"]
    assert ev["strategy"] == strategy and ev["extra_state_bytes"] >= sum(extra.values())
    assert res["learning_event"] is None or strategy != "ncm"


@pytest.mark.parametrize("strategy, precision", [
    ("derpp", "fp16"), ("er_ace", "bf16"), ("lwf", "int8"), ("ewc", "fp16"), ("si", "bf16"), ("gdumb", "int8"),
    ("derpp", "int8"), ("si", "fp16"),
])
def test_methods_train_in_other_precisions(setup, tmp_path, strategy, precision):
    res = _run(setup, tmp_path / "r", strategy=strategy, precision=precision)
    assert not res["diverged"] and res["precision"] == precision
    assert res["footprint_bytes"]["back_weights"] == N_BACK * {"fp16": 2, "bf16": 2, "int8": 1}[precision]


@pytest.mark.parametrize("strategy", ["derpp", "si", "lwf", "ncm"])
def test_resume_of_a_method_with_state_is_identical(setup, tmp_path, strategy):
    full = _run(setup, tmp_path / "full", strategy=strategy)
    assert _run(setup, tmp_path / "part", strategy=strategy, stop_after=1) == {"stopped_after": 1}
    base, s, _ = setup
    resumed = run({}, tmp_path / "part", resume=True, progress=False, setup=s)
    for r in (full, resumed):
        r.pop("timing")
        for e in r["per_experience"]:
            e.pop("seconds")
    assert resumed == full


def test_der_logits_quantized_like_latents(setup, tmp_path):
    """lr_bits=fp32: float latents and logits, no metadata; 8 bits: one byte per logit."""
    f32 = _run(setup, tmp_path / "f", strategy="derpp", lr_bits="fp32")
    assert f32["replay_memory_bytes"]["logits"] == 20 * 4 * 4 and f32["replay_memory_bytes"]["logit_metadata"] == 0
    b8 = _run(setup, tmp_path / "b", strategy="derpp", lr_bits=8, lr_quantize_new=True)
    assert b8["replay_memory_bytes"]["logits"] == 20 * 4


def test_strategy_options_are_checked_and_absent_by_default():
    assert "strategy_options" not in validate({})
    assert validate({"strategy": "lwf", "strategy_options": {"alpha": 0.5}})["strategy_options"] == {"alpha": 0.5}
    for bad, msg in (({"strategy": "lwf", "strategy_options": {"beta": 1}}, "no option 'beta'"),
                     ({"strategy": "ewc", "strategy_options": {"lambda": float("nan")}}, "finite"),
                     ({"strategy": "derpp", "strategy_options": [1]}, "mapping"),
                     ({"strategy": "ncm", "cwr": True}, "cwr"),
                     ({"strategy": "lwf", "lr_quantize_new": True}, "lr_quantize_new"),
                     ({"strategy": "nope"}, "strategy")):
        with pytest.raises(TinyclError, match=msg):
            validate(bad)


def test_the_docs_example_strategy_registers_and_runs(setup, tmp_path):
    """docs/strategies.md's example is one file's worth of code: registered, it runs and counts its bytes."""
    import re
    import types
    from pathlib import Path

    from tinycl.cl import strategies as S
    text = (Path(__file__).parent.parent / "docs" / "strategies.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    mod = types.ModuleType("tinycl.cl.strategies.myreg")
    mod.__package__ = "tinycl.cl.strategies"
    try:
        exec(compile(code, "docs/strategies.md", "exec"), mod.__dict__)
        assert "myreg" in S.REGISTRY and set(NEW) <= set(S.REGISTRY)
        res = _run(setup, tmp_path / "m", strategy="myreg", strategy_options={"strength": 0.5})
    finally:
        S.REGISTRY.pop("myreg", None)
    assert res["footprint_bytes"]["myreg_anchor"] == 4 * N_BACK
    assert res["learning_event_extra"]["extra_state_bytes"] == 4 * N_BACK
    assert "myreg" not in validate({})["strategy"]


@pytest.mark.parametrize("strategy", ["derpp", "ncm"])
def test_cli_runs_a_method_with_its_summary_and_plots(setup, tmp_path, capsys, strategy):
    from tinycl.cli import main
    base, _, where = setup
    sets = [f"{k}={v}" for k, v in base.items() if k not in ("data", "model", "backbone")]
    args = ["run", "--data", base["data"], "--model", base["model"], "--out", str(tmp_path / "o"), "--quiet",
            "--set", f"backbone={where / 'backbone.ckpt'}", "--set", f"strategy={strategy}"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["strategy"] == strategy and (tmp_path / "o" / "memory.png").exists()
    assert (res["learning_event"] is None) == (strategy == "ncm")
    assert "accuracy" in capsys.readouterr().out.lower()



def test_er_ace_step_forwards_new_and_replayed_samples_apart():
    """One ER-ACE step equals torch autograd with two forward passes (new, then replayed samples:
    batch-norm statistics per half) and (masked CE + CE) / 2, and differs from one joint pass."""
    import copy

    from torch import nn

    from tinycl import from_torch
    from tinycl.cl.strategies.er_ace import ace_step
    from tinycl.kernels.optim import SGD

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 5 * 5, 5))
    x, y, n_new = torch.randn(10, 4, 5, 5), torch.tensor([3, 4, 3, 4, 3, 0, 1, 2, 0, 1]), 5
    net = from_torch(model, (4, 5, 5))
    ace_step(net, SGD(lr=0.1, momentum=0.9), x, y, n_new)

    ref = copy.deepcopy(model).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    present = torch.unique(y[:n_new])
    remap = torch.full((5,), -1, dtype=torch.long)
    remap[present] = torch.arange(len(present))
    new = F.cross_entropy(ref(x[:n_new])[:, present], remap[y[:n_new]])
    old = F.cross_entropy(ref(x[n_new:]), y[n_new:])
    ((new + old) / 2).backward()
    opt.step()
    got = net.state_dict()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)
    # one joint forward (batch statistics over both halves) gives other weights
    joint = from_torch(model, (4, 5, 5))   # model itself is untouched (ref is a copy)
    joint.train()
    from tinycl.cl.strategies.er_ace import ace_loss
    v, g = ace_loss(joint.forward(x), y, n_new)
    joint.backward(g, need_input=False)
    joint.step(SGD(lr=0.1, momentum=0.9))
    assert not torch.allclose(joint.state_dict()["0.weight"], got["0.weight"], atol=1e-6)


def test_er_ace_replays_the_current_experience_from_the_second_on(setup, tmp_path, monkeypatch):
    """ER-ACE's memory takes an experience's samples before it trains (from the second experience on,
    as Avalanche's ER_ACE), so its replays hold the new classes; latent replay stores after training."""
    from tinycl.cl.strategies import latent_replay

    seen = {}
    real = latent_replay.LatentReplay.replay_fn

    def spy(self):
        ids = self.memory.tensors()[2] if self.memory is not None and len(self.memory) else torch.tensor([])
        seen.setdefault(self.name, []).append((self.run.i, sorted(set(ids.tolist()))))
        return real(self)
    monkeypatch.setattr(latent_replay.LatentReplay, "replay_fn", spy)
    _run(setup, tmp_path / "ace", strategy="er_ace")
    _run(setup, tmp_path / "lr", strategy="latent_replay")
    assert [i in ids for i, ids in seen["er_ace"]] == [False, True, True]
    assert [i in ids for i, ids in seen["latent_replay"]] == [False, False, False]


@pytest.mark.parametrize("strategy", ["latent_replay", "derpp", "er_ace", "gdumb"])
def test_a_setup_shared_out_of_band_is_read_only_and_gives_the_same_run(setup, tmp_path, strategy):
    """As a sweep shares a setup through Ray's object store: pickled with protocol 5, its latents and
    images travel out of band, and the worker's tensors sit on the shared buffers themselves (no
    copy). A run on them equals a run on the original, and leaves every shared byte as it was."""
    import pickle

    base, s, _ = setup
    bufs = []
    data = pickle.dumps(s, protocol=5, buffer_callback=bufs.append)
    shared = [bytearray(b.raw()) for b in bufs]  # the object store's copy of each array
    before = [bytes(b) for b in shared]
    assert sum(len(b) for b in shared) >= s.train_latents.numel() * 4 + s.dataset.train.x.numel()
    s2 = pickle.loads(data, buffers=shared)
    where = {np.frombuffer(b, np.uint8).ctypes.data for b in shared}
    assert s2.train_latents.data_ptr() in where and s2.dataset.train.x.data_ptr() in where
    a = run(dict(base, strategy=strategy), tmp_path / "a", progress=False, setup=s)
    b = run(dict(base, strategy=strategy), tmp_path / "b", progress=False, setup=s2)
    assert a["average_accuracy"] == b["average_accuracy"] and a["accuracy_matrix"] == b["accuracy_matrix"]
    assert [bytes(x) for x in shared] == before


@pytest.mark.parametrize("strategy, extra", [
    ("naive", {}), ("joint", {}), ("latent_replay", {}), ("latent_replay", {"lr_bits": 3, "lr_granularity": "tensor"}),
    ("raw_replay", {}), ("derpp", {}), ("derpp", {"replay": "raw"}), ("er_ace", {"replay": "raw"}),
    ("gdumb", {}), ("gdumb", {"replay": "raw", "lr_bits": 8}), ("lwf", {}), ("ewc", {}), ("si", {}),
    ("latent_replay", {"precision": "fp16"})])
def test_the_sweeps_bytes_before_training_are_the_runs_bytes(setup, tmp_path, strategy, extra):
    """What ``tinycl sweep`` prunes on before training (replay memory, the strategy's own state)
    equals what the run then reports in its footprint, for every strategy that trains the back."""
    from tinycl.sweep.cost import CostModel

    base, _, _ = setup
    cfg = validate(dict(base, strategy=strategy, **extra))
    replay, own = CostModel().strategy_bytes(cfg)
    fp = _run(setup, tmp_path, strategy=strategy, **extra)["footprint_bytes"]
    assert replay == fp["replay_memory"]
    assert own == _extra(fp)
    assert (replay > 0) == (strategy in ("latent_replay", "raw_replay", "derpp", "er_ace", "gdumb"))


@pytest.mark.parametrize("strategy", ["ncm", "slda"])
def test_the_sweep_refuses_to_price_a_strategy_that_does_not_train_the_back(setup, strategy):
    from tinycl.sweep.cost import CostModel

    with pytest.raises(TinyclError, match=f"strategy {strategy} does not train the back"):
        CostModel().strategy_bytes(validate(dict(setup[0], strategy=strategy)))
