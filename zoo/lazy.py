"""Package names imported on first use (PEP 562): `import hypernet` or `import
pipelines.benchmark.stats` does not pay for every submodule of its package.

    __getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), {"pkg.mod": ("name", ...)})
"""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, namespace: dict, exports: dict[str, tuple[str, ...]]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """The module-level __getattr__ and __dir__ of `package` and its __all__: a name of
    `exports` (module -> names) is imported from its module when first read, then kept in
    `namespace` (the package's globals) as a plain attribute."""
    where = {name: mod for mod, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__, sorted(where)
