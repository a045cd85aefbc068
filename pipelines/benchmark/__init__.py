"""The init benchmark (`hypernet eval`): protocol, memorization audit, report; `benchmark` runs them.

The names below are imported on first use (PEP 562): `pipelines.benchmark.stats` alone (the
bootstrap the studies use too) does not import the protocol and the hypernetworks.
"""
from __future__ import annotations

from zoo.lazy import lazy_exports

_EXPORTS = {
    "pipelines.benchmark.protocol": ("aggregate", "eval_steps", "speedup", "speedup_bound", "summarize"),
    "pipelines.benchmark.report": ("compare", "markdown", "read_results", "summary_line"),
    "pipelines.benchmark.run": ("benchmark",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
