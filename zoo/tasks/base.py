"""A Task: tensors of a fixed train/test split plus what a net needs to know about them."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from zoo.objectives import Classification, Objective


@dataclass(frozen=True)
class Task:
    """A task held fully in memory (these zoos use small data sets), with its objective.

    Classification: x_*: (N, *input_shape) float32, channels first; y_*: (N,) int64 in
    [0, n_classes). Sequences (`pydoc`): x_*: (N, T) int64 tokens, y_*: (N, T) next tokens,
    n_classes = vocabulary size. PDE (`convection`): x_*: (N, 2) points (t, x), y_*: (N, 1) the
    analytic solution there, n_classes = 1 (the output dimension). `args`: the task's arguments.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    objective: Objective = field(default_factory=Classification)
    args: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "Task":
        """This task with its floating-point tensors (inputs, PDE targets, the objective's points)
        in `dtype` and every tensor on `device`; class and token labels keep their integer type.
        float64 is the oracle the float32 trainer is tested against; a device is where a
        population trains."""
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device=device)

        return replace(self, x_train=cast(self.x_train), y_train=cast(self.y_train), x_test=cast(self.x_test),
                       y_test=cast(self.y_test), objective=self.objective.to(dtype, device))

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name == "train":
            return self.x_train, self.y_train
        if name == "test":
            return self.x_test, self.y_test
        raise ValueError(f"unknown split {name!r}; valid: train, test")


def cache_dir() -> Path:
    """Where generated data sets are cached (npz, never pickle): $ZOO_CACHE or ~/.cache/zoo."""
    root = Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "zoo"))
    root.mkdir(parents=True, exist_ok=True)
    return root
