"""Keras 3 layers: ``anydrop.keras.DropPath`` is a ``keras.layers.Layer``.

They follow ``keras.layers.Dropout``: ``call(x, training=None)``, a ``rate``,
and randomness from a ``keras.random.SeedGenerator`` the layer owns, whose
state is a non-trainable variable of the layer, so ``jit_compile=True`` and
the JAX backend's stateless training draw a fresh mask every step, and a
saved model resumes the sequence. They register as Keras serializables
(package ``anydrop``), so a ``.keras`` file reloads them.

They run on the Keras backends whose tensors are array API arrays: JAX,
PyTorch and NumPy (Keras's NumPy backend runs inference only: it has no
``model.fit``). Constructing one on another backend (TensorFlow) is a
``ValueError``.
Importing this module imports keras; ``import anydrop`` alone does not.
"""

# Keras ships no type information, so its classes are Any here (typings/keras):
# pyright's strict mode would report every use of them; its basic mode still checks this file.
# pyright: basic

from __future__ import annotations

from typing import Any

import keras

from ._core import drop_path, drop_path_residual
from ._core._checks import check_count
from ._core._portable import stream_value
from ._layers import layer_arguments, residual_arguments, scaling_argument

__all__ = ["SUPPORTED_BACKENDS", "DropPath", "DropPathResidual", "check_backend"]

#: The Keras backends whose tensors anydrop's drop_path takes.
SUPPORTED_BACKENDS = ("jax", "torch", "numpy")


def check_backend(name: str) -> None:
    """Raise ValueError unless ``name`` is a Keras backend these layers run on."""
    if name not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"anydrop.keras layers run on the Keras backends {', '.join(SUPPORTED_BACKENDS)}, whose tensors "
            f"are array API arrays, but keras.backend.backend() is {name!r}; set KERAS_BACKEND=jax, torch "
            "or numpy before importing keras"
        )


_SEED_STATE = "anydrop_seed_generator_state"


def _seed(seed: object) -> int | None:
    # The SeedGenerator's state holds 32-bit integers.
    return None if seed is None else check_count(seed, "seed", 2**32)


def _axis_from_config(axis: Any) -> Any:
    # A tuple axis comes back from a .keras file's JSON as a list.
    return tuple(axis) if isinstance(axis, list) else axis


class _Config(keras.layers.Layer):
    """Arguments, seed generator and the per-backend rng shared by the Keras layers."""

    def _setup(self, rate: Any, scale_by_keep: Any, scale_at_test: Any, axis: Any, seed: Any) -> None:
        check_backend(keras.backend.backend())
        self.rate, self.scale_by_keep, self.axis = layer_arguments(rate, scale_by_keep, axis, "rate")
        self.scale_at_test = scaling_argument(self.scale_by_keep, scale_at_test)
        self.seed = _seed(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def _rng(self) -> Any:
        """Draw the next seed from the layer's SeedGenerator, as the backend's drop_path takes it."""
        state = self.seed_generator.next()
        if keras.backend.backend() == "jax":
            # A uint32 pair: the legacy JAX key, traced under jit. Keras's own
            # JAX random ops use it as a key in just this way.
            return state
        # torch and NumPy: an int seed made from both halves, mixed, so that two
        # layers with different seeds do not share a stream (Keras's torch ops
        # add the halves) and the low 32 bits, all a CPU torch.Generator keeps
        # of a seed, differ from step to step and from seed to seed.
        first, counter = (int(v) & 0xFFFFFFFF for v in state.tolist())
        return stream_value(first, counter)

    def _training(self, training: bool | None) -> bool:
        # As keras.layers.Dropout: training=None (no context) is inference.
        return False if training is None else training

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    # Keras saves a layer's weights but not its SeedGenerator's state (nor does
    # keras.layers.Dropout): without it a reloaded model would replay the masks
    # of the first steps. Files without the entry load as before.
    def save_own_variables(self, store: Any) -> None:
        super().save_own_variables(store)
        store[_SEED_STATE] = self.seed_generator.state

    def load_own_variables(self, store: Any) -> None:
        keys = list(store.keys())
        super().load_own_variables({key: store[key] for key in keys if key != _SEED_STATE})
        if _SEED_STATE in keys:
            self.seed_generator.state.assign(store[_SEED_STATE])

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            rate=self.rate,
            scale_by_keep=self.scale_by_keep,
            scale_at_test=self.scale_at_test,
            axis=self.axis,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="anydrop")
