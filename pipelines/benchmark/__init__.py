"""The init benchmark (`hypernet eval`): protocol, memorization audit, report; `benchmark` runs them.

The names below are imported on first use (PEP 562): `pipelines.benchmark.stats` alone (the
bootstrap the studies use too) does not import the protocol and the hypernetworks.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "pipelines.benchmark.protocol": ("aggregate", "eval_steps", "speedup", "speedup_bound", "summarize"),
    "pipelines.benchmark.report": ("compare", "markdown", "read_results", "summary_line"),
    "pipelines.benchmark.run": ("benchmark",),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'pipelines.benchmark' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
