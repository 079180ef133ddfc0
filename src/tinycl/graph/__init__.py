"""tinycl.graph: one captured graph of explicit primitives that every part of tinycl reads."""

from .capture import capture
from .ir import Graph, Node

__all__ = ["capture", "Graph", "Node"]
