"""Task registry: mnist1d (generated + npz cache), digits, and hf:<folder> image datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import zoo.tasks
from zoo.errors import ZooError
from zoo.tasks import Task


@pytest.fixture(autouse=True)
def _fresh_task_cache():
    zoo.tasks._load_cached.cache_clear()
    yield
    zoo.tasks._load_cached.cache_clear()


# ---- mnist1d ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist1d_runs(tmp_path_factory):
    """Generate MNIST-1D into a fresh cache, re-read it from that cache, and generate again
    into a second fresh cache (each generation takes a few seconds)."""
    a, b = tmp_path_factory.mktemp("cache_a"), tmp_path_factory.mktemp("cache_b")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_CACHE", str(a))
        zoo.tasks._load_cached.cache_clear()
        first = zoo.tasks.load("mnist1d")
        files = sorted(a.glob("*.npz"))
        mtime = files[0].stat().st_mtime_ns if files else None
        zoo.tasks._load_cached.cache_clear()
        reread = zoo.tasks.load("mnist1d")
        mtime_after = files[0].stat().st_mtime_ns if files else None
        mp.setenv("ZOO_CACHE", str(b))
        zoo.tasks._load_cached.cache_clear()
        regenerated = zoo.tasks.load("mnist1d")
    zoo.tasks._load_cached.cache_clear()
    return dict(first=first, reread=reread, regenerated=regenerated, files=files, dir_a=a, dir_b=b,
                mtime=mtime, mtime_after=mtime_after)


def _same(t1: Task, t2: Task) -> bool:
    return all(
        torch.equal(getattr(t1, k), getattr(t2, k)) for k in ("x_train", "y_train", "x_test", "y_test")
    ) and t1.n_classes == t2.n_classes


def test_mnist1d_shapes_and_labels(mnist1d_runs):
    t = mnist1d_runs["first"]
    assert t.name == "mnist1d" and t.n_classes == 10
    assert tuple(t.x_train.shape) == (4000, 1, 40) and tuple(t.x_test.shape) == (1000, 1, 40)
    assert tuple(t.y_train.shape) == (4000,) and tuple(t.y_test.shape) == (1000,)
    assert t.x_train.dtype == torch.float32 and t.x_test.dtype == torch.float32
    assert t.y_train.dtype == torch.int64 and t.y_test.dtype == torch.int64
    for y in (t.y_train, t.y_test):
        assert int(y.min()) >= 0 and int(y.max()) <= 9
        assert set(y.tolist()) == set(range(10))
    assert t.input_shape == (1, 40) and t.n_train == 4000
    assert torch.isfinite(t.x_train).all() and float(t.x_train.std()) > 0


def test_mnist1d_cache_file_created_and_reread_identically(mnist1d_runs):
    files = mnist1d_runs["files"]
    assert len(files) == 1 and files[0].parent == mnist1d_runs["dir_a"]
    assert not list(mnist1d_runs["dir_a"].glob("*.tmp"))  # the atomic write left no temp file
    with np.load(files[0], allow_pickle=False) as z:
        assert set(z.files) == {"x", "y", "x_test", "y_test"}
    assert mnist1d_runs["mtime_after"] == mnist1d_runs["mtime"]  # read back, not rewritten
    assert _same(mnist1d_runs["first"], mnist1d_runs["reread"])


def test_mnist1d_generation_is_deterministic(mnist1d_runs):
    assert len(list(mnist1d_runs["dir_b"].glob("*.npz"))) == 1
    assert _same(mnist1d_runs["first"], mnist1d_runs["regenerated"])


def test_mnist1d_takes_no_task_args():
    with pytest.raises(ZooError, match="task_args"):
        zoo.tasks.load("mnist1d", {"image_column": "x"})


# ---- digits ----------------------------------------------------------------------------------
def test_digits_shapes_values_and_stratified_split():
    t = zoo.tasks.load("digits")
    assert t.name == "digits" and t.n_classes == 10
    assert tuple(t.x_train.shape) == (1437, 1, 8, 8) and tuple(t.x_test.shape) == (360, 1, 8, 8)
    assert t.x_train.dtype == torch.float32 and t.y_train.dtype == torch.int64
    for x in (t.x_train, t.x_test):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(t.x_train.max()) == 1.0  # scaled from 0..16, not left at 0..16 or squashed
    for y in (t.y_train, t.y_test):
        assert set(y.tolist()) == set(range(10))
    # stratified: class proportions match between the splits within one example per class
    tr = torch.bincount(t.y_train, minlength=10).double() / len(t.y_train)
    te = torch.bincount(t.y_test, minlength=10).double() / len(t.y_test)
    assert float((tr - te).abs().max()) < 0.005
    # fixed split: a second load gives the same tensors
    zoo.tasks._load_cached.cache_clear()
    assert _same(t, zoo.tasks.load("digits"))


# ---- hf:<local folder> -----------------------------------------------------------------------
@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """Keep the datasets client offline and its cache inside tmp_path."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    return tmp_path


