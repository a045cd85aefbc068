"""Weight-space learning: predict what a net does (test accuracy, generalization gap, phase) from
its weights alone. Math and adapters only: no disk, no Ray (pipelines/studies/predict.py reads a
zoo and runs the benchmark).

    X = np.stack([layer_statistics(s, "mlp") for s in states])   # (models, N_FEATURES)
    est = stats_estimator("stats-gbm", "regression").fit(X, y)   # Unterthiner et al. 2020
    wsf = to_weight_space_features(states)                        # nfn.common.WeightSpaceFeatures
    nfn = NFNPredictor("regression").fit(states, y)              # Zhou et al. 2023 (NFN), invariant
    folds = grouped_folds(model_ids, 5, seed=0, strata=cells)    # no model on both sides
    point, ci = bootstrap_metrics(regression_metrics, y, p, model_ids)

Families: mlp and pinn (fc0..fc{d-1} or res{i}.fc, optional norm{i} LayerNorms, head) and cnn
(conv0..conv{d-1}, head), see SUPPORTED. The NFN adapter maps linear and conv layers only.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from zoo.errors import ZooError

SUPPORTED = ("mlp", "pinn", "cnn")
NFN_HINT = "pip install -e '.[wsl]'"
METHODS = ("constant", "stats-ridge", "stats-gbm", "nfn")
KINDS = ("regression", "classification")
N_BOOT = 2000  # the defaults of pipelines.benchmark.stats, which zoo/ cannot import
LEVEL = 0.95

# ---- layers of a state dict -------------------------------------------------------------------
_MLP_LINEAR = re.compile(r"(?:fc(\d+)|res(\d+)\.fc)\.(weight|bias)")
_MLP_NORM = re.compile(r"(?:norm(\d+)|res(\d+)\.norm)\.(weight|bias)")
_CNN_CONV = re.compile(r"conv(\d+)\.(weight|bias)")
_HEAD = re.compile(r"head\.(weight|bias)")


@dataclass
class Layer:
    """One weight layer: weight (out, in[, k...]) and bias (out,)."""

    name: str
    weight: Tensor
    bias: Tensor | None


def _tensor(v) -> Tensor:
    return v.detach().cpu() if isinstance(v, Tensor) else torch.as_tensor(np.asarray(v))


def _require_family(family: str) -> None:
    if family not in SUPPORTED:
        raise ZooError(f"weight-space features support the families {', '.join(SUPPORTED)}; got {family!r}")


def parse_layers(state: dict, family: str) -> tuple[list[Layer], list[Layer]]:
    """(weight layers in forward order, LayerNorm layers) of a zoo net's state dict, by key name
    (zoo.nets naming), so a shard's alphabetical key order does not matter."""
    _require_family(family)
    linear: dict[int, dict[str, Tensor]] = {}
    norms: dict[int, dict[str, Tensor]] = {}
    head: dict[str, Tensor] = {}
    for key, v in state.items():
        if m := _HEAD.fullmatch(key):
            head[m[1]] = _tensor(v)
        elif family == "cnn" and (m := _CNN_CONV.fullmatch(key)):
            linear.setdefault(int(m[1]), {})[m[2]] = _tensor(v)
        elif family != "cnn" and (m := _MLP_LINEAR.fullmatch(key)):
            linear.setdefault(int(m[1] or m[2]), {})[m[3]] = _tensor(v)
        elif family != "cnn" and (m := _MLP_NORM.fullmatch(key)):
            norms.setdefault(int(m[1] or m[2]), {})[m[3]] = _tensor(v)
        else:
            raise ZooError(f"state dict key {key!r} is not a parameter of a {family} net "
                           f"(expected {'conv<i>' if family == 'cnn' else 'fc<i> / res<i>.fc / norm<i>'} or head)")
    if "weight" not in head:
        raise ZooError(f"{family} state dict has no head.weight; keys: {sorted(state)[:6]}")
    idx = sorted(linear)
    if idx != list(range(len(idx))) or any("weight" not in linear[i] for i in idx):
        raise ZooError(f"{family} state dict: hidden layers {idx} are not numbered 0..{len(idx) - 1} with weights")
    prefix = "conv" if family == "cnn" else "fc"
    layers = [Layer(f"{prefix}{i}", linear[i]["weight"], linear[i].get("bias")) for i in idx]
    layers.append(Layer("head", head["weight"], head.get("bias")))
    normed = [Layer(f"norm{i}", norms[i]["weight"], norms[i].get("bias")) for i in sorted(norms)]
    return layers, normed


