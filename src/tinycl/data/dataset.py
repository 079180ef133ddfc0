"""The one in-memory data set type of tinycl: uint8 images and int64 labels, train and test."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tinycl.errors import TinyclError


@dataclass
class Split:
    """One split: `x` uint8 tensor N x C x H x W (pixel values 0..255), `y` int64 tensor N."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getstate__(self) -> dict:
        return {"x": shareable(self.x), "y": shareable(self.y)}

    def __setstate__(self, state: dict) -> None:
        self.x, self.y = unshare(state["x"]), unshare(state["y"])


@dataclass
class Dataset:
    """A labelled image data set with a train and a test split.

    classes: class names; label k is classes[k].
    name: where it came from (e.g. "cifar10:/path", "shipped").
    experiences: the official experience stream where the data set defines one (CORe50),
        a list of `tinycl.data.stream.Experience`; None otherwise.
    """

    train: Split
    test: Split
    classes: list[str]
    name: str = ""
    experiences: Any = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_split(self.train, "train", len(self.classes), self.name)
        check_split(self.test, "test", len(self.classes), self.name)
        if self.train.x.shape[1:] != self.test.x.shape[1:] and len(self.test) and len(self.train):
            raise TinyclError(f"{self.name or 'dataset'}: train images are {tuple(self.train.x.shape[1:])} "
                              f"but test images are {tuple(self.test.x.shape[1:])}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(int(s) for s in self.train.x.shape[1:])  # type: ignore[return-value]

    def nbytes(self) -> int:
        """Bytes held by the image and label tensors of both splits."""
        return sum(t.numel() * t.element_size() for s in (self.train, self.test) for t in (s.x, s.y))

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, classes={self.num_classes}, image={self.image_shape}, "
                f"train={len(self.train)}, test={len(self.test)})")


def shareable(t: torch.Tensor):
    """A CPU tensor as the numpy array over its memory, for pickling. Pickled with protocol 5
    (as Ray does), the array travels out of band: Ray's object store then hands every worker the
    same shared memory instead of a copy per worker (full CIFAR-10 latents are GBs)."""
    return t.detach().numpy() if isinstance(t, torch.Tensor) and t.device.type == "cpu" else t


def unshare(a) -> torch.Tensor:
    """The tensor over a :func:`shareable` array, without a copy. An array from Ray's object store
    is shared by every worker and is read-only by contract: tinycl only reads these tensors
    (indexing copies), never writes them in place."""
    if not isinstance(a, np.ndarray):
        return a
    with warnings.catch_warnings():  # torch warns that the shared array is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


def check_split(split: Split, what: str, num_classes: int, name: str = "") -> None:
    """Raise TinyclError if a split is not uint8 N x C x H x W with int64 labels in range."""
    where = f"{name or 'dataset'} {what}"
    x, y = split.x, split.y
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
        raise TinyclError(f"{where}: images must be a uint8 tensor N x C x H x W")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        raise TinyclError(f"{where}: labels must be an int64 tensor of length N")
    if x.shape[0] != y.shape[0]:
        raise TinyclError(f"{where}: {x.shape[0]} images but {y.shape[0]} labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise TinyclError(f"{where}: labels must lie in 0..{num_classes - 1}, "
                          f"found {int(y.min())}..{int(y.max())}")


def split_from_numpy(x_nhwc: np.ndarray, y) -> Split:
    """Split from an N x H x W x C uint8 array (channels last, as files store them) and labels."""
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc)).permute(0, 3, 1, 2).contiguous()
    return Split(x=x, y=torch.as_tensor(np.asarray(y, dtype=np.int64)))
