"""drop_path_residual on a batch sharded over 8 devices: what each device computes, and what it sends.

On a CPU, JAX makes 8 devices if XLA_FLAGS asks before JAX starts, as here. The
script prints, per sharding mode, the collectives in the compiled program of the
residual block and of the plain block ``x + fn(x)``, and the per-device FLOPs of
the first over the second (XLA's cost analysis of the compiled program).
"""

import os
import re

# Before JAX starts its backend; a device count already given is kept.
FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in FLAGS:
    os.environ["XLA_FLAGS"] = f"{FLAGS} --xla_force_host_platform_device_count=8".strip()

import jax  # noqa: E402 (after XLA_FLAGS, which JAX reads when it starts)
import jax.numpy as jnp  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec  # noqa: E402

from anydrop import drop_path_residual  # noqa: E402

KINDS = "all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter"


def collectives(jitted, *args):
    text = jitted.lower(*args).compile().as_text()
    return sorted(set(re.findall(rf"\s({KINDS})(?:-start)?\(", text)))


def flops(jitted, *args):
    return jitted.lower(*args).compile().cost_analysis()["flops"]


dim, keep = 256, 0.5
w = jax.random.normal(jax.random.key(0), (dim, dim)) / dim


def fn(a):  # the residual branch: an MLP, per sample
    return jnp.tanh(a @ w) @ w


for mode in (AxisType.Auto, AxisType.Explicit):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(mode,))
    with jax.set_mesh(mesh):
        x = jax.device_put(jnp.ones((64, dim)), NamedSharding(mesh, PartitionSpec("data")))
        key = jax.random.key(1)
        # Auto mode: the sharding is not known while tracing, so say it. Explicit: x's type says it.
        shards = mesh.shape["data"] if mode == AxisType.Auto else None
        plain = jax.jit(lambda x: x + fn(x))
        residual = jax.jit(
            lambda x, key, shards=shards: drop_path_residual(
                x, fn, 1 - keep, True, rng=key, fixed_size=True, shards=shards
            )
        )
        whole = jax.jit(lambda x, key: drop_path_residual(x, fn, 1 - keep, True, rng=key, fixed_size=True))
        out = residual(x, key)
        assert out.sharding.is_equivalent_to(x.sharding, x.ndim)
        print(f"{mode.name}: output sharded as x: {out.sharding.spec}")
        print(f"  collectives, plain block:        {collectives(plain, x)}")
        print(f"  collectives, drop_path_residual: {collectives(residual, x, key)}")
        print(f"  per-device FLOPs, residual / plain: {flops(residual, x, key) / flops(plain, x):.3f}")
        if mode == AxisType.Auto:
            # Without shards= under jit in auto mode: the subset of the whole batch, gathered.
            print(f"  without shards=: collectives {collectives(whole, x, key)}, ", end="")
            print(f"FLOPs ratio {flops(whole, x, key) / flops(plain, x):.3f}")
