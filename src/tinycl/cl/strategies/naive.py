"""``naive``: fine-tune the back on each experience's new data only (the lower bound)."""

from .base import Strategy, register

Naive = register(Strategy)
