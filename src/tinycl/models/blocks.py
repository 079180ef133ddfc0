"""Composable torch blocks that tinycl's network importer understands.

Only plain layers, nested ``nn.Sequential`` and the blocks defined here can be
imported by :func:`tinycl.models.from_torch`. Keeping the block set small keeps
the importer exact: every block has a known forward and backward.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """``y = post(body(x) + shortcut(x))``.

    ``shortcut=None`` is the identity; ``post=None`` applies nothing after the add.
    Parameter names are ``body.*``, ``shortcut.*`` and ``post.*``.
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None, post: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.post = post if post is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.body(x) + self.shortcut(x))
