"""The init benchmark (`hypernet eval`): protocol, memorization audit, report; `benchmark` runs them."""
from pipelines.benchmark.protocol import aggregate, eval_steps, speedup, speedup_bound, summarize
from pipelines.benchmark.report import compare, markdown, read_results, summary_line
from pipelines.benchmark.run import benchmark

__all__ = ["aggregate", "benchmark", "compare", "eval_steps", "markdown", "read_results", "speedup", "speedup_bound",
           "summarize", "summary_line"]
