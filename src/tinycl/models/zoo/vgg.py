"""``vgg-cifar``: VGG16 (Simonyan & Zisserman 2015, configuration D) for 32x32 inputs.

13 3x3 convs (each ``Sequential(conv, norm, relu)``) in 5 stages with 2x2 max pools,
then a single linear classifier on the 512 channels (the common CIFAR variant with
BatchNorm; the ImageNet 4096-4096 classifier is not used). A global average pool
before the classifier is the identity at 32x32 input (1x1 maps) and lets larger
inputs work. Inputs below 32x32 are rejected (the 5th pool would output 0 pixels).
"""

from __future__ import annotations

from torch import nn

from tinycl.models.registry import register_model
from tinycl.models.zoo._layers import (check_input_shape, check_positive_int, check_width, conv_block,
                                       head, named, resolve_norm, scale_channels)

NAME = "vgg-cifar"

# Output channels of each stage's convs, for width 1.0.
_STAGES = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


@register_model(NAME)
def vgg_cifar(num_classes: int = 10, input_shape=(3, 32, 32), norm: str = "bn", norm_layer=None,
              width: float = 1.0) -> nn.Sequential:
    """Children ``conv1_1``, ``conv1_2``, ``pool1``, ..., ``conv5_3``, ``pool5``, ``pool``, ``flatten``, ``fc``.

    Channels are ``scale_channels(c, width)`` = ``max(8, int(c * width))``.
    """
    cin, _, _ = check_input_shape(NAME, input_shape)
    check_positive_int(NAME, "num_classes", num_classes)
    width = check_width(NAME, width)
    nf = resolve_norm(NAME, norm, norm_layer)
    children: list[tuple[str, nn.Module]] = []
    for s, stage in enumerate(_STAGES, start=1):
        for j, cout in enumerate(stage, start=1):
            cout = scale_channels(cout, width)
            children.append((f"conv{s}_{j}", conv_block(cin, cout, 3, padding=1, norm_fn=nf)))
            cin = cout
        children.append((f"pool{s}", nn.MaxPool2d(2, 2)))
    children += head(cin, num_classes)
    return named(children)