def _make_folder(root: Path, mode: str = "L", n_train: int = 30, n_test: int = 12, size: int = 6,
                 split_names=("train", "test"), image_col: str = "image") -> dict:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    features = datasets.Features({image_col: datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    written = {}
    (root / "data").mkdir(parents=True)
    for split, n in zip(split_names, (n_train, n_test)):
        arr = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        arr[0].flat[0] = 255  # the max pixel value is present: scaling is exactly /255
        labels = [int(v) for v in rng.integers(0, 3, size=n)]
        labels[:3] = [0, 1, 2]
        ds = datasets.Dataset.from_dict(
            {image_col: [Image.fromarray(a, mode=mode) for a in arr], "label": labels}, features=features
        )
        ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
        written[split] = (arr, labels)
    return written


def test_hf_local_folder_is_read_by_datasets(hf_env):
    import datasets

    folder = hf_env / "ds"
    _make_folder(folder)
    dd = datasets.load_dataset(str(folder))
    assert set(dd) == {"train", "test"}
    assert dd["train"].num_rows == 30 and dd["test"].num_rows == 12


def test_hf_grayscale_task(hf_env):
    folder = hf_env / "ds"
    written = _make_folder(folder)
    t = zoo.tasks.load("hf:" + str(folder))
    assert t.name == "hf:" + str(folder) and t.n_classes == 3
    assert tuple(t.x_train.shape) == (30, 1, 6, 6) and tuple(t.x_test.shape) == (12, 1, 6, 6)
    assert t.x_train.dtype == torch.float32 and t.y_train.dtype == torch.int64
    for x in (t.x_train, t.x_test):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert t.y_train.tolist() == written["train"][1] and t.y_test.tolist() == written["test"][1]
    expected = torch.from_numpy(written["train"][0].astype(np.float32) / 255.0)[:, None]
    assert torch.allclose(t.x_train, expected, atol=1e-6)


def test_hf_rgb_task_is_channels_first(hf_env):
    folder = hf_env / "rgb"
    written = _make_folder(folder, mode="RGB", n_train=9, n_test=6, size=5)
    t = zoo.tasks.load("hf:" + str(folder))
    assert tuple(t.x_train.shape) == (9, 3, 5, 5) and tuple(t.x_test.shape) == (6, 3, 5, 5)
    expected = torch.from_numpy(written["test"][0].astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    assert torch.allclose(t.x_test, expected, atol=1e-6)


def test_hf_custom_columns_and_splits(hf_env):
    folder = hf_env / "custom"
    written = _make_folder(folder, split_names=("fit", "holdout"), image_col="img")
    t = zoo.tasks.load("hf:" + str(folder),
                       {"image_column": "img", "train_split": "fit", "test_split": "holdout"})
    assert tuple(t.x_train.shape) == (30, 1, 6, 6) and t.y_test.tolist() == written["holdout"][1]


def test_hf_missing_column(hf_env):
    folder = hf_env / "ds"
    _make_folder(folder)
    with pytest.raises(ZooError) as ei:
        zoo.tasks.load("hf:" + str(folder), {"image_column": "img"})
    msg = str(ei.value)
    assert "'img'" in msg and "image" in msg and "label" in msg  # names the column and lists the real ones
    assert "\n" not in msg


def test_hf_unknown_task_arg(hf_env):
    folder = hf_env / "ds"
    _make_folder(folder)
    with pytest.raises(ZooError) as ei:
        zoo.tasks.load("hf:" + str(folder), {"imagecolumn": "image"})
    msg = str(ei.value)
    assert "imagecolumn" in msg and "image_column" in msg and "task_args" in msg


def test_hf_missing_split_lists_available(hf_env):
    folder = hf_env / "ds"
    _make_folder(folder)
    with pytest.raises(ZooError) as ei:
        zoo.tasks.load("hf:" + str(folder), {"test_split": "validation"})
    msg = str(ei.value)
    assert "'validation'" in msg and "train" in msg and "test" in msg


def test_hf_unloadable_dataset_is_one_line(hf_env):
    with pytest.raises(ZooError) as ei:
        zoo.tasks.load("hf:" + str(hf_env / "does_not_exist"))
    assert "does_not_exist" in str(ei.value) and "\n" not in str(ei.value)


# ---- registry --------------------------------------------------------------------------------
def test_unknown_task_lists_valid_names():
    with pytest.raises(ZooError) as ei:
        zoo.tasks.load("nope")
    msg = str(ei.value)
    assert "'nope'" in msg and "mnist1d" in msg and "digits" in msg and "hf:" in msg


def test_hf_needs_a_repo_id():
    with pytest.raises(ZooError, match="repo id"):
        zoo.tasks.load("hf:")


def test_names():
    assert {"mnist1d", "digits"} <= set(zoo.tasks.names())
    zoo.tasks.check_name("hf:user/dataset")  # any repo id is syntactically fine
