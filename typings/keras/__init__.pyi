# Keras ships no type information (no py.typed marker, no stubs): typed as Any.
from typing import Any

def __getattr__(name: str) -> Any: ...
