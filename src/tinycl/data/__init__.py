"""tinycl.data: image data sets as uint8 tensors (N x C x H x W) with int64 labels.

`load(spec)` reads "shipped", "cifar10:PATH", "imagefolder:PATH" or "core50:PATH".
"""

from tinycl.data.cifar import load_cifar10
from tinycl.data.dataset import Dataset, Split
from tinycl.data.imagefolder import decode_image, load_imagefolder
from tinycl.data.load import load, register_loader
from tinycl.data.shipped import load_shipped

__all__ = ["Dataset", "Split", "load", "register_loader", "load_cifar10", "load_imagefolder",
           "load_shipped", "decode_image"]
