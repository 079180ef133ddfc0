"""The one exception type that the CLI turns into a single clear line and a non-zero exit."""


class TinyclError(Exception):
    """A problem the user can fix: bad config, bad data, unsupported layer, damaged file.

    The message must name the problem in one line (what, where, what is allowed).
    """


class UnsupportedLayerError(TinyclError):
    """A layer tinycl cannot run; the message names the layer's path and type."""
