"""Building an experiment from a config: data, backbone (or factory phase), split, INT8 front, latents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import load as load_data
from ..errors import TinyclError
from ..models.int8_front import quantize_front
from ..graph import Graph, capture
from ..models.convert import FloatFront
from ..models.registry import create
from . import backbone as B
from ..data.stream import class_incremental


FACTORY_KEYS = ("data", "model", "seed", "initial_classes", "pretrain_epochs", "class_order")


@dataclass
class Setup:
    dataset: object
    stream: list
    model: nn.Module          # full model with backbone weights (eval)
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


@torch.no_grad()
def _latents(front, x_uint8, mean, std, batch=500) -> torch.Tensor:
    return torch.cat([front(B.to_input(x_uint8[i:i + batch], mean, std)) for i in range(0, len(x_uint8), batch)])


def _split(model, cfg, shape) -> tuple[Graph, Graph, Graph]:
    """(whole, front, back) graphs of ``model`` cut at the config's latent layer."""
    graph = capture(model, shape)
    try:
        front, back = graph.split(cfg["latent_layer"])
    except TinyclError as e:
        raise TinyclError(f"config: 'latent_layer': {e}") from None
    return graph, front, back


def _check_split(cfg, ds) -> None:
    _split(create(cfg["model"], num_classes=ds.num_classes, input_shape=ds.image_shape), cfg, ds.image_shape)
    if cfg["backbone"] == "none" and ds.experiences is None and cfg["initial_classes"] >= ds.num_classes:
        raise TinyclError(f"config: 'initial_classes' ({cfg['initial_classes']}) must be below the "
                          f"number of classes ({ds.num_classes})")


def build(cfg: dict, out_dir: Path, progress: bool = True) -> Setup:
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
    model = B.build_model(bb)   # eval mode: the back's batch norms are not frozen, they train
    graph, front_g, back = _split(model, cfg, ds.image_shape)
    mean, std = bb["mean"], bb["std"]
    if cfg["front_int8"]:
        g = torch.Generator().manual_seed(cfg["seed"])
        first = stream[0].train_idx
        calib = first[torch.randperm(len(first), generator=g)[:256]]
        front = quantize_front(front_g, B.to_input(ds.train.x[calib], mean, std))
    else:
        front = FloatFront(front_g)
    train_lat = _latents(front, ds.train.x, mean, std)
    test_lat = _latents(front, ds.test.x, mean, std)
    return Setup(ds, stream, model, front, back, mean, std, order, source, train_lat, test_lat,
                 tuple(train_lat.shape[1:]), graph)
