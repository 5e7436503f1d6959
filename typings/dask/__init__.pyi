# Dask's own annotations are incomplete (dask.array.zeros is an untyped
# functools.partial) and in places wrong (arange's chunks is typed str), and
# Dask is not installed where the code is type-checked: typed as Any.
from typing import Any

def __getattr__(name: str) -> Any: ...