# ---- Unterthiner et al. 2020: per-layer statistics ---------------------------------------------
STATS = ("mean", "var", "q0", "q25", "q50", "q75", "q100")
BLOCKS = ("first", "hidden", "last", "norm")  # roles, each a weight and a bias statistics block
FEATURE_NAMES: tuple[str, ...] = (
    *(f"{role}.{p}.{s}" for role in BLOCKS for p in ("weight", "bias") for s in STATS),
    "has_hidden", "has_norm", "depth", "log_width",
)
N_FEATURES = len(FEATURE_NAMES)  # 4 roles x 2 tensors x 7 statistics + 4 = 60


def tensor_statistics(t: Tensor | np.ndarray | None) -> np.ndarray:
    """(7,) mean, variance (population, ddof=0) and the 0/25/50/75/100% quantiles (linear
    interpolation) of a tensor's entries; zeros for a missing tensor (a layer without bias)."""
    if t is None:
        return np.zeros(len(STATS))
    x = np.asarray(t, dtype=np.float64).ravel()
    return np.concatenate([[x.mean(), x.var()], np.quantile(x, [0.0, 0.25, 0.5, 0.75, 1.0])])


def _block(layers: list[Layer]) -> np.ndarray:
    """(14,) the weight then the bias statistics, averaged over `layers` (zeros if none)."""
    if not layers:
        return np.zeros(2 * len(STATS))
    return np.mean([np.concatenate([tensor_statistics(la.weight), tensor_statistics(la.bias)]) for la in layers], 0)


def layer_statistics(state: dict, family: str = "mlp") -> np.ndarray:
    """Unterthiner et al.'s features of one net as a fixed-size (N_FEATURES,) float64 vector,
    the same layout for every depth (names in FEATURE_NAMES):

        [ 0:14]  first layer  (fc0 / conv0): weight stats (7), bias stats (7)
        [14:28]  hidden layers (fc1..fc{d-1}): the mean of their stats; zeros when d < 2
        [28:42]  last layer (head); for depth 0 the head is first and last
        [42:56]  LayerNorms (mlp norm=layernorm): the mean of their stats; zeros without
        [56]     has_hidden (1 if d >= 2)     [57] has_norm
        [58]     depth d (layers before the head)
        [59]     log mean width of those layers (out features / channels; 0 for depth 0)

    stats = mean, var, q0, q25, q50, q75, q100 of the tensor's entries (STATS).
    """
    layers, norms = parse_layers(state, family)
    body = layers[:-1]
    hidden = layers[1:-1]
    widths = [la.weight.shape[0] for la in body]
    return np.concatenate([
        _block(layers[:1]), _block(hidden), _block(layers[-1:]), _block(norms),
        [float(bool(hidden)), float(bool(norms)), float(len(body)),
         math.log(float(np.mean(widths))) if widths else 0.0],
    ])


def depth_of(state: dict, family: str = "mlp") -> int:
    """Number of weight layers before the head (the mlp/cnn `depth` knob)."""
    return len(parse_layers(state, family)[0]) - 1


# ---- the nfn adapter -------------------------------------------------------------------------
def _nfn():
    try:
        import nfn.common
        import nfn.layers  # noqa: F401
    except ImportError:
        raise ZooError(f"the NFN method needs the `nfn` package: {NFN_HINT}") from None
    return nfn


def signature(state: dict, family: str = "mlp") -> tuple:
    """The shapes of a net's weight layers: states with one signature batch into one
    WeightSpaceFeatures."""
    layers, norms = parse_layers(state, family)
    return tuple((tuple(la.weight.shape), la.bias is not None) for la in layers) + (len(norms),)


