"""Flax NNX module wrappers: ``anydrop.flax.DropPath`` is a ``flax.nnx.Module``.

They follow ``flax.nnx.Dropout``: a ``deterministic`` flag (set by
``model.train()`` / ``model.eval()`` and ``nnx.view``), and keys drawn from an
``nnx.Rngs`` stream (``rng_collection``, ``"dropout"`` by default) given at
construction or per call. Importing this module imports jax and flax;
``import anydrop`` alone does not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from ._core import drop_path, drop_path_residual
from ._layers import describe, layer_arguments, residual_arguments, scaling_argument

__all__ = ["DropPath", "DropPathResidual"]

# An nnx.RngStream advances by reading and writing its counter, two steps that
# threads sharing a module could interleave, so that both get the same key.
# One lock for every module: a module holding a lock could not be copied.
_KEY_LOCK = threading.Lock()


def _stream(rngs: Any, collection: str) -> Any:
    """What a module keeps of the ``rngs`` it is built with, as nnx.Dropout keeps it."""
    if isinstance(rngs, nnx.Rngs):
        return rngs[collection].fork()
    if isinstance(rngs, nnx.RngStream):
        return rngs.fork()
    if rngs is None:
        return nnx.data(None) if hasattr(nnx, "data") else None
    raise TypeError(f"rngs must be an nnx.Rngs, an nnx.RngStream or None, got {type(rngs).__name__}")


class _Config(nnx.Module):
    """Arguments, mode and key handling shared by the flax modules."""

    def _setup(
        self,
        drop_prob: float,
        *,
        scale_by_keep: bool,
        scale_at_test: bool,
        axis: Any,
        deterministic: bool | None,
        rng_collection: str,
        rngs: Any,
    ) -> None:
        self.drop_prob, self.scale_by_keep, self.axis = layer_arguments(drop_prob, scale_by_keep, axis)
        self.scale_at_test = scaling_argument(self.scale_by_keep, scale_at_test)
        # Checked at run time: the annotations bind type-checked callers only.
        if deterministic is not None and not isinstance(deterministic, bool):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(
                f"deterministic must be a bool or None, got {deterministic!r} of type "
                f"{type(deterministic).__name__}"
            )
        self.deterministic = deterministic
        if not isinstance(rng_collection, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"rng_collection must be a str, got {type(rng_collection).__name__}")
        self.rng_collection = rng_collection
        self.rngs = _stream(rngs, rng_collection)

    def _training(self, deterministic: bool | None) -> bool:
        """Whether this call drops: the call's ``deterministic`` first, then the stored one."""
        if deterministic is None:
            deterministic = self.deterministic
        if deterministic is None:
            raise ValueError(
                f"deterministic is None for {type(self).__name__}: pass deterministic=True/False to the "
                "constructor or the call, or set it with model.train() / model.eval()"
            )
        return not deterministic

    def _key(self, rngs: Any) -> Any:
        source = rngs if rngs is not None else self.rngs
        if source is None:
            raise ValueError(
                f"{type(self).__name__} is not deterministic and drop_prob={self.drop_prob:g} > 0, but it "
                "has no rngs: pass rngs=nnx.Rngs(dropout=seed) to the constructor or the call"
            )
        if isinstance(source, nnx.Rngs):
            with _KEY_LOCK:
                return source[self.rng_collection]()
        if isinstance(source, nnx.RngStream):
            with _KEY_LOCK:
                return source()
        if isinstance(source, jax.Array):
            return source
        raise TypeError(
            f"rngs must be an nnx.Rngs, an nnx.RngStream or a JAX key, got {type(source).__name__}"
        )

    def set_view(self, deterministic: bool | None = None) -> None:
        """Called by ``nnx.view``: ``deterministic=True`` turns drop path off."""
        if deterministic is not None:
            self.deterministic = deterministic

    def _describe(self, **extra: object) -> str:
        if self.deterministic is not False:
            extra["deterministic"] = self.deterministic
        return describe(
            self.drop_prob, self.scale_by_keep, self.axis, scale_at_test=self.scale_at_test, **extra
        )


