"""Moved to :mod:`tinycl.data.core50` (CORe50 and its official streams live with the data)."""

from tinycl.data.core50 import load_core50

__all__ = ["load_core50"]
