"""Measured ground truth: the generated C learner on a Cortex-M4F (QEMU) beside the STM32L4 model.

``measured/battery.yaml`` holds the battery assumed by the lifetime row.
``measured/cortex-m4f.json`` holds the instruction counts per learning event written by
``bench/deploy_measure.py --write`` (the command is stored in the file); ``measured/cortex-m4f.yaml``
holds the cycles-per-instruction assumption (one tagged number, read by :mod:`tinycl.hw.spec`).
A row compares the model's cycles with instructions x CPI.
"""

from __future__ import annotations

import json
from pathlib import Path

from tinycl.errors import TinyclError
from tinycl.hw.spec import SpecReader, read_yaml

MEASURED = Path(__file__).resolve().parent / "measured"


def cpi(overrides: dict | None = None) -> tuple[float, str]:
    """(cycles per instruction, its source text) from ``measured/cortex-m4f.yaml``."""
    path = MEASURED / "cortex-m4f.yaml"
    y = read_yaml(path)
    r = SpecReader(str(path), "measurement file", overrides)
    r.keys(y, {"cpi"})
    value = r.number(y, "cpi", "cpi")
    r.check_overrides()
    return value, r.params["cpi"].source


def battery(overrides: dict | None = None) -> tuple[float, float]:
    """(capacity in mAh, voltage in V) of the lifetime row, from ``measured/battery.yaml``."""
    path = MEASURED / "battery.yaml"
    y = read_yaml(path)
    r = SpecReader(str(path), "battery file", overrides)
    r.keys(y, {"capacity_mah", "voltage_v"})
    out = r.number(y, "capacity_mah", "capacity_mah"), r.number(y, "voltage_v", "voltage_v")
    r.check_overrides()
    return out


def validation_rows(results: list[dict], overrides: dict | None = None) -> list[dict]:
    """Rows in the format of :func:`tinycl.hw.validate.rows` (kind ``measured``): the measured
    instructions x CPI as the reference figure, the STM32L4 model's cycles as the modelled one."""
    k, src = cpi(overrides)
    out = []
    for r in results:
        for e in r["events"][:2]:
            meas = e["instructions"] * k
            mod = e["stm32l4_model_cycles"]
            out.append({"figure": f"ResNet-8 learning event on a Cortex-M4F, latent {r['latent_layer']}, "
                                  f"{e['new']} new + {e['replays']} replays",
                        "published": round(meas), "modelled": mod, "unit": "cycles",
                        "error": (mod - meas) / meas, "kind": "measured",
                        "config": f"{e['instructions']:,} instructions measured (generated C, -O2, "
                                  f"qemu-system-arm -icount) x CPI {k:g} ({src.split(':')[0]}, range 1-2); "
                                  "model: stm32l4 fp32, INT8 front, SGD momentum",
                        "moves_with": [], "fitted_to": []})
    return out


def measured_rows() -> list[dict]:
    """The rows of the stored measurement (empty when none has been stored)."""
    path = MEASURED / "cortex-m4f.json"
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text())
        return validation_rows(doc["results"])
    except (ValueError, KeyError, TypeError) as e:
        raise TinyclError(f"measurement file {path} is damaged: {e}") from None
