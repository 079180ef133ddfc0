"""The validation table: computed rows, kinds decided from the spec files, and the recorded docs/validation.md."""

import math
from pathlib import Path

import pytest

from tinycl.hw.validate import classify, format_table, rows, score, spec_params, table_rows

DOC = Path(__file__).resolve().parents[1] / "docs" / "validation.md"
KINDS = {"calibration", "depends on calibration", "prediction", "check", "measured"}


@pytest.fixture(scope="module")
def table():
    return rows(fast=True)


def test_rows_have_kinds_and_errors(table):
    kinds = {r["kind"] for r in table}
    assert kinds <= KINDS and "prediction" in kinds and "calibration" in kinds
    for r in table:
        assert math.isfinite(r["modelled"]) and r["modelled"] > 0
        assert r["error"] == pytest.approx((r["modelled"] - r["published"]) / r["published"])
    calib = [r for r in table if r["kind"] == "calibration"]
    assert all(abs(r["error"]) < 0.05 for r in calib)   # a calibration must reproduce its figure


def test_table_format_and_doc_lists_every_figure(table):
    text = format_table(table)
    assert text.count("\n|") == len(table) + 1 and "Score (predictions only)" in text
    doc = DOC.read_text()
    for r in table:
        assert r["figure"] in doc, r["figure"]


def test_every_fitted_number_names_a_row_and_kinds_follow():
    rs = table_rows(fast=True)
    figures = {r.figure for r in rs}
    fitted = {k: p for k, p in spec_params({f for r in rs for f in r.files}).items() if p.tag == "calibrated"}
    assert fitted and all(p.fitted_to in figures for p in fitted.values())
    by = {r["figure"]: r for r in rows(fast=True)}
    assert {f for f, r in by.items() if r["kind"] == "calibration"} == {
        "PULP-TrainLib peak MAC/clk, 8 cores FP32", "resnet8 FP16 training step MAC/clk", "ETA GOPS, resnet20"}
    # the fitted copy cost re-expressed as a latency at an assumed clock is no prediction
    assert by["resnet8 FP16 training step latency"]["kind"] == "depends on calibration"
    assert "vega:copy_elements_per_cycle" in by["resnet8 FP16 training step latency"]["moves_with"]
    # rows that restate another row's modelled value are not counted again
    assert by["ds-cnn FP16 training step latency"]["kind"] == "depends on calibration"
    assert by["VEGA over STM32L4, energy"]["kind"] == "depends on calibration"
    # fitted on other data: still predictions (that is what calibration is for)
    assert by["ds-cnn FP16 training step MAC/clk"]["kind"] == "prediction"
    assert by["ETA GOPS, vgg-cifar"]["kind"] == "prediction"
    assert "eta-array:training.batch" in by["ETA GOPS, vgg-cifar"]["moves_with"]
    # shape awareness: DS-CNN (depthwise, 125-pixel maps) runs well below ResNet8 per cycle
    assert by["ds-cnn FP16 training step MAC/clk"]["modelled"] < 0.7 * by["resnet8 FP16 training step MAC/clk"]["modelled"]


def test_classify_catches_a_new_fit():
    # a row fitted on a number it is computed from becomes a calibration, its restatements dependent
    rs = [r for r in table_rows(fast=True) if r.figure.startswith("ETA GOPS")]
    values = {r.figure: r.compute({}) for r in rs}
    k = classify(rs, values)
    assert k["ETA GOPS, resnet20"]["kind"] == "calibration"
    assert k["ETA GOPS, resnet18"]["kind"] == "prediction"


def test_score_counts_only_predictions(table):
    s = score(table)
    preds = [r for r in table if r["kind"] == "prediction"]
    assert s["predictions"] == len(preds)
    assert s["within"] == sum(abs(r["error"]) <= 0.25 for r in preds)


def test_eta_and_tinycl_rows_come_from_the_accelerator_models(table):
    from tinycl.hw.accel_eta import eta_training_step, load_array
    from tinycl.models.registry import create
    by = {r["figure"]: r for r in table}
    for name in ("resnet20", "vgg-cifar"):
        net = create(name)
        assert by[f"ETA GOPS, {name}"]["modelled"] == pytest.approx(
            eta_training_step(net, net.input_shape, load_array())["gops"], rel=1e-9)
    assert "PE-array model" in by["ETA GOPS, resnet18"]["config"]
    assert by["TinyCL epoch, CIFAR-10"]["modelled"] == pytest.approx(42.3, abs=0.05)   # docs/accel_tinycl.md


def test_doc_table_is_the_printed_table(table):
    # docs/validation.md is regenerated from `tinycl validate`: every row that does not depend on the
    # number of latent layers (--fast) must appear there verbatim
    doc = DOC.read_text()
    lines = format_table(table).splitlines()
    fixed = [l for l in lines[2:] if l.startswith("| ") and "mobilenet" not in l.lower() and "latent" not in l.lower()
             and "lifetime" not in l]
    assert len(fixed) >= 10
    for line in fixed:
        assert line in doc, line