class DropPath(_Config):
    """Drop path (stochastic depth) as a ``flax.nnx.Module``, with ``nnx.Dropout``'s conventions.

    Each sample along ``axis`` is zeroed with probability ``drop_prob`` and
    the others are scaled by ``1 / (1 - drop_prob)``, as
    :func:`anydrop.drop_path` does. Keys come from ``rngs``: an ``nnx.Rngs``
    (its ``rng_collection`` stream), an ``nnx.RngStream`` or, per call, a key.
    The stream advances on every call, also under ``nnx.jit``, so successive
    steps draw fresh masks. Works under ``nnx.jit`` and ``nnx.grad``.

    Parameters
    ----------
    drop_prob
        Probability of dropping each sample, in [0, 1] (a static Python value).
    scale_by_keep
        Divide kept samples by ``1 - drop_prob`` in training (timm's rule).
    scale_at_test
        The paper's rule instead: no scaling in training, the output times
        ``1 - drop_prob`` when deterministic. Needs ``scale_by_keep=False``
        (see :func:`anydrop.drop_path`).
    axis
        Axis or axes along which samples are drawn, as in ``drop_path``.
    deterministic
        True: the identity. False (default): drop path. None: must be given
        per call. ``model.train()`` / ``model.eval()`` set it.
    rng_collection
        The ``nnx.Rngs`` stream keys are drawn from.
    rngs
        An ``nnx.Rngs`` or ``nnx.RngStream`` (forked and kept), or None to
        pass ``rngs`` per call.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from anydrop.flax import DropPath
    >>> layer = DropPath(0.5, rngs=nnx.Rngs(dropout=0))
    >>> layer(jnp.ones((4, 2))).shape
    (4, 2)
    >>> layer.eval()                  # deterministic: the identity
    >>> x = jnp.ones((1, 2))
    >>> layer(x) is x
    True
    """

    def __init__(
        self,
        drop_prob: float = 0.1,
        *,
        scale_by_keep: bool = True,
        scale_at_test: bool = False,
        axis: Any = 0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: Any = None,
    ) -> None:
        self._setup(
            drop_prob,
            scale_by_keep=scale_by_keep,
            scale_at_test=scale_at_test,
            axis=axis,
            deterministic=deterministic,
            rng_collection=rng_collection,
            rngs=rngs,
        )

    def __call__(self, x: Any, *, deterministic: bool | None = None, rngs: Any = None) -> Any:
        """Apply drop path to ``x``; ``deterministic`` and ``rngs`` override the stored ones."""
        training = self._training(deterministic)
        if not training or self.drop_prob == 0.0:
            # Still validates x, drop_prob and axis: errors do not depend on the mode.
            return drop_path(
                x,
                self.drop_prob,
                training,
                self.scale_by_keep,
                axis=self.axis,
                scale_at_test=self.scale_at_test,
            )
        return drop_path(
            x,
            self.drop_prob,
            True,
            self.scale_by_keep,
            axis=self.axis,
            rng=self._key(rngs),
            scale_at_test=self.scale_at_test,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()})"


class DropPathResidual(_Config):
    """``x + drop_path(branch(x))`` as a ``flax.nnx.Module``, running ``branch`` on the kept samples only.

    :func:`anydrop.drop_path_residual` when not deterministic, ``x +
    branch(x)`` otherwise. ``branch`` (an nnx Module or any callable) is an
    attribute, so its parameters are this module's. ``fixed_size=True``
    (the default here, unlike :func:`~anydrop.drop_path_residual`) keeps
    exactly ``round(n * (1 - drop_prob))`` samples, the static shapes
    ``nnx.jit`` needs; ``fixed_size=False`` draws each sample independently
    and works in eager code only.

    Parameters
    ----------
    branch
        The residual branch, a callable from arrays to arrays of the same shape
        that treats samples independently.
    drop_prob, scale_by_keep, scale_at_test, deterministic, rng_collection, rngs
        As in :class:`DropPath`.
    axis
        The sample axis, an int.
    fixed_size
        Keep a fixed number of samples (static shapes, for ``nnx.jit``).
    shards
        The number of shards x's sample axis is split into, as in
        :func:`~anydrop.drop_path_residual`: the subset is drawn per shard, so
        that each device runs ``branch`` on its own kept samples. None
        (default) takes it from x where x shows it (explicit sharding, or a
        concrete sharded array), else 1; pass it under ``nnx.jit`` in auto
        sharding mode, e.g. ``shards=mesh.shape["data"]``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from anydrop.flax import DropPathResidual
    >>> rngs = nnx.Rngs(params=0, dropout=1)
    >>> block = DropPathResidual(nnx.Linear(2, 2, rngs=rngs), 0.5, rngs=rngs)
    >>> nnx.jit(lambda model, x: model(x))(block, jnp.ones((4, 2))).shape
    (4, 2)
    """

    axis: int

    def __init__(
        self,
        branch: Callable[[Any], Any],
        drop_prob: float = 0.1,
        *,
        scale_by_keep: bool = True,
        scale_at_test: bool = False,
        axis: int = 0,
        fixed_size: bool = True,
        shards: int | None = None,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: Any = None,
    ) -> None:
        axis = residual_arguments(branch, axis)
        self._setup(
            drop_prob,
            scale_by_keep=scale_by_keep,
            scale_at_test=scale_at_test,
            axis=axis,
            deterministic=deterministic,
            rng_collection=rng_collection,
            rngs=rngs,
        )
        self.branch = branch
        self.fixed_size = bool(fixed_size)
        if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int) or shards < 1):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"shards must be None or a positive int, got {shards!r}")
        self.shards = shards

    def __call__(self, x: Any, *, deterministic: bool | None = None, rngs: Any = None) -> Any:
        """``x + drop_path(branch(x))``; ``deterministic`` and ``rngs`` override the stored ones."""
        training = self._training(deterministic)
        key = self._key(rngs) if training and self.drop_prob > 0.0 else None
        return drop_path_residual(
            x,
            self.branch,
            self.drop_prob,
            training,
            self.scale_by_keep,
            axis=self.axis,
            rng=key,
            fixed_size=self.fixed_size,
            scale_at_test=self.scale_at_test,
            shards=self.shards,
        )

    def __repr__(self) -> str:
        extra: dict[str, object] = {} if self.fixed_size else {"fixed_size": False}
        if self.shards is not None:
            extra["shards"] = self.shards
        return f"{type(self).__name__}({self._describe(branch=self.branch, **extra)})"
