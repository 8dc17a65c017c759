"""Package namespaces that import their modules on first use, so `import dhanalysis.data` (or `.model`,
`.probes`, `.metrics`, `.stats`) costs nothing until a name is used: torch-free callers (figures, vocab users) stay
torch-free."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that resolves ``name`` from ``package.<exports[name]>`` when first asked for."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