def to_weight_space_features(states: Sequence[dict], family: str = "mlp"):
    """States of one architecture as nfn.common.WeightSpaceFeatures (one channel):

        linear weight (out, in)        -> (B, 1, out, in)
        conv1d weight (out, in, k)     -> (B, 1, out, in, k, 1)
        conv2d weight (out, in, kh, kw) -> (B, 1, out, in, kh, kw)
        bias (out,)                    -> (B, 1, out)        (zeros when a layer has none)

    The cnn's global average pool before its head keeps the channel permutation symmetry, so the
    conv layers and the head form one NFN weight space. LayerNorm parameters have no NFN slot:
    such nets raise a ZooError."""
    nfn = _nfn()
    if not states:
        raise ZooError("to_weight_space_features needs at least one state dict")
    sig = signature(states[0], family)
    weights: list[list[Tensor]] = []
    biases: list[list[Tensor]] = []
    for j, s in enumerate(states):
        if signature(s, family) != sig:
            raise ZooError(f"state {j} has another architecture than state 0 ({signature(s, family)} vs {sig}); "
                           "batch one architecture at a time")
        layers, norms = parse_layers(s, family)
        if norms:
            raise ZooError(f"{family} nets with LayerNorm ({norms[0].name}) have no NFN weight-space layout; "
                           "supported: linear and conv layers without norms")
        if not weights:
            weights, biases = [[] for _ in layers], [[] for _ in layers]
        for i, la in enumerate(layers):
            w = la.weight.float()
            if w.dim() == 3:
                w = w.unsqueeze(-1)  # conv1d kernel as (k, 1)
            if w.dim() not in (2, 4):
                raise ZooError(f"{la.name}.weight has shape {tuple(la.weight.shape)}; supported: linear (2-d), conv (3-d/4-d)")
            weights[i].append(w)
            biases[i].append(la.bias.float() if la.bias is not None else torch.zeros(w.shape[0]))
    return nfn.common.WeightSpaceFeatures([torch.stack(w)[:, None] for w in weights],
                                          [torch.stack(b)[:, None] for b in biases])


