"""tinycl.models: the network, import from PyTorch, and the model zoo."""

from . import rangenorm  # noqa: F401  (registers RangeNorm2d with from_torch)
from .convert import from_torch
from .network import Network
from .registry import create, default_config, list_models, register_model, split_points

__all__ = ["from_torch", "Network", "create", "default_config", "list_models", "register_model", "split_points"]
