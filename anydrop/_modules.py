"""Module wrappers: store arguments, call :func:`anydrop.drop_path`."""

from __future__ import annotations

from typing import TypeVar

from ._layers import DropPathConfig, ResidualConfig

__all__ = ["DropPath", "DropPathResidual"]

Array = TypeVar("Array")
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
        Divide kept samples by ``1 - drop_prob`` in training (timm's rule).
    axis
        Axis or axes along which samples are drawn, as in ``drop_path``.
    rng
        ``None``, a generator (used and advanced), or an int that seeds one
        generator kept by the module: masks differ from call to call but the
        sequence is reproducible.
    scale_at_test
        The paper's rule instead (Huang et al. 2016): no scaling in training,
        the output times ``1 - drop_prob`` in eval mode. Needs
        ``scale_by_keep=False``; see :func:`anydrop.drop_path`.

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
    >>> DropPath(0.5, scale_by_keep=False, scale_at_test=True).eval()(np.ones((1, 2)))
    array([[0.5, 0.5]])
    """

    def __call__(self, x: Array) -> Array:
        return self._drop(x)

    def add(self, x: Array, branch: Array) -> Array:
        """Return ``x + self(branch)``, fused as :func:`anydrop.drop_path_add` does.

        Examples
        --------
        >>> import numpy as np
        >>> from anydrop import DropPath
        >>> DropPath(0.5, rng=0).add(np.zeros((4, 1)), np.ones((4, 1))).ravel()
        array([0., 2., 2., 2.])
        """
        return self._drop_add(x, branch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()})"


class DropPathResidual(_TrainEval, ResidualConfig):
    """``x + drop_path(branch(x))`` that runs ``branch`` on the kept samples only.

    Calls :func:`anydrop.drop_path_residual` in training mode (the default) and
    returns ``x + branch(x)`` in eval mode. ``branch`` must treat samples
    independently (no batch statistics).

    Parameters
    ----------
    branch
        The residual branch, a callable from arrays to arrays of the same shape.
    drop_prob, scale_by_keep, rng, scale_at_test
        As in :class:`DropPath`; with ``scale_at_test`` eval mode returns
        ``x + (1 - drop_prob) * branch(x)``.
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
        return f"{type(self).__name__}({self._describe(branch=self.branch)})"
