"""A flax.nnx block with anydrop.flax.DropPath, trained under nnx.jit, then in eval mode."""

import jax.numpy as jnp
from flax import nnx

from anydrop.flax import DropPath


class Block(nnx.Module):
    def __init__(self, dim, drop_prob, *, rngs):
        self.mlp = nnx.Linear(dim, dim, rngs=rngs)
        self.drop_path = DropPath(drop_prob, rngs=rngs)

    def __call__(self, x):
        return x + self.drop_path(self.mlp(x))


model = Block(4, 0.1, rngs=nnx.Rngs(params=0, dropout=1))


@nnx.jit
def train_step(model, x):
    loss, grads = nnx.value_and_grad(lambda m: (m(x) ** 2).mean())(model)
    return loss, grads


x = jnp.ones((8, 4))
for _ in range(3):
    loss, grads = train_step(model, x)  # a fresh mask per step
model.eval()  # drop path off
assert jnp.array_equal(model(x), x + model.mlp(x))
