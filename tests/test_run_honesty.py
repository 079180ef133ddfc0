"""A run that never lies: divergence is flagged, JSON is strict, small steps are trained by a rule."""

import json
import math

import pytest
import torch
from torch import nn

from cl_fixtures import make_image_folder
from tinycl.cl.learner import Learner
from tinycl.cli import main
from tinycl.errors import TinyclError
from tinycl.report import jsonout

TINY = ["--set", "backbone=none", "--set", "initial_classes=2", "--set", "classes_per_experience=1",
        "--set", "pretrain_epochs=1", "--set", "epochs=1", "--set", "batch_size=8", "--set", "replay_batch=8",
        "--set", "n_replays=20"]


def strict_loads(text):
    def no(c):
        raise ValueError(f"non-RFC 8259 token {c}")
    return json.loads(text, parse_constant=no)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


def test_a_diverged_run_is_flagged(folder, tmp_path, capsys):
    """fp16 at learning rate 50: the loss stops being finite; exit 3, one line, 'diverged' in the JSON."""
    out = tmp_path / "div"
    rc = main(["run", "--data", f"imagefolder:{folder}", *TINY, "--set", "model=resnet8",
               "--set", "latent_layer=block2_1", "--set", "precision=fp16", "--set", "learning_rate=50",
               "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3
    assert len(err) == 1 and "diverged" in err[0] and "from experience 0" in err[0], err
    res = strict_loads((out / "results.json").read_text())
    assert res["diverged"] is True and res["diverged_from_experience"] == 0


def test_a_sound_run_is_not_flagged(folder, tmp_path, capsys):
    out = tmp_path / "ok"
    rc = main(["run", "--data", f"imagefolder:{folder}", *TINY, "--set", "model=tinycl-net",
               "--set", "latent_layer=relu", "--out", str(out), "--quiet", "--json"])
    assert rc == 0 and capsys.readouterr().err == ""
    res = strict_loads((out / "results.json").read_text())
    assert res["diverged"] is False and res["diverged_from_experience"] is None and res["non_finite"] == []


def test_strict_json_replaces_non_finite_values_and_flags_them():
    obj = {"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}], "t": torch.tensor([0.5]),
           "ok": (1, "x", None, True)}
    text = jsonout.dumps(obj)
    back = strict_loads(text)
    assert back == {"a": None, "b": [1.0, None, {"c": None}], "t": [0.5], "ok": [1, "x", None, True],
                    "non_finite": ["a", "b[1]", "b[2].c"]}
    assert strict_loads(jsonout.dumps({"x": 1.5})) == {"x": 1.5}  # nothing replaced: no flag
    assert jsonout.dumps([float("nan")], indent=None) == "[null]"


def test_pretrain_json_is_strict(folder, tmp_path, capsys):
    """pretrain --json with no test images (test_fraction=0): the NaN accuracy is written as null, flagged."""
    rc = main(["pretrain", "--data", f"imagefolder:{folder / 'train'}?test_fraction=0", "--model", "tinycl-net",
               "--initial-classes", "2", "--epochs", "1", "--out", str(tmp_path / "b.ckpt"), "--json", "--quiet"])
    assert rc == 0
    info = strict_loads(capsys.readouterr().out)
    assert info["test_accuracy_initial_classes"] is None
    assert info["non_finite"] == ["test_accuracy_initial_classes"]


def _learner(back, shape):
    return Learner(back, shape, "fp32", 0.05, 0.9, 0.0, torch.Generator().manual_seed(0))


def _count_steps(learner, monkeypatch):
    sizes = []
    real = learner.net.train_step

    def step(xb, yb, opt):
        sizes.append(len(xb))
        return real(xb, yb, opt)
    monkeypatch.setattr(learner.net, "train_step", step)
    return sizes


@pytest.mark.parametrize("n", [1, 33])
def test_a_back_without_batch_norm_trains_on_single_sample_steps(n, monkeypatch):
    learner = _learner(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), (4,))
    assert not learner.batch_stats
    sizes = _count_steps(learner, monkeypatch)
    x, y = torch.randn(n, 4), torch.randint(0, 3, (n,))
    learner.train_experience(x, y, epochs=2, batch_size=32)
    assert sizes == ([32, 1] if n == 33 else [1]) * 2 and learner.samples_trained == 2 * n


def _bn_back():
    return nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))


def test_a_back_with_batch_norm_merges_a_last_single_sample_step(monkeypatch):
    learner = _learner(_bn_back(), (2, 2, 2))
    assert learner.batch_stats
    sizes = _count_steps(learner, monkeypatch)
    x, y = torch.randn(65, 2, 2, 2), torch.randint(0, 3, (65,))
    learner.train_experience(x, y, epochs=2, batch_size=32)
    assert sizes == [32, 33] * 2 and learner.samples_trained == 130
    loss = learner.train_experience(x[:2], y[:2], epochs=1, batch_size=1)  # steps of 1, the last merged
    assert sizes[4:] == [2] and math.isfinite(loss)


def test_batch_norm_steps_with_replay_are_not_merged(monkeypatch):
    learner = _learner(_bn_back(), (2, 2, 2))
    sizes = _count_steps(learner, monkeypatch)
    x, y = torch.randn(33, 2, 2, 2), torch.randint(0, 3, (33,))
    learner.train_experience(x, y, 1, 32, replay_fn=lambda n: (torch.randn(n, 2, 2, 2), torch.zeros(n).long()),
                             replay_batch=4)
    assert sizes == [36, 5]


def test_batch_norm_with_one_sample_and_no_replay_is_an_error():
    learner = _learner(_bn_back(), (2, 2, 2))
    with pytest.raises(TinyclError, match="1 training sample and no replay"):
        learner.train_experience(torch.randn(1, 2, 2, 2), torch.zeros(1).long(), epochs=1, batch_size=8)


def test_nonfinite_losses_are_counted():
    learner = _learner(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), (4,))
    x, y = torch.randn(8, 4), torch.zeros(8).long()
    learner.train_experience(x, y, epochs=1, batch_size=4)
    assert learner.nonfinite_steps == 0
    learner.net.named_params()["1.weight"].set(torch.full((3, 4), float("inf")))
    learner.train_experience(x, y, epochs=1, batch_size=4)
    assert learner.nonfinite_steps == 2


def test_results_json_writes_non_finite_values_as_flagged_nulls(folder, tmp_path):
    from tinycl.cl.runner import run
    cfg = {"data": f"imagefolder:{folder}", "model": "tinycl-net", "backbone": "none", "latent_layer": "relu",
           "initial_classes": 2, "classes_per_experience": 1, "pretrain_epochs": 1, "epochs": 1, "batch_size": 8,
           "replay_batch": 8, "n_replays": 20}
    res = run(cfg, tmp_path / "r", progress=False,
              annotate=lambda setup, cfg: {"latency_s": float("nan"), "energy_j": float("inf"), "fits": True})
    on_disk = strict_loads((tmp_path / "r" / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))  # what run() returns is what it wrote
    assert on_disk["learning_event"] == {"latency_s": None, "energy_j": None, "fits": True}
    assert on_disk["non_finite"] == ["learning_event.latency_s", "learning_event.energy_j"]
