"""tinycl sweep without Ray: sweep files, planning, cost pruning, the Pareto front."""

from __future__ import annotations

import itertools
import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycl.cli import main
from tinycl.errors import TinyclError
from tinycl.sweep import spec as S
from tinycl.sweep.cost import CostModel, prune_reason
from tinycl.sweep.pareto import dominates, front, recommend

GOOD = {"base": {"epochs": 1}, "axes": {"lr_bits": [2, 8]}}


def _write(tmp_path, obj, name="s.yaml"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj))
    return p


BAD = [
    ("[1, 2]", "must hold a mapping"),
    ("axes: {lr_bits: [2]\n", "not valid YAML"),
    ({"axes": {"lr_bits": [2]}, "colour": 1}, "unknown key 'colour'"),
    ({"base": {"epochz": 1}, "axes": {"lr_bits": [2]}}, "base: config: unknown key 'epochz'"),
    ({"base": {"epochs": 0}, "axes": {"lr_bits": [2]}}, "'epochs' must be an integer >= 1"),
    ({"axes": {}}, "'axes' must be a non-empty mapping"),
    ({"axes": {"lr_bitz": [2]}}, "axis 'lr_bitz' is not a tinycl run key"),
    ({"axes": {"lr_bits": []}}, "axis 'lr_bits' must be a non-empty list"),
    ({"axes": {"lr_bits": [2, 2]}}, "lists a value twice"),
    ({"axes": {"lr_bits": [2, 9]}}, "'lr_bits' must be 1..8"),
    ({"axes": {"n_replays": {"start": 10, "stop": 5, "step": 1}}}, "stop >= start"),
    ({"axes": {"n_replays": {"start": 10, "stop": 50}}}, "a range is {start, stop, step}"),
    ({"axes": {"lr_bits": [2]}, "search": {"kind": "bayes"}}, "'kind' must be one of grid, random, optuna"),
    ({"axes": {"lr_bits": [2]}, "search": {"kind": "random"}}, "needs a 'budget'"),
    ({"axes": {"lr_bits": [2]}, "search": {"kind": "random", "budget": 0}}, "'budget' must be an integer >= 1"),
    ({"axes": {"lr_bits": [2, 4, 8]}, "search": {"kind": "grid", "budget": 2}}, "over the budget of 2"),
    ({"axes": {"lr_bits": [2]}, "constraints": {"memory_bytes": -1}}, "'memory_bytes' must be a finite number > 0"),
    ({"axes": {"lr_bits": [2]}, "constraints": {"memory": 1}}, "constraints: unknown key 'memory'"),
    ({"axes": {"lr_bits": [2]}, "constraints": {"target": "toaster"}}, "target 'toaster'"),
    ({"axes": {"lr_bits": [2]}, "objectives": ["max accuracy"]}, "objective 'max accuracy' must be"),
    ({"axes": {"lr_bits": [2]}, "objectives": ["max average_accuracy", "max average_accuracy"]}, "listed twice"),
    ({"axes": {"lr_bits": [2]}, "targets": "vega"}, "'targets' must be a non-empty list"),
    ({"axes": {"strategy": ["naive"], "lr_quantize_new": [True]}}, "gives a bad run config"),
]


