"""Target files: every built-in loads, every number names its source, bad files fail in one line."""

import pytest
import yaml

from tinycl.errors import TinyclError
from tinycl.hw.target import SOURCE_TAGS, TARGET_DIR, list_targets, load_target, parse_target

EXPECTED = {"stm32l4", "vega", "tinycl-asic", "eta-fpga", "p100"}


def test_builtin_targets_present_and_load():
    assert EXPECTED <= set(list_targets())
    for name in EXPECTED:
        t = load_target(name)
        assert t.name == name and t.clock_hz > 0 and t.memory


def _numbers_without_source(node, path=""):
    """Walk the raw YAML: every {value: ...} needs a tagged source; table rows share one."""
    bad = []
    if isinstance(node, dict):
        if "value" in node:
            src = node.get("source", "")
            if not (isinstance(src, str) and src.lower().startswith(SOURCE_TAGS)):
                bad.append(path)
            return bad
        nums = [k for k, v in node.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and k != "cores" and k != "schema"]
        if nums and not str(node.get("source", "")).lower().startswith(SOURCE_TAGS):
            bad.append(path)
        for k, v in node.items():
            bad += _numbers_without_source(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            bad += _numbers_without_source(v, f"{path}[{i}]")
    return bad


SPEC_FILES = [TARGET_DIR / f"{n}.yaml" for n in sorted(EXPECTED)] + [
    TARGET_DIR.parent / "accel_eta" / "eta-array.yaml", TARGET_DIR.parent / "accel_tinycl" / "tinycl_pu.yaml"]


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_every_number_names_its_source(path):
    raw = yaml.safe_load(path.read_text())
    assert _numbers_without_source(raw) == []


def test_every_assumption_has_a_range_and_every_fit_its_figure():
    from tinycl.hw.accel_eta import load_array
    from tinycl.hw.accel_tinycl import load_arch
    params = [p for n in EXPECTED for p in load_target(n).params.values()]
    params += list(load_array().params.values()) + list(load_arch().params.values())
    assert len(params) > 100
    for p in params:
        if p.tag == "assumption":
            assert p.range is not None and p.range[0] <= p.value <= p.range[1], p.key
        if p.tag == "calibrated":
            assert p.fitted_to, p.key


def test_overrides_move_one_number_and_typos_fail():
    t = load_target("vega", {"clock_hz": 3e8, "efficiency.int8.conv": 2.0})
    assert t.clock_hz == 3e8 and t.params["clock_hz"].value == 450e6     # the file's value is kept
    assert t.macs_per_cycle("int8", "conv", "forward") == pytest.approx(2 * 15.5)
    with pytest.raises(TinyclError, match="clock_hzz"):
        load_target("vega", {"clock_hzz": 1})


def test_vega_and_stm32_published_figures():
    v, s = load_target("vega"), load_target("stm32l4")
    assert v.cores == 8 and v.level("L1").size_bytes == 128 * 1024 and v.level("L2").size_bytes == 1_600_000
    assert s.clock_hz == 80e6 and s.level("SRAM").size_bytes == 128 * 1024 and not s.level("FLASH").writable
    assert load_target("tinycl-asic").active_power_w == pytest.approx(0.086)


def test_user_file_by_path(tmp_path):
    raw = yaml.safe_load((TARGET_DIR / "stm32l4.yaml").read_text())
    raw["name"] = "my-mcu"
    raw["clock_hz"]["value"] = 160e6
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump(raw))
    t = load_target(str(p))
    assert t.name == "my-mcu" and t.clock_hz == 160e6


@pytest.mark.parametrize("edit, word", [
    (lambda r: r["clock_hz"].pop("source"), "clock_hz"),
    (lambda r: r.update(bogus=1), "bogus"),
    (lambda r: r["memory"][0].update(size_bytes={"value": "big", "source": "assumption: x"}), "size_bytes"),
    (lambda r: r["efficiency"][0].update(forward=0), "forward"),
    (lambda r: r.update(kind="gpu"), "kind"),
    (lambda r: r["power"]["active_w"].update(source="my guess"), "active_w"),
    (lambda r: r["overheads"]["layer_cycles"].pop("range"), "layer_cycles"),             # assumption, no range
    (lambda r: r["overheads"]["layer_cycles"].update(range=[1, 10]), "layer_cycles"),    # value outside it
    (lambda r: r["copy_elements_per_cycle"].pop("fitted_to"), "copy_elements_per_cycle"),  # calibrated, no figure
    (lambda r: r["clock_hz"].update(fitted_to="x"), "clock_hz"),                           # fitted_to, not calibrated
    (lambda r: r["clock_hz"].update(unit="Hz"), "clock_hz.unit"),                          # unknown key in a number
    (lambda r: r["efficiency"][0].pop("range"), "efficiency[0].source"),                  # assumption row, no range
    (lambda r: r["power"].update(peak_w={"value": 1, "source": "paper: x"}), "peak_w"),
    (lambda r: r.update(accelerator="eta-array"), "efficiency"),                           # one device, one model
])
def test_malformed_file_names_the_key(tmp_path, edit, word):
    raw = yaml.safe_load((TARGET_DIR / "vega.yaml").read_text())
    edit(raw)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(TinyclError) as e:
        load_target(str(p))
    assert word in str(e.value) and "\n" not in str(e.value)


def test_unknown_target_and_bad_yaml(tmp_path):
    with pytest.raises(TinyclError, match="available"):
        load_target("cray-1")
    p = tmp_path / "x.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(TinyclError, match="not valid YAML"):
        load_target(str(p))
    with pytest.raises(TinyclError, match="not found"):
        load_target(str(tmp_path / "missing.yaml"))


def test_a_published_bandwidth_follows_the_clock():
    # B/s in the file, B/cycle = B/s / clock: moving the clock (sensitivity) keeps the DDR's 29.9 GB/s
    for clock in (150e6, 200e6, 250e6):
        t = load_target("eta-fpga", {"clock_hz": clock})
        assert t.level("DDR3").bandwidth_bytes_per_cycle * clock == pytest.approx(29.9e9)
    raw = yaml.safe_load((TARGET_DIR / "eta-fpga.yaml").read_text())
    raw["memory"][1]["bandwidth_bytes_per_cycle"] = {"value": 75.0, "source": "datasheet: x"}
    with pytest.raises(TinyclError, match="give one of the two"):
        parse_target(raw)
