"""Graph hypernetwork (GHN-2 / GHN-3 style): a module's computation graph -> all its parameters.

    ghn = GraphHyperNetwork(GHNConfig(decoder="lowrank", n_conditions=3))
    params = ghn.predict(model, condition)             # dict[name, Tensor]: every parameter, exact shapes
    out = torch.func.functional_call(model, params, (x,))    # differentiable: train the GHN through it

The GHN never writes into `model`: it returns the parameter dict, so a training loop runs the
predicted net with torch.func.functional_call (buffers, e.g. BatchNorm statistics, come from the
module itself) and backpropagates into the GHN. Copying the dict into the module in place is the
job of hypernet.predict_init.

For one graph of N nodes (hypernet.graph.module_to_graph):
  1. node embeddings   h0 = E_op[op] + MLP(log2(1 + shape) / 8, bias flag) + W_c · condition   # (N, d)
  2. message passing   `layers` pre-LayerNorm residual blocks on PyG layers, over every forward edge
                       and its reverse, edge feature e = embedding of (direction, distance): real
                       edges (distance 1) and GHN-2's virtual shortest-path edges up to max_dist.
                         gated:       h += GRU(mean_j MLP(x_j + e_ji), x) - x,  x = LN(h)   (GHN-2's gated GNN)
                         transformer: h += TransformerConv(LN(h), e);  h += MLP(LN(h))      (graph transformer)
  3. decoding          per parameter p of node k: u = LN(h_k) + E_role[weight | bias], raw = decoder(u, shape)
                       (hypernet.decoders: tiled or lowrank), then the output scaling below.

Output scaling (GHN-2's parameter normalization, by fan-in): the raw tensor is divided by its RMS,
so its scale is set by a formula, not by whatever the decoder happens to emit:
    θ_p = offset + σ(op, shape) · s[op, role] · (1 + g(u)) · raw / rms(raw)
    σ = sqrt(2 / fan_in) for Linear / Conv (He init; fan_in = in · kernel size), embed_std for
        Embedding and free parameters (e.g. pos_embed; GPT-2's 0.02), vector_std for 1-D tensors;
    offset = 1 for norm-layer weights (BatchNorm / LayerNorm gain), else 0;
    s: a learned scale per (op, role), initialized at 1; g: a linear head initialized at 0.
So at initialization a predicted Linear/Conv weight has RMS exactly sqrt(2 / fan_in): predicted
nets are trainable from the first step. With residual=True (the residual form of "Magnitude
Invariant Parametrizations Improve Hypernetwork Learning", Gonzalez Ortiz et al. 2024) the GHN
predicts an update of a given θ0 (e.g. the model's own random init):
    θ_p = θ0_p + σ · s · (1 + g(u)) · raw / rms(raw),   s initialized at delta_init,
and delta_init = 0 returns θ0 exactly at initialization (s gets a gradient, so Δθ opens up).

Condition: a float vector of size n_conditions, the things known before training. A suggested
layout (the model is agnostic): [one-hot task id ..., log2 temperature (batch size or learning
rate), log2 load (width or data fraction)], each entry roughly centered and of unit scale. None
means the zero vector.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch_geometric.data import Data
from torch_geometric.nn import MessagePassing, TransformerConv

from huggingface_hub import PyTorchModelHubMixin

from hypernet.conditions import ConditionSpec
from hypernet.decoders import DECODERS, DecoderConfig, build_decoder
from hypernet.graph import MAX_DIMS, OPS, module_to_graph
from zoo.errors import ZooError

GNNS = ("gated", "transformer")
_NORM_OPS = frozenset({"batchnorm1d", "batchnorm2d", "layernorm"})
_SMALL_INIT_OPS = frozenset({"embedding", "param"})  # initialized with embed_std, not by fan-in
_WEIGHT, _BIAS = 0, 1  # roles


@dataclass
class GHNConfig:
    hidden: int = 64  # node embedding size d
    layers: int = 3  # message-passing blocks
    gnn: str = "gated"  # "gated" (GHN-2 gated GNN) or "transformer" (TransformerConv with edge features)
    heads: int = 4  # attention heads of the transformer blocks (hidden % heads == 0)
    max_dist: int = 5  # edges up to this forward distance are used (1 = real edges only)
    decoder: str = "tiled"  # a name in hypernet.decoders.DECODERS: "tiled" or "lowrank"
    dec_hidden: int = 64  # decoder trunk / tap feature size
    rank: int = 16  # rank r of the lowrank decoder
    max_out: int = 256  # decoder maxima (see DecoderConfig): larger dims are tiled
    max_in: int = 256
    max_kernel: int = 3
    tile: bool = True  # False: shapes beyond the maxima raise
    n_conditions: int = 0  # size of the condition vector (0 = unconditioned)
    residual: bool = False  # predict θ = θ0 + Δθ from a base θ0 (MIP residual form)
    delta_init: float = 0.0  # initial Δ scale in residual mode (0: θ = θ0 at init)
    embed_std: float = 0.02  # σ of Embedding weights and free parameters
    vector_std: float = 0.1  # σ of 1-D tensors (biases, norm weights around 1)
    conditions: dict | None = None  # hypernet.conditions.ConditionSpec.to_dict(): sets n_conditions

    def __post_init__(self):
        if self.conditions is not None:
            self.n_conditions = ConditionSpec.from_dict(self.conditions).n
        if self.gnn not in GNNS:
            raise ZooError(f"unknown gnn {self.gnn!r}; valid: {', '.join(GNNS)}")
        DECODERS.get(self.decoder)  # unknown name -> ZooError listing the valid decoders
        for k in ("hidden", "heads", "max_dist", "dec_hidden", "rank", "max_out", "max_in", "max_kernel"):
            if getattr(self, k) < 1:
                raise ZooError(f"GHNConfig.{k} must be >= 1; got {getattr(self, k)}")
        if self.layers < 0 or self.n_conditions < 0:
            raise ZooError(f"GHNConfig.layers and n_conditions must be >= 0; got {self.layers}, {self.n_conditions}")
        if self.gnn == "transformer" and self.hidden % self.heads:
            raise ZooError(f"GHNConfig.hidden ({self.hidden}) must be divisible by heads ({self.heads})")

    def decoder_config(self) -> DecoderConfig:
        return DecoderConfig(d_in=self.hidden, hidden=self.dec_hidden, max_out=self.max_out, max_in=self.max_in,
                             max_kernel=self.max_kernel, rank=self.rank, tile=self.tile)

    def to_dict(self) -> dict:
        return asdict(self)


# ---- message passing -------------------------------------------------------------------------
class GatedConv(MessagePassing):
    """GHN-2's gated graph convolution, run synchronously on all edges:
    m_i = mean_j MLP(x_j + e_ji) over incoming edges, x_i' = GRU(m_i, x_i)."""

    def __init__(self, d: int):
        super().__init__(aggr="mean")
        self.msg = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.gru = nn.GRUCell(d, d)

    def reset_parameters(self):
        super().reset_parameters()
        for m in (*self.msg, self.gru):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(self, x, edge_index, edge_emb):  # x (N, d), edge_index (2, E), edge_emb (E, d)
        m = self.propagate(edge_index, x=x, e=edge_emb)  # (N, d); 0 for a node without incoming edges
        return self.gru(m, x)  # (N, d)

    def message(self, x_j, e):  # (E, d)
        return self.msg(x_j + e)


