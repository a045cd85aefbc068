"""zoo.wsl and pipelines.studies.predict, the weight-space learning benchmark (`zoo study predict`):
the statistics features, the nfn adapter and NFN, the grouped splits, the metrics and their
bootstrap; the predictors beat a constant where the target is a known function of the weights;
the study's errors name what is missing. Helpers stay in this file (the nfn wheel installs a
top-level `tests` package)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import nets, store, wsl
from zoo.errors import ZooError


def _state(seed: int, width: int = 8, depth: int = 2, scale: float = 1.0) -> dict[str, torch.Tensor]:
    net = nets.init_(nets.build("mlp", input_shape=(1, 12), n_classes=3, width=width, depth=depth), seed)
    sd = net.state_dict()
    sd["fc0.weight"] = sd["fc0.weight"] * scale
    return sd


def _synthetic(n: int = 80, seed: int = 0):
    """A zoo where 'accuracy' is a smooth function of the first layer's weight scale, and a
    three-class label is a band of that scale."""
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.3, 2.0, n)
    states = [_state(i, scale=float(s)) for i, s in enumerate(scales)]
    y = 0.9 - 0.4 * (scales - 1.0) ** 2 + rng.normal(0, 0.01, n)
    label = np.where(scales < 0.8, "lo", np.where(scales > 1.4, "hi", "mid"))
    return states, y, label, np.array([f"m{i}" for i in range(n)])


# ---- (ii) the statistics layout ----------------------------------------------------------------
def test_layer_statistics_layout_on_a_hand_made_net():
    sd = {"fc0.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "fc0.bias": torch.tensor([0.0, 2.0]),
          "head.weight": torch.tensor([[-1.0, 1.0]]), "head.bias": torch.tensor([5.0])}
    f = wsl.layer_statistics(sd, "mlp")
    assert f.shape == (wsl.N_FEATURES,) == (60,) == (len(wsl.FEATURE_NAMES),)
    np.testing.assert_allclose(f[0:7], [2.5, 1.25, 1.0, 1.75, 2.5, 3.25, 4.0])  # mean, var, q0..q100
    np.testing.assert_allclose(f[7:14], [1.0, 1.0, 0.0, 0.5, 1.0, 1.5, 2.0])  # fc0 bias
    assert np.all(f[14:28] == 0)  # no hidden layer
    np.testing.assert_allclose(f[28:35], [0.0, 1.0, -1.0, -0.5, 0.0, 0.5, 1.0])  # head weight
    np.testing.assert_allclose(f[35:42], [5.0, 0.0, 5.0, 5.0, 5.0, 5.0, 5.0])  # head bias
    assert np.all(f[42:56] == 0)  # no LayerNorm
    assert f[56] == 0 and f[57] == 0 and f[58] == 1 and f[59] == pytest.approx(np.log(2))
    assert wsl.FEATURE_NAMES[28] == "last.weight.mean" and wsl.FEATURE_NAMES[59] == "log_width"


def test_hidden_layers_are_pooled_to_one_vector_for_every_depth():
    deep = _state(0, depth=3)
    f = wsl.layer_statistics(deep, "mlp")
    assert f.shape == (60,) and f[56] == 1 and f[58] == 3
    mean_hidden = np.mean([wsl.tensor_statistics(deep[k]) for k in ("fc1.weight", "fc2.weight")], 0)
    np.testing.assert_allclose(f[14:21], mean_hidden)
    shuffled = dict(reversed(list(deep.items())))  # a shard's key order does not matter
    np.testing.assert_array_equal(wsl.layer_statistics(shuffled, "mlp"), f)
    normed = nets.build("mlp", input_shape=(1, 12), n_classes=3, width=8, depth=2, norm="layernorm", residual=True)
    g = wsl.layer_statistics(normed.state_dict(), "mlp")
    assert g[57] == 1 and g[42] == pytest.approx(1.0)  # LayerNorm weights start at 1


def test_unsupported_family_is_named():
    with pytest.raises(ZooError, match="mlp, pinn, cnn"):
        wsl.layer_statistics({"blocks.0.attn.weight": torch.zeros(2, 2)}, "gpt")
    with pytest.raises(ZooError, match="not a parameter of a mlp net"):
        wsl.layer_statistics({"conv0.weight": torch.zeros(2, 2), "head.weight": torch.zeros(2, 2)}, "mlp")


# ---- (iii) grouped splits ----------------------------------------------------------------------
def test_grouped_folds_keep_a_model_on_one_side():
    groups = np.repeat([f"m{i}" for i in range(23)], 3)  # 3 checkpoints a model
    cells = np.repeat([f"c{i // 3}" for i in range(23)], 3)  # 3 seeds a cell
    for strata in (None, cells):
        folds = wsl.grouped_folds(groups, 5, seed=1, strata=strata)
        assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(len(groups)))
        for tr, te in folds:
            assert not set(groups[tr]) & set(groups[te])
            assert len(tr) + len(te) == len(groups)
        again = wsl.grouped_folds(groups, 5, seed=1, strata=strata)
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))  # deterministic
    folds = wsl.grouped_folds(groups, 5, seed=1, strata=cells)
    for c in set(cells):  # a cell's seeds sit in different folds
        n = len(set(groups[cells == c]))
        assert len({k for k, (_, te) in enumerate(folds) if c in set(cells[te])}) == n
    with pytest.raises(ZooError, match="folds=30 is not valid for 23 models"):
        wsl.grouped_folds(groups, 30)


# ---- (v) metrics and the bootstrap -------------------------------------------------------------
def test_metrics_on_known_answers():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert wsl.regression_metrics(y, y) == {"kendall_tau": 1.0, "r2": 1.0}
    m = wsl.regression_metrics(y, np.full(4, 2.5))
    assert np.isnan(m["kendall_tau"]) and m["r2"] == 0.0
    c = wsl.classification_metrics(np.array(["a", "a", "a", "b"]), np.array(["a", "a", "a", "a"]))
    assert c == {"accuracy": 0.75, "balanced_accuracy": 0.5}


def test_bootstrap_interval_contains_the_point_and_narrows_with_more_models():
    rng = np.random.default_rng(0)

    def width(n):
        y = rng.normal(size=n)
        p = y + rng.normal(scale=0.5, size=n)
        groups = np.repeat(np.arange(n // 2), 2)  # two checkpoints a model, resampled together
        point, ci = wsl.bootstrap_metrics(wsl.regression_metrics, y, p, groups)
        for k in point:
            assert ci[k][0] <= point[k] <= ci[k][1]
        return ci["r2"][1] - ci["r2"][0]

    assert width(400) < 0.6 * width(40)
    point, ci = wsl.bootstrap_metrics(wsl.regression_metrics, np.arange(6.0), np.zeros(6), np.arange(6))
    assert ci["kendall_tau"] is None  # a constant ranks nothing in any replicate
    _, a = wsl.bootstrap_metrics(wsl.regression_metrics, np.arange(20.0), np.arange(20.0) ** 1.5, np.arange(20), seed=3)
    _, b = wsl.bootstrap_metrics(wsl.regression_metrics, np.arange(20.0), np.arange(20.0) ** 1.5, np.arange(20), seed=3)
    assert a == b  # fixed seed


# ---- (i) the predictors on a known function of the weights -----------------------------------------
def test_statistics_predictors_beat_a_constant_on_a_known_function_of_the_weights():
    states, y, label, _ = _synthetic()
    X = np.stack([wsl.layer_statistics(s, "mlp") for s in states])
    tr, te = np.arange(60), np.arange(60, 80)
    scores, cls = {}, {}
    for m in ("constant", "stats-ridge", "stats-gbm"):
        p = wsl.stats_estimator(m, "regression").fit(X[tr], y[tr]).predict(X[te])
        scores[m] = wsl.regression_metrics(y[te], p)
        q = wsl.stats_estimator(m, "classification").fit(X[tr], label[tr]).predict(X[te])
        cls[m] = wsl.classification_metrics(label[te], q)
    assert np.isnan(scores["constant"]["kendall_tau"]) and scores["constant"]["r2"] <= 0.0
    for m in ("stats-ridge", "stats-gbm"):
        assert scores[m]["kendall_tau"] > 0.5 and scores[m]["r2"] > 0.5, (m, scores[m])
        assert cls[m]["balanced_accuracy"] > cls["constant"]["balanced_accuracy"] + 0.3, (m, cls)
    with pytest.raises(ZooError, match="valid: constant, stats-ridge, stats-gbm"):
        wsl.stats_estimator("lasso", "regression")


def test_nfn_beats_a_constant_and_is_seeded():
    pytest.importorskip("nfn")
    states, y, _, _ = _synthetic(n=200)  # the NFN needs ~100+ training nets not to memorize
    p = wsl.NFNPredictor("regression", steps=300).fit(states[:150], y[:150]).predict(states[150:])
    m = wsl.regression_metrics(y[150:], p)
    assert m["kendall_tau"] > 0.5 and m["r2"] > 0.5, m  # the constant: tau undefined, R² <= 0
    short = [wsl.NFNPredictor("regression", steps=10, seed=3).fit(states[:40], y[:40]).predict(states[40:50])
             for _ in range(2)]
    np.testing.assert_array_equal(*short)  # seeded: the same predictions


def test_nfn_mixes_widths_of_one_depth_and_subsamples_wide_layers():
    pytest.importorskip("nfn")
    states = [_state(i, width=w) for i, w in enumerate([4, 8, 48, 48] * 3)]
    y = np.array(["a", "b", "c", "c"] * 3)
    clf = wsl.NFNPredictor("classification", steps=6, max_units=16).fit(states, y)
    out = clf.predict(states)
    assert out.shape == (12,) and set(out) <= {"a", "b", "c"}
    with pytest.raises(ZooError, match="one depth"):
        wsl.NFNPredictor(steps=1).fit([_state(0), _state(1, depth=3)], [0.1, 0.2])


# ---- (iv) the nfn adapter ----------------------------------------------------------------------
def test_weight_space_features_of_mlps_round_trip():
    pytest.importorskip("nfn")
    states = [_state(i) for i in range(4)]
    wsf = wsl.to_weight_space_features(states)
    assert [tuple(w.shape) for w in wsf.weights] == [(4, 1, 8, 12), (4, 1, 8, 8), (4, 1, 3, 8)]
    assert [tuple(b.shape) for b in wsf.biases] == [(4, 1, 8), (4, 1, 8), (4, 1, 3)]
    for j, s in enumerate(states):
        for i, key in enumerate(("fc0", "fc1", "head")):
            assert torch.equal(wsf.weights[i][j, 0], s[f"{key}.weight"])
            assert torch.equal(wsf.biases[i][j, 0], s[f"{key}.bias"])
    with pytest.raises(ZooError, match="another architecture"):
        wsl.to_weight_space_features([states[0], _state(0, width=4)])
    normed = nets.build("mlp", input_shape=(1, 12), n_classes=3, width=8, depth=2, norm="layernorm")
    with pytest.raises(ZooError, match="LayerNorm"):
        wsl.to_weight_space_features([normed.state_dict()])


def test_weight_space_features_of_cnns():
    pytest.importorskip("nfn")
    conv1d = nets.build("cnn", input_shape=(1, 40), n_classes=10, width=6, depth=2).state_dict()
    wsf = wsl.to_weight_space_features([conv1d, conv1d], "cnn")
    assert [tuple(w.shape) for w in wsf.weights] == [(2, 1, 6, 1, 3, 1), (2, 1, 6, 6, 3, 1), (2, 1, 10, 6)]
    assert torch.equal(wsf.weights[1][0, 0, ..., 0], conv1d["conv1.weight"])
    conv2d = nets.build("cnn", input_shape=(3, 8, 8), n_classes=10, width=4, depth=2).state_dict()
    wsf = wsl.to_weight_space_features([conv2d], "cnn")
    assert tuple(wsf.weights[0].shape) == (1, 1, 4, 3, 3, 3) and tuple(wsf.biases[0].shape) == (1, 1, 4)
    assert wsl.layer_statistics(conv2d, "cnn")[58] == 2


def test_missing_nfn_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_nfn(name, *args, **kw):
        if name == "nfn" or name.startswith("nfn."):
            raise ImportError(name)
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_nfn)
    with pytest.raises(ZooError, match=r"pip install -e '\.\[wsl\]'"):
        wsl.to_weight_space_features([_state(0)])


# ---- (vi) the study on a hand-made dataset folder ------------------------------------------------
def _toy_zoo(root: Path, n_models: int = 12, cells: bool = True, drop: tuple[str, ...] = ()) -> Path:
    """A dataset folder of tiny MLPs (two checkpoints each) whose accuracy follows fc0's scale."""
    zoo = "toy"
    rng = np.random.default_rng(0)
    rows, tensors = [], []
    for i in range(n_models):
        cell = f"T0L{i % 4}"
        for epoch in (1, 2):
            scale = 0.5 + 0.1 * i + 0.05 * epoch
            sd = {k: v.numpy() for k, v in _state(i, width=4, scale=scale).items()}
            prefix = f"m{i:02d}/{epoch}/"
            acc = float(0.3 + 0.4 * scale + rng.normal(0, 0.005))  # monotone in fc0's scale
            row = {"model_id": f"m{i:02d}", "zoo": zoo, "family": "mlp", "cell": cell, "epoch": epoch, "status": "ok",
                   "test_acc": acc, "train_acc": acc + 0.02 * scale, "tensor_prefix": prefix}
            rows.append({k: v for k, v in row.items() if k not in drop})
            tensors.append((prefix, sd))
    store.write_bundle(root, zoo, 0, "b0", rows, tensors, shard_max_mb=1.0)
    if drop:  # rewrite the rows without the dropped columns
        import pyarrow.parquet as pq

        f = store.model_files(root, zoo)[0]
        pq.write_table(pq.read_table(f).drop_columns(list(drop)), f)
    if cells:
        for j in range(4):
            store.write_cell(store.cell_file(root, zoo, f"T0L{j}"), {"zoo": zoo, "cell": f"T0L{j}", "phase": "I" if j < 2 else "II"})
    store.write_manifest(root, {"format": store.FORMAT, "zoos": {zoo: {"status": "complete"}}, "files": {}})
    return root


