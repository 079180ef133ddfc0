"""Static shape walk through a zoo model, without running it.

Used by :func:`tinycl.models.registry.create` to reject inputs that are too small for
a model's downsampling (some layer would output 0 pixels) with a TinyclError that
names the layer, instead of a torch traceback at the first forward.
"""

from __future__ import annotations

from math import prod

from torch import nn

from tinycl.errors import TinyclError
from tinycl.kernels.macs import conv_out_size
from tinycl.models.blocks import Residual

# Layers that keep the shape of their input.
_SAME = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.BatchNorm2d, nn.Dropout, nn.Identity)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)


def infer_shape(module: nn.Module, shape: tuple[int, ...], path: str = "") -> tuple[int, ...]:
    """Output shape (without the batch dim) of ``module`` for an input of ``shape``.

    Raises TinyclError when a layer would produce an empty output or when the
    channel / feature counts do not chain. Leaf modules of other types (for
    example a custom ``norm_layer``) are assumed to keep the shape.
    """
    where = path or "<input>"
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            shape = infer_shape(child, shape, f"{path}.{name}" if path else name)
        return shape
    if isinstance(module, Residual):
        body = infer_shape(module.body, shape, f"{path}.body")
        short = infer_shape(module.shortcut, shape, f"{path}.shortcut")
        if body != short:
            raise TinyclError(f"layer '{where}': residual branches disagree, body {_fmt(body)} vs shortcut {_fmt(short)}")
        return infer_shape(module.post, body, f"{path}.post")
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        if len(shape) != 3:
            raise TinyclError(f"layer '{where}' ({type(module).__name__}) needs a CxHxW input, got {_fmt(shape)}")
        c, h, w = shape
        kh, kw = _pair(module.kernel_size)
        sh, sw = _pair(module.stride)
        ph, pw = _pair(module.padding)
        if isinstance(module, nn.Conv2d):
            if module.in_channels != c:
                raise TinyclError(f"layer '{where}' (Conv2d) expects {module.in_channels} channels, gets {c}")
            dh, dw = _pair(module.dilation)
            c = module.out_channels
        else:
            if getattr(module, "ceil_mode", False):
                raise TinyclError(f"layer '{where}': ceil_mode pooling is not supported")
            dh, dw = _pair(getattr(module, "dilation", 1))
        ho = conv_out_size(h, kh, sh, ph, dh)
        wo = conv_out_size(w, kw, sw, pw, dw)
        if ho < 1 or wo < 1:
            raise TinyclError(f"input too small: layer '{where}' ({type(module).__name__} {kh}x{kw} stride {sh}x{sw}) "
                              f"gets {h}x{w} pixels and would output {max(ho, 0)}x{max(wo, 0)}")
        return (c, ho, wo)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        if _pair(module.output_size) != (1, 1) or len(shape) != 3:
            raise TinyclError(f"layer '{where}': only AdaptiveAvgPool2d(1) on a CxHxW input is supported")
        return (shape[0], 1, 1)
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise TinyclError(f"layer '{where}': only Flatten() with default dims is supported")
        return (prod(shape),)
    if isinstance(module, nn.Linear):
        if len(shape) != 1 or shape[0] != module.in_features:
            raise TinyclError(f"layer '{where}' (Linear) expects {module.in_features} features, gets {_fmt(shape)}")
        return (module.out_features,)
    if isinstance(module, _SAME) or len(list(module.children())) == 0:
        return shape
    raise TinyclError(f"layer '{where}': cannot infer the shape of {type(module).__name__}")
