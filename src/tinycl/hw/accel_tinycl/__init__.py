"""TinyCL accelerator model (Ressa et al., 2024): a computing, cycle-counting processing unit
with raster and snake window orders, a CL control unit with a rehearsal memory, and epoch
time/energy. See docs/accel_tinycl.md."""

from .arch import Arch, Memory, load_arch, parse_arch
from .control import ControlUnit, expected_inserts, plan, step_counts
from .cost import control_counts, conv_counts, dense_counts, loss_counts, relu_counts, update_counts
from .counts import PassCount
from .pu import ProcessingUnit
from .report import epoch_summary, format_table, plot_accesses
from .window import ORDERS, moves, positions, walk_reads, walk_window_uses

__all__ = ["Arch", "Memory", "load_arch", "parse_arch", "ControlUnit", "expected_inserts", "plan", "step_counts",
           "control_counts", "conv_counts", "dense_counts", "loss_counts", "relu_counts", "update_counts",
           "PassCount", "ProcessingUnit", "epoch_summary", "format_table", "plot_accesses", "ORDERS", "moves",
           "positions", "walk_reads", "walk_window_uses"]
