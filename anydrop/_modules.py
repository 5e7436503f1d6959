"""Module wrappers: store arguments, call :func:`anydrop.drop_path`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._compat import device
from ._core import (
    Axis,
    _is_seed,
    adapter_for,
    check_axis_type,
    check_drop_prob,
    check_rng_type,
    drop_path,
    drop_path_add,
    drop_path_residual,
)

__all__ = ["DropPath", "DropPathConfig", "DropPathResidual", "ResidualConfig", "check_residual_arguments"]

Array = TypeVar("Array")


class DropPathConfig:
    """Arguments, validation and generator bookkeeping shared by every DropPath module.

    Cooperative: ``super().__init__()`` runs first, so a framework base class
    (``torch.nn.Module``) is set up before the attributes are stored.
    """

    drop_prob: float
    scale_by_keep: bool
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
    ) -> None:
        super().__init__()
        self.drop_prob = check_drop_prob(drop_prob)
        self.scale_by_keep = bool(scale_by_keep)
        check_axis_type(axis)
        self.axis = axis
        check_rng_type(rng)
        self.rng = rng
        # An int rng seeds one generator per backend and device, made on first
        # use, so that successive calls draw fresh masks from a reproducible stream.
        self._generators: dict[tuple[str, str], Any] = {}

    def _generator_for(self, x: Any) -> Any:
        if not _is_seed(self.rng):
            return self.rng
        adapter = adapter_for(x)
        key = (adapter.name, str(device(x)))
        gen = self._generators.get(key)
        if gen is None:
            gen = self._generators[key] = adapter.resolve(self.rng, x)
        return gen

    def _drop(self, x: Array) -> Array:
        if not self.training:
            # Still validates x, drop_prob and axis: errors do not depend on the mode.
            return drop_path(x, self.drop_prob, False, self.scale_by_keep, axis=self.axis)
        return drop_path(
            x, self.drop_prob, True, self.scale_by_keep, axis=self.axis, rng=self._generator_for(x)
        )

    def _drop_add(self, x: Array, branch: Array) -> Array:
        rng = self._generator_for(branch) if self.training else None
        return drop_path_add(
            x, branch, self.drop_prob, self.training, self.scale_by_keep, axis=self.axis, rng=rng
        )

    def _describe(self) -> str:
        text = f"drop_prob={round(self.drop_prob, 3):0.3f}"
        if not self.scale_by_keep:
            text += ", scale_by_keep=False"
        if self.axis != 0:
            text += f", axis={self.axis!r}"
        if _is_seed(self.rng):
            text += f", rng={self.rng!r}"
        elif self.rng is not None:
            # A generator's repr is an address; its type says what it is.
            text += f", rng=<{type(self.rng).__name__}>"
        return text


_Self = TypeVar("_Self", bound="_TrainEval")


class _TrainEval:
    """``train()`` / ``eval()`` for the framework-neutral layers, as torch.nn.Module has them."""

    training = True

    def train(self: _Self, mode: bool = True) -> _Self:
        """Set training mode (``mode=False`` is eval mode); return ``self``."""
        self.training = bool(mode)
        return self

    def eval(self: _Self) -> _Self:
        """Set eval mode, where drop path is off; return ``self``."""
        return self.train(False)


class DropPath(_TrainEval, DropPathConfig):
    """Framework-neutral drop path layer with ``train()``/``eval()`` modes.

    Calls :func:`anydrop.drop_path` with the stored arguments while
    ``training`` is true (the default) and returns its input unchanged in eval
    mode. Works on any array :func:`~anydrop.drop_path` accepts.

    Parameters
    ----------
    drop_prob
        Probability of dropping each sample, in [0, 1].
    scale_by_keep
        Divide kept samples by ``1 - drop_prob``.
    axis
        Axis or axes along which samples are drawn, as in ``drop_path``.
    rng
        ``None``, a generator (used and advanced), or an int that seeds one
        generator kept by the module: masks differ from call to call but the
        sequence is reproducible.

    Examples
    --------
    >>> import numpy as np
    >>> from anydrop import DropPath
    >>> layer = DropPath(0.5, rng=0)
    >>> layer(np.ones((4, 2)))
    array([[0., 0.],
           [2., 2.],
           [2., 2.],
           [2., 2.]])
    >>> layer.eval()(np.ones((1, 2)))
    array([[1., 1.]])
    """

    def __call__(self, x: Array) -> Array:
        return self._drop(x)

    def add(self, x: Array, branch: Array) -> Array:
        """Return ``x + self(branch)``, fused as :func:`anydrop.drop_path_add` does."""
        return self._drop_add(x, branch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()})"


def check_residual_arguments(branch: object, axis: object) -> None:
    """Raise TypeError unless ``branch`` is callable and ``axis`` an int (every residual wrapper's checks)."""
    if not callable(branch):
        raise TypeError(f"branch must be callable, got an object of type {type(branch).__name__}")
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"axis must be an int for a residual drop path, got {axis!r}")


class ResidualConfig(DropPathConfig):
    """A branch and its drop-path arguments, for residual wrappers of every framework."""

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
    ) -> None:
        check_residual_arguments(branch, axis)
        super().__init__(drop_prob, scale_by_keep, axis=axis, rng=rng)
        self.branch = branch
        self.fixed_size = bool(fixed_size)

    def _residual(self, x: Array) -> Array:
        # Eval mode still validates x and the arguments: errors do not depend on the mode.
        rng = self._generator_for(x) if self.training else None
        return drop_path_residual(
            x,
            self.branch,
            self.drop_prob,
            self.training,
            self.scale_by_keep,
            axis=self.axis,  # type: ignore[arg-type]
            rng=rng,
            fixed_size=self.fixed_size,
        )

    def _describe(self) -> str:
        text = super()._describe()
        return text + ", fixed_size=True" if self.fixed_size else text


class DropPathResidual(_TrainEval, ResidualConfig):
    """``x + drop_path(branch(x))`` that runs ``branch`` on the kept samples only.

    Calls :func:`anydrop.drop_path_residual` in training mode (the default) and
    returns ``x + branch(x)`` in eval mode. ``branch`` must treat samples
    independently (no batch statistics).

    Parameters
    ----------
    branch
        The residual branch, a callable from arrays to arrays of the same shape.
    drop_prob, scale_by_keep, rng
        As in :class:`DropPath`.
    axis
        The sample axis, an int.
    fixed_size
        Keep exactly ``round(n * (1 - drop_prob))`` samples per call (static
        shapes), as in :func:`anydrop.drop_path_residual`.

    Examples
    --------
    >>> import numpy as np
    >>> from anydrop import DropPathResidual
    >>> block = DropPathResidual(lambda a: 10 * a, 0.5, rng=0)
    >>> block(np.ones((4, 1)))
    array([[ 1.],
           [21.],
           [21.],
           [21.]])
    >>> block.eval()(np.ones((1, 1)))
    array([[11.]])
    """

    def __call__(self, x: Array) -> Array:
        return self._residual(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(branch={self.branch!r}, {self._describe()})"
