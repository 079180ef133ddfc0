"""tinycl.models: the network, import from PyTorch, and the model zoo."""

from .convert import from_torch
from .network import Network

__all__ = ["from_torch", "Network"]
