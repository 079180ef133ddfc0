"""Sensitivity over the stated assumption ranges and solving for unpublished numbers."""

import argparse
import json
import sys

import pytest

from tinycl.errors import TinyclError
from tinycl.hw import assumptions
from tinycl.hw.commands import register
from tinycl.hw.validate import spec_params, table_rows


def _row(figure):
    return next(r for r in table_rows(fast=True) if r.figure == figure)


def test_solve_p100_step_overhead_reproduces_103_s():
    row = _row("P100 epoch of the same model")
    params = spec_params(row.files)
    x = assumptions._solve_one(row, ("p100:overheads.step_cycles",), {}, params)
    assert x["modelled_at_solution"] == pytest.approx(103, rel=1e-6)
    # 103 s over 50,000 steps = 2.06 ms a step, minus the 2.43 s of modelled kernel time
    assert x["solved"] / 1.303e9 == pytest.approx((103 - row.compute({})) / 50_000, rel=1e-6)
    assert x["plausible"] and "inside" in x["note"]


def test_solve_tinycl_clock_is_linear_and_implausible():
    row = _row("TinyCL epoch, CIFAR-10")
    x = assumptions._solve_one(row, ("tinycl-asic:clock_hz",), {}, spec_params(row.files))
    assert x["solved"] == pytest.approx(100e6 * row.compute({}) / 1.76, rel=1e-6)   # time = cycles / clock
    assert not x["plausible"] and "outside" in x["note"]


def test_solve_reports_when_no_value_reproduces_the_figure():
    row = _row("ETA GOPS, vgg-cifar")
    x = assumptions._solve_one(row, ("eta-array:noc.resend_pixels",), {}, spec_params(row.files))
    assert x["solved"] is None and not x["plausible"] and "no value" in x["note"]


def test_sensitivity_moves_each_number_over_its_range(tmp_path):
    sens = assumptions.sensitivity(fast=True, only="P100")
    assert [s["figure"] for s in sens] == ["P100 epoch of the same model"]
    sw = {w["key"]: w for w in sens[0]["swings"]}
    # the launch latency per primitive call is linear in the epoch: check both ends by hand
    lay = sw["p100:overheads.layer_cycles"]
    row = _row("P100 epoch of the same model")
    assert lay["at_lo"] == pytest.approx(row.compute({"p100:overheads.layer_cycles": 3250}))
    assert lay["at_hi"] > sens[0]["base"] > lay["at_lo"]
    assert sens[0]["swings"][0]["key"] == "p100:overheads.step_cycles"    # sorted by swing
    png = tmp_path / "t.png"
    assumptions.tornado_png(sens, str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "p100:overheads.step_cycles" in assumptions.format_sensitivity(sens)


def test_cli_solve_json_and_plot_needs_sensitivity(capsys):
    ap = argparse.ArgumentParser(prog="tinycl")
    register(ap.add_subparsers(dest="cmd"))
    args = ap.parse_args(["validate", "--fast", "--solve", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)["solve"]
    figs = {s["figure"] for s in out}
    assert {"TinyCL epoch, CIFAR-10", "P100 epoch of the same model", "ETA GOPS, vgg-cifar"} <= figs
    with pytest.raises(TinyclError, match="--sensitivity"):
        a = ap.parse_args(["validate", "--plot", "x.png"])
        a.func(a)


def test_a_broken_accelerator_import_fails_loudly(monkeypatch):
    # validate.py once caught (ImportError, AttributeError) and turned the ETA rows into "pending"
    monkeypatch.setitem(sys.modules, "tinycl.hw.accel_eta", None)
    with pytest.raises(ImportError):
        _row("ETA GOPS, resnet20").compute({})
