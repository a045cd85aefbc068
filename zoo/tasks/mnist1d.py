"""MNIST-1D (Greydanus 2020), generated offline by the mnist1d package: 4,000 train / 1,000 test."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from zoo.tasks.base import Task, cache_dir

SEED = 42  # the package's default seed: the standard MNIST-1D split


def _generate() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = 5000, 0.8, SEED
    data = make_dataset(args)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def load_mnist1d() -> Task:
    path = cache_dir() / f"mnist1d-5000-seed{SEED}.npz"
    if not path.exists():
        arrays = _generate()
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        os.close(fd)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    with np.load(path, allow_pickle=False) as z:
        x, y, xt, yt = z["x"], z["y"], z["x_test"], z["y_test"]
    return Task(
        name="mnist1d",
        x_train=torch.from_numpy(x.astype(np.float32)).unsqueeze(1),  # (4000, 1, 40)
        y_train=torch.from_numpy(y.astype(np.int64)),
        x_test=torch.from_numpy(xt.astype(np.float32)).unsqueeze(1),  # (1000, 1, 40)
        y_test=torch.from_numpy(yt.astype(np.int64)),
        n_classes=10,
    )
