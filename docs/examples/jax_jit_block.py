"""A jitted residual block with drop path, its gradient, and per-example drops under vmap."""

from functools import partial

import jax
import jax.numpy as jnp

from anydrop import drop_path, drop_path_residual


# drop_prob and training are static (Python values); x and the key are traced.
@partial(jax.jit, static_argnames=("drop_prob", "training"))
def block(w, x, key, drop_prob=0.1, training=True):
    return drop_path_residual(x, lambda t: jnp.tanh(t @ w), drop_prob, training, rng=key, fixed_size=True)


def loss(w, x, key):
    return block(w, x, key).sum()


key = jax.random.key(0)
w = jnp.eye(4)
x = jnp.ones((8, 4))
for _ in range(3):
    key, sub = jax.random.split(key)  # a fresh key per step: keys do not advance
    y = block(w, x, sub)
    grads = jax.grad(loss)(w, x, sub)
assert block(w, x, key, training=False).shape == (8, 4)  # eval: no key used

# Per-example code under vmap: axis=() drops a whole example, and a batch of keys
# gives each example its own draw (one unbatched key would give them all the same).
keys = jax.random.split(key, 8)
y = jax.vmap(lambda xi, k: drop_path(xi, 0.5, True, axis=(), rng=k))(x, keys)
