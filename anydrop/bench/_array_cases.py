"""The NumPy and CuPy cases: anydrop beside the seed function, the classic two-pass version and the limit."""

from __future__ import annotations

import functools
import importlib
import operator
from collections.abc import Callable
from typing import Any

import anydrop

from ._measure import CLASSIC, LIMIT, SEED, TINY, VIT, VIT_QUICK, Case, no_sync


def array_cases(xp_name: str, quick: bool) -> list[Case]:
    """NumPy, or CuPy with the same code: drop_path alone, and the residual add."""
    xp: Any = importlib.import_module(xp_name)
    sync: Callable[[], None] = xp.cuda.Device().synchronize if xp_name == "cupy" else no_sync
    rng = xp.random.default_rng(0)
    p = 0.1
    keep = 1.0 - p
    cases: list[Case] = []
    for label, shape, number in (
        ("tiny", TINY, 200 if quick else 2000),
        ("ViT", VIT_QUICK if quick else VIT, 1),
    ):
        x = rng.standard_normal(shape, dtype=xp.float32)
        mask_shape = (shape[0],) + (1,) * (len(shape) - 1)
        mask = (rng.random(mask_shape) < keep).astype(xp.float32) / xp.float32(keep)

        def classic_two_pass(x: Any = x, mask_shape: tuple[int, ...] = mask_shape) -> Any:
            random_tensor = xp.floor(keep + rng.random(mask_shape, dtype=xp.float32))
            return (x / xp.float32(keep)) * random_tensor

        def seed_function(x: Any = x, mask_shape: tuple[int, ...] = mask_shape) -> Any:
            drawn = rng.binomial(1, keep, size=mask_shape).astype(x.dtype)
            drawn /= keep
            return x * drawn

        cases.append(
            Case(
                f"drop_path fwd, {label}",
                xp_name,
                "float32",
                shape,
                {
                    CLASSIC: classic_two_pass,
                    SEED: seed_function,
                    LIMIT: functools.partial(operator.mul, x, mask),
                    "anydrop": functools.partial(anydrop.drop_path, x, p, True, rng=rng),
                },
                CLASSIC,
                limit=None if label == "tiny" else LIMIT,
                bytes_moved=0 if label == "tiny" else 2 * x.size * x.itemsize,
                number=number,
                sync=sync,
            )
        )
    x = rng.standard_normal(VIT_QUICK if quick else VIT, dtype=xp.float32)
    branch = rng.standard_normal(x.shape, dtype=xp.float32)
    cases.append(
        Case(
            "residual add fwd, ViT",
            xp_name,
            "float32",
            tuple(x.shape),
            {
                "x + anydrop.drop_path": lambda: x + anydrop.drop_path(branch, p, True, rng=rng),
                "anydrop.drop_path_add": lambda: anydrop.drop_path_add(x, branch, p, True, rng=rng),
            },
            "x + anydrop.drop_path",
            bytes_moved=3 * x.size * x.itemsize,
            sync=sync,
        )
    )
    return cases
