"""What every drop-path layer shares: argument checks, an int seed's stream, and the repr.

The framework-neutral layers (``anydrop.DropPath``), the ``torch.nn.Module``
ones and the ``flax.nnx`` ones all validate and describe themselves through
these, so a check or a repr is written once.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ._core import drop_path, drop_path_add, drop_path_residual
from ._core._api import Axis
from ._core._checks import (
    check_axis,
    check_callable,
    check_drop_prob,
    check_sample_axis,
    check_test_scaling,
    is_integer,
)
from ._core.backends import backend_for, check_layer_rng

__all__ = [
    "DropPathConfig",
    "ResidualConfig",
    "describe",
    "layer_arguments",
    "residual_arguments",
    "scaling_argument",
]

Array = TypeVar("Array")

# Guards the making of a layer's stream. One lock for all layers, not one per
# layer: a lock cannot be copied or pickled, and layers are (copy.deepcopy,
# torch.save). Taken once per layer, library and device, never on later calls.
_STREAMS_LOCK = threading.Lock()


def layer_arguments(
    drop_prob: object, scale_by_keep: object, axis: object, name: str = "drop_prob"
) -> tuple[float, bool, Axis]:
    """Check a layer's drop-path arguments; return them as stored (axis as an int or a tuple of ints).

    ``name`` is what the layer calls its drop probability (Keras: ``rate``,
    Equinox: ``p``), for the error messages.
    """
    p = check_drop_prob(drop_prob, name)
    axes = check_axis(axis)
    return p, bool(scale_by_keep), axes if isinstance(axis, tuple) else axes[0]


def scaling_argument(scale_by_keep: bool, scale_at_test: object) -> bool:
    """Check a layer's ``scale_at_test`` against its (checked) ``scale_by_keep``; return it."""
    return check_test_scaling(scale_by_keep, scale_at_test)


def residual_arguments(branch: object, axis: object) -> int:
    """Check a residual layer's branch and sample axis; return the axis as an int."""
    check_callable(branch, "branch")
    return check_sample_axis(axis)


def describe(
    drop_prob: float,
    scale_by_keep: bool = True,
    axis: Axis = 0,
    rng: object = None,
    *,
    branch: object = None,
    scale_at_test: bool = False,
    **flags: object,
) -> str:
    """The arguments of a layer's repr: ``drop_prob`` always, the others where they are not the defaults.

    ``flags`` are appended as given: the caller passes those that differ from
    its own defaults.
    """
    parts = [] if branch is None else [f"branch={branch!r}"]
    parts.append(f"drop_prob={round(drop_prob, 3):0.3f}")
    if not scale_by_keep:
        parts.append("scale_by_keep=False")
    if scale_at_test:
        parts.append("scale_at_test=True")
    if axis != 0:
        parts.append(f"axis={axis!r}")
    if is_integer(rng):
        parts.append(f"rng={int(cast('numbers.Integral', rng))}")
    elif rng is not None:
        # A generator's repr is an address; its type says what it is.
        parts.append(f"rng=<{type(rng).__name__}>")
    parts += [f"{name}={value!r}" for name, value in flags.items()]
    return ", ".join(parts)


class DropPathConfig:
    """Arguments, validation and generator bookkeeping of the neutral and torch DropPath modules.

    Cooperative: ``super().__init__()`` runs first, so a framework base class
    (``torch.nn.Module``) is set up before the attributes are stored.
    """

    drop_prob: float
    scale_by_keep: bool
    scale_at_test: bool
    axis: Axis
    rng: Any
    training: bool

    def __init__(
        self,
        drop_prob: float = 0.1,
        scale_by_keep: bool = True,
        *,
        axis: Axis = 0,
        rng: Any = None,
        scale_at_test: bool = False,
    ) -> None:
        super().__init__()
        self.drop_prob, self.scale_by_keep, self.axis = layer_arguments(drop_prob, scale_by_keep, axis)
        self.scale_at_test = scaling_argument(self.scale_by_keep, scale_at_test)
        check_layer_rng(rng)
        self.rng = rng
        # An int rng seeds one stream per array library and device, made on
        # first use, so that successive calls draw fresh masks from a
        # reproducible sequence.
        self._streams: dict[tuple[str, str], Any] = {}

    def _rng_for(self, x: Any) -> Any:
        if not is_integer(self.rng):
            return self.rng
        backend = backend_for(x)
        key = (backend.name, backend.device_name(x))
        stream = self._streams.get(key)
        if stream is None:
            with _STREAMS_LOCK:
                # Threads that found no stream above wait here: only the first makes it, or
                # each would seed its own and draw the same masks as the others.
                stream = self._streams.get(key)
                if stream is None:
                    stream = self._streams[key] = backend.source(self.rng, x)
        return stream

    def _drop(self, x: Array) -> Array:
        if not self.training:
            # Still validates x, drop_prob and axis: errors do not depend on the mode.
            return drop_path(
                x, self.drop_prob, False, self.scale_by_keep, axis=self.axis, scale_at_test=self.scale_at_test
            )
        return drop_path(
            x,
            self.drop_prob,
            True,
            self.scale_by_keep,
            axis=self.axis,
            # No call for the common rng=None: this is every block's forward.
            rng=None if self.rng is None else self._rng_for(x),
            scale_at_test=self.scale_at_test,
        )

    def _drop_add(self, x: Array, branch: Array) -> Array:
        rng = self._rng_for(branch) if self.training and self.rng is not None else None
        return drop_path_add(
            x,
            branch,
            self.drop_prob,
            self.training,
            self.scale_by_keep,
            axis=self.axis,
            rng=rng,
            scale_at_test=self.scale_at_test,
        )

    def _describe(self, **extra: object) -> str:
        return describe(
            self.drop_prob, self.scale_by_keep, self.axis, self.rng, scale_at_test=self.scale_at_test, **extra
        )


class ResidualConfig(DropPathConfig):
    """A branch and its drop-path arguments, for the neutral and torch residual modules."""

    # Narrower than DropPathConfig's: only __init__ sets it, from check_sample_axis.
    axis: int  # pyright: ignore[reportIncompatibleVariableOverride]
    fixed_size: bool

    def __init__(
        self,
        branch: Callable[[Any], Any],
        drop_prob: float = 0.1,
        scale_by_keep: bool = True,
        *,
        axis: int = 0,
        rng: Any = None,
        fixed_size: bool = False,
        scale_at_test: bool = False,
    ) -> None:
        axis = residual_arguments(branch, axis)
        super().__init__(drop_prob, scale_by_keep, axis=axis, rng=rng, scale_at_test=scale_at_test)
        self.branch = branch
        self.fixed_size = bool(fixed_size)

    def _residual(self, x: Array) -> Array:
        # Eval mode still validates x and the arguments: errors do not depend on the mode.
        rng = self._rng_for(x) if self.training and self.rng is not None else None
        return drop_path_residual(
            x,
            self.branch,
            self.drop_prob,
            self.training,
            self.scale_by_keep,
            axis=self.axis,
            rng=rng,
            fixed_size=self.fixed_size,
            scale_at_test=self.scale_at_test,
        )

    def _describe(self, **extra: object) -> str:
        if self.fixed_size:
            extra["fixed_size"] = True
        return super()._describe(**extra)
