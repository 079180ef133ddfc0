"""ETA PE-array model: hierarchical reconfigurable PE array, NoC, unified norm/update core,
stride-aware input gradients. See :mod:`tinycl.hw.accel_eta.model`."""

from .config import ArrayConfig, load_array
from .model import ConvShape, conv_layer_step, eta_training_step, step_compute_cycles

__all__ = ["ArrayConfig", "load_array", "ConvShape", "conv_layer_step", "eta_training_step", "step_compute_cycles"]
