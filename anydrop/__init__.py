"""anydrop: one drop-path (stochastic depth) implementation for every array library.

``drop_path`` is written once against the Python array API standard and works
on NumPy, PyTorch, CuPy, JAX, Dask and array-api-strict arrays. Importing
anydrop imports no array framework; ``anydrop.torch`` holds the
``torch.nn.Module`` wrappers, ``anydrop.flax`` the ``flax.nnx`` ones,
``anydrop.keras`` the Keras 3 layers and ``anydrop.equinox`` the ``eqx.Module`` ones.
"""

from ._core import PortableRNG, drop_path, drop_path_add, drop_path_residual
from ._modules import DropPath, DropPathResidual
from ._schedule import drop_path_rates

__version__ = "0.1.0"

__all__ = [
    "DropPath",
    "DropPathResidual",
    "PortableRNG",
    "__version__",
    "drop_path",
    "drop_path_add",
    "drop_path_rates",
    "drop_path_residual",
]