# ---- the invariant NFN ----------------------------------------------------------------------
class InvariantNFN(nn.Module):
    """Zhou et al.'s invariant NFN: `n_layers` equivariant layers with ReLU, an invariant pool,
    then an MLP head (one hidden layer). layer / pool "hnp" (HNPLinear / HNPPool: only hidden
    units permute, inputs and classes keep their identity) or "np" (NPLinear / NPPool: every
    dimension permutes); a head-only net (one layer) always takes the np ones. `n_extra`
    scalars (the log hidden widths, which the pooled means do not see) join the pool's output.
    The default, one 16-channel HNP layer, fits ~200 nets in ~7 s on 2 CPU cores; a second
    layer (c -> c) costs ~2-3x. With under ~100 training nets the HNP pool's per-input
    features can memorize (tests/test_wsl.py uses 150)."""

    def __init__(self, network_spec, n_out: int, channels: int = 16, n_layers: int = 1, hidden: int = 64,
                 n_extra: int = 0, layer: str = "hnp", pool: str = "hnp"):
        super().__init__()
        from nfn.layers import HNPLinear, HNPPool, NPLinear, NPPool, TupleOp

        for name, v in (("layer", layer), ("pool", pool)):
            if v not in ("hnp", "np"):
                raise ZooError(f"InvariantNFN {name} {v!r} is not valid; valid: hnp, np")
        hnp_ok = len(network_spec) >= 2  # HNPLinear / HNPPool need a first and a distinct last layer
        equiv = HNPLinear if layer == "hnp" and hnp_ok else NPLinear
        pooling = HNPPool if pool == "hnp" and hnp_ok else NPPool
        mods: list[nn.Module] = []
        for i in range(n_layers):
            mods += [equiv(network_spec, 1 if i == 0 else channels, channels), TupleOp(nn.ReLU())]
        self.body = nn.Sequential(*mods)
        self.pool = pooling(network_spec)
        n_pool = pooling.get_num_outs(network_spec) * channels
        self.head = nn.Sequential(nn.Linear(n_pool + n_extra, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, wsfeat, extra: Tensor | None = None) -> Tensor:
        z = self.pool(self.body(wsfeat)).flatten(1)  # (B, channels * pool outputs)
        if extra is not None:
            z = torch.cat([z, extra], dim=1)
        return self.head(z)  # (B, n_out)


class NFNPredictor:
    """Fit / predict an InvariantNFN on state dicts of one depth (any widths: a batch holds one
    architecture, the NFN's parameters do not depend on hidden widths).

    Inputs are normalized per layer position as the NFN paper does: each weight and bias tensor
    minus the training set's mean of that layer's entries, over their std (a scalar per tensor
    keeps every permutation symmetry). Regression targets are standardized; classification
    uses cross-entropy over the training labels. Adam for a fixed number of `steps` (not
    epochs: a small depth group gets as many updates as a large one), fixed seed,
    deterministic on CPU.

    Cost: an equivariant layer holds (B, channels, out, in) activations, so a 256x256 hidden
    layer costs 16x a 64x64 one. A layer wider than `max_units` hidden units is seen through a
    random subset of them (the same subset for the rows of the layer that makes the units and
    the columns of the layer that reads them, i.e. a sub-network), redrawn every batch; at
    prediction the outputs of `draws` subsets are averaged. The NFN's row/column means are then
    unbiased estimates of the full net's; the true log hidden widths are fed beside the pool."""

    def __init__(self, kind: str = "regression", *, family: str = "mlp", channels: int = 16, n_layers: int = 1,
                 hidden: int = 64, layer: str = "hnp", pool: str = "hnp", steps: int = 300, batch_size: int = 32,
                 lr: float = 1e-3, weight_decay: float = 1e-4, max_units: int | None = 32, draws: int = 4,
                 seed: int = 0):
        if kind not in KINDS:
            raise ZooError(f"NFNPredictor kind {kind!r} is not valid; valid: {', '.join(KINDS)}")
        self.kind, self.family, self.seed = kind, family, seed
        self.arch = dict(channels=channels, n_layers=n_layers, hidden=hidden, layer=layer, pool=pool)
        self.steps, self.batch_size, self.lr, self.weight_decay = steps, batch_size, lr, weight_decay
        self.max_units, self.draws = max_units, draws

    def config(self) -> dict:
        return {"kind": self.kind, **self.arch, "steps": self.steps, "batch_size": self.batch_size,
                "lr": self.lr, "weight_decay": self.weight_decay, "max_units": self.max_units,
                "draws": self.draws, "seed": self.seed}

    # -- data
    def _groups(self, states: Sequence[dict]) -> list[tuple[np.ndarray, object, Tensor]]:
        """[(indices, WeightSpaceFeatures, log hidden widths (B, L-1))] per architecture."""
        by_sig: dict[tuple, list[int]] = {}
        for i, s in enumerate(states):
            by_sig.setdefault(signature(s, self.family), []).append(i)
        out = []
        for sig, idx in sorted(by_sig.items(), key=lambda kv: kv[1][0]):
            wsf = to_weight_space_features([states[i] for i in idx], self.family)
            widths = torch.tensor([math.log(w[0][0]) for w in sig[:-2]], dtype=torch.float32)
            out.append((np.asarray(idx), wsf, widths.expand(len(idx), -1)))
        return out

    def _normalize(self, wsf):
        ws = [(w - m) / s for w, (m, s) in zip(wsf.weights, self._wstats)]
        bs = [(b - m) / s for b, (m, s) in zip(wsf.biases, self._bstats)]
        return type(wsf)(ws, bs)

    @staticmethod
    def _moments(tensors: list[Tensor]) -> tuple[float, float]:
        n = sum(t.numel() for t in tensors)
        mean = sum(float(t.double().sum()) for t in tensors) / n
        var = sum(float(((t.double() - mean) ** 2).sum()) for t in tensors) / n
        std = math.sqrt(var)
        return mean, std if std > 1e-12 else 1.0

    def _batch(self, wsf, sel: Tensor, gen: torch.Generator | None):
        """Rows `sel` of `wsf`; with `gen`, hidden layers wider than max_units cut to a random
        subset of max_units units (weights (B, C, out, in, ...): rows of layer i and columns of
        layer i+1 by the same subset)."""
        ws, bs = [w[sel] for w in wsf.weights], [b[sel] for b in wsf.biases]
        if gen is not None and self.max_units:
            for i in range(len(ws) - 1):
                n = ws[i].shape[2]
                if n > self.max_units:
                    keep = torch.randperm(n, generator=gen)[: self.max_units].sort().values
                    ws[i], bs[i] = ws[i][:, :, keep], bs[i][:, :, keep]
                    ws[i + 1] = ws[i + 1][:, :, :, keep]
        return type(wsf)(ws, bs)

    def _subsampled(self, wsf) -> bool:
        return bool(self.max_units) and any(w.shape[2] > self.max_units for w in wsf.weights[:-1])

    # -- fit / predict
    def fit(self, states: Sequence[dict], y: Sequence) -> NFNPredictor:
        from nfn.common import network_spec_from_wsfeat

        groups = self._groups(states)
        depths = {len(g[1]) for g in groups}
        if len(depths) != 1:
            raise ZooError(f"NFNPredictor fits nets of one depth; got {sorted(d - 1 for d in depths)}: fit per depth")
        n_tensors = depths.pop()
        self._wstats = [self._moments([g[1].weights[i] for g in groups]) for i in range(n_tensors)]
        self._bstats = [self._moments([g[1].biases[i] for g in groups]) for i in range(n_tensors)]
        groups = [(idx, self._normalize(wsf), ex) for idx, wsf, ex in groups]
        extra = torch.cat([g[2] for g in groups])
        std = extra.std(0, unbiased=False) if extra.shape[1] else torch.ones(0)  # (L-1,); none for depth 0
        self._emean, self._estd = extra.mean(0), torch.where(std > 1e-6, std, torch.ones_like(std))
        y = np.asarray(y)
        if self.kind == "regression":
            yt = torch.as_tensor(y, dtype=torch.float32)
            self._ymean, self._ystd = float(yt.mean()), float(yt.std(unbiased=False)) or 1.0
            target = (yt - self._ymean) / self._ystd
            n_out = 1
        else:
            self.classes_ = np.unique(y)
            target = torch.as_tensor(np.searchsorted(self.classes_, y), dtype=torch.long)
            n_out = len(self.classes_)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = InvariantNFN(network_spec_from_wsfeat(groups[0][1]), n_out,
                                      n_extra=extra.shape[1], **self.arch)
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.model.train()
        step = 0
        while step < self.steps:  # epochs of shuffled batches (one architecture each) until `steps`
            batches = []
            for gi, (idx, _, _) in enumerate(groups):
                perm = torch.randperm(len(idx), generator=gen)
                batches += [(gi, perm[k:k + self.batch_size]) for k in range(0, len(idx), self.batch_size)]
            for b in torch.randperm(len(batches), generator=gen).tolist()[: self.steps - step]:
                step += 1
                gi, sel = batches[b]
                idx, wsf, ex = groups[gi]
                out = self.model(self._batch(wsf, sel, gen), (ex[sel] - self._emean) / self._estd)
                tgt = target[torch.as_tensor(idx)[sel]]
                if self.kind == "regression":
                    loss = nn.functional.mse_loss(out[:, 0], tgt)
                else:
                    loss = nn.functional.cross_entropy(out, tgt)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.model.eval()
        return self

    @torch.no_grad()
    def predict(self, states: Sequence[dict]) -> np.ndarray:
        """(n,) predicted values, or class labels (the training labels' dtype)."""
        gen = torch.Generator().manual_seed(self.seed + 1)
        score = None  # (n,) standardized value or (n, classes) probabilities
        for idx, wsf, ex in self._groups(states):
            wsf = self._normalize(wsf)
            draws = self.draws if self._subsampled(wsf) else 1
            for k in range(0, len(idx), 64):
                sel = torch.arange(k, min(k + 64, len(idx)))
                e = (ex[sel] - self._emean) / self._estd
                z = torch.stack([self.model(self._batch(wsf, sel, gen if draws > 1 else None), e)
                                 for _ in range(draws)])  # (draws, b, n_out)
                z = z[..., 0].mean(0) if self.kind == "regression" else z.softmax(-1).mean(0)
                if score is None:
                    score = torch.empty((len(states), *z.shape[1:]))
                score[torch.as_tensor(idx)[sel]] = z
        if self.kind == "regression":
            return (score * self._ystd + self._ymean).numpy().astype(np.float64)
        return self.classes_[score.argmax(1).numpy()]


# ---- the baselines on statistics ---------------------------------------------------------------
def stats_estimator(method: str, kind: str, seed: int = 0):
    """A fresh scikit-learn estimator for a baseline on layer_statistics features:

    constant     training mean / majority class
    stats-ridge  standardized features -> Ridge / RidgeClassifier (alpha 1)
    stats-gbm    HistGradientBoosting{Regressor,Classifier} (Unterthiner's GBM), random_state=seed
    """
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind not in KINDS:
        raise ZooError(f"task kind {kind!r} is not valid; valid: {', '.join(KINDS)}")
    reg = kind == "regression"
    if method == "constant":
        return DummyRegressor(strategy="mean") if reg else DummyClassifier(strategy="most_frequent")
    if method == "stats-ridge":
        return make_pipeline(StandardScaler(), Ridge(alpha=1.0) if reg else RidgeClassifier(alpha=1.0))
    if method == "stats-gbm":
        gbm = HistGradientBoostingRegressor if reg else HistGradientBoostingClassifier
        return gbm(max_iter=200, learning_rate=0.05, min_samples_leaf=10, random_state=seed)
    valid = [m for m in METHODS if m != "nfn"]
    raise ZooError(f"statistics method {method!r} is not valid; valid: {', '.join(valid)} (and nfn via NFNPredictor)")


# ---- splits ------------------------------------------------------------------------------------
def grouped_folds(groups: Sequence, folds: int = 5, seed: int = 0,
                  strata: Sequence | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds of row indices, grouped: every row of a model (`groups`: its model id) is on one
    side, so no checkpoint of a test model is trained on. Models are shuffled from `seed` and
    dealt to the folds in turn; with `strata` (a row's cell) the dealing goes stratum by
    stratum, so a cell's seeds land in different folds and every fold trains on most cells.
    Returns [(train_idx, test_idx)] per fold."""
    groups = np.asarray(groups)
    ids = list(dict.fromkeys(groups.tolist()))  # first-seen order, then a seeded shuffle
    if not 2 <= folds <= len(ids):
        raise ZooError(f"folds={folds} is not valid for {len(ids)} models; valid: 2..{len(ids)}")
    rng = np.random.default_rng(seed)
    ids = [ids[i] for i in rng.permutation(len(ids))]
    if strata is not None:
        stratum_of = dict(zip(groups.tolist(), np.asarray(strata).tolist()))
        order = {s: i for i, s in enumerate(rng.permutation(sorted(set(stratum_of.values()), key=str)).tolist())}
        ids = sorted(ids, key=lambda m: order[stratum_of[m]])  # stable: the shuffle holds inside a stratum
    fold_of = {m: k % folds for k, m in enumerate(ids)}
    assign = np.array([fold_of[g] for g in groups.tolist()])
    return [(np.flatnonzero(assign != k), np.flatnonzero(assign == k)) for k in range(folds)]


# ---- metrics -----------------------------------------------------------------------------------
def kendall_tau(y: np.ndarray, p: np.ndarray) -> float:
    """Kendall's tau-b; NaN when either side is constant (a constant predictor ranks nothing)."""
    from scipy.stats import kendalltau

    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(kendalltau(y, p).statistic)


def r2(y: np.ndarray, p: np.ndarray) -> float:
    """1 - SS_res / SS_tot (NaN when y is constant)."""
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - p) ** 2).sum()) / ss if ss > 0 else float("nan")


