"""Equinox module wrappers: ``anydrop.equinox.DropPath`` is an ``eqx.Module``.

They follow ``eqx.nn.Dropout``: an ``inference`` field (set by
``eqx.nn.inference_mode``, or per call), and a key passed per call as
``layer(x, key=key)``. Like every ``eqx.nn`` layer they expect one example
and are batched with ``jax.vmap`` / ``eqx.filter_vmap``, a key per example,
so by default the whole input is the sample that is dropped or kept
(``axis=()``). Importing this module imports jax and equinox; ``import
anydrop`` alone does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx

from ._core import drop_path, drop_path_add
from ._core._checks import check_callable
from ._layers import layer_arguments, scaling_argument

__all__ = ["DropPath", "DropPathResidual"]


def _check_inference(inference: object) -> bool:
    if not isinstance(inference, bool):
        raise TypeError(f"inference must be a bool, got {inference!r} of type {type(inference).__name__}")
    return inference


class _Config(eqx.Module):
    """Arguments, mode and key handling shared by the Equinox modules."""

    # Static: hyperparameters, not leaves, so that jax.jit or jax.vmap over the
    # module never traces them (drop_path needs concrete values). `inference`
    # is a leaf, as in eqx.nn.Dropout, for eqx.nn.inference_mode and eqx.tree_at.
    p: float = eqx.field(static=True)
    scale_by_keep: bool = eqx.field(static=True)
    scale_at_test: bool = eqx.field(static=True)
    axis: int | tuple[int, ...] = eqx.field(static=True)
    inference: bool

    def _training(self, key: Any, inference: bool | None) -> tuple[bool, Any]:
        """Whether this call drops (the call's ``inference`` first, then the field's), and its key."""
        if inference is None:
            inference = self.inference
        if inference is not True and inference is not False:
            # A traced flag would be a TypeError in drop_path; say here what to do instead.
            raise TypeError(
                f"inference must be a Python bool, got {inference!r}; pass the module through "
                "eqx.filter_jit / eqx.filter_vmap (not jax.jit), and set inference with "
                "eqx.nn.inference_mode or per call"
            )
        training = not inference
        if training and self.p > 0.0 and key is None:
            raise ValueError(
                f"{type(self).__name__} is in training mode (inference=False) with p={self.p:g} > 0 but got "
                "no key: call it as layer(x, key=key), or set inference=True (eqx.nn.inference_mode) "
                "to turn drop path off"
            )
        return training, key if training else None


class DropPath(_Config):
    """Drop path (stochastic depth) as an ``eqx.Module``, with ``eqx.nn.Dropout``'s conventions.

    In training the input is zeroed with probability ``p`` and otherwise
    divided by ``1 - p``, as :func:`anydrop.drop_path` does with the key
    given; in inference mode it is the identity. Called on one example,
    batched with ``jax.vmap`` / ``eqx.filter_vmap`` and a key per example,
    the default ``axis=()`` drops or keeps each example as a whole: per-sample
    stochastic depth. On a batched input called without vmap, pass the batch
    axis (``axis=0``). Works under ``eqx.filter_jit``, ``eqx.filter_grad``
    and ``eqx.filter_vmap``.

    Parameters
    ----------
    p
        Probability of dropping, in [0, 1] (a static Python value).
    scale_by_keep
        Divide kept inputs by ``1 - p`` in training (timm's rule).
    scale_at_test
        The paper's rule instead (Huang et al. 2016): no scaling in training,
        the output times ``1 - p`` in inference mode. Needs
        ``scale_by_keep=False`` (see :func:`anydrop.drop_path`).
    axis
        Axis or axes along which samples are drawn, as in ``drop_path``;
        ``()`` (the default) draws one decision for the whole input.
    inference
        True: drop path is off. ``eqx.nn.inference_mode`` sets it, and the
        call's ``inference`` overrides it.

    Examples
    --------
    >>> import equinox as eqx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from anydrop.equinox import DropPath
    >>> layer = DropPath(0.5)
    >>> x = jnp.ones((8, 3))                       # 8 examples of 3 features
    >>> keys = jax.random.split(jax.random.key(0), 8)
    >>> out = eqx.filter_vmap(lambda x, k: layer(x, key=k))(x, keys)
    >>> sorted(set(out[:, 0].tolist()))            # each example dropped or kept and scaled
    [0.0, 2.0]
    >>> eqx.nn.inference_mode(layer)(x) is x
    True
    """

    def __init__(
        self,
        p: float = 0.1,
        *,
        scale_by_keep: bool = True,
        scale_at_test: bool = False,
        axis: int | tuple[int, ...] = (),
        inference: bool = False,
    ) -> None:
        self.p, self.scale_by_keep, self.axis = layer_arguments(p, scale_by_keep, axis, "p")
        self.scale_at_test = scaling_argument(self.scale_by_keep, scale_at_test)
        self.inference = _check_inference(inference)

    def __call__(self, x: Any, *, key: Any = None, inference: bool | None = None) -> Any:
        """Apply drop path to ``x`` with ``key``; ``inference`` overrides the field."""
        training, key = self._training(key, inference)
        return drop_path(
            x, self.p, training, self.scale_by_keep, axis=self.axis, rng=key, scale_at_test=self.scale_at_test
        )


class DropPathResidual(_Config):
    """``x + drop_path(branch(x))`` as an ``eqx.Module``, fused by :func:`anydrop.drop_path_add`.

    ``branch`` is a field, so its parameters are this module's (``filter_grad``
    differentiates them). It is called as ``branch(x)`` on the whole input:
    under ``vmap`` no work can be skipped for dropped examples. In inference
    mode the result is ``x + branch(x)`` (``x + (1 - p) * branch(x)`` with
    ``scale_at_test``).

    Parameters
    ----------
    branch
        The residual branch, a callable (an ``eqx.Module`` usually) from
        arrays to arrays of ``x``'s shape.
    p, scale_by_keep, scale_at_test, axis, inference
        As in :class:`DropPath`.

    Examples
    --------
    >>> import equinox as eqx
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from anydrop.equinox import DropPathResidual
    >>> block = DropPathResidual(eqx.nn.Linear(3, 3, key=jax.random.key(0)), 0.2)
    >>> @eqx.filter_jit
    ... def loss(model, x, keys):
    ...     return jnp.sum(jax.vmap(lambda x, k: model(x, key=k))(x, keys) ** 2)
    >>> grads = eqx.filter_grad(loss)(block, jnp.ones((4, 3)), jax.random.split(jax.random.key(1), 4))
    >>> grads.branch.weight.shape
    (3, 3)
    """

    branch: Callable[[Any], Any]

    def __init__(
        self,
        branch: Callable[[Any], Any],
        p: float = 0.1,
        *,
        scale_by_keep: bool = True,
        scale_at_test: bool = False,
        axis: int | tuple[int, ...] = (),
        inference: bool = False,
    ) -> None:
        check_callable(branch, "branch")
        self.p, self.scale_by_keep, self.axis = layer_arguments(p, scale_by_keep, axis, "p")
        self.scale_at_test = scaling_argument(self.scale_by_keep, scale_at_test)
        self.inference = _check_inference(inference)
        self.branch = branch

    def __call__(self, x: Any, *, key: Any = None, inference: bool | None = None) -> Any:
        """``x + drop_path(branch(x))`` with ``key``; ``inference`` overrides the field."""
        training, key = self._training(key, inference)
        return drop_path_add(
            x,
            self.branch(x),
            self.p,
            training,
            self.scale_by_keep,
            axis=self.axis,
            rng=key,
            scale_at_test=self.scale_at_test,
        )
