"""Target files: every built-in loads, every number names its source, bad files fail in one line."""

import pytest
import yaml

from tinycl.errors import TinyclError
from tinycl.hw.target import SOURCE_TAGS, TARGET_DIR, list_targets, load_target

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


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_number_names_its_source(name):
    raw = yaml.safe_load((TARGET_DIR / f"{name}.yaml").read_text())
    assert _numbers_without_source(raw) == []


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
