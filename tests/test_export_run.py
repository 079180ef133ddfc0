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


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    folder = make_image_folder(root / "data")
    cfg = {"data": f"imagefolder:{folder}", "model": "tinycl-net", "backbone": "none", "latent_layer": "relu",
           "initial_classes": 2, "classes_per_experience": 1, "pretrain_epochs": 2, "epochs": 2, "batch_size": 8,
           "replay_batch": 8, "n_replays": 20, "lr_bits": 6, "learning_rate": 0.05, "seed": 0}
    run(cfg, root / "run", progress=False)
    return root / "run"


@needs_gcc
def test_export_from_a_run_folder_is_bit_exact(finished_run, tmp_path):
    plan, setup = plan_from_run(str(finished_run), max_new=4, replay_batch=4, seed=3)
    state = checkpoint.load(finished_run / "state.ckpt")
    want = state["learner"]["net"]
    for op in plan.back:                       # the device starts from the run's final weights
        for k, v in op.params.items():
            assert torch.equal(v.reshape(-1), want[f"{op.name}.{k}"].reshape(-1).float()), (op.name, k)
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
