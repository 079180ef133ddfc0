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
