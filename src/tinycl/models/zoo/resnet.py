"""ResNets built from ``tinycl.models.blocks.Residual`` basic blocks.

- ``resnet8``: MLPerf Tiny image classification (mlcommons/tiny ``keras_model.py``,
  ``resnet_v1_eembc``): 3x3 stem with 16 ch, three stacks of one basic block each
  (16, 32, 64 ch; stride 1, 2, 2). Where the shape changes the shortcut is a 1x1
  conv with bias and no normalisation, as in the reference.
- ``resnet20``: CIFAR ResNet-20 (He et al. 2016, sec. 4.2): 16/32/64 ch, 3 stages of
  3 basic blocks. Shortcuts that change shape are 1x1 conv + norm (option B; the
  paper's CIFAR nets use option A, zero padding, which is not a plain layer).
- ``resnet18``: ImageNet ResNet-18 (torchvision layout): 7x7 stride-2 stem, 3x3
  stride-2 max pool, 4 stages of 2 basic blocks (64..512 ch), 1x1 conv + norm shortcuts.

Children: ``stem``, [``maxpool``], ``block{stage}_{i}``, ..., ``pool``, ``flatten``, ``fc``.
Each block is ``Residual(body=Sequential(conv, norm, relu, conv, norm), shortcut, post=ReLU)``.
"""

from __future__ import annotations

from torch import nn

from tinycl.models.blocks import Residual
from tinycl.models.registry import register_model
from tinycl.models.zoo._layers import (NormFn, check_input_shape, check_positive_int, check_width,
                                       conv_block, head, named, resolve_norm, scale_channels)


def basic_block(cin: int, cout: int, stride: int, norm_fn: NormFn | None,
                shortcut_norm: bool = True) -> Residual:
    """Two 3x3 convs; a 1x1 conv shortcut (stride ``stride``) when the shape changes.

    ``shortcut_norm=False`` gives the MLPerf ResNet-8 shortcut: a 1x1 conv with bias, no norm.
    """
    a = conv_block(cin, cout, 3, stride=stride, padding=1, norm_fn=norm_fn)
    b = conv_block(cout, cout, 3, padding=1, norm_fn=norm_fn, act=False)
    body = nn.Sequential(*a, *b)
    shortcut = None
    if stride != 1 or cin != cout:
        if shortcut_norm:
            shortcut = conv_block(cin, cout, 1, stride=stride, norm_fn=norm_fn, act=False)
        else:
            shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=True))
    return Residual(body, shortcut, nn.ReLU())


def _stages(cin: int, plan: list[tuple[int, int, int]], norm_fn, shortcut_norm=True):
    """Blocks for ``plan`` = [(channels, blocks, first stride)] -> (children, last channels)."""
    children = []
    for s, (cout, n, stride) in enumerate(plan, start=1):
        for i in range(1, n + 1):
            children.append((f"block{s}_{i}", basic_block(cin, cout, stride if i == 1 else 1, norm_fn, shortcut_norm)))
            cin = cout
    return children, cin


def _common(name, num_classes, input_shape, norm, norm_layer, width):
    c, _, _ = check_input_shape(name, input_shape)
    check_positive_int(name, "num_classes", num_classes)
    return c, check_width(name, width), resolve_norm(name, norm, norm_layer)


@register_model("resnet8")
def resnet8(num_classes: int = 10, input_shape=(3, 32, 32), norm: str = "bn", norm_layer=None,
            width: float = 1.0) -> nn.Sequential:
    """MLPerf Tiny ResNet-8: stem 3x3/16, blocks 16 (s1), 32 (s2), 64 (s2), pool, fc."""
    c, width, nf = _common("resnet8", num_classes, input_shape, norm, norm_layer, width)
    ch = [scale_channels(v, width) for v in (16, 32, 64)]
    blocks, last = _stages(ch[0], [(ch[0], 1, 1), (ch[1], 1, 2), (ch[2], 1, 2)], nf, shortcut_norm=False)
    return named([("stem", conv_block(c, ch[0], 3, padding=1, norm_fn=nf))] + blocks + head(last, num_classes))


@register_model("resnet20")
def resnet20(num_classes: int = 10, input_shape=(3, 32, 32), norm: str = "bn", norm_layer=None,
             width: float = 1.0) -> nn.Sequential:
    """CIFAR ResNet-20: stem 3x3/16, 3 stages x 3 blocks (16, 32, 64 ch), pool, fc."""
    c, width, nf = _common("resnet20", num_classes, input_shape, norm, norm_layer, width)
    ch = [scale_channels(v, width) for v in (16, 32, 64)]
    blocks, last = _stages(ch[0], [(ch[0], 3, 1), (ch[1], 3, 2), (ch[2], 3, 2)], nf)
    return named([("stem", conv_block(c, ch[0], 3, padding=1, norm_fn=nf))] + blocks + head(last, num_classes))


@register_model("resnet18")
def resnet18(num_classes: int = 1000, input_shape=(3, 224, 224), norm: str = "bn", norm_layer=None,
             width: float = 1.0) -> nn.Sequential:
    """ImageNet ResNet-18: stem 7x7/64 stride 2, max pool 3x3 stride 2, 4 stages x 2 blocks, pool, fc."""
    c, width, nf = _common("resnet18", num_classes, input_shape, norm, norm_layer, width)
    ch = [scale_channels(v, width) for v in (64, 128, 256, 512)]
    blocks, last = _stages(ch[0], [(ch[0], 2, 1), (ch[1], 2, 2), (ch[2], 2, 2), (ch[3], 2, 2)], nf)
    return named([("stem", conv_block(c, ch[0], 7, stride=2, padding=3, norm_fn=nf)),
                  ("maxpool", nn.MaxPool2d(3, stride=2, padding=1))] + blocks + head(last, num_classes))
