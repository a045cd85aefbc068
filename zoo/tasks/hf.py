"""`hf:<repo_id>`: any image-classification dataset the `datasets` client can load.

The dataset needs an image column and an integer label column, and train/test splits (names
configurable through the spec's `task_args`). Images are converted to (C, H, W) float32 in
[0, 1]; all images must share one size. `repo_id` may also be a local folder (parquet files),
which is how the tests exercise it without a network.
"""
from __future__ import annotations

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.tasks.base import Task

VALID_ARGS = {"image_column", "label_column", "train_split", "test_split", "config", "revision"}


def _to_array(images, where: str) -> np.ndarray:
    arrays = []
    integer = True
    for i, img in enumerate(images):
        a = np.asarray(img)
        integer = integer and a.dtype.kind in "ui"
        a = a.astype(np.float32)
        if a.ndim == 2:
            a = a[None]
        elif a.ndim == 3:
            a = a.transpose(2, 0, 1)
        else:
            raise ZooError(f"{where}: image {i} has shape {a.shape}; expected (H, W) or (H, W, C)")
        if arrays and a.shape != arrays[0].shape:
            raise ZooError(
                f"{where}: image {i} has shape {a.shape} but image 0 has {arrays[0].shape}; "
                "all images must share one size"
            )
        arrays.append(a)
    if not arrays:
        raise ZooError(f"{where}: the split is empty")
    x = np.stack(arrays)
    return x / 255.0 if integer else x  # 8-bit pixels -> [0, 1]; float images are kept as they are


def load_hf_task(repo_id: str, args: dict) -> Task:
    unknown = set(args) - VALID_ARGS
    if unknown:
        raise ZooError(
            f"task_args: unknown key(s) {sorted(unknown)} for hf:{repo_id}; valid: {sorted(VALID_ARGS)}"
        )
    import datasets

    image_col = args.get("image_column", "image")
    label_col = args.get("label_column", "label")
    splits = {"train": args.get("train_split", "train"), "test": args.get("test_split", "test")}
    try:
        dd = datasets.load_dataset(repo_id, args.get("config"), revision=args.get("revision"))
    except Exception as e:  # the client raises many types; the user needs one line
        raise ZooError(f"task hf:{repo_id}: cannot load the dataset ({type(e).__name__}: {e})") from None
    out = {}
    for role, split in splits.items():
        if split not in dd:
            raise ZooError(f"task hf:{repo_id}: no split {split!r}; available: {sorted(dd)}")
        ds = dd[split]
        for col in (image_col, label_col):
            if col not in ds.column_names:
                raise ZooError(
                    f"task hf:{repo_id}: split {split!r} has no column {col!r}; columns: {ds.column_names}"
                )
        x = _to_array(ds[image_col], f"task hf:{repo_id} split {split!r}")
        y = np.asarray(ds[label_col], dtype=np.int64)
        out[role] = (torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y))
    feat = dd[splits["train"]].features[label_col]
    n_classes = getattr(feat, "num_classes", None) or int(max(out["train"][1].max(), out["test"][1].max())) + 1
    return Task(f"hf:{repo_id}", *out["train"], *out["test"], n_classes=int(n_classes))