@pytest.mark.parametrize("obj,msg", BAD, ids=[m for _, m in BAD])
def test_bad_sweep_files_fail_in_one_line(tmp_path, capsys, obj, msg):
    p = _write(tmp_path, obj)
    assert main(["sweep", "--config", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o" / "sweep.json").exists()  # nothing started


def test_missing_sweep_file_and_resume_without_sweep(tmp_path, capsys):
    assert main(["sweep", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "sweep file not found" in capsys.readouterr().err
    assert main(["sweep", "--resume", "--out", str(tmp_path / "empty")]) == 2
    assert "no sweep to resume" in capsys.readouterr().err


def test_ranges_grid_and_seeded_random_plan():
    spec = S.parse({"base": {"epochs": 1}, "axes": {"n_replays": {"start": 100, "stop": 300, "step": 100},
                                                    "lr_bits": [2, 4, 8], "learning_rate": {"start": 0.01,
                                                    "stop": 0.03, "step": 0.01}},
                    "search": {"kind": "random", "budget": 5, "seed": 3}})
    assert spec["axes"]["n_replays"] == [100, 200, 300]
    assert spec["axes"]["learning_rate"] == [0.01, 0.02, 0.03]
    a, b = S.plan(spec), S.plan(spec)
    assert [t["id"] for t in a] == [t["id"] for t in b] and len({t["id"] for t in a}) == 5
    other = S.plan(dict(spec, search={"kind": "random", "budget": 5, "seed": 4}))
    assert [t["id"] for t in other] != [t["id"] for t in a]
    grid = S.plan(dict(spec, search={"kind": "grid", "budget": None, "seed": 0}))
    assert len(grid) == 27 and {t["id"] for t in a} <= {t["id"] for t in grid}
    for t in grid:
        assert t["config"]["epochs"] == 1 and t["id"] == S.trial_id(t["config"])


def test_pruning_by_constraint_from_the_cost_model():
    cm = CostModel()
    spec = S.parse({"base": {"latent_layer": "block3_1"}, "axes": {"lr_bits": [2, 8], "n_replays": [50, 400]},
                    "constraints": {"target": "vega", "memory_bytes": 400_000}, "targets": ["vega", "stm32l4"]})
    trials = S.plan(spec)
    costs = {t["id"]: cm.trial_cost(t["config"], spec["targets"]) for t in trials}
    for t in trials:
        c = costs[t["id"]]
        # 64x8x8 latents: n_replays rows of 4096 * bits / 8 bytes + 4 bytes of ids, 8 bytes per channel
        bits, n = t["point"]["lr_bits"], t["point"]["n_replays"]
        assert c["replay_bytes"] == n * (4096 * bits // 8 + 4) + 64 * 8
        assert set(c["targets"]) == {"vega", "stm32l4"}
        why = prune_reason(c, spec["constraints"])
        over = c["targets"]["vega"]["device_bytes"] > 400_000
        assert (why is not None) == over
        if over:
            assert "device memory" in why and "> 400,000 B on vega" in why
    assert any(prune_reason(c, spec["constraints"]) for c in costs.values())
    assert not all(prune_reason(c, spec["constraints"]) for c in costs.values())
    small = {"target": "vega", "latency_s": 1e-9, "energy_j": 1e-12, "must_fit": False}
    why = prune_reason(next(iter(costs.values())), small)
    assert "latency" in why and "energy" in why


def _brute(points, goals):
    out = []
    for i, p in enumerate(points):
        if any(v is None for v in p):
            continue
        beaten = False
        for q in points:
            if any(v is None for v in q):
                continue
            no_worse = all((a >= b) if g == "max" else (a <= b) for a, b, g in zip(q, p, goals))
            better = any((a > b) if g == "max" else (a < b) for a, b, g in zip(q, p, goals))
            beaten = beaten or (no_worse and better)
        if not beaten:
            out.append(i)
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3).flatmap(lambda d: st.tuples(
    st.lists(st.lists(st.one_of(st.integers(0, 5), st.none()), min_size=d, max_size=d), max_size=25),
    st.lists(st.sampled_from(["max", "min"]), min_size=d, max_size=d))))
def test_pareto_front_matches_brute_force(case):
    points, goals = case
    assert front(points, goals) == _brute(points, goals)


def test_recommend_is_best_on_the_front():
    rows = [{"id": "a", "status": "ok", "average_accuracy": 0.5, "device_bytes": 10},
            {"id": "b", "status": "ok", "average_accuracy": 0.7, "device_bytes": 30},
            {"id": "c", "status": "ok", "average_accuracy": 0.6, "device_bytes": 40},
            {"id": "d", "status": "pruned", "average_accuracy": None, "device_bytes": 1},
            {"id": "e", "status": "failed", "average_accuracy": None, "device_bytes": 1}]
    objs = [("average_accuracy", "max"), ("device_bytes", "min")]
    assert recommend(rows, objs)["id"] == "b"
    assert dominates([0.7, 30], [0.6, 40], ["max", "min"])
    assert recommend(rows[3:], objs) is None


def test_spec_is_plain_json(tmp_path):
    p = _write(tmp_path, GOOD)
    spec = S.read(p, data="shipped")
    assert json.loads(json.dumps(spec)) == spec and spec["base"]["data"] == "shipped"
    assert spec["objectives"] == S.DEFAULT_OBJECTIVES and spec["targets"] == ["vega"]
    with pytest.raises(TinyclError):
        S.parse(dict(GOOD, search={"kind": "grid", "extra": 1}))
    assert len(list(itertools.chain(S.plan(spec)))) == 2


def test_a_point_the_cost_model_cannot_price_fails_before_any_work(tmp_path, capsys):
    p = _write(tmp_path, {"axes": {"precision": ["fp32", "fp16"]}, "constraints": {"target": "tinycl-asic"}})
    assert main(["sweep", "--config", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "the point" in err and "fp16" in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "sweep.json").exists()


def test_all_pruned_sweep_writes_its_results_without_ray(tmp_path, capsys):
    p = _write(tmp_path, {"axes": {"lr_bits": [2, 8]}, "constraints": {"memory_bytes": 1000}})
    out = tmp_path / "o"
    assert main(["sweep", "--config", str(p), "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "0 ran, 2 pruned" in text.out and "recommended: none" in text.out
    assert "sweep: 2/2 done" in text.err
    rows = json.loads((out / "trials.json").read_text())["trials"]
    assert [r["status"] for r in rows] == ["pruned", "pruned"]
    assert all("> 1,000 B on vega" in r["reason"] for r in rows)
    assert "nothing to recommend" in (out / "recommended.yaml").read_text()
    assert main(["sweep", "--config", str(p), "--out", str(out)]) == 2  # a second sweep there: refused
    assert "already holds a sweep" in capsys.readouterr().err
    assert main(["sweep", "--resume", "--out", str(out)]) == 0
