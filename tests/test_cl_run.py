"""The `tinycl run` pipeline end to end on a tiny generated image folder."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cl_fixtures import make_image_folder
from tinycl.cl.runner import run
from tinycl.errors import TinyclError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


def cfg_for(folder, **kw):
    base = {"data": f"imagefolder:{folder}", "model": "tinycl-net", "backbone": "none", "latent_layer": "relu",
            "initial_classes": 2, "classes_per_experience": 1, "pretrain_epochs": 2, "epochs": 2,
            "batch_size": 8, "replay_batch": 8, "n_replays": 20, "lr_bits": 4, "learning_rate": 0.05,
            "seed": 0, "target": "vega"}
    base.update(kw)
    return base


def without_timing(res):
    res = json.loads(json.dumps(res, default=str))
    res.pop("timing")
    for e in res["per_experience"]:
        e.pop("seconds")
    return res


def test_latent_replay_results_schema_and_bytes(folder, tmp_path):
    res = run(cfg_for(folder), tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "results.json").exists()
    on_disk = json.loads((tmp_path / "r" / "results.json").read_text())
    for k in ("accuracy_matrix", "average_accuracy", "forgetting", "bwt", "replay_memory_bytes", "latent_shape",
              "lr_bits", "n_replays", "strategy", "precision", "config", "timing"):
        assert k in on_disk, k
    r = res["accuracy_matrix"]
    assert len(r) == 3 and r[0][1] is None and all(v is not None for v in r[2])
    # 8 channels x 14 x 14 latents at 4 bits: 784 payload bytes per row, 4 bytes of ids, 20 slots full
    d = 8 * 14 * 14
    assert res["latent_shape"] == [8, 14, 14]
    mem = res["replay_memory_bytes"]
    assert mem["payload"] == 20 * math.ceil(d * 4 / 8) and mem["labels"] == 40 and mem["experiences"] == 40
    assert mem["metadata"] == 8 * 8  # per-channel fp32 scale + zero point
    assert 0.0 <= res["average_accuracy"] <= 1.0


def test_raw_replay_gets_equal_bytes(folder, tmp_path):
    lat = run(cfg_for(folder, lr_bits=8), tmp_path / "lat", progress=False)
    raw = run(cfg_for(folder, strategy="raw_replay", lr_bits=8), tmp_path / "raw", progress=False)
    budget = lat["footprint_bytes"]["replay_memory"]
    assert raw["footprint_bytes"]["replay_memory"] <= budget
    per_raw = 3 * 16 * 16 + 4
    assert budget - raw["footprint_bytes"]["replay_memory"] < per_raw + 64  # no room for one more image
    assert raw["replay_capacity"] == (budget - 8) // per_raw


def test_raw_replay_front_over_memory_equals_front_per_step(folder, tmp_path, monkeypatch):
    """The INT8 front run once over the memory per experience gives the per-step replays bit for bit."""
    from tinycl.cl.strategies import latent_replay

    cfg = cfg_for(folder, strategy="raw_replay", lr_bits=8)
    calls = []
    real = latent_replay.LatentReplay._memory_through_front
    monkeypatch.setattr(latent_replay.LatentReplay, "_memory_through_front",
                        lambda self: calls.append(1) or real(self))
    cached = run(cfg, tmp_path / "cached", progress=False)
    assert calls  # the batched path ran
    monkeypatch.setattr(latent_replay, "CACHE_BYTES", 0)  # the front on each step's draw
    calls.clear()
    per_step = run(cfg, tmp_path / "step", progress=False)
    assert not calls
    assert without_timing(cached) == without_timing(per_step)


@pytest.mark.parametrize("strategy", ["naive", "joint"])
def test_bounds_strategies_run(folder, tmp_path, strategy):
    res = run(cfg_for(folder, strategy=strategy, model="resnet8", latent_layer="block2_1", epochs=1),
              tmp_path / strategy, progress=False)
    assert res["replay_memory_bytes"]["total"] == 0 and len(res["accuracy_matrix"]) == 3


def test_resume_after_stop_gives_identical_results(folder, tmp_path):
    full = run(cfg_for(folder), tmp_path / "full", progress=False)
    part = run(cfg_for(folder), tmp_path / "part", progress=False, stop_after=1)
    assert part == {"stopped_after": 1}
    resumed = run({}, tmp_path / "part", resume=True, progress=False)
    assert without_timing(resumed) == without_timing(full)
    with pytest.raises(TinyclError, match="already holds a run"):
        run(cfg_for(folder), tmp_path / "full", progress=False)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tinycl.cli", *args], capture_output=True, text=True, **kw)


def test_kill_and_resume_via_cli(folder, tmp_path):
    sets = [f"--set={k}={v}" for k, v in cfg_for(folder, epochs=6).items()]
    ref = _cli("run", *sets, "--out", str(tmp_path / "ref"), "--quiet")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "tinycl.cli", "run", *sets, "--out", str(out), "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "state.ckpt").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    if (out / "results.json").exists():
        pytest.skip("run finished before it could be killed")
    res = _cli("run", "--resume", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    a = without_timing(json.loads((tmp_path / "ref" / "results.json").read_text()))
    b = without_timing(json.loads((out / "results.json").read_text()))
    assert a == b


def test_cli_errors_are_one_line(folder, tmp_path):
    r = _cli("run", "--set", "lr_bits=12", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "lr_bits" in r.stderr
    r = _cli("run", "--data", f"imagefolder:{tmp_path}/nothing", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "state.ckpt").write_bytes(b"TINYCL\x01\x00" + os.urandom(100))
    r = _cli("run", "--resume", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "state.ckpt" in r.stderr
    r = _cli("run", "--set", f"data=imagefolder:{folder}", "--set", "model=tinycl-net", "--set", "backbone=none",
             "--set", "latent_layer=fc", "--out", str(tmp_path / "z"))
    assert r.returncode == 2 and "latent_layer" in r.stderr


def test_pretrain_cli_writes_a_loadable_backbone(folder, tmp_path):
    out = tmp_path / "bb.ckpt"
    r = _cli("pretrain", "--data", f"imagefolder:{folder}", "--model", "tinycl-net", "--initial-classes", "2",
             "--epochs", "3", "--out", str(out), "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["bytes"] == out.stat().st_size and len(info["classes"]) == 2
    assert info["test_accuracy_initial_classes"] > 0.5 + 1e-9  # two easy classes: better than chance
    from tinycl.cl.backbone import build_model, load_backbone
    model = build_model(load_backbone(out))
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 4)


def test_cwr_star_option_runs_and_resumes(folder, tmp_path):
    full = run(cfg_for(folder, cwr=True), tmp_path / "a", progress=False)
    run(cfg_for(folder, cwr=True), tmp_path / "b", progress=False, stop_after=2)
    assert without_timing(run({}, tmp_path / "b", resume=True, progress=False)) == without_timing(full)


def test_cwr_star_consolidation_by_hand():
    from torch import nn

    from tinycl import from_torch
    from tinycl.cl.cwr import CWRStar
    net = from_torch(nn.Sequential(nn.Flatten(), nn.Linear(2, 3)), (2,))
    cwr = CWRStar(net)
    cwr.before_experience(torch.tensor([0, 0, 1]))
    assert torch.equal(net.named_parameters()["1.weight"], torch.zeros(3, 2))
    net.named_params()["1.weight"].set(torch.tensor([[1.0, 3.0], [3.0, 5.0], [9.0, 9.0]]))
    cwr.after_experience()  # mean over present classes 0,1 = 3 -> rows [-2, 0], [0, 2]
    assert torch.equal(cwr.saved[:2], torch.tensor([[-2.0, 0.0], [0.0, 2.0]]))
    assert cwr.past.tolist() == [2, 1, 0]
    cwr.before_experience(torch.tensor([0, 0]))  # class 0 again, 2 samples: k = sqrt(2/2) = 1
    net.named_params()["1.weight"].set(torch.tensor([[4.0, 4.0], [0.0, 0.0], [0.0, 0.0]]))
    cwr.after_experience()  # centred row [0, 0]; (saved * 1 + new) / 2 = [-1, 0]
    assert torch.equal(cwr.saved[0], torch.tensor([-1.0, 0.0]))
    assert torch.equal(net.named_parameters()["1.weight"][:2], cwr.saved[:2])


def test_run_follows_a_datasets_official_stream(tmp_path):
    """CORe50-style data carries its own experiences; the run uses them as they are."""
    from test_core50 import _write_fake

    from tinycl.cl.core50 import load_core50
    from tinycl.data import register_loader
    _write_fake(tmp_path / "c50", scenarios=("nc",), n_runs=1)
    register_loader("core50nc", lambda p: load_core50(p, scenario="nc", run=0))
    official = load_core50(tmp_path / "c50", scenario="nc", run=0).experiences
    res = run({"data": f"core50nc:{tmp_path / 'c50'}", "model": "tinycl-net", "backbone": "none",
               "latent_layer": "relu", "pretrain_epochs": 1, "epochs": 1, "batch_size": 4, "replay_batch": 4,
               "n_replays": 10}, tmp_path / "r", progress=False)
    assert [e["classes"] for e in res["experiences"]] == [e.classes for e in official]
    assert [e["train"] for e in res["experiences"]] == [len(e.train_idx) for e in official]


def test_run_on_a_cifar10_pickle_folder(tmp_path):
    from test_data import _write_cifar
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, n_per_batch=40)
    r = _cli("run", "--data", f"cifar10:{folder}", "--set", "model=tinycl-net", "--set", "backbone=none",
             "--set", "latent_layer=relu", "--set", "initial_classes=4", "--set", "classes_per_experience=3",
             "--set", "pretrain_epochs=1", "--set", "epochs=1", "--set", "n_replays=16", "--set", "batch_size=8",
             "--set", "replay_batch=8", "--out", str(tmp_path / "out"), "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["latent_shape"] == [8, 30, 30] and len(res["experiences"]) == 3
    assert sum(e["train"] for e in res["experiences"]) == 5 * 40


def test_more_user_errors_are_one_line(folder, tmp_path):
    r = _cli("run", "--set", "target=nosuch", "--out", str(tmp_path / "t"))
    assert r.returncode == 2 and "target" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "t").exists()  # stopped before any work
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _cli("run", "--data", f"imagefolder:{folder}", "--set", "model=tinycl-net", "--set", "backbone=none",
             "--set", "latent_layer=relu", "--out", str(blocker / "sub"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = _cli("pretrain", "--batch-size", "0", "--out", str(tmp_path / "b.ckpt"))
    assert r.returncode == 2 and "--batch-size" in r.stderr
    from tinycl.cl.config import apply_sets, validate
    assert validate(apply_sets({}, ["learning_rate=1e-3"]))["learning_rate"] == 0.001


def test_stale_factory_backbone_is_not_reused_for_another_config(folder, tmp_path):
    out = tmp_path / "r"
    run(cfg_for(folder), out, progress=False, stop_after=1)
    (out / "state.ckpt").unlink()  # as if killed after the factory phase, before a checkpoint
    with pytest.raises(TinyclError, match="another config"):
        run(cfg_for(folder, seed=5), out, progress=False)
    res = run(cfg_for(folder), out, progress=False)  # same config: the backbone is reused
    assert res["backbone"] == "factory"


def test_the_back_trains_its_batch_norms(folder, tmp_path):
    """The adaptive back's BatchNorms use batch statistics and update their running stats.

    Regression: slicing the (eval) backbone gave a training-mode root around eval-mode
    children, which from_torch correctly reads as frozen BNs, so the back trained with the
    backbone's running statistics and naive fine-tuning collapsed to one class.
    """
    from tinycl.cl.config import validate
    from tinycl.cl.learner import Learner
    from tinycl.cl.setup import build
    from tinycl.models.layers import BatchNorm2d

    cfg = validate(cfg_for(folder, model="resnet8", latent_layer="block2_1", pretrain_epochs=1))
    setup = build(cfg, tmp_path, progress=False)
    learner = Learner(setup.back, setup.latent_shape, "fp32", 0.05, 0.9, 0.0, torch.Generator().manual_seed(0))
    bns = [layer for layer in learner.net.root.layers() if isinstance(layer, BatchNorm2d)]
    assert len(bns) >= 2 and not any(b.frozen_stats for b in bns)  # block3_1 has BNs
    before = [b.buffers["running_mean"].clone() for b in bns]
    x = setup.train_latents[:16]
    learner.train_experience(x, setup.dataset.train.y[:16], epochs=1, batch_size=8)
    assert all(not torch.equal(b0, b.buffers["running_mean"]) for b0, b in zip(before, bns))


@pytest.mark.parametrize("quantize_new", [False, True])
def test_lr_quantize_new_trains_on_the_replay_grid(folder, tmp_path, monkeypatch, quantize_new):
    """With lr_quantize_new, every new latent the back trains on is a point of the memory's grid."""
    from tinycl.cl import runner as R
    from tinycl.cl.strategies import latent_replay as LR

    seen = []
    real = R.Learner.train_experience

    def spy(self, x, y, *a, **kw):
        seen.append(x.clone())
        return real(self, x, y, *a, **kw)

    quantizers = []
    real_memory = LR.latent_memory  # the strategy's memory, its quantizer beside it

    def memory_spy(*a, **kw):
        m = real_memory(*a, **kw)
        quantizers.append(m.quantizer)
        return m

    monkeypatch.setattr(R.Learner, "train_experience", spy)
    monkeypatch.setattr(LR, "latent_memory", memory_spy)
    run(cfg_for(folder, lr_bits=2, lr_quantize_new=quantize_new), tmp_path / "r", progress=False)
    q = quantizers[0]
    on_grid = [torch.equal(q.decode(q.encode(x)), x) for x in seen]
    assert len(seen) == 3 and all(on_grid) == quantize_new
