"""The names of anydrop's internals that tests check directly, imported in this one place.

The public API is what the other tests use. These few internal functions are
checked on their own (the SplitMix64 stream against published values, the
nested masks of one draw, the per-step seeds of ``synchronized_rng``), so a
move inside the package changes only this import.
"""

from __future__ import annotations

from anydrop._core import _portable_masks, _splitmix64_numpy, _splitmix64_python, _stream_value

__all__ = ["_portable_masks", "_splitmix64_numpy", "_splitmix64_python", "_stream_value"]
