"""tinycl.numerics: number formats, rounding, precision policies, quantizers, bit packing."""

from . import blockfp  # noqa: F401  (registers the 8-bit "int8bfp" format and the "int8" policy)
