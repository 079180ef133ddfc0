"""Backbones: a zoo model trained on the initial classes (the factory phase), saved and loaded.

A backbone file (written by :mod:`tinycl.cl.checkpoint`) holds the model name and
arguments, the input shape, the classes it was trained on, the input normalisation and
the weights. ``tinycl pretrain`` writes one; the package ships one for its dataset.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import TinyclError
from ..kernels.optim import SGD
from ..models.convert import from_torch
from ..models.registry import create
from . import checkpoint

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "assets" / "resnet8-shipped.ckpt"


def normalizer(x_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (over N, H, W) of uint8 images, as float32 ``(C,)`` tensors."""
    x = x_uint8.float() / 255.0
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)


def to_input(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 N x C x H x W -> normalised float32."""
    return (x_uint8.float() / 255.0 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def pretrain(model_name: str, x: torch.Tensor, y: torch.Tensor, num_classes: int, classes: list[int],
             epochs: int, batch_size: int = 32, lr: float = 0.05, seed: int = 0, precision: str = "fp32",
             progress: bool = True, model_kwargs: dict | None = None) -> dict:
    """Train ``model_name`` on uint8 images ``x`` with labels ``y`` using tinycl's own engine.

    Returns a backbone dict (see module docstring). Learning rate decays with a cosine
    schedule; SGD with momentum 0.9 and weight decay 5e-4; random horizontal flips.
    """
    if len(x) == 0:
        raise TinyclError("pretrain: no training samples for the initial classes")
    torch.manual_seed(seed)
    kwargs = dict(model_kwargs or {})
    model = create(model_name, num_classes=num_classes, input_shape=tuple(x.shape[1:]), **kwargs)
    mean, std = normalizer(x)
    net = from_torch(model, model.input_shape, precision=precision).train()
    g = torch.Generator().manual_seed(seed)
    net.generator = g
    opt = SGD(lr=lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = max(1, len(x) // batch_size)
    total = epochs * steps_per_epoch
    bar = tqdm(total=total, desc="pretrain", unit="step", disable=None if progress else True, leave=False)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb = to_input(x[idx], mean, std)
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb[flip] = xb[flip].flip(-1)
            opt.lr = 0.5 * lr * (1 + torch.cos(torch.tensor(step / total * torch.pi)).item())
            loss = net.train_step(xb, y[idx], opt)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    net.export_to(model)
    return {"format": "tinycl.backbone/1", "model": model_name, "model_kwargs": kwargs,
            "input_shape": tuple(model.input_shape), "num_classes": num_classes, "classes": list(classes),
            "mean": mean, "std": std, "state_dict": model.state_dict(), "epochs": epochs, "seed": seed}


def save_backbone(path: str | Path, backbone: dict) -> int:
    """Atomically write a backbone file; returns its size in bytes."""
    return checkpoint.save(path, backbone)


def load_backbone(path: str | Path) -> dict:
    """Read and check a backbone file."""
    b = checkpoint.load(path)
    if not isinstance(b, dict) or b.get("format") != "tinycl.backbone/1":
        raise TinyclError(f"{path} is not a tinycl backbone file")
    return b


def build_model(backbone: dict) -> torch.nn.Module:
    """The zoo model of a backbone with its trained weights loaded (eval mode)."""
    model = create(backbone["model"], num_classes=backbone["num_classes"], input_shape=backbone["input_shape"],
                   **backbone["model_kwargs"])
    try:
        model.load_state_dict(backbone["state_dict"])
    except RuntimeError as e:
        raise TinyclError(f"backbone weights do not fit model {backbone['model']}: {str(e).splitlines()[0]}") from None
    return model.eval()
