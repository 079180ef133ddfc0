"""tinycl sweep on Ray: a small grid on the shipped data with a local Ray of 2 CPUs, and the same
sweep on a cluster started with ``ray start --head``, killed and resumed.

The trials are tiny (float front: the latents of the shipped data take ~15 s to build once per
sweep; 1 epoch; 50-100 replays), so each sweep takes well under a minute on 2 cores.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'tinycl[sweep]')")

from tinycl.cl import config as C  # noqa: E402
from tinycl.errors import TinyclError  # noqa: E402
from tinycl.sweep import spec as S  # noqa: E402
from tinycl.sweep.execute import sweep  # noqa: E402

BASE = {"epochs": 1, "front_int8": False, "latent_layer": "block3_1", "classes_per_experience": 3}
GRID = {"base": BASE, "axes": {"lr_bits": [2, 8], "n_replays": [50, 100]},
        "constraints": {"target": "vega", "memory_bytes": 360_000}, "targets": ["vega", "stm32l4"]}
TINYCL = [sys.executable, "-m", "tinycl.cli"]


def _env(token: Path | None = None):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.pop("RAY_AUTH_MODE", None)  # as a user's shell: the mode follows the token file
    if token is not None:
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_grid_sweep_on_a_local_ray(tmp_path, capsys):
    out = tmp_path / "sweep"
    res = sweep(S.parse(GRID), out, num_cpus=2, progress=True)
    rows = {r["id"]: r for r in res["rows"]}
    assert len(rows) == 4
    status = sorted(r["status"] for r in rows.values())
    assert status == ["ok", "ok", "pruned", "pruned"], [(r["status"], r["reason"]) for r in rows.values()]
    for r in rows.values():
        assert (out / "trials" / r["id"] / "trial.json").exists()
        if r["status"] == "pruned":  # decided by the cost model: never trained
            assert "device memory" in r["reason"] and r["device_bytes"] > 360_000
            assert not (out / "trials" / r["id"] / "results.json").exists()
        else:
            assert r["device_bytes"] <= 360_000 and 0 < r["average_accuracy"] < 1
            run = json.loads((out / "trials" / r["id"] / "results.json").read_text())
            assert run["average_accuracy"] == r["average_accuracy"]  # a real tinycl run in its own folder
            assert run["config"]["lr_bits"] == r["point"]["lr_bits"] == r["config"]["lr_bits"]
            assert run["replay_memory_bytes"]["total"] <= r["replay_bytes"]
            assert set(r["targets"]) == {"vega", "stm32l4"}
    err = capsys.readouterr().err
    assert "sweep: 4/4 done" in err and "best average_accuracy" in err
    data = json.loads((out / "trials.json").read_text())  # strict JSON
    assert {t["id"] for t in data["trials"]} == set(rows)
    with open(out / "trials.csv") as f:
        table = list(csv.DictReader(f))
    assert {t["id"] for t in table} == set(rows) and "energy_j@stm32l4" in table[0]
    rec = yaml.safe_load((out / "recommended.yaml").read_text())
    best = max((r for r in rows.values() if r["status"] == "ok"), key=lambda r: r["average_accuracy"])
    assert C.validate(rec) == best["config"] and res["recommended"]["id"] == best["id"]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and best["id"] in html
    with pytest.raises(TinyclError, match="already holds a sweep"):
        sweep(S.parse(GRID), out, num_cpus=2)
    with pytest.raises(TinyclError, match="another sweep file"):
        sweep(S.parse(dict(GRID, axes={"lr_bits": [4]})), out, resume=True, num_cpus=2)
    # a failed trial (here: one marked failed, its run removed) stays failed on --resume, and runs
    # again with --retry-failed; the other finished trials are not touched
    ok = sorted(r["id"] for r in rows.values() if r["status"] == "ok")
    failed, kept = out / "trials" / ok[0], out / "trials" / ok[1] / "trial.json"
    row = json.loads((failed / "trial.json").read_text())
    (failed / "trial.json").write_text(json.dumps(dict(row, status="failed", reason="Ray: worker killed")))
    for f in failed.iterdir():
        if f.name != "trial.json":
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    before = kept.stat().st_mtime_ns
    again = {r["id"]: r for r in sweep(None, out, resume=True, num_cpus=2)["rows"]}
    assert again[ok[0]]["status"] == "failed"
    again = {r["id"]: r for r in sweep(None, out, resume=True, num_cpus=2, retry_failed=True)["rows"]}
    assert again[ok[0]]["status"] == "ok" and again[ok[0]]["average_accuracy"] == row["average_accuracy"]
    assert (failed / "results.json").exists() and kept.stat().st_mtime_ns == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray head started with ``ray start --head --block`` on this machine (stopped with its process group)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    ray_bin = ray_bin if Path(ray_bin).exists() else shutil.which("ray")
    if not ray_bin:
        pytest.skip("the ray command is not installed")
    port = _free_port()
    tmp = tmp_path_factory.mktemp("ray")
    token = tmp / "auth_token"  # this cluster's own token, not the user's ~/.ray/auth_token
    token.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    log = open(tmp / "head.log", "w")
    p = subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--block",
                          "--include-dashboard=false", "--disable-usage-stats"],
                         stdout=log, stderr=subprocess.STDOUT, env=_env(token), start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if p.poll() is not None:
            pytest.fail(f"ray start --head ended: {(tmp / 'head.log').read_text()[-2000:]}")
        if "Ray runtime started" in (tmp / "head.log").read_text():
            break
        time.sleep(0.5)
    else:
        os.killpg(p.pid, signal.SIGTERM)
        pytest.fail("ray start --head did not come up in 120 s")
    yield address, token
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    log.close()


def test_sweep_on_a_ray_address_survives_kill_and_resume(tmp_path, cluster):
    cluster, token = cluster
    spec = {"base": BASE, "axes": {"lr_bits": [2], "n_replays": [50, 100], "epochs": [1, 8],
                                   "class_order": [None, list(range(9, -1, -1))]}}
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    cmd = TINYCL + ["sweep", "--config", str(f), "--out", str(out), "--address", cluster]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(token), start_new_session=True)
    try:
        deadline = time.time() + 240
        first = None
        while time.time() < deadline and a.poll() is None and first is None:
            for p in sorted((out / "trials").glob("*/trial.json")) if (out / "trials").exists() else []:
                if json.loads(p.read_text())["status"] == "ok":
                    first = p
            time.sleep(0.2)
        assert first is not None, a.stderr.read().decode()[-2000:] if a.poll() is not None else "no trial ended"
        # a second sweep into the same folder is refused at once, and touches nothing
        with pytest.raises(TinyclError, match="in use by another tinycl run"):
            sweep(None, out, resume=True)
        was_running = a.poll() is None
        os.killpg(a.pid, signal.SIGKILL)
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
        a.wait(30)
    kept = {p: (p.stat().st_mtime_ns, p.read_text()) for p in (out / "trials").glob("*/trial.json")}
    assert first in kept
    r = subprocess.run(TINYCL + ["sweep", "--resume", "--out", str(out), "--address", cluster],
                       capture_output=True, text=True, env=_env(token), timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    for p, (mtime, text) in kept.items():  # no finished trial ran again
        assert p.stat().st_mtime_ns == mtime and p.read_text() == text
    rows = json.loads((out / "trials.json").read_text())["trials"]
    by = {}
    for row in rows:
        by.setdefault(row["status"], []).append(row)
    assert len(rows) == 8 and len(by["ok"]) == 4 and len(by["failed"]) == 4, by.keys()
    for row in by["failed"]:  # reported with its error, and the sweep went on
        assert row["config"]["class_order"] and "class_order must start with the backbone's classes" in row["reason"]
    assert "recommended: trial" in r.stdout and "4 failed" in r.stdout
    # same results as one uninterrupted run of that config, with no shared setup
    from tinycl.cl.runner import run
    row = min(by["ok"], key=lambda r: (r["config"]["epochs"], r["id"]))
    alone = run(row["config"], tmp_path / "alone", progress=False)
    assert alone["average_accuracy"] == row["average_accuracy"]
    assert was_running and len(kept) < 8  # it was killed mid-way


def test_optuna_search_on_a_ray_address_and_resume(tmp_path, cluster):
    cluster, token = cluster
    spec = {"base": BASE, "axes": {"lr_bits": [1, 2, 4, 8], "n_replays": [25, 50, 100]},
            "search": {"kind": "optuna", "budget": 3, "seed": 1},
            "constraints": {"target": "vega", "memory_bytes": 360_000}}
    f = tmp_path / "optuna.yaml"
    f.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    base = TINYCL + ["sweep", "--out", str(out), "--address", cluster, "--json"]
    r = subprocess.run(base + ["--config", str(f)], capture_output=True, text=True, env=_env(token), timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout)["trials"]
    assert len(rows) == 3 and len({row["id"] for row in rows}) == 3
    assert all(row["status"] in ("ok", "pruned") for row in rows)
    for row in rows:  # every proposal is a grid point of the axes
        assert row["point"]["lr_bits"] in spec["axes"]["lr_bits"]
        assert row["point"]["n_replays"] in spec["axes"]["n_replays"]
    kept = {p: p.stat().st_mtime_ns for p in (out / "trials").glob("*/trial.json")}
    assert len(kept) == 3
    again = subprocess.run(base + ["--resume"], capture_output=True, text=True, env=_env(token), timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing ran again
    after = json.loads(again.stdout)["trials"]
    assert {row["id"] for row in after} == {row["id"] for row in rows}  # the budget was spent already
