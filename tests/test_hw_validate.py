"""The validation table: computed rows, their kinds, and the recorded docs/validation.md."""

import math
from pathlib import Path

import pytest

from tinycl.hw.validate import format_table, rows

DOC = Path(__file__).resolve().parents[1] / "docs" / "validation.md"


@pytest.fixture(scope="module")
def table():
    return rows(fast=True)


def test_rows_have_kinds_and_errors(table):
    kinds = {r["kind"] for r in table}
    assert kinds <= {"calibration", "prediction", "check", "pending"}
    assert "prediction" in kinds and "calibration" in kinds
    for r in table:
        if r["kind"] in ("prediction", "calibration"):
            assert math.isfinite(r["modelled"]) and r["modelled"] > 0
            assert r["error"] == pytest.approx((r["modelled"] - r["published"]) / r["published"])
    calib = [r for r in table if r["kind"] == "calibration"]
    assert all(abs(r["error"]) < 0.05 for r in calib)   # a calibration must reproduce its figure


def test_table_format_and_doc_lists_every_figure(table):
    text = format_table(table)
    assert text.count("\n") == len(table) + 1
    doc = DOC.read_text()
    for r in table:
        assert r["figure"] in doc, r["figure"]


def test_calibration_and_prediction_split(table):
    by = {r["figure"]: r for r in table}
    # one published figure per fitted parameter: the 4.39 peak and ResNet8's 3.11 (VEGA), ResNet20 (ETA)
    assert {f for f, r in by.items() if r["kind"] == "calibration"} == {
        "PULP-TrainLib peak MAC/clk, 8 cores FP32", "resnet8 FP16 training step MAC/clk", "ETA GOPS, resnet20"}
    assert by["ds-cnn FP16 training step MAC/clk"]["kind"] == "prediction"
    assert by["FP16 over FP32, one Conv2D training step (up to)"]["kind"] == "prediction"
    # shape awareness: DS-CNN (depthwise, 125-pixel maps) runs well below ResNet8 per cycle
    assert by["ds-cnn FP16 training step MAC/clk"]["modelled"] < 0.7 * by["resnet8 FP16 training step MAC/clk"]["modelled"]


def test_eta_rows_come_from_the_pe_array_model(table):
    rows_eta = [r for r in table if r["figure"].startswith("ETA GOPS")]
    assert len(rows_eta) == 3
    for r in rows_eta:
        assert r["kind"] in ("calibration", "prediction") and 0 < r["modelled"] < 5000
        assert "PE-array model" in r["config"]
