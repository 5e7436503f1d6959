"""PortableRNG's written-down stream, computed independently of anydrop, and its golden bits.

``tests/test_portable_rng.py`` checks every backend's masks against these;
other test files use them to know in advance which samples a PortableRNG keeps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anydrop import PortableRNG, drop_path
from tests.helpers import random_batch

M64 = 2**64 - 1
GAMMA = 0x9E3779B97F4A7C15


def mix(z: int) -> int:
    """SplitMix64's output function on a 64-bit state."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def spec_uniforms(seed: int, position: int, n: int) -> list[float]:
    """The documented stream: u_k = (mix64(mix64(seed) + (k + 1) * gamma) >> 11) * 2**-53."""
    state = mix(seed)
    return [(mix((state + (k + 1) * GAMMA) & M64) >> 11) * 2.0**-53 for k in range(position, position + n)]


def spec_kept(seed: int, position: int, n: int, keep: float) -> np.ndarray:
    """Which of ``n`` samples a PortableRNG(seed) at ``position`` keeps with probability ``keep``."""
    return np.array([u < keep for u in spec_uniforms(seed, position, n)], dtype=bool)


# (x shape, drop_prob, axis, training) of one call sequence, and the kept bits
# of each call that draws, in C order over the mask. Changing these breaks
# every saved comparison between frameworks: the stream is part of the API.
SEQUENCE = [
    ((12, 2), 0.5, 0, True),
    ((3, 4, 5), 0.25, (0, 2), True),
    ((4, 2), 0.0, 0, True),  # identity: draws nothing
    ((4, 2), 0.5, 0, False),  # eval: draws nothing
    ((2, 3), 0.9, (), True),
    ((4, 1), 1.0, 0, True),  # draws 4 values, keeps none
    ((0, 3), 0.5, 0, True),
    ((10, 1), 0.1, -2, True),
]
GOLDEN_SEED = 2024
GOLDEN_BITS = ["111111000110", "110111111110110", "0", "0000", "1111111111"]
GOLDEN_POSITION = 42


def _kept_bits(out: np.ndarray, axes: tuple[int, ...]) -> str:
    other = tuple(i for i in range(out.ndim) if i not in axes)
    kept = np.any(out != 0, axis=other) if other else out != 0
    return "".join("1" if k else "0" for k in np.ravel(kept))


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    items = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in items))


def run_sequence(backend: Any, rng: PortableRNG, dtype: str = "float32") -> list[str]:
    """The kept bits of ``SEQUENCE`` drawn from ``rng`` on ``backend``: ``GOLDEN_BITS`` when right."""
    bits = []
    for i, (shape, p, axis, training) in enumerate(SEQUENCE):
        x = random_batch(backend, shape, dtype, seed=i)
        out = drop_path(x, p, training, axis=axis, rng=rng)
        if training and p > 0:
            bits.append(_kept_bits(backend.to_numpy(out), _axes(axis, len(shape))))
    return [b for b in bits if b]
