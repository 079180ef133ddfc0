"""MAC counts of a whole torch model (conv and linear layers), per sample and per step."""

from __future__ import annotations

import torch
from torch import nn

from ..kernels.macs import conv2d_macs, linear_macs

STEPS = ("forward", "backward_input", "backward_weight", "update")


def count_macs(model: nn.Module, input_shape, batch: int = 1) -> dict[str, int]:
    """Sum over conv and linear layers of each step's MACs for a batch of ``batch`` samples.

    ``update`` counts one MAC per weight of those layers (independent of the batch).
    """
    total = dict.fromkeys(STEPS, 0)

    def hook(m, inp, out):
        x = inp[0]
        if isinstance(m, nn.Conv2d):
            c = conv2d_macs(x.shape[0], m.in_channels, m.out_channels, x.shape[2], x.shape[3], *m.kernel_size,
                            m.stride, m.padding, m.groups)
        else:
            c = linear_macs(x.shape[0], m.in_features, m.out_features, m.bias is not None)
        for k in STEPS:
            total[k] += c[k]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(batch, *input_shape))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return total
