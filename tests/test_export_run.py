"""`tinycl export` from a finished run folder: the device starts where the emulation stopped, and the
generated learner stays bit-exact with the Python reference over new learning events."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from cl_fixtures import make_image_folder
from test_export_learner import assert_same, run_c, run_reference
from tinycl.cl import checkpoint
from tinycl.cl.runner import run
from tinycl.cli_export import plan_from_run

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None,
                               reason="host gcc or make not found")


def _run(root, **over):
    folder = make_image_folder(root / "data")
    cfg = {"data": f"imagefolder:{folder}", "model": "tinycl-net", "backbone": "none", "latent_layer": "relu",
           "initial_classes": 2, "classes_per_experience": 1, "pretrain_epochs": 2, "epochs": 2, "batch_size": 8,
           "replay_batch": 8, "n_replays": 20, "lr_bits": 6, "learning_rate": 0.05, "seed": 0, **over}
    run(cfg, root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("exp"))


@pytest.fixture(scope="module")
def finished_fp16_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("exp16"), precision="fp16")


@needs_gcc
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_export_from_a_run_folder_is_bit_exact(precision, request, tmp_path):
    finished_run = request.getfixturevalue("finished_run" if precision == "fp32" else "finished_fp16_run")
    plan, setup = plan_from_run(str(finished_run), max_new=4, replay_batch=4, seed=3)
    assert plan.precision == precision
    state = checkpoint.load(finished_run / "state.ckpt")
    want = state["learner"]["net"]
    for op in plan.back:                       # the device starts from the run's final weights
        for k, v in op.params.items():
            assert torch.equal(v.reshape(-1), want[f"{op.name}.{k}"].reshape(-1).float()), (op.name, k)
    if precision == "fp16":                    # ... and the run's loss scaler
        sc = state["learner"]["scaler"]
        assert (plan.loss_scale["mode"], plan.loss_scale["scale"], plan.loss_scale["good_steps"]) == (
            "dynamic", sc["scale"], sc["good_steps"])
    assert plan.bits == 6 and int(plan.rows.shape[0]) == state["memory"]["size"]
    ds = setup.dataset
    to_in = lambda i: (ds.train.x[i].float() / 255 - setup.mean.view(1, -1, 1, 1)) / setup.std.view(1, -1, 1, 1)  # noqa: E731
    events = [(to_in(torch.arange(k, k + n)), ds.train.y[k:k + n]) for k, n in ((0, 4), (10, 1), (30, 3))]
    tests = to_in(torch.arange(40, 43))
    exps = [plan.experience + 1] * len(events)   # the device's next experience after the run's last
    ref_outs, ref_logits = run_reference(plan, setup.front, events, tests, exps)
    c, _ = run_c(plan, events, tests, tmp_path / "proj", experiences=exps)
    assert_same(c, ref_outs, ref_logits, plan)


def test_export_cli_and_its_refusals(finished_run, tmp_path):
    def cli(*a):
        return subprocess.run([sys.executable, "-m", "tinycl.cli", "export", *a], capture_output=True, text=True,
                              timeout=300)
    r = cli("--run", str(finished_run), "--out", str(tmp_path / "proj"), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (tmp_path / "proj" / "model.c").is_file() and info["arena_bytes"] > 0
    r = cli("--run", str(finished_run), "--out", str(tmp_path / "proj"))       # not empty: refused
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not empty" in r.stderr
    r = cli("--run", str(tmp_path), "--out", str(tmp_path / "p2"))               # not a run folder
    assert r.returncode == 2 and "not a finished tinycl run folder" in r.stderr and not (tmp_path / "p2").exists()


def test_export_refuses_an_unsupported_precision_and_writes_nothing(finished_fp16_run, tmp_path):
    """A bf16 run folder (its config edited: the refusal comes before anything is loaded)."""
    bf16 = tmp_path / "bf16run"
    shutil.copytree(finished_fp16_run, bf16)
    cfg = json.loads((bf16 / "config.json").read_text())
    (bf16 / "config.json").write_text(json.dumps({**cfg, "precision": "bf16"}))
    r = subprocess.run([sys.executable, "-m", "tinycl.cli", "export", "--run", str(bf16), "--out",
                        str(tmp_path / "proj")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "precision='bf16'" in r.stderr, r.stderr
    assert not (tmp_path / "proj").exists() and not list(tmp_path.glob(".tinycl-export-*"))
