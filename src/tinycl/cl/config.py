"""Experiment configuration of ``tinycl run``: keys, defaults, validation, YAML and ``--set``.

Every key is checked; a bad value raises one line naming the key and what is allowed.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from ..data.load import parse_spec
from ..errors import TinyclError

STRATEGIES = ("naive", "joint", "raw_replay", "latent_replay", "lwf", "ewc", "si", "derpp", "er_ace", "gdumb",
              "ncm", "slda")  # the built-in ones; any strategy registered in tinycl.cl.strategies is accepted
REPLACEMENTS = ("ar1", "reservoir", "class_balanced")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # int8: ETA-style 8-bit training (numerics.blockfp)
LR_BITS = tuple(range(1, 9)) + ("fp16", "fp32")

DEFAULTS: dict = {
    "data": "shipped",            # shipped | cifar10:PATH | imagefolder:PATH[?size=HxW&channels=C] | core50:PATH
    "model": "resnet8",
    "backbone": "shipped",        # shipped | none (factory phase) | path to a tinycl pretrain file
    "latent_layer": "block2_1",   # top-level split point; front = up to and including it
    "front_int8": True,           # run the frozen front in INT8 (post-training quantized)
    "lr_bits": 8,                 # bits of stored latents: 1..8, fp16 or fp32
    "lr_granularity": "channel",  # tensor | channel
    "lr_clipping": "mse",         # minmax | mse
    "lr_quantize_new": False,     # train on new latents through the replay quantizer too
    "n_replays": 1500,            # latent replay capacity (samples); raw replay gets equal bytes
    "replacement": "ar1",
    "strategy": "latent_replay",
    "cwr": False,                 # CWR* consolidated output layer (AR1)
    "precision": "fp32",
    "epochs": 4,
    "batch_size": 32,             # new samples per step
    "replay_batch": 32,           # replayed samples per step
    "learning_rate": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "initial_classes": 4,
    "classes_per_experience": 2,
    "class_order": None,          # list of labels, or None for a seeded permutation
    "pretrain_epochs": 8,         # factory phase, when there is no backbone for this data
    "seed": 0,
    "target": "vega",
}

# Keys that are written only when given (so a default run's config stays as it was).
OPTIONAL: dict = {
    "strategy_options": None,     # the strategy's own settings, e.g. {alpha: 0.5} (docs/strategies.md)
    "replay": None,               # latent | raw: what derpp, er_ace, gdumb store (raw: uint8 images)
}
REPLAYS = ("latent", "raw")
ALLOWED = (*DEFAULTS, *OPTIONAL)

_INT_POS = ("n_replays", "epochs", "batch_size", "initial_classes", "classes_per_experience", "pretrain_epochs")
_INT_NONNEG = ("replay_batch", "seed")
_FLOAT_POS = ("learning_rate",)
_FLOAT_NONNEG = ("momentum", "weight_decay")
_BOOL = ("front_int8", "cwr", "lr_quantize_new")
_CHOICES = {"replacement": REPLACEMENTS, "precision": PRECISIONS,
            "lr_granularity": ("tensor", "channel"), "lr_clipping": ("minmax", "mse")}


def _finite_number(v) -> bool:
    """An int or float that is a finite float (not NaN, not infinite, not a bool, not too large)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def validate(cfg: dict) -> dict:
    """Return a complete, checked copy of ``cfg`` (defaults filled in)."""
    unknown = sorted(set(cfg) - set(ALLOWED))
    if unknown:
        raise TinyclError(f"config: unknown key '{unknown[0]}'; allowed keys: {', '.join(ALLOWED)}")
    out = copy.deepcopy(DEFAULTS)
    out.update(copy.deepcopy(cfg))
    for k in _INT_POS + _INT_NONNEG:
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if k in _INT_POS else 0):
            raise TinyclError(f"config: '{k}' must be an integer >= {1 if k in _INT_POS else 0}, got {v!r}")
    for k in _FLOAT_POS + _FLOAT_NONNEG:
        v = out[k]
        if isinstance(v, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                pass
        if not _finite_number(v) or v < 0 or (k in _FLOAT_POS and v == 0):
            raise TinyclError(f"config: '{k}' must be a finite number {'> 0' if k in _FLOAT_POS else '>= 0'}, "
                              f"got {out[k]!r}")
        out[k] = float(v)
    for k in _BOOL:
        if not isinstance(out[k], bool):
            raise TinyclError(f"config: '{k}' must be true or false, got {out[k]!r}")
    for k, allowed in _CHOICES.items():
        if out[k] not in allowed:
            raise TinyclError(f"config: '{k}' must be one of {', '.join(allowed)}; got {out[k]!r}")
    if out["lr_bits"] not in LR_BITS or isinstance(out["lr_bits"], bool):
        raise TinyclError(f"config: 'lr_bits' must be 1..8, fp16 or fp32; got {out['lr_bits']!r}")
    _check_strategy(out)
    for k in ("data", "model", "backbone", "latent_layer", "target"):
        if not isinstance(out[k], str) or not out[k]:
            raise TinyclError(f"config: '{k}' must be a non-empty string, got {out[k]!r}")
    parse_spec(out["data"])  # syntax, kind and loader options, before any work
    order = out["class_order"]
    if order is not None and (not isinstance(order, list) or not all(isinstance(c, int) for c in order)):
        raise TinyclError(f"config: 'class_order' must be a list of integer labels or null, got {order!r}")
    return out


def _check_strategy(out: dict) -> None:
    """The strategy's own rules: lr_quantize_new, CWR*, strategy_options."""
    from .strategies import REGISTRY, check_options

    if not isinstance(out["strategy"], str) or out["strategy"] not in REGISTRY:
        raise TinyclError(f"config: 'strategy' must be one of {', '.join(REGISTRY)}; got {out['strategy']!r}")
    cls = REGISTRY[out["strategy"]]
    if out["lr_quantize_new"] and not cls.quantize_new:
        ok = ", ".join(k for k, c in REGISTRY.items() if c.quantize_new)
        raise TinyclError(f"config: 'lr_quantize_new' applies to strategies {ok} only (they train new latents "
                          f"beside replayed ones); got strategy {out['strategy']!r}")
    if out["cwr"] and not cls.trains_back:
        raise TinyclError(f"config: 'cwr' needs a strategy that trains the back; {out['strategy']} does not")
    if "strategy_options" in out:
        check_options(out["strategy"], out["strategy_options"])
        if out["strategy_options"] is None:
            del out["strategy_options"]
    _check_replay(out, cls)


def _check_replay(out: dict, cls) -> None:
    """``replay: latent | raw``: what a strategy that keeps samples stores (raw: uint8 images)."""
    from .strategies import REGISTRY
    if out.get("replay") is None:
        out.pop("replay", None)
        return
    if out["replay"] not in REPLAYS:
        raise TinyclError(f"config: 'replay' must be one of {', '.join(REPLAYS)}; got {out['replay']!r}")
    takes = {"raw": lambda c: getattr(c, "raw_ok", False),
             "latent": lambda c: hasattr(c, "new_memory") and getattr(c, "raw", None) is not True}[out["replay"]]
    if not takes(cls):
        ok = ", ".join(k for k, c in REGISTRY.items() if takes(c))
        raise TinyclError(f"config: 'replay: {out['replay']}' applies to strategies {ok}; got strategy "
                          f"{out['strategy']!r}")
    if out["replay"] == "raw" and out["lr_quantize_new"]:
        raise TinyclError("config: 'lr_quantize_new' does not apply with 'replay: raw' (no latents are stored)")


def parse_value(text: str):
    """A ``--set`` value: YAML scalar/list syntax (``8``, ``0.1``, ``true``, ``[0,1]``, ``fp16``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_sets(cfg: dict, sets: list[str]) -> dict:
    """Apply ``key=value`` overrides (``--set``) to ``cfg``."""
    cfg = dict(cfg)
    for item in sets or []:
        if "=" not in item:
            raise TinyclError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if k not in ALLOWED:
            raise TinyclError(f"--set: unknown key '{k}'; allowed keys: {', '.join(ALLOWED)}")
        cfg[k] = parse_value(v)
    return cfg


def load_file(path: str | Path) -> dict:
    """Read a YAML config file (a mapping of keys to values)."""
    p = Path(path)
    if not p.is_file():
        raise TinyclError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise TinyclError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TinyclError(f"config file {p} must hold a mapping of keys to values")
    return data