def regression_metrics(y, p) -> dict[str, float]:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return {"kendall_tau": kendall_tau(y, p), "r2": r2(y, p)}


def classification_metrics(y, p) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean recall over the classes present in y)."""
    y, p = np.asarray(y), np.asarray(p)
    recalls = [float((p[y == c] == c).mean()) for c in np.unique(y)]
    return {"accuracy": float((y == p).mean()), "balanced_accuracy": float(np.mean(recalls))}


def bootstrap_metrics(metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]], y, p, groups,
                      n_boot: int = N_BOOT, level: float = LEVEL,
                      seed: int = 0) -> tuple[dict[str, float], dict[str, list[float] | None]]:
    """(point values, percentile intervals [lo, hi]) of metric_fn over test models: each
    replicate draws the models with replacement and takes all rows (checkpoints) of each drawn
    model. An interval is None when no replicate gives a finite value."""
    y, p, groups = np.asarray(y), np.asarray(p), np.asarray(groups)
    point = metric_fn(y, p)
    _, inv = np.unique(groups, return_inverse=True)
    rows = [np.flatnonzero(inv == g) for g in range(inv.max() + 1)]
    draws = np.random.default_rng(seed).integers(0, len(rows), size=(n_boot, len(rows)))
    reps = {k: np.empty(n_boot) for k in point}
    for b in range(n_boot):
        idx = np.concatenate([rows[g] for g in draws[b]])
        for k, v in metric_fn(y[idx], p[idx]).items():
            reps[k][b] = v
    a = (1 - level) / 2
    ci = {}
    for k, r in reps.items():
        r = r[np.isfinite(r)]
        ci[k] = [float(v) for v in np.quantile(r, [a, 1 - a])] if len(r) else None
    return point, ci
