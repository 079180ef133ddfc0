"""Runs that survive: resume after a kill at any moment, damaged checkpoints, failed writes,
checkpoints that are never unpickled into code."""

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cl_fixtures import make_image_folder
from test_cl_run import cfg_for
from test_cli_bad_inputs import evil_state_file
from tinycl.cl import checkpoint
from tinycl.cl.runner import run
from tinycl.errors import TinyclError
from tinycl.report import jsonout


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


def without_timing(res):
    res = json.loads(json.dumps(res))
    res.pop("timing")
    for e in res["per_experience"]:
        e.pop("seconds")
    return res


@pytest.fixture(scope="module")
def full(folder, tmp_path_factory):
    return run(cfg_for(folder), tmp_path_factory.mktemp("full") / "r", progress=False)


def test_malicious_checkpoint_is_refused_without_running_it(tmp_path):
    evil_state_file(tmp_path / "s.ckpt", tmp_path / "pwned")
    with pytest.raises(TinyclError, match="refused to load"):
        checkpoint.load(tmp_path / "s.ckpt")
    assert not (tmp_path / "pwned").exists()
    # control: the same bytes, unpickled the old way, do run code (so the check above can fail)
    blob = (tmp_path / "s.ckpt").read_bytes()[checkpoint.HEADER:]
    torch.load(io.BytesIO(blob), weights_only=False)
    assert (tmp_path / "pwned").exists()


def test_checkpoint_of_plain_values_and_tensors_round_trips(tmp_path):
    state = {"t": torch.arange(6).view(2, 3), "g": torch.Generator().manual_seed(3).get_state(), "n": None,
             "tuple": (1, 2.5, "x"), "nested": [{"b": True}], "i8": torch.zeros(2, dtype=torch.int8)}
    checkpoint.save(tmp_path / "s.ckpt", state)
    back = checkpoint.load(tmp_path / "s.ckpt")
    assert torch.equal(back["t"], state["t"]) and torch.equal(back["g"], state["g"])
    assert back["tuple"] == state["tuple"] and back["nested"] == state["nested"] and back["n"] is None


def _fail_fsync(fd):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_checkpoint_write_removes_its_temp_file_and_names_the_path(tmp_path, monkeypatch):
    path = tmp_path / "state.ckpt"
    checkpoint.save(path, {"n": 1})
    good = path.read_bytes()
    monkeypatch.setattr(checkpoint.os, "fsync", _fail_fsync)
    with pytest.raises(TinyclError, match=f"cannot write {path}: No space left on device"):
        checkpoint.save(path, {"n": 2, "w": torch.zeros(1000)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.ckpt"]  # no temp file, no stray link
    assert path.read_bytes() == good


def test_failed_json_write_removes_its_temp_file(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(jsonout.os, "replace", fail)
    with pytest.raises(TinyclError, match="results.json"):
        jsonout.write(tmp_path / "results.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_damaged_state_falls_back_to_prev_and_says_so(folder, full, tmp_path, capsys):
    out = tmp_path / "r"
    run(cfg_for(folder), out, progress=False, stop_after=2)  # state after exp 1, .prev after exp 0
    blob = bytearray((out / "state.ckpt").read_bytes())
    blob[-5] ^= 0xFF
    (out / "state.ckpt").write_bytes(bytes(blob))
    capsys.readouterr()
    resumed = run({}, out, resume=True, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum" in err[0] and "resuming from state.ckpt.prev" in err[0], err
    assert without_timing(resumed) == without_timing(full)
    assert (out / "state.ckpt.damaged").read_bytes() == bytes(blob)  # kept for inspection


def test_damaged_state_and_prev_stop_with_one_line(folder, tmp_path):
    out = tmp_path / "r"
    run(cfg_for(folder), out, progress=False, stop_after=2)
    (out / "state.ckpt").write_bytes(b"junk")
    (out / "state.ckpt.prev").write_bytes(b"junk too")
    with pytest.raises(TinyclError, match="state.ckpt.prev cannot be used either"):
        run({}, out, resume=True, progress=False)
    assert (out / "state.ckpt").read_bytes() == b"junk"  # nothing moved or rewritten


def test_config_is_saved_before_any_work_and_guards_the_folder(folder, tmp_path, monkeypatch):
    import tinycl.cl.runner as R

    def killed(*a, **k):
        raise KeyboardInterrupt  # as if killed while building the setup
    monkeypatch.setattr(R, "build", killed)
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        run(cfg_for(folder), out, progress=False)
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"] == f"imagefolder:{folder}" and saved["learning_rate"] == 0.05
    with pytest.raises(TinyclError, match="holds a run started with another config"):
        run(cfg_for(folder, seed=3), out, progress=False)


def _cli(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "tinycl.cli", *args], env


def _kill_when(out, name, args, grace=0.2):
    """Start a run, SIGKILL it as soon as ``out/name`` exists (or ``grace`` seconds after ``out``
    appears, should ``name`` never come); True if it was killed before finishing."""
    cmd, env = _cli(args)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline, seen = time.time() + 120, None
    while not (out / name).exists() and p.poll() is None and time.time() < deadline:
        if seen is None and out.exists():
            seen = time.time()
        if seen is not None and time.time() - seen > grace:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return not (out / "results.json").exists()


def test_kill_at_any_moment_then_resume_gives_the_uninterrupted_results(folder, tmp_path):
    """Killed right after it starts (config saved, nothing else), then killed again once the factory
    backbone exists (building latents or training the first experience), then resumed to the end."""
    sets = [f"--set={k}={v}" for k, v in cfg_for(folder, pretrain_epochs=6, epochs=3).items()]
    cmd, env = _cli(["run", *sets, "--out", str(tmp_path / "ref"), "--quiet"])
    ref = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    if not _kill_when(out, "config.json", ["run", *sets, "--out", str(out), "--quiet"]):
        pytest.skip("run finished before it could be killed")
    assert not (out / "state.ckpt").exists()  # no checkpoint yet: the old behaviour could not resume this
    if not _kill_when(out, "backbone.ckpt", ["run", "--resume", str(out), "--quiet"]):
        pytest.skip("run finished before it could be killed")
    cmd, env = _cli(["run", "--resume", str(out), "--quiet"])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    a = without_timing(json.loads((tmp_path / "ref" / "results.json").read_text()))
    b = without_timing(json.loads((out / "results.json").read_text()))
    assert a == b