def test_predict_study_errors_name_what_is_missing(tmp_path):
    from pipelines.studies.predict import predict_study

    no_cells = _toy_zoo(tmp_path / "a", cells=False)
    with pytest.raises(ZooError, match=r"no phase labels; compute them with `zoo metrics .*a`"):
        predict_study(no_cells, "toy", methods=["constant"])
    no_train = _toy_zoo(tmp_path / "b", drop=("train_acc",))
    with pytest.raises(ZooError, match=r"lack the columns \['train_acc'\]; rebuild the zoo with `zoo build`"):
        predict_study(no_train, "toy", methods=["constant"])
    with pytest.raises(ZooError, match="no zoo 'other'; valid: toy"):
        predict_study(no_cells, "other")
    with pytest.raises(ZooError, match="valid: constant, stats-ridge, stats-gbm, nfn"):
        predict_study(no_cells, "toy", methods=["lasso"])


def test_predict_study_on_a_toy_zoo(tmp_path, monkeypatch):
    from pipelines.studies import predict

    monkeypatch.setattr(predict, "N_BOOT", 200)
    monkeypatch.setattr(predict, "nfn_available", lambda: False)  # the skip path, whether or not nfn is installed
    root = _toy_zoo(tmp_path)
    res = predict.predict_study(root, "toy", folds=3, methods=["constant", "stats-ridge", "nfn"])
    json.dumps(res, allow_nan=False)  # JSON-able
    assert res["rows"] == 24 and res["models"] == 12 and res["epochs"] == [1, 2]
    assert "pip install -e '.[wsl]'" in res["skipped"]["nfn"]
    acc = res["tasks"]["test_acc"]["methods"]
    assert acc["stats-ridge"]["n_models"] == 12 and acc["stats-ridge"]["n_rows"] == 24
    assert acc["stats-ridge"]["values"]["kendall_tau"] > 0.5
    assert acc["stats-ridge"]["values"]["r2"] > acc["constant"]["values"]["r2"]
    lo, hi = acc["stats-ridge"]["ci"]["r2"]
    assert lo <= acc["stats-ridge"]["values"]["r2"] <= hi
    assert set(res["tasks"]["phase"]["classes"]) == {"I", "II"}
    text = "\n".join(predict.predict_markdown(res))
    assert "| test_acc | Kendall τ |" in text and "nfn skipped" in text
