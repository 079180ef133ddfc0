"""A user's own model file through every command: layers, pretrain, run (factory phase, INT8 front,
replay, cost report) and profile."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cl_fixtures import make_image_folder

SPEC = f"{Path(__file__).parent / 'user_model.py'}:make"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tinycl.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("uf") / "data")


def test_layers_lists_nodes_and_split_points():
    r = _cli("layers", "--model", SPEC, "--input-shape", "3,16,16", "--num-classes", "4", "--json")
    assert r.returncode == 0, r.stderr
    rows = {x["name"]: x for x in json.loads(r.stdout)["layers"]}
    assert rows["layer2.add"]["op"] == "add" and rows["layer1.relu_1"]["split_point"]
    assert rows["layer1.conv1"]["forward_macs"] == 8 * 8 * 9 * 16 * 16
    assert not rows["layer2.conv1"]["split_point"]   # the shortcut still needs layer2's input


def test_run_pretrain_and_profile_on_a_user_model(folder, tmp_path):
    out = tmp_path / "run"
    r = _cli("run", "--model", SPEC, "--data", f"imagefolder:{folder}", "--out", str(out), "--json", "--quiet",
             "--set", "backbone=none", "--set", "pretrain_epochs=2", "--set", "epochs=1",
             "--set", "latent_layer=layer1", "--set", "initial_classes=2", "--set", "n_replays=20")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["latent_shape"] == [8, 16, 16] and res["backbone"] == "factory"
    assert res["footprint_bytes"]["front_weights"] > 0 and res["learning_event"]["latency_s"] > 0
    bad = _cli("run", "--model", SPEC, "--data", f"imagefolder:{folder}", "--out", str(tmp_path / "bad"),
               "--set", "backbone=none", "--set", "latent_layer=layer2.conv1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot split at 'layer2.conv1'" in bad.stderr
    bb = tmp_path / "bb.ckpt"
    r = _cli("pretrain", "--model", SPEC, "--data", f"imagefolder:{folder}", "--initial-classes", "2",
             "--epochs", "1", "--out", str(bb), "--quiet")
    assert r.returncode == 0, r.stderr
    r = _cli("profile", "--model", SPEC, "--input-shape", "3,16,16", "--num-classes", "4", "--target", "stm32l4",
             "--latent-layer", "layer1", "--json")
    assert r.returncode == 0, r.stderr
    prof = json.loads(r.stdout)
    trained = [x for x in prof["layers"] if not x["frozen"]]
    assert trained and all(x["name"].startswith(("layer2", "head", "mean", "flatten")) for x in trained)


def test_onnx_file_through_from_onnx_layers_and_profile(tmp_path):
    import torch

    import tinycl
    from user_model import make
    model = make(4, (3, 16, 16)).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 16, 16), str(path), dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, dynamic_axes={"input": {0: "n"}},
                      input_names=["input"])
    net = tinycl.from_onnx(str(path))            # checked against onnxruntime inside
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(net.predict(x), model(x), rtol=1e-4, atol=1e-5)
    r = _cli("layers", "--model", str(path), "--json")
    assert r.returncode == 0, r.stderr
    assert "layer2.add" in {x["name"] for x in json.loads(r.stdout)["layers"]}
    r = _cli("profile", "--model", str(path), "--target", "vega", "--latent-layer", "layer1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"]["cycles"] > 0


def test_run_on_an_onnx_model_file(folder, tmp_path):
    import torch

    from user_model import make
    torch.manual_seed(0)
    model = make(4, (3, 16, 16)).eval()
    path = tmp_path / "trained.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 16, 16), str(path), dynamo=False, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.PRESERVE, dynamic_axes={"input": {0: "n"}},
                      input_names=["input"])
    r = _cli("run", "--model", str(path), "--data", f"imagefolder:{folder}", "--out", str(tmp_path / "run"),
             "--json", "--quiet", "--set", "epochs=1", "--set", "latent_layer=layer1",
             "--set", "initial_classes=2", "--set", "n_replays=20")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["latent_shape"] == [8, 16, 16] and res["backbone"] == str(path)
    bad = _cli("run", "--model", str(path), "--data", "shipped", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "takes input" in bad.stderr


def test_run_on_torchvision_mobilenet_v2(folder, tmp_path):
    spec = f"{Path(__file__).parent / 'tv_factory.py'}:mobilenet_v2"
    r = _cli("run", "--model", spec, "--data", f"imagefolder:{folder}", "--out", str(tmp_path / "run"), "--json",
             "--quiet", "--set", "backbone=none", "--set", "pretrain_epochs=1", "--set", "epochs=1",
             "--set", "latent_layer=features.6", "--set", "initial_classes=2", "--set", "n_replays=20")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["latent_shape"] == [16, 2, 2]        # features.6 of MobileNetV2 x0.35 (32 x 0.35 -> 16) on 16x16
    assert res["footprint_bytes"]["front_weights"] > 0 and res["learning_event"]["energy_j"] > 0
