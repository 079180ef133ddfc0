"""`tinycl profile` / `tinycl validate` through a tiny argparse harness."""

import argparse
import json

import pytest

from tinycl.errors import TinyclError
from tinycl.hw.commands import register
from tinycl.hw.target import list_targets, load_target
from tinycl.models.registry import list_models


def run(argv, capsys):
    ap = argparse.ArgumentParser(prog="tinycl")
    sub = ap.add_subparsers(dest="cmd", required=True)
    register(sub)
    args = ap.parse_args(argv)
    rc = args.func(args)
    return rc, capsys.readouterr().out


@pytest.mark.parametrize("target", sorted(list_targets()))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "int8"])
def test_profile_small_models_every_target_and_precision(target, precision, capsys):
    if precision not in load_target(target).precisions:   # an accelerator runs its one precision
        with pytest.raises(TinyclError, match="does not support precision"):
            run(["profile", "--model", "resnet8", "--target", target, "--precision", precision], capsys)
        return
    for model in ("tinycl-net", "resnet8"):
        rc, out = run(["profile", "--model", model, "--target", target, "--precision", precision, "--json"], capsys)
        p = json.loads(out)
        assert rc == 0 and p["total"]["cycles"] > 0 and p["total"]["energy_j"] > 0
        for layer in p["layers"]:
            assert set(layer) >= {"name", "type", "macs", "cycles", "latency_s", "energy_j"}
            assert set(layer["macs"]) == {"forward", "backward_input", "backward_weight", "update"}
        assert set(p["total"]["peak_memory_bytes"]) and isinstance(p["total"]["fits"], bool)
        assert p["total"]["macs"]["forward"] == sum(l["macs"]["forward"] for l in p["layers"])


@pytest.mark.parametrize("model", sorted(list_models()))
def test_profile_every_zoo_model_on_vega(model, capsys):
    rc, out = run(["profile", "--model", model, "--target", "vega", "--precision", "fp16"], capsys)
    assert rc == 0 and "TOTAL" in out and "fits:" in out and "peak memory" in out


def test_latent_replay_options_and_config(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: resnet8\ntarget: stm32l4\nlatent_layer: block2_1\nbatch: 4\nn_replays: 8\nlr_bits: 4\n")
    rc, out = run(["profile", "--config", str(cfg), "--target", "vega", "--json"], capsys)
    p = json.loads(out)
    assert p["target"] == "vega" and p["latent_layer"] == "block2_1" and p["steps"] == 3
    assert any(l["frozen"] for l in p["layers"]) and p["replay"]["bytes_read"] > 0


@pytest.mark.parametrize("argv, word", [
    (["profile", "--model", "resnet8", "--target", "cray-1"], "cray-1"),
    (["profile", "--model", "nope", "--target", "vega"], "nope"),
    (["profile", "--model", "resnet8", "--target", "vega", "--latent-layer", "zz"], "zz"),
    (["profile", "--target", "vega"], "--model"),
])
def test_profile_errors(argv, word, capsys):
    with pytest.raises(TinyclError, match=word):
        run(argv, capsys)


def test_bad_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: resnet8\ntarget: vega\nbatchsize: 4\n")
    with pytest.raises(TinyclError, match="batchsize"):
        run(["profile", "--config", str(cfg)], capsys)