class DropPath(_Config):
    """Drop path (stochastic depth) as a ``keras.layers.Layer``.

    In training each sample along ``axis`` is zeroed with probability
    ``rate`` and the others are divided by ``1 - rate``, by
    :func:`anydrop.drop_path` with a seed drawn from the layer's
    ``keras.random.SeedGenerator``; in inference it is the identity.

    Parameters
    ----------
    rate
        Probability of dropping each sample, in [0, 1].
    scale_by_keep
        Divide kept samples by ``1 - rate`` in training (timm's rule).
    scale_at_test
        The paper's rule instead (Huang et al. 2016, keras-cv's
        ``StochasticDepth``): no scaling in training, the output times
        ``1 - rate`` in inference. Needs ``scale_by_keep=False`` (see
        :func:`anydrop.drop_path`).
    axis
        Axis or axes along which samples are drawn, as in ``drop_path``
        (0, the batch axis, by default).
    seed
        The SeedGenerator's seed, an int in [0, 2**32), or None for a random one.
    **kwargs
        ``keras.layers.Layer``'s (``name``, ``dtype``, ...).

    Raises
    ------
    ValueError
        The Keras backend is not JAX, PyTorch or NumPy, or an argument is out
        of range.

    Examples
    --------
    >>> import keras
    >>> import numpy as np
    >>> from anydrop.keras import DropPath
    >>> layer = DropPath(0.5, seed=0)
    >>> out = keras.ops.convert_to_numpy(layer(np.ones((8, 3), "float32"), training=True))
    >>> sorted(set(out[:, 0].tolist()))
    [0.0, 2.0]
    >>> keras.ops.convert_to_numpy(layer(np.ones((1, 3), "float32")))   # inference: the identity
    array([[1., 1., 1.]], dtype=float32)
    """

    # Keras reads __init__'s signature, which mutmut's wrapper of a mutated function hides.
    # pragma: no mutate start
    def __init__(
        self,
        rate: float = 0.1,
        *,
        scale_by_keep: bool = True,
        scale_at_test: bool = False,
        axis: int | tuple[int, ...] = 0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._setup(rate, scale_by_keep, scale_at_test, axis, seed)
        self.supports_masking = True
        # pragma: no mutate end

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        active = self._training(training)
        rng = self._rng() if active and self.rate > 0.0 else None
        return drop_path(
            inputs,
            self.rate,
            active,
            self.scale_by_keep,
            axis=self.axis,
            rng=rng,
            scale_at_test=self.scale_at_test,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DropPath:
        config = dict(config)
        config["axis"] = _axis_from_config(config.get("axis", 0))
        return cls(**config)


@keras.saving.register_keras_serializable(package="anydrop")
class DropPathResidual(_Config):
    """``x + drop_path(branch(x))`` as a ``keras.layers.Layer``, running ``branch`` on the kept samples only.

    :func:`anydrop.drop_path_residual` in training, ``x + branch(x)`` in
    inference. ``branch`` is a Keras layer (or model) tracked by this one:
    its weights are this layer's, and it is saved and reloaded with it. It
    must map inputs to outputs of the same shape and treat samples
    independently (no batch statistics). ``fixed_size=True`` (the default
    here, unlike :func:`~anydrop.drop_path_residual`) keeps exactly
    ``round(n * (1 - rate))`` samples, the static shapes ``jit_compile``
    needs on JAX; ``fixed_size=False`` draws each sample independently and
    works in eager (not compiled) code only.

    Parameters
    ----------
    branch
        The residual branch, a ``keras.layers.Layer``.
    rate, scale_by_keep, scale_at_test, seed
        As in :class:`DropPath`.
    axis
        The sample axis, an int.
    fixed_size
        Keep a fixed number of samples (static shapes).
    **kwargs
        ``keras.layers.Layer``'s.

    Examples
    --------
    >>> import keras
    >>> import numpy as np
    >>> from anydrop.keras import DropPathResidual
    >>> inputs = keras.Input((4,))
    >>> outputs = DropPathResidual(keras.layers.Dense(4), 0.2, seed=0)(inputs)
    >>> model = keras.Model(inputs, outputs)
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x = np.ones((8, 4), "float32")
    >>> model.fit(x, x, epochs=1, verbose=0).history["loss"][0] >= 0
    True
    """

    axis: int

    # Keras reads __init__'s signature, which mutmut's wrapper of a mutated function hides.
    # pragma: no mutate start
    def __init__(
        self,
        branch: keras.layers.Layer,
        rate: float = 0.1,
        *,
        scale_by_keep: bool = True,
        scale_at_test: bool = False,
        axis: int = 0,
        fixed_size: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        axis = residual_arguments(branch, axis)
        if not isinstance(branch, keras.layers.Layer):
            # A plain function would have no weights to train and could not be saved.
            raise TypeError(
                f"branch must be a keras.layers.Layer (or a keras.Model), got an object of type "
                f"{type(branch).__name__}; wrap a function in keras.layers.Lambda"
            )
        self._setup(rate, scale_by_keep, scale_at_test, axis, seed)
        self.branch = branch
        self.fixed_size = bool(fixed_size)
        # pragma: no mutate end

    def build(self, input_shape: Any) -> None:
        # compute_output_shape answers for symbolic calls, so call() is not
        # traced there: build the branch here, for its weights to exist.
        if not self.branch.built:
            self.branch.build(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        active = self._training(training)
        rng = self._rng() if active and self.rate > 0.0 else None
        return drop_path_residual(
            inputs,
            self.branch,
            self.rate,
            active,
            self.scale_by_keep,
            axis=self.axis,
            rng=rng,
            fixed_size=self.fixed_size,
            scale_at_test=self.scale_at_test,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(branch=keras.saving.serialize_keras_object(self.branch), fixed_size=self.fixed_size)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DropPathResidual:
        config = dict(config)
        branch = keras.saving.deserialize_keras_object(config.pop("branch"))
        config["axis"] = _axis_from_config(config.get("axis", 0))
        return cls(branch, **config)
