"""The CLI as a stranger drives it: every bad input gives exactly one line on stderr, no traceback,
and a non-zero exit status (config values, data specs, checkpoints, output folders, counts).

Cases run the real ``main(argv)`` in-process; only the lock needs a second process.
"""

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from cl_fixtures import make_image_folder
from tinycl.cl import checkpoint
from tinycl.cl.backbone import SHIPPED
from tinycl.cli import main

TINY = ["--set", "model=tinycl-net", "--set", "backbone=none", "--set", "latent_layer=relu",
        "--set", "initial_classes=2", "--set", "classes_per_experience=1", "--set", "pretrain_epochs=1",
        "--set", "epochs=1", "--set", "batch_size=8", "--set", "replay_batch=8", "--set", "n_replays=20"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """An image folder whose images have two sizes (usable only with size=HxW)."""
    from PIL import Image
    root = make_image_folder(tmp_path_factory.mktemp("mixed"), train=6, test=2)
    Image.new("RGB", (20, 12), (200, 10, 10)).save(root / "train" / "class0" / "wide.png")
    return root


def _blob(payload: bytes) -> bytes:
    """A well-formed tinycl state file around ``payload`` (right magic, length and checksum)."""
    return checkpoint.MAGIC + hashlib.sha256(payload).digest() + len(payload).to_bytes(8, "little") + payload


class _Evil:
    """Unpickling this calls open(path, 'w'): a stand-in for any code a pickle can run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def evil_state_file(path, marker):
    buf = io.BytesIO()
    torch.save({"config": _Evil(marker), "next": 0}, buf)
    path.write_bytes(_blob(buf.getvalue()))


def _run_dir(tmp_path, make):
    """A run folder prepared by ``make(folder)``; returns its path."""
    d = tmp_path / "run"
    d.mkdir()
    make(d)
    return str(d)


def _state(kind):
    def make(d):
        if kind == "garbage":
            (d / "state.ckpt").write_bytes(b"TINYCL\x01\x00" + os.urandom(100))
        elif kind == "truncated":
            checkpoint.save(d / "state.ckpt", {"a": torch.zeros(100)})
            (d / "state.ckpt").write_bytes((d / "state.ckpt").read_bytes()[:-9])
        elif kind == "backbone":
            shutil.copy(SHIPPED, d / "state.ckpt")
        elif kind == "plain":
            checkpoint.save(d / "state.ckpt", {"weights": torch.zeros(3)})
        elif kind == "malicious":
            evil_state_file(d / "state.ckpt", d / "pwned")
        elif kind == "config":
            (d / "config.json").write_text("{not json")
        elif kind == "config list":
            (d / "config.json").write_text("[1, 2]")
        elif kind == "config values":
            (d / "config.json").write_text('{"learning_rate": -1}')
        elif kind == "state config":
            checkpoint.save(d / "state.ckpt", {k: 0 for k in ("config", "next", "learner", "memory", "cwr",
                                                               "generator", "acc_correct", "acc_total", "log")})
    return make


# (argv builder, words the line must contain). Each builder gets (tmp_path, folder, mixed).
CASES = {
    # non-finite and out-of-range config values
    "lr nan": (lambda t, f, m: ["run", "--set", "learning_rate=nan"], "learning_rate"),
    "lr .nan": (lambda t, f, m: ["run", "--set", "learning_rate=.nan"], "learning_rate"),
    "lr .inf": (lambda t, f, m: ["run", "--set", "learning_rate=.inf"], "learning_rate"),
    "lr 1e999": (lambda t, f, m: ["run", "--set", "learning_rate=1e999"], "learning_rate"),
    "momentum .nan": (lambda t, f, m: ["run", "--set", "momentum=.nan"], "momentum"),
    "weight_decay -.inf": (lambda t, f, m: ["run", "--set", "weight_decay=-.inf"], "weight_decay"),
    "config file nan": (lambda t, f, m: ["run", "--config", _yaml(t, "momentum: .nan\n")], "momentum"),
    # negative counts, as config keys and as flags
    "epochs -1": (lambda t, f, m: ["run", "--set", "epochs=-1"], "epochs"),
    "batch_size -3": (lambda t, f, m: ["run", "--set", "batch_size=-3"], "batch_size"),
    "replay_batch -1": (lambda t, f, m: ["run", "--set", "replay_batch=-1"], "replay_batch"),
    "n_replays -5": (lambda t, f, m: ["run", "--set", "n_replays=-5"], "n_replays"),
    "initial_classes -1": (lambda t, f, m: ["run", "--set", "initial_classes=-1"], "initial_classes"),
    "classes_per_experience -2": (lambda t, f, m: ["run", "--set", "classes_per_experience=-2"], "classes_per"),
    "pretrain_epochs -1": (lambda t, f, m: ["run", "--set", "pretrain_epochs=-1"], "pretrain_epochs"),
    "seed -1": (lambda t, f, m: ["run", "--set", "seed=-1"], "seed"),
    "pretrain --epochs -1": (lambda t, f, m: ["pretrain", "--epochs", "-1", "--out", str(t / "b")], "epochs"),
    "pretrain --initial-classes -1": (lambda t, f, m: ["pretrain", "--initial-classes", "-1", "--out",
                                                       str(t / "b")], "initial_classes"),
    "pretrain --batch-size -1": (lambda t, f, m: ["pretrain", "--batch-size", "-1", "--out", str(t / "b")],
                                 "--batch-size"),
    "pretrain --lr nan": (lambda t, f, m: ["pretrain", "--lr", "nan", "--out", str(t / "b")], "--lr"),
    "pretrain --lr inf": (lambda t, f, m: ["pretrain", "--lr", "inf", "--out", str(t / "b")], "--lr"),
    "accel tinycl --samples -1": (lambda t, f, m: ["accel", "tinycl", "--samples", "-1"], "--samples"),
    "accel tinycl --replays -1": (lambda t, f, m: ["accel", "tinycl", "--replays", "-1"], "--replays"),
    "accel eta --batch -1": (lambda t, f, m: ["accel", "eta", "--batch", "-1"], "--batch"),
    "accel eta --batch 0": (lambda t, f, m: ["accel", "eta", "--batch", "0"], "--batch"),
    "profile --n-replays -3": (lambda t, f, m: ["profile", "--model", "tinycl-net", "--target", "vega",
                                                "--n-replays", "-3"], "n_replays"),
    "profile --batch -1": (lambda t, f, m: ["profile", "--model", "tinycl-net", "--target", "vega", "--batch", "-1"],
                           "batch"),
    "not an int": (lambda t, f, m: ["accel", "tinycl", "--samples", "many"], "--samples"),
    # data specs
    "size not HxW": (lambda t, f, m: ["run", "--data", f"imagefolder:{f}?size=big"], "size"),
    "size zero": (lambda t, f, m: ["run", "--data", f"imagefolder:{f}?size=0x8", "--out", str(t / "o")], "size"),
    "channels 7": (lambda t, f, m: ["run", "--data", f"imagefolder:{f}?channels=7", "--out", str(t / "o")],
                   "channels"),
    "channels word": (lambda t, f, m: ["run", "--data", f"imagefolder:{f}?channels=rgb"], "channels"),
    "unknown option": (lambda t, f, m: ["run", "--data", f"imagefolder:{f}?colour=red"], "colour"),
    "option without value": (lambda t, f, m: ["run", "--data", f"imagefolder:{f}?size"], "key=value"),
    "option twice": (lambda t, f, m: ["run", "--data", f"imagefolder:{f}?seed=1&seed=2"], "twice"),
    "shipped with option": (lambda t, f, m: ["run", "--data", "shipped?size=8x8"], "shipped"),
    "unknown kind": (lambda t, f, m: ["run", "--data", "mnist:/data"], "mnist"),
    "no path": (lambda t, f, m: ["run", "--data", "imagefolder:"], "needs a path"),
    "mixed sizes": (lambda t, f, m: ["run", "--data", f"imagefolder:{m}", *TINY, "--out", str(t / "o")],
                    "size=HxW"),
    # checkpoints: damaged, of another kind, malicious, missing
    "resume garbage": (lambda t, f, m: ["run", "--resume", _run_dir(t, _state("garbage"))], "state.ckpt"),
    "resume truncated": (lambda t, f, m: ["run", "--resume", _run_dir(t, _state("truncated"))], "truncated"),
    "resume a backbone": (lambda t, f, m: ["run", "--resume", _run_dir(t, _state("backbone"))],
                          "tinycl.backbone/1 file, not the state of a tinycl run"),
    "resume other state": (lambda t, f, m: ["run", "--resume", _run_dir(t, _state("plain"))],
                           "not the state of a tinycl run"),
    "resume malicious": (lambda t, f, m: ["run", "--resume", _run_dir(t, _state("malicious"))], "refused"),
    "resume empty folder": (lambda t, f, m: ["run", "--resume", _run_dir(t, lambda d: None)], "no run to resume"),
    "resume config.json a list": (lambda t, f, m: ["run", "--resume", _run_dir(t, _state("config list"))],
                                  "does not hold a config"),
    "resume config.json bad value": (lambda t, f, m: ["run", "--resume", _run_dir(t, _state("config values"))],
                                     "learning_rate"),
    "resume state without config": (lambda t, f, m: ["run", "--resume", _run_dir(t, _state("state config"))],
                                    "holds no run config"),
    "resume no folder": (lambda t, f, m: ["run", "--resume", str(t / "nowhere")], "no such folder"),
    "resume bad config.json": (lambda t, f, m: ["run", "--resume", _run_dir(t, _state("config"))], "config.json"),
    "backbone malicious": (lambda t, f, m: ["run", "--set", f"backbone={_evil_file(t)}", "--out", str(t / "o")],
                           "refused"),
    "backbone is a state": (lambda t, f, m: ["run", "--set", f"backbone={_plain_file(t)}", "--out",
                                             str(t / "o")], "not a tinycl backbone"),
    # output paths: checked before any work
    "pretrain --out a directory": (lambda t, f, m: ["pretrain", "--data", "imagefolder:/nonexistent", "--out",
                                                    str(t)], "is a directory"),
    "pretrain --out under a file": (lambda t, f, m: ["pretrain", "--data", "imagefolder:/nonexistent", "--out",
                                                     str(_file(t) / "b.ckpt")], "cannot write"),
    "run --out under a file": (lambda t, f, m: ["run", "--out", str(_file(t) / "run")], "output folder"),
}


def _yaml(t, text):
    p = t / "c.yaml"
    p.write_text(text)
    return str(p)


def _evil_file(t):
    evil_state_file(t / "evil.ckpt", t / "pwned")
    return t / "evil.ckpt"


def _plain_file(t):
    checkpoint.save(t / "plain.ckpt", {"weights": torch.zeros(3)})
    return t / "plain.ckpt"


def _file(t):
    p = t / "a_file"
    p.write_text("x")
    return p


def one_line_error(capsys, argv):
    """Run the CLI; return (exit status, the stderr line)."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return rc, lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_nonzero_exit(case, tmp_path, folder, mixed, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default --out (runs/latest) lands in the test's folder
    build, words = CASES[case]
    argv = build(tmp_path, folder, mixed)
    rc, line = one_line_error(capsys, argv)
    assert rc == 2, (rc, line)
    assert line.startswith("tinycl: error: ") and words in line, line
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run" / "pwned").exists()  # no code ran
    assert not (tmp_path / "nowhere").exists()


def test_mixed_sizes_work_with_a_size_option(mixed, tmp_path, capsys):
    rc = main(["run", "--data", f"imagefolder:{mixed}?size=16x16&channels=3", *TINY, "--out", str(tmp_path / "o"),
               "--quiet", "--json"])
    assert rc == 0
    import json
    res = json.loads(capsys.readouterr().out)
    assert res["config"]["data"].endswith("?size=16x16&channels=3") and res["latent_shape"] == [8, 14, 14]


def test_pretrain_output_checked_before_training(folder, tmp_path, capsys):
    """A directory as --out fails at once: the data (valid here) is not even loaded."""
    import tinycl.data as data

    calls = []
    real = data.load
    data.load = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        rc, line = one_line_error(capsys, ["pretrain", "--data", f"imagefolder:{folder}", "--model", "tinycl-net",
                                           "--initial-classes", "2", "--out", str(tmp_path)])
    finally:
        data.load = real
    assert rc == 2 and "is a directory" in line and calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_pretrain_into_a_read_only_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, line = one_line_error(capsys, ["pretrain", "--out", str(ro / "b.ckpt")])
    finally:
        ro.chmod(0o700)
    assert rc == 2 and "cannot write" in line


def _snapshot(d):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(d.iterdir())
            if p.is_file()}


def test_second_run_on_a_busy_folder_is_refused(folder, tmp_path, capsys):
    """A run holds its folder; a second run there gets one line and touches nothing of the first."""
    out = tmp_path / "busy"
    argv = ["run", "--data", f"imagefolder:{folder}", *TINY, "--set", "epochs=3", "--out", str(out), "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "tinycl.cli", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "config.json").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # hold it still, with its lock, while the second one tries
        before = _snapshot(out)
        rc, line = one_line_error(capsys, argv)
        assert rc == 2 and "in use by another tinycl run" in line, line
        rc, line = one_line_error(capsys, ["run", "--resume", str(out)])
        assert rc == 2 and "in use" in line, line
        assert _snapshot(out) == before
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert (out / "results.json").exists()
    # the lock went with the first process: the folder can be resumed now
    assert main(["run", "--resume", str(out), "--quiet", "--json"]) == 0
