"""The JAX cases: an eager call on a tiny array, and a jitted ViT batch, beside the hand-written reference."""

from __future__ import annotations

import importlib
from typing import Any

import anydrop

from ._measure import TINY, VIT, Case

#: The hand-written drop path: ``x * (jax.random.bernoulli(key, keep, (B, 1, ...)) / keep)``.
JAX_REFERENCE = "jax reference"


def jax_cases(quick: bool) -> list[Case]:
    """Per-call cost of an eager call, and a jitted call on a ViT batch, also as flax modules if installed."""
    jax: Any = importlib.import_module("jax")
    jnp = jax.numpy
    p = 0.1
    keep = 1.0 - p
    key = jax.random.key(0)

    def reference(x: Any, key: Any) -> Any:
        mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return x * (mask / keep)

    def ours(x: Any, key: Any) -> Any:
        return anydrop.drop_path(x, p, True, rng=key)

    tiny = jnp.ones(TINY, jnp.float32)
    cases = [
        Case(
            "drop_path fwd, tiny",
            "jax",
            "float32",
            TINY,
            {
                JAX_REFERENCE: lambda: reference(tiny, key).block_until_ready(),
                "anydrop": lambda: ours(tiny, key).block_until_ready(),
            },
            JAX_REFERENCE,
        )
    ]
    shape = (8, *VIT[1:]) if quick else VIT
    x = jax.random.normal(key, shape, jnp.float32)
    jitted = {JAX_REFERENCE: jax.jit(reference), "anydrop": jax.jit(ours)}
    candidates = {name: _synced(fn, x, key) for name, fn in jitted.items()}
    candidates.update(_flax_candidates(p, x))
    group = "drop_path fwd (jit), ViT"
    cases.append(Case(group, "jax", "float32", shape, candidates, JAX_REFERENCE, bytes_moved=2 * x.nbytes))
    return cases


def _synced(fn: Any, x: Any, key: Any) -> Any:
    return lambda: fn(x, key).block_until_ready()


def _flax_candidates(p: float, x: Any) -> dict[str, Any]:
    """``nnx.Dropout`` broadcast over all but the sample axis, and anydrop's flax DropPath, under nnx.jit."""
    try:
        nnx: Any = importlib.import_module("flax.nnx")
    except ImportError:
        return {}
    from anydrop.flax import DropPath

    dims = tuple(range(1, x.ndim))
    modules = {
        "nnx.Dropout": nnx.Dropout(p, broadcast_dims=dims, rngs=nnx.Rngs(0)),
        "anydrop.flax.DropPath": DropPath(p, rngs=nnx.Rngs(0)),
    }
    call = nnx.jit(lambda module, a: module(a))
    return {name: _module_call(call, module, x) for name, module in modules.items()}


def _module_call(call: Any, module: Any, x: Any) -> Any:
    return lambda: call(module, x).block_until_ready()
