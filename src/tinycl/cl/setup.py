"""Building an experiment from a config: data, backbone (or factory phase), split, INT8 front, latents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data import cache
from ..data import load as load_data
from ..data.dataset import shareable, unshare
from ..errors import TinyclError
from ..models.int8_front import quantize_front
from ..graph import Graph, capture
from ..models.convert import FloatFront
from ..models.registry import create
from ..numerics import quant as Q
from . import backbone as B
from ..data.stream import class_incremental


FACTORY_KEYS = ("data", "model", "seed", "initial_classes", "pretrain_epochs", "class_order")


@dataclass
class Setup:
    dataset: object
    stream: list
    model: nn.Module | Graph  # full model with backbone weights (eval); an ONNX model's graph
    front: nn.Module          # INT8 QuantizedFront, or the float front
    back: Graph               # the captured back (from the latent layer to the logits)
    mean: torch.Tensor
    std: torch.Tensor
    class_order: list[int]
    backbone_source: str
    train_latents: torch.Tensor
    test_latents: torch.Tensor
    latent_shape: tuple
    graph: Graph = None       # the whole captured model

    def __getstate__(self) -> dict:  # latents as arrays: shared, not copied, by Ray's workers
        state = dict(self.__dict__)
        for k in ("train_latents", "test_latents"):
            state[k] = shareable(state[k])
        return state

    def __setstate__(self, state: dict) -> None:
        for k in ("train_latents", "test_latents"):
            state[k] = unshare(state[k])
        self.__dict__.update(state)


def _order(num_classes: int, first: list[int], seed: int, given) -> list[int]:
    if given is not None:
        return list(given)
    rest = [c for c in np.random.default_rng(seed).permutation(num_classes).tolist() if c not in first]
    return list(first) + rest


def _backbone(cfg: dict, ds, out_dir: Path, progress: bool) -> tuple[dict, str]:
    """Shipped / given backbone when it fits the data, else the factory phase (saved in out_dir)."""
    saved = out_dir / "backbone.ckpt"
    made_by = {k: cfg[k] for k in FACTORY_KEYS}
    if saved.exists():  # trained by this run (or an interrupted one) in this folder
        b = B.load_backbone(saved)
        if b.get("factory_config") != made_by:
            raise TinyclError(f"{saved} was trained for another config ({b.get('factory_config')}); "
                              f"use another --out")
        return b, "factory"
    if cfg["backbone"] == "shipped" and cfg["data"] == "shipped" and cfg["model"] == "resnet8" \
            and B.SHIPPED.exists():
        return B.load_backbone(B.SHIPPED), "shipped"
    if cfg["backbone"] not in ("shipped", "none"):
        b = B.load_backbone(cfg["backbone"])
        if tuple(b["input_shape"]) != ds.image_shape or b["num_classes"] != ds.num_classes:
            raise TinyclError(f"backbone {cfg['backbone']} was trained for input {b['input_shape']} and "
                              f"{b['num_classes']} classes; the data has {ds.image_shape} and {ds.num_classes}")
        return b, str(cfg["backbone"])
    if str(cfg["model"]).endswith(".onnx"):   # a trained model file: its weights are the backbone
        return _onnx_backbone(cfg, ds), str(cfg["model"])
    if ds.experiences is not None:  # the dataset's own stream (CORe50): its first batch
        initial = list(ds.experiences[0].classes)
        mask = torch.zeros(len(ds.train.y), dtype=torch.bool)
        mask[ds.experiences[0].train_idx] = True
    else:
        order = _order(ds.num_classes, [], cfg["seed"], cfg["class_order"])
        initial = order[:cfg["initial_classes"]]
        mask = torch.isin(ds.train.y, torch.tensor(initial))
    b = B.pretrain(cfg["model"], ds.train.x[mask], ds.train.y[mask], ds.num_classes, initial,
                   cfg["pretrain_epochs"], seed=cfg["seed"], progress=progress)
    b["factory_config"] = made_by
    B.save_backbone(saved, b)
    return b, "factory"


def _onnx_backbone(cfg: dict, ds) -> dict:
    """An ONNX model is trained already: its initial classes are the config's first classes and the
    input normalisation comes from their training images."""
    if ds.experiences is not None:
        initial = list(ds.experiences[0].classes)
        mask = torch.zeros(len(ds.train.y), dtype=torch.bool)
        mask[ds.experiences[0].train_idx] = True
    else:
        initial = _order(ds.num_classes, [], cfg["seed"], cfg["class_order"])[:cfg["initial_classes"]]
        mask = torch.isin(ds.train.y, torch.tensor(initial))
    mean, std = B.normalizer(ds.train.x[mask])
    return {"model": cfg["model"], "classes": initial, "mean": mean, "std": std}


def _front_key(front: Graph, calib: torch.Tensor) -> str:
    """Cache key part of an INT8 front: the code that quantizes and runs it, the front graph
    (nodes, weights, buffers) and its calibration input (``quantize_front`` is deterministic)."""
    from ..kernels import int8, int8_elementwise, int8_fast
    from ..models import int8_front, int8_ops
    from ..numerics import quant
    code = cache.source_digest(int8_front, int8_ops, int8, int8_fast, int8_elementwise, quant, B)
    nodes = repr([(n.name, n.op, n.inputs, sorted(n.attrs.items(), key=str), n.params, n.buffers, n.shape)
                  for n in front.nodes])
    return cache.digest("int8-front-v2", code, nodes, dict(front.params), dict(front.buffers), calib)


@torch.no_grad()
def _latents(front, x_uint8, mean, std, key: str | None = None, progress: bool = False,
             what: str = "latents") -> torch.Tensor:
    """Latents of uint8 images in batches (progress bar), contiguous float32. With ``key`` (an
    INT8 front's :func:`_front_key`) the INT8 codes are cached on disk per (front, images).
    Batches of 256 for the INT8 front (exact, any batch gives the same codes), 500 for a
    float front (as before: float sums may depend on the batch)."""
    batch = 256 if key is not None else 500
    cached = key is not None and len(x_uint8) >= cache.MIN_ITEMS and cache.cache_root() is not None
    full = cache.digest(key, mean, std, x_uint8) if cached else None
    hit = cache.load("latents", full) if full is not None else None
    if hit is not None and set(hit) == {"q", "scale", "zp"}:
        return _dequantize(torch.from_numpy(hit["q"]), float(hit["scale"]), int(hit["zp"]))
    parts = []
    for i in tqdm(range(0, len(x_uint8), batch), desc=what, unit="batch", disable=None if progress else True,
                  leave=False):
        xb = B.to_input(x_uint8[i:i + batch], mean, std)
        if full is not None:
            q, scale, zp = front.forward_int(xb)
            parts.append(q.contiguous())
        else:
            parts.append(front(xb).contiguous())
    if full is None:
        return torch.cat(parts)
    q = torch.cat(parts)
    cache.save("latents", full, {"q": q.numpy(), "scale": np.array(scale, dtype=np.float64),
                                 "zp": np.array(zp, dtype=np.int64)})
    return _dequantize(q, scale, zp)


def _dequantize(q: torch.Tensor, scale: float, zp: int, rows: int = 4096) -> torch.Tensor:
    """:func:`Q.dequantize` of INT8 codes as a lookup in its own values for the 256 codes
    (same floats), in slices of ``rows`` so that the index temporaries stay small."""
    table = Q.dequantize(torch.arange(-128, 128, dtype=torch.int8), scale, zp)
    out = torch.empty(q.shape, dtype=torch.float32)
    for i in range(0, len(q), rows):
        idx = q[i:i + rows].reshape(-1).to(torch.int32).add_(128)
        out[i:i + rows] = table.index_select(0, idx).view(out[i:i + rows].shape)
    return out


def _split(model, cfg, shape) -> tuple[Graph, Graph, Graph]:
    """(whole, front, back) graphs of ``model`` cut at the config's latent layer."""
    graph = capture(model, shape)
    try:
        front, back = graph.split(cfg["latent_layer"])
    except TinyclError as e:
        raise TinyclError(f"config: 'latent_layer': {e}") from None
    return graph, front, back


def _onnx_graph(cfg, ds) -> Graph:
    """The graph of an ONNX model file (its weights are the backbone), checked against the data."""
    from ..graph.onnx import graph_from_onnx
    graph = graph_from_onnx(cfg["model"])[0]
    if tuple(graph.input_shape) != tuple(ds.image_shape):
        raise TinyclError(f"model {cfg['model']} takes input {graph.input_shape}; the data has {ds.image_shape}")
    if tuple(graph[graph.output].shape) != (ds.num_classes,):
        raise TinyclError(f"model {cfg['model']} outputs {graph[graph.output].shape}; the data has "
                          f"{ds.num_classes} classes")
    return graph


def _check_split(cfg, ds) -> None:
    if str(cfg["model"]).endswith(".onnx"):
        graph = _onnx_graph(cfg, ds)
        try:
            graph.split(cfg["latent_layer"])
        except TinyclError as e:
            raise TinyclError(f"config: 'latent_layer': {e}") from None
        return
    _split(create(cfg["model"], num_classes=ds.num_classes, input_shape=ds.image_shape), cfg, ds.image_shape)
    if cfg["backbone"] == "none" and ds.experiences is None and cfg["initial_classes"] >= ds.num_classes:
        raise TinyclError(f"config: 'initial_classes' ({cfg['initial_classes']}) must be below the "
                          f"number of classes ({ds.num_classes})")


def build(cfg: dict, out_dir: Path, progress: bool = True, latents: bool = True) -> Setup:
    """The experiment of ``cfg``; ``latents=False`` stops after the INT8 front (no latents computed:
    what ``tinycl export`` needs)."""
    ds = load_data(cfg["data"])
    if ds.num_classes < 2:
        raise TinyclError(f"data {cfg['data']}: needs at least 2 classes, has {ds.num_classes}")
    _check_split(cfg, ds)  # cheap checks before any training
    bb, source = _backbone(cfg, ds, out_dir, progress)
    if bb["model"] != cfg["model"]:
        raise TinyclError(f"backbone is a {bb['model']} but config 'model' is {cfg['model']}")
    initial = len(bb["classes"])
    if ds.experiences is not None:  # official stream (e.g. CORe50 NICv2): used as it is
        stream = list(ds.experiences)
        order = [c for e in stream for c in e.new_classes]
    else:
        if initial != cfg["initial_classes"] and source == "shipped":
            cfg["initial_classes"] = initial  # the shipped backbone fixes the initial classes
        order = _order(ds.num_classes, bb["classes"], cfg["seed"], cfg["class_order"])
        if set(order[:initial]) != set(bb["classes"]):
            raise TinyclError(f"class_order must start with the backbone's classes {bb['classes']}")
        if initial >= ds.num_classes:
            raise TinyclError(f"initial_classes ({initial}) leaves no class to learn of {ds.num_classes}")
        stream = class_incremental(ds, initial, cfg["classes_per_experience"], class_order=order)
    if str(cfg["model"]).endswith(".onnx"):
        graph = model = _onnx_graph(cfg, ds)
        front_g, back = graph.split(cfg["latent_layer"])
    else:
        model = B.build_model(bb)   # eval mode: the back's batch norms are not frozen, they train
        graph, front_g, back = _split(model, cfg, ds.image_shape)
    mean, std = bb["mean"], bb["std"]
    key = None
    if cfg["front_int8"]:
        g = torch.Generator().manual_seed(cfg["seed"])
        first = stream[0].train_idx
        calib = first[torch.randperm(len(first), generator=g)[:256]]
        calib_x = B.to_input(ds.train.x[calib], mean, std)
        key = _front_key(front_g, calib_x)
        front = quantize_front(front_g, calib_x)
    else:
        front = FloatFront(front_g)
    if not latents:
        return Setup(ds, stream, model, front, back, mean, std, order, source, None, None,
                     tuple(back.input_shape), graph)
    train_lat = _latents(front, ds.train.x, mean, std, key=key, progress=progress, what="train latents")
    test_lat = _latents(front, ds.test.x, mean, std, key=key, progress=progress, what="test latents")
    return Setup(ds, stream, model, front, back, mean, std, order, source, train_lat, test_lat,
                 tuple(train_lat.shape[1:]), graph)
