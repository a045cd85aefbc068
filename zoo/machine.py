"""What machine produced a number: CPU model, cores, torch version, kernel level, threads.

Training the same members on two CPUs gives float32 results that agree to rounding at first and
drift apart over many steps (the kernels sum in different orders), so a zoo's bytes are
reproducible on one machine, not across machines. Every manifest.json and results.json carries
this block so a user comparing numbers can tell whether the machines match.
"""
from __future__ import annotations

import os
import platform
from functools import lru_cache

__all__ = ["DEVICES", "cpu_model", "machine_info", "resolve_device"]


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(torch_threads: int | None = None) -> dict:
    """The machine block of manifest.json / results.json.

    `torch_threads`: the intra-op threads the numbers were computed with (default: this
    process's current setting). `cpu_capability` is the vector instruction level torch's CPU
    kernels dispatch to (e.g. AVX2, AVX512), one of the things that decide summation order.
    """
    import torch  # here, not at import: the CLI reads DEVICES without loading torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": int(torch_threads if torch_threads is not None else torch.get_num_threads()),
    }


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str, where: str = "compute.device") -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; "cuda" where there is none is a
    ZooError naming `where` and what is valid here."""
    import torch

    from zoo.errors import ZooError

    if requested not in DEVICES:
        raise ZooError(f"{where}: {requested!r} is not a device; valid: {', '.join(DEVICES)}")
    has_cuda = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    if requested == "cuda" and not has_cuda:
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ZooError(f"{where}: 'cuda' requested, but torch {torch.__version__} sees no GPU ({why}); "
                       "valid here: auto, cpu")
    return requested
