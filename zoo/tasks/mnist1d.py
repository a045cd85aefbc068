"""MNIST-1D (Greydanus 2020), generated offline by the mnist1d package: 4,000 train / 1,000 test.

`seed` and `corr_noise` draw another version of the data set from the same ten templates: new
samples, and with a larger `corr_noise` noisier ones. The defaults are the package's standard
split; `zoo study transfer` fine-tunes on a shifted draw (zoo.tasks.TRANSFER_TARGETS).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

from zoo.tasks.base import Task, cache_dir

SEED = 42  # the package's default seed: the standard MNIST-1D split
CORR_NOISE = 0.25  # the package's default scale of the correlated (smooth) noise


def _generate(seed: int, corr_noise: float) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = 5000, 0.8, seed
    args.corr_noise_scale = corr_noise
    data = make_dataset(args)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def load_mnist1d(seed: int = SEED, corr_noise: float = CORR_NOISE) -> Task:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (got {seed!r})")
    if not 0 <= corr_noise <= 10:
        raise ValueError(f"corr_noise must be in [0, 10] (got {corr_noise!r})")
    seed = int(seed)
    name = f"mnist1d-5000-seed{seed}" + ("" if corr_noise == CORR_NOISE else f"-corr{corr_noise:g}")
    path = cache_dir() / f"{name}.npz"
    if not path.exists():
        arrays = _generate(seed, float(corr_noise))
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        os.close(fd)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    with np.load(path, allow_pickle=False) as z:
        x, y, xt, yt = z["x"], z["y"], z["x_test"], z["y_test"]
    args = {} if (seed, corr_noise) == (SEED, CORR_NOISE) else {"seed": seed, "corr_noise": float(corr_noise)}
    return Task(
        name="mnist1d",
        x_train=torch.from_numpy(x.astype(np.float32)).unsqueeze(1),  # (4000, 1, 40)
        y_train=torch.from_numpy(y.astype(np.int64)),
        x_test=torch.from_numpy(xt.astype(np.float32)).unsqueeze(1),  # (1000, 1, 40)
        y_test=torch.from_numpy(yt.astype(np.int64)),
        n_classes=10,
        args=args,
    )
