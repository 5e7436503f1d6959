# CuPy is a CUDA wheel, not installed where the code is type-checked. Without
# this stub pyright types the CuPy member of array-api-compat's array union as
# Unknown, which its strict mode reports at every use of that union.
from typing import Any

def __getattr__(name: str) -> Any: ...