class GatedBlock(nn.Module):
    """Pre-LN residual wrapper: h + (GRU(m, x) - x), x = LN(h): the GRU's gate decides how much changes."""

    def __init__(self, d: int):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.conv = GatedConv(d)

    def forward(self, h, edge_index, edge_emb):
        x = self.ln(h)  # (N, d)
        return h + self.conv(x, edge_index, edge_emb) - x


class TransformerBlock(nn.Module):
    """Graph transformer block: attention over graph neighbours with the edge embedding as a key/value
    bias (PyG TransformerConv), then an MLP; pre-LN residual, like a nanoGPT block."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = TransformerConv(d, d // heads, heads=heads, edge_dim=d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, h, edge_index, edge_emb):
        h = h + self.attn(self.ln1(h), edge_index, edge_emb)  # (N, d)
        return h + self.mlp(self.ln2(h))


# ---- the hypernetwork ------------------------------------------------------------------------
@dataclass
class _Param:  # one parameter to decode
    name: str
    node: int
    op: str
    role: int
    shape: tuple[int, ...]


def _params_of(data: Data) -> list[_Param]:
    """Every parameter of the graph with its shape, read from the shape encoding (as graph.validate does)."""
    out = []
    for k, names in enumerate(data.param_names):
        if not names:
            continue
        row = data.shapes[k].tolist()
        weight = tuple(d for d in row[:MAX_DIMS] if d)
        op = data.op_names[k]
        for p in names:
            is_bias = op != "param" and p.rsplit(".", 1)[-1] == "bias"
            out.append(_Param(p, k, op, _BIAS if is_bias else _WEIGHT, (weight[0],) if is_bias else weight))
    return out


def _decode_shape(p: _Param) -> tuple[int, ...]:
    """The shape asked of the decoder: a free parameter of 3+ dims, e.g. pos_embed (1, T, d), is a
    (1·T, d) matrix rather than (out, in, kernel); everything else is decoded as it is."""
    if p.op == "param" and len(p.shape) > 2:
        return (math.prod(p.shape[:-1]), p.shape[-1])
    return p.shape


def _sigma_offset(p: _Param, cfg: GHNConfig) -> tuple[float, float]:
    """(σ, offset) of a parameter at initialization (see the module docstring)."""
    if len(p.shape) <= 1:
        return cfg.vector_std, 1.0 if (p.op in _NORM_OPS and p.role == _WEIGHT) else 0.0
    if p.op in _SMALL_INIT_OPS:
        return cfg.embed_std, 0.0
    return math.sqrt(2.0 / math.prod(p.shape[1:])), 0.0


class GraphHyperNetwork(nn.Module, PyTorchModelHubMixin, library_name="weight-zoo",
                        tags=["hypernetwork", "graph-hypernetwork", "weight-space-learning"]):
    """Predicts every parameter of a network from its computation graph (and a condition vector).

    Saved and loaded with huggingface_hub's PyTorchModelHubMixin: `save_pretrained(dir)` writes
    model.safetensors + config.json (the GHNConfig), `from_pretrained(dir or Hub id)` reads them,
    `push_to_hub(repo)` publishes them.
    """

    def __init__(self, config: GHNConfig | dict | None = None):
        super().__init__()
        if isinstance(config, dict):
            config = GHNConfig(**config)
        c = self.config = config or GHNConfig()
        self.conditions = ConditionSpec.from_dict(c.conditions) if c.conditions else None
        d = c.hidden
        self.op_emb = nn.Embedding(len(OPS), d)
        self.shape_enc = nn.Sequential(nn.Linear(MAX_DIMS + 1, d), nn.GELU(), nn.Linear(d, d))
        self.cond = nn.Linear(c.n_conditions, d) if c.n_conditions else None
        self.edge_emb = nn.Embedding(2 * c.max_dist, d)  # forward distance 1..max_dist, then backward
        if c.gnn == "gated":
            self.blocks = nn.ModuleList(GatedBlock(d) for _ in range(c.layers))
        else:
            self.blocks = nn.ModuleList(TransformerBlock(d, c.heads) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(d)
        self.role_emb = nn.Embedding(2, d)  # weight | bias: the two 1-D tensors of a norm layer differ
        self.decoder = build_decoder(c.decoder, c.decoder_config())
        self.gain = nn.Linear(d, 1)  # per-parameter gain 1 + g(u), g = 0 at init
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.gain.bias)
        # s[op, role]: learned output scale (direct form) or Δ scale (residual form)
        self.out_scale = nn.Parameter(torch.full((len(OPS), 2), c.delta_init if c.residual else 1.0))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- graph -> node embeddings
    def _condition(self, condition, device, dtype) -> torch.Tensor | float:
        n = self.config.n_conditions
        if n == 0:
            if condition is not None:
                raise ZooError("this GHN takes no condition (GHNConfig.n_conditions = 0); pass condition=None")
            return 0.0
        if condition is None:
            condition = torch.zeros(n)
        condition = torch.as_tensor(condition, dtype=dtype, device=device)
        if condition.shape != (n,):
            raise ZooError(f"condition must be a float vector of size {n} (GHNConfig.n_conditions); "
                           f"got shape {tuple(condition.shape)}")
        return self.cond(condition)  # (d,)

    def _edges(self, data: Data, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward edges up to max_dist and their reverses: edge_index (2, 2E'), edge type (2E',)."""
        dist = data.edge_attr.to(device)
        keep = dist <= self.config.max_dist
        ei, dist = data.edge_index.to(device)[:, keep], dist[keep]  # (2, E'), (E',)
        edge_index = torch.cat([ei, ei.flip(0)], dim=1)  # (2, 2E')
        edge_type = torch.cat([dist - 1, dist - 1 + self.config.max_dist])  # (2E',)
        return edge_index, edge_type

    def embed(self, data: Data, condition=None) -> torch.Tensor:
        """Node embeddings after message passing, (N, d)."""
        device, dtype = self.op_emb.weight.device, self.op_emb.weight.dtype
        shapes = data.shapes.to(device, dtype)  # (N, MAX_DIMS + 1)
        feat = torch.cat([torch.log2(1.0 + shapes[:, :MAX_DIMS]) / 8.0, shapes[:, MAX_DIMS:]], 1)  # (N, 5)
        h = self.op_emb(data.x.to(device)) + self.shape_enc(feat) + self._condition(condition, device, dtype)  # (N, d)
        edge_index, edge_type = self._edges(data, device)
        e = self.edge_emb(edge_type)  # (2E', d)
        for block in self.blocks:
            h = block(h, edge_index, e)  # (N, d)
        return self.ln_f(h)

    # -- node embeddings -> parameters
    def forward(self, data: Data, condition=None, base: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Predict every parameter of the graph's module: {name: tensor of exactly its shape}.

        data: one graph from hypernet.module_to_graph. condition: (n_conditions,) floats or None.
        base: θ0 by parameter name, required when config.residual (the prediction is θ0 + Δθ).
        """
        c = self.config
        if c.residual and base is None:
            raise ZooError("a residual GHN (GHNConfig.residual=True) predicts θ0 + Δθ: pass base={name: θ0}")
        h = self.embed(data, condition)  # (N, d)
        params = _params_of(data)
        groups: dict[tuple[int, ...], list[int]] = {}  # same decode shape -> one batched decoder call
        for i, p in enumerate(params):
            groups.setdefault(_decode_shape(p), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(params)
        for shape, idx in groups.items():
            ps = [params[i] for i in idx]
            nodes = torch.tensor([p.node for p in ps], device=h.device)
            roles = torch.tensor([p.role for p in ps], device=h.device)
            ops = torch.tensor([OPS.index(p.op) for p in ps], device=h.device)
            u = h[nodes] + self.role_emb(roles)  # (n, d)
            raw = self.decoder(u, shape)  # (n, *shape)
            rms = raw.flatten(1).pow(2).mean(1).add(1e-12).sqrt()  # (n,)
            sigma = torch.tensor([_sigma_offset(p, c)[0] for p in ps], device=h.device, dtype=h.dtype)  # (n,)
            coef = sigma * self.out_scale[ops, roles] * (1.0 + self.gain(u).squeeze(-1)) / rms  # (n,)
            delta = raw * coef.view(-1, *[1] * len(shape))  # (n, *shape)
            for j, (i, p) in enumerate(zip(idx, ps)):
                d = delta[j].reshape(p.shape)
                if c.residual:
                    if p.name not in base:
                        raise ZooError(f"base has no tensor {p.name!r}; a residual GHN needs θ0 of every parameter")
                    out[i] = base[p.name].to(d) + d
                else:
                    out[i] = d + _sigma_offset(p, c)[1]
        return {p.name: t for p, t in zip(params, out)}

    def predict(self, model: nn.Module, condition=None, *, base: dict[str, torch.Tensor] | None = None,
                example_input=None) -> dict[str, torch.Tensor]:
        """Build `model`'s graph and predict its parameters (a dict; the model is not modified).

        In residual mode θ0 defaults to the model's current parameters. Run the prediction with
        torch.func.functional_call(model, params, (x,)). example_input: for modules torch.fx cannot
        trace (see module_to_graph).
        """
        data = module_to_graph(model, example_input)
        if self.config.residual and base is None:
            base = {n: p.detach() for n, p in model.named_parameters()}
        return self(data, condition, base)


__all__ = ["GHNConfig", "GNNS", "GatedBlock", "GatedConv", "GraphHyperNetwork", "TransformerBlock"]
