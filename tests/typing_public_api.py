"""Static checks of the public API's types, as a user's code sees them.

The lint session runs ``mypy --strict`` on this file: each ``assert_type`` must
hold, and each ``# type: ignore[...]`` must be needed (strict mode reports an
unused one), so a wrong call is still a type error. Nothing here runs; the
checks sit in a function that is never called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

import anydrop
from anydrop import DropPath, drop_path, drop_path_rates

if TYPE_CHECKING:
    from typing_extensions import assert_type


def check_public_types() -> None:
    x: npt.NDArray[np.float32] = np.ones((4, 3), dtype=np.float32)

    # The output has the input's type, whatever the array library.
    assert_type(drop_path(x), npt.NDArray[np.float32])
    assert_type(
        drop_path(x, 0.5, True, False, axis=(0, 1), rng=np.random.default_rng(0)), npt.NDArray[np.float32]
    )
    assert_type(drop_path(x, 0.5, training=True, rng=0), npt.NDArray[np.float32])
    assert_type(drop_path(x, 0.5, False, False, scale_at_test=True), npt.NDArray[np.float32])

    layer = DropPath(0.1, rng=0)
    assert_type(layer(x), npt.NDArray[np.float32])
    assert_type(layer.train(), DropPath)
    assert_type(layer.eval(), DropPath)
    assert_type(layer.drop_prob, float)
    assert_type(layer.training, bool)
    assert_type(DropPath(0.1, False, scale_at_test=True).scale_at_test, bool)

    assert_type(drop_path_rates(0.1, 12), list[float])
    assert_type(anydrop.__version__, str)

    # Wrong argument types are caught before run time.
    drop_path(x, "0.5")  # type: ignore[arg-type]
    drop_path(x, 0.5, axis=[0])  # type: ignore[arg-type]
    drop_path(x, 0.5, scale_at_test="yes")  # type: ignore[arg-type]
    drop_path_rates(0.1, 12.0)  # type: ignore[arg-type]
