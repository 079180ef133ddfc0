"""Config validation and atomic checksummed checkpoints."""

import pytest
import torch

from tinycl.cl import checkpoint
from tinycl.cl.config import DEFAULTS, apply_sets, load_file, validate
from tinycl.errors import TinyclError


def test_defaults_validate():
    assert validate({}) == {**DEFAULTS, "learning_rate": float(DEFAULTS["learning_rate"]),
                            "momentum": float(DEFAULTS["momentum"]), "weight_decay": float(DEFAULTS["weight_decay"])}


@pytest.mark.parametrize("key,value,msg", [
    ("lr_bits", 9, "'lr_bits' must be 1..8"), ("lr_bits", True, "'lr_bits'"), ("strategy", "ewk", "'strategy'"),
    ("epochs", 0, "'epochs' must be an integer >= 1"), ("learning_rate", -1, "'learning_rate'"),
    ("replacement", "fifo", "'replacement'"), ("front_int8", "yes", "'front_int8'"),
    ("class_order", "1,2", "'class_order'"), ("model", "", "'model'"), ("colour", 1, "unknown key 'colour'"),
])
def test_bad_values_name_the_key(key, value, msg):
    with pytest.raises(TinyclError, match=msg):
        validate({key: value})


def test_lr_quantize_new_needs_latent_replay():
    assert validate({"lr_quantize_new": True})["lr_quantize_new"] is True
    with pytest.raises(TinyclError, match="'lr_quantize_new' applies to strategies latent_replay, derpp, er_ace only"):
        validate({"lr_quantize_new": True, "strategy": "raw_replay"})
    with pytest.raises(TinyclError, match="'lr_quantize_new' must be true or false"):
        validate({"lr_quantize_new": "yes"})


def test_apply_sets_and_file(tmp_path):
    cfg = apply_sets({}, ["lr_bits=4", "strategy=raw_replay", "class_order=[1, 0, 2]", "learning_rate=0.1"])
    assert cfg == {"lr_bits": 4, "strategy": "raw_replay", "class_order": [1, 0, 2], "learning_rate": 0.1}
    assert validate(apply_sets({}, ["lr_bits=fp16"]))["lr_bits"] == "fp16"
    with pytest.raises(TinyclError, match="key=value"):
        apply_sets({}, ["lr_bits"])
    with pytest.raises(TinyclError, match="unknown key 'nope'"):
        apply_sets({}, ["nope=1"])
    p = tmp_path / "c.yaml"
    p.write_text("lr_bits: 6\nepochs: 2\n")
    assert load_file(p) == {"lr_bits": 6, "epochs": 2}
    p.write_text("[1, 2]")
    with pytest.raises(TinyclError, match="mapping"):
        load_file(p)
    p.write_text("a: [1, 2")
    with pytest.raises(TinyclError, match="not valid YAML"):
        load_file(p)
    with pytest.raises(TinyclError, match="not found"):
        load_file(tmp_path / "missing.yaml")


def test_checkpoint_roundtrip_and_damage(tmp_path):
    path = tmp_path / "state.ckpt"
    state = {"w": torch.arange(10.0), "n": 3, "nested": {"a": [1, 2]}}
    checkpoint.save(path, state)
    back = checkpoint.load(path)
    assert torch.equal(back["w"], state["w"]) and back["nested"] == state["nested"]
    checkpoint.save(path, {"n": 4})
    assert checkpoint.load(path)["n"] == 4
    assert checkpoint.load(tmp_path / "state.ckpt.prev")["n"] == 3  # the last good one stays
    good = path.read_bytes()
    path.write_bytes(good[:-7])
    with pytest.raises(TinyclError, match="truncated"):
        checkpoint.load(path)
    flipped = bytearray(good)
    flipped[-3] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(TinyclError, match="checksum"):
        checkpoint.load(path)
    path.write_bytes(b"garbage")
    with pytest.raises(TinyclError, match="not a tinycl state file"):
        checkpoint.load(path)
    assert path.read_bytes() == b"garbage"  # never deleted or rewritten by a failed load
    assert not list(tmp_path.glob(".*tmp*"))


def test_checkpoint_name_exists_at_every_moment(tmp_path, monkeypatch):
    """Between keeping the old state as .prev and moving the new one in, NAME must exist."""
    import os
    path = tmp_path / "state.ckpt"
    checkpoint.save(path, {"n": 1})
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(path.exists())
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", spy)
    checkpoint.save(path, {"n": 2})
    assert seen and all(seen)
    assert checkpoint.load(path)["n"] == 2 and checkpoint.load(tmp_path / "state.ckpt.prev")["n"] == 1


def test_checkpoint_refuses_at_save_what_load_would_refuse(tmp_path):
    """A value load() cannot read safely (here torch's version object, a str subclass) fails the save,
    in one line naming the file, and nothing is written."""
    import torch

    from tinycl.cl import checkpoint

    path = tmp_path / "b.ckpt"
    with pytest.raises(TinyclError, match="b.ckpt.*other than tensors"):
        checkpoint.save(path, {"w": torch.ones(2), "torch_version": torch.__version__})
    assert not path.exists() and not list(tmp_path.iterdir())
    checkpoint.save(path, {"w": torch.ones(2), "torch_version": str(torch.__version__)})
    assert checkpoint.load(path)["torch_version"] == str(torch.__version__)
