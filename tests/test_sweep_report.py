"""The sweep's outputs from made-up trial rows (no Ray): tables, Pareto plot, report.html in a real
headless browser (Debian's chromium driven by Selenium; skipped, naming what is missing, without them)."""

from __future__ import annotations

import json
import shutil

import pytest

from tinycl.sweep import spec as S
from tinycl.sweep.output import write_all

SPEC = S.parse({"base": {"epochs": 1}, "axes": {"lr_bits": [2, 4, 8], "n_replays": [100, 200]},
                "constraints": {"target": "vega", "memory_bytes": 500_000}})


def _rows():
    rows = []
    for i, t in enumerate(S.plan(SPEC)):
        b, n = t["point"]["lr_bits"], t["point"]["n_replays"]
        mem = 100_000 + n * 500 * b
        row = {"id": t["id"], "status": "ok", "reason": None, "point": t["point"], "config": t["config"],
               "average_accuracy": 0.3 + 0.02 * b + 0.0001 * n - 0.001 * i, "forgetting": 0.1,
               "footprint_bytes": mem - 1000, "replay_bytes": n * 64 * b, "device_bytes": mem,
               "latency_s": 0.01 * b, "energy_j": 0.001 * (10 - b) + 1e-6 * n, "fits": True,
               "targets": {"vega": {"latency_s": 0.01 * b, "energy_j": 0.001, "device_bytes": mem, "fits": True}},
               "seconds": 1.0 + i}
        if mem > 500_000:
            row.update(status="pruned", reason=f"device memory {mem:,} B > 500,000 B on vega",
                       average_accuracy=None, forgetting=None, footprint_bytes=None, seconds=None)
        rows.append(row)
    rows[0].update(status="failed", reason="boom", average_accuracy=None)
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rows = _rows()
    rec = write_all(out, rows, SPEC)
    return out, rows, rec


def test_outputs_and_recommendation(report):
    out, rows, rec = report
    ok = [r for r in rows if r["status"] == "ok"]
    assert rec["id"] == max(ok, key=lambda r: r["average_accuracy"])["id"]
    data = json.loads((out / "trials.json").read_text())
    assert len(data["trials"]) == len(rows) and data["spec"] == SPEC
    text = (out / "recommended.yaml").read_text()
    assert f"trial {rec['id']}" in text and "lr_bits:" in text
    html = (out / "report.html").read_text()
    assert "<script src" not in html and "http://" not in html and "https://" not in html  # self-contained
    assert html.count("data:image/png;base64,") == 1 and "pruned" in html and "boom" in html


def _driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [n for n, p in (("chromium", browser), ("chromedriver (Debian chromium-driver)", driver)) if not p]
    if missing:
        pytest.skip(f"no headless browser: {', '.join(missing)} not installed (apt-get install chromium "
                    f"chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_report_in_a_headless_browser(report):
    from selenium.webdriver.common.by import By

    out, rows, _ = report
    d = _driver()
    try:
        d.get((out / "report.html").as_uri())
        errors = [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
        img = d.find_element(By.ID, "pareto")
        assert d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100
        heads = d.find_elements(By.CSS_SELECTOR, "#trials thead th")
        names = [h.text for h in heads]
        col = names.index("device_bytes")

        def column():
            cells = d.find_elements(By.CSS_SELECTOR, f"#trials tbody tr td:nth-child({col + 1})")
            return [c.get_attribute("data-v") for c in cells]

        before = column()
        assert len(before) == len(rows)
        heads[col].click()
        up = [float(v) for v in column()]
        assert up == sorted(up) and column() != before
        heads[col].click()
        down = [float(v) for v in column()]
        assert down == sorted(down, reverse=True)
        acc = names.index("average_accuracy")
        heads[acc].click()  # empty cells (pruned, failed) go last
        vals = [c.get_attribute("data-v") for c in
                d.find_elements(By.CSS_SELECTOR, f"#trials tbody tr td:nth-child({acc + 1})")]
        filled = [float(v) for v in vals if v]
        assert vals[:len(filled)] == [v for v in vals if v] and filled == sorted(filled)
        assert d.find_element(By.ID, "recommended").text.startswith("# tinycl sweep: recommended")
        assert [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
    finally:
        d.quit()
