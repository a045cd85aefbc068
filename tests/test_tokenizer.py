"""hypernet.tokenizer: bitwise round trips on the six families (pooled over widths), the layout by
hand, module vs name inference of kinds, standardization, JSON round trip, the token-level effect
of permuting hidden units, and error messages."""
from __future__ import annotations

import json
import math

import pytest
import torch

import zoo.nets as N
from hypernet.tokenizer import KINDS, TokenLayout, WeightTokenizer
from zoo.errors import ZooError

# Input shapes of the tasks, given directly so that the tests do not generate the data sets:
# mnist1d (1, 40) / 10 classes, digits (1, 8, 8) / 10, pydoc (T=32,) / vocabulary 97, convection (t, x) -> u.
MNIST1D = {"input_shape": (1, 40), "n_classes": 10}
DIGITS = {"input_shape": (1, 8, 8), "n_classes": 10}
PYDOC = {"input_shape": (32,), "n_classes": 97}
CONVECTION = {"input_shape": (2,), "n_classes": 1}

FAMILIES = {  # family -> (task shapes, knobs, widths fitted together)
    "mlp": (MNIST1D, {"depth": 2}, (4, 8)),
    "cnn": (MNIST1D, {"depth": 2}, (4, 8)),
    "resnet": (MNIST1D, {}, (4, 8)),
    "vit": (DIGITS, {"depth": 1, "heads": 2, "patch": 2, "mlp_ratio": 2}, (8, 16)),
    "gpt": (PYDOC, {"depth": 1, "heads": 2, "mlp_ratio": 2}, (8, 16)),
    "pinn": (CONVECTION, {"depth": 2}, (4, 8)),
}
SEEDS = (0, 1, 2)


def build(family: str, width: int, seed: int = 0):
    shapes, knobs, _ = FAMILIES[family]
    return N.init_(N.build(family, **shapes, width=width, **knobs), seed)


def params(net) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def trained_like(state: dict[str, torch.Tensor], seed: int, offset: float = 0.01) -> dict[str, torch.Tensor]:
    """An init moved by seeded noise with an offset: nonzero means, no constant kinds."""
    g = torch.Generator().manual_seed(1000 + seed)
    return {n: t + 0.05 * torch.randn(t.shape, generator=g) + offset for n, t in state.items()}


def population(family: str, ts: int = 16):
    """Init states of every width and seed, plus trained-like copies: (states, layouts, nets)."""
    states, layouts, nets = [], [], []
    for w in FAMILIES[family][2]:
        for seed in SEEDS:
            net = build(family, w, seed)
            lay = TokenLayout.of(net, ts)
            for st in (params(net), trained_like(params(net), seed)):
                states.append(st), layouts.append(lay), nets.append(net)
    return states, layouts, nets


# -- round trips
@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_bitwise_pooled_over_widths(family):
    states, layouts, nets = population(family)
    tok = WeightTokenizer(16).fit(states, layouts)
    keys = [{tok.stat_key(s) for s in lay.segments} for lay in layouts]
    assert all(k == keys[0] for k in keys)  # both widths use the same stat keys ...
    assert set(tok.stats) == keys[0]  # ... and they are all the tokenizer knows
    for st, lay, net in zip(states, layouts, nets):
        x = tok.encode(st, lay)
        assert x.shape == (lay.n_tokens, 16) and x.dtype == torch.float64
        # buffers (BatchNorm running stats) in the state are ignored; only parameters come back
        full = {**dict(net.named_buffers()), **st}
        assert torch.equal(tok.encode(full, lay), x)
        out = tok.decode(x, lay)
        assert list(out) == [n for n, _ in net.named_parameters()]
        for n, t in st.items():
            assert out[n].dtype == torch.float32 and out[n].shape == t.shape
            assert torch.equal(out[n], t), n


def test_zero_values_exact_with_nonzero_mean():
    """Zero biases of an init, encoded with statistics of trained-like nets (mean != 0), come back as 0."""
    inits = [build("mlp", w, seed) for w in (4, 8) for seed in SEEDS]
    layouts = [TokenLayout.of(net, 16) for net in inits]
    tok = WeightTokenizer(16).fit([trained_like(params(n), i, offset=0.3) for i, n in enumerate(inits)], layouts)
    assert all(m > 0.2 for k, (m, _) in tok.stats.items() if k.endswith(":bias"))
    for net, lay in zip(inits, layouts):  # inits: zero biases
        st = params(net)
        out = tok.decode(tok.encode(st, lay), lay)
        assert all(torch.equal(out[n], t) for n, t in st.items())
        assert not out["fc0.bias"].any()


def test_exact_over_many_statistics():
    """Zeros and ordinary values survive for 200 random (mean, std); the textbook (x - m) / s * s + m
    in float64 would turn some zeros into tiny nonzero float32 values."""
    g = torch.Generator().manual_seed(0)
    ms = torch.randn(200, generator=g, dtype=torch.float64) * 0.1
    ss = torch.rand(200, generator=g, dtype=torch.float64) * 0.3 + 1e-3
    lay = TokenLayout.of({"w": (64,)}, 16)
    naive_exact = True
    for m, s in zip(ms.tolist(), ss.tolist()):
        x = torch.cat([torch.zeros(8), (torch.randn(56, generator=g) * s + m).float()])
        tok = WeightTokenizer(16, {"0:free": (m, s)})
        assert torch.equal(tok.decode(tok.encode({"w": x}, lay), lay)["w"], x)
        naive_exact &= torch.equal((((x.double() - m) / s) * s + m).float(), x)
    assert not naive_exact


def test_decoded_state_loads_into_net():
    net = build("resnet", 4, 0)
    lay = TokenLayout.of(net, 8)
    tok = WeightTokenizer(8).fit([params(net)], [lay])
    other = build("resnet", 4, 1)
    other.load_state_dict(tok.decode(tok.encode(net.state_dict(), lay), lay), strict=False)
    x = torch.randn(3, 1, 40, generator=torch.Generator().manual_seed(0))
    net.eval(), other.eval()
    assert torch.equal(net(x), other(x))


# -- layout
def test_layout_by_hand_mlp():
    net = build("mlp", 8)
    lay = TokenLayout.of(net, 16)
    # fc0.weight 8 rows x ceil(40/16)=3; fc0.bias 1 row of 8 -> 1; fc1.weight 8 x 1; fc1.bias 1;
    # head.weight 10 x 1; head.bias 1 row of 10 -> 1
    want = [("fc0.weight", 24, 40, 0, "linear_weight"), ("fc0.bias", 1, 8, 0, "bias"),
            ("fc1.weight", 8, 8, 1, "linear_weight"), ("fc1.bias", 1, 8, 1, "bias"),
            ("head.weight", 10, 8, 2, "linear_weight"), ("head.bias", 1, 10, 2, "bias")]
    start = 0
    for seg, (name, n_tok, row_len, layer, kind) in zip(lay.segments, want, strict=True):
        assert (seg.name, seg.n_tokens, seg.row_len, seg.layer, KINDS[seg.kind], seg.start) == (
            name, n_tok, row_len, layer, kind, start)
        start += n_tok
    assert lay.n_tokens == 45 == start and lay.token_size == 16

    ids = lay.ids()
    assert ids.shape == (45, 4) and ids.dtype == torch.long
    fc0 = ids[:24]
    assert (fc0[:, 0] == 0).all() and (fc0[:, 1] == KINDS.index("linear_weight")).all()
    assert fc0[:, 2].tolist() == [r for r in range(8) for _ in range(3)]  # row
    assert fc0[:, 3].tolist() == [0, 1, 2] * 8  # chunk
    assert ids[24].tolist() == [0, KINDS.index("bias"), 0, 0]
    assert ids[34:44, 2].tolist() == list(range(10)) and (ids[34:44, 3] == 0).all()
    assert ids[44].tolist() == [2, KINDS.index("bias"), 0, 0]

    mask = WeightTokenizer(16).mask(lay)
    assert mask.shape == (45, 16) and mask.dtype == torch.bool
    assert int(mask.sum()) == N.n_params(net) == sum(math.prod(s.shape) for s in lay.segments)
    for seg in lay.segments:
        assert int(mask[seg.start:seg.start + seg.n_tokens].sum()) == math.prod(seg.shape)
    assert mask[2].sum() == 40 - 32 and mask[2, :8].all()  # fc0 row 0, last chunk: 8 values then padding
    assert mask[24].sum() == 8  # fc0.bias: 8 of 16


def test_layout_cutting_rules():
    res = {s.name: s for s in TokenLayout.of(build("resnet", 4), 5).segments}
    conv = res["stage1.0.conv1.weight"]  # (8, 4, 3): 8 rows of 12 -> 3 tokens each
    assert (conv.shape, conv.row_len, conv.n_tokens, KINDS[conv.kind]) == ((8, 4, 3), 12, 24, "conv_weight")
    assert KINDS[res["bn.weight"].kind] == "norm_weight" and KINDS[res["bn.bias"].kind] == "norm_bias"
    assert not any("running" in n or "num_batches" in n for n in res)  # buffers are not tokenized
    assert [s.layer for s in res.values()][:4] == [0, 1, 1, 2]  # stem, bn (w, b), stage0.0.conv1

    gpt = {s.name: s for s in TokenLayout.of(build("gpt", 16), 8).segments}
    pos = gpt["pos_embed"]  # (1, 32, 16) -> 32 rows of 16
    assert (KINDS[pos.kind], pos.row_len, pos.n_rows, pos.n_tokens, pos.layer) == ("free", 16, 32, 64, 0)
    assert KINDS[gpt["tok_embed.weight"].kind] == "embedding" and gpt["tok_embed.weight"].n_rows == 97
    assert KINDS[gpt["blocks.0.ln1.weight"].kind] == "norm_weight"
    vit = {s.name: s for s in TokenLayout.of(build("vit", 16), 8).segments}
    assert KINDS[vit["embed.weight"].kind] == "linear_weight"  # a Linear named "embed" is not an embedding


@pytest.mark.parametrize("family", list(FAMILIES))
def test_layout_from_shapes_matches_module(family):
    net = build(family, FAMILIES[family][2][0])
    shapes = {n: tuple(p.shape) for n, p in net.named_parameters()}
    assert TokenLayout.of(shapes, 7) == TokenLayout.of(net, 7)
    assert TokenLayout.of(params(net), 7) == TokenLayout.of(net, 7)  # tensors are read as their shapes


# -- statistics
@pytest.mark.parametrize("family", ["mlp", "resnet", "gpt"])
def test_standardized_tokens_and_padding(family):
    states, layouts, _ = population(family)
    states, layouts = states[1::2], layouts[1::2]  # trained-like: no constant kind
    tok = WeightTokenizer(16).fit(states, layouts)
    pooled: dict[str, list[torch.Tensor]] = {}
    for st, lay in zip(states, layouts):
        x, mask = tok.encode(st, lay), tok.mask(lay)
        assert (x[~mask] == 0).all()  # padding exactly 0
        for seg in lay.segments:
            sl = slice(seg.start, seg.start + seg.n_tokens)
            pooled.setdefault(tok.stat_key(seg), []).append(x[sl][mask[sl]])
    assert set(pooled) == set(tok.stats)
    for key, vals in pooled.items():
        v = torch.cat(vals)
        assert abs(float(v.mean())) < 1e-9, key
        assert abs(float(v.std(correction=0)) - 1) < 1e-9, key


def test_pooled_statistics_by_hand():
    """mlp widths 4 and 8 share every key; the pooled mean / std is that of all values together."""
    a, b = build("mlp", 4, 0), build("mlp", 8, 1)
    la, lb = TokenLayout.of(a, 16), TokenLayout.of(b, 16)
    sa, sb = trained_like(params(a), 0), trained_like(params(b), 1)
    tok = WeightTokenizer(16).fit([sa, sb], [la, lb])
    assert sorted(tok.stats) == ["0:bias", "0:linear_weight", "1:bias", "1:linear_weight", "2:bias", "2:linear_weight"]
    v = torch.cat([sa["fc1.weight"].double().flatten(), sb["fc1.weight"].double().flatten()])
    m, s = tok.stats["1:linear_weight"]
    assert m == pytest.approx(float(v.mean()), abs=1e-15) and s == pytest.approx(float(v.std(correction=0)), rel=1e-12)
    # a constant kind (zero biases at init) gets std 1.0; LayerNorm weights of 1 get (1.0, 1.0)
    init = WeightTokenizer(16).fit([params(a), params(b)], [la, lb])
    assert init.stats["0:bias"] == (0.0, 1.0)
    vit = build("vit", 8)
    lv = TokenLayout.of(vit, 16)
    tv = WeightTokenizer(16).fit([params(vit)], [lv])
    ln = next(s for s in lv.segments if s.name == "blocks.0.ln1.weight")
    assert tv.stats[tv.stat_key(ln)] == (1.0, 1.0)
    x = tv.encode(params(vit), lv)
    assert not x[ln.start].any()  # standardized to 0


def test_dict_round_trip_json():
    states, layouts, _ = population("cnn")
    tok = WeightTokenizer(16).fit(states, layouts)
    text = json.dumps(tok.to_dict())
    tok2 = WeightTokenizer.from_dict(json.loads(text))
    assert tok2.token_size == 16 and tok2.stats == tok.stats
    for st, lay in zip(states, layouts):
        assert torch.equal(tok2.encode(st, lay), tok.encode(st, lay))


# -- symmetry
@pytest.mark.parametrize("ts", [16, 1])
def test_hidden_unit_permutation_permutes_token_rows(ts):
    net = build("mlp", 8, 0)
    lay = TokenLayout.of(net, ts)
    st = trained_like(params(net), 0)
    tok = WeightTokenizer(ts).fit([st], [lay])
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    st2 = dict(st)
    st2["fc0.weight"], st2["fc0.bias"] = st["fc0.weight"][perm], st["fc0.bias"][perm]
    st2["fc1.weight"] = st["fc1.weight"][:, perm]
    x1, x2 = tok.encode(st, lay), tok.encode(st2, lay)
    seg = {s.name: s for s in lay.segments}

    def rows(x, name):  # (n_rows, chunks, ts)
        s = seg[name]
        return x[s.start:s.start + s.n_tokens].view(s.n_rows, s.chunks, ts)

    # fc0.weight: row i's group of tokens moves, unchanged, to row perm-position i
    assert rows(x1, "fc0.weight").shape[1] == -(-40 // ts)
    assert torch.equal(rows(x2, "fc0.weight"), rows(x1, "fc0.weight")[perm])
    # fc0.bias: a single row; its values are permuted (a token permutation only when ts == 1)
    b1, b2 = rows(x1, "fc0.bias").reshape(-1)[:8], rows(x2, "fc0.bias").reshape(-1)[:8]
    assert torch.equal(b2, b1[perm])
    # fc1.weight: every row's values permuted across the row's chunks, rows stay in place
    w1, w2 = rows(x1, "fc1.weight").reshape(8, -1)[:, :8], rows(x2, "fc1.weight").reshape(8, -1)[:, :8]
    assert torch.equal(w2, w1[:, perm])
    for name in ("head.weight", "head.bias", "fc1.bias"):
        assert torch.equal(rows(x2, name), rows(x1, name))
    if ts == 1:  # then the whole change is a permutation of tokens
        assert torch.equal(torch.sort(x1.flatten())[0], torch.sort(x2.flatten())[0])
    # same function
    net2 = build("mlp", 8, 0)
    net.load_state_dict(st), net2.load_state_dict(st2)
    # in float64: the permutation reorders sums, which float32 rounds differently on different CPUs
    net, net2 = net.double(), net2.double()
    inp = torch.randn(5, 1, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(net(inp), net2(inp), rtol=0, atol=1e-12)


# -- errors
def test_errors_name_the_thing():
    net = build("mlp", 8)
    lay = TokenLayout.of(net, 16)
    st = params(net)
    tok = WeightTokenizer(16).fit([st], [lay])

    bad = {**st, "fc1.weight": torch.zeros(8, 9)}
    with pytest.raises(ZooError, match=r"'fc1\.weight'.*\(8, 9\).*\(8, 8\)"):
        tok.encode(bad, lay)
    missing = {k: v for k, v in st.items() if k != "head.bias"}
    with pytest.raises(ZooError, match=r"'head\.bias'.*\(10,\).*missing"):
        tok.encode(missing, lay)
    with pytest.raises(ZooError, match=r"'fc1\.weight'.*\(8, 9\)"):
        tok.fit([bad], [lay])

    deeper = N.build("mlp", **MNIST1D, width=8, depth=3)  # its head is layer 3: never fitted
    with pytest.raises(ZooError, match=r"'3:linear_weight'.*'head\.weight'.*known keys: 0:linear_weight, 0:bias"):
        tok.encode(params(deeper), TokenLayout.of(deeper, 16))
    with pytest.raises(ZooError, match=r"'0:linear_weight'.*none"):
        WeightTokenizer(16).encode(st, lay)

    for make in (lambda: WeightTokenizer(0), lambda: TokenLayout.of(net, 0), lambda: WeightTokenizer(-3)):
        with pytest.raises(ZooError, match="token_size"):
            make()
    with pytest.raises(ZooError, match="token_size 8 but the tokenizer 16"):
        tok.encode(st, TokenLayout.of(net, 8))
    with pytest.raises(ZooError, match=r"\(44, 16\).*\(45, 16\)"):
        tok.decode(torch.zeros(44, 16), lay)


# -- width-aware options: scale="fan_in", pool="role"
@pytest.mark.parametrize("family", list(FAMILIES))
def test_fan_in_role_round_trip_bitwise(family):
    states, layouts, nets = population(family)
    tok = WeightTokenizer(16, scale="fan_in", pool="role").fit(states, layouts)
    assert all(k.split(":")[0] in ("first", "hidden", "last") for k in tok.stats)
    back = WeightTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert (back.scale, back.pool, back.stats) == ("fan_in", "role", tok.stats)
    for st, lay in zip(states, layouts):
        out = back.decode(tok.encode(st, lay), lay)
        for n, t in st.items():
            assert torch.equal(out[n], t), n


def test_fan_in_scale_evens_out_widths():
    """He-scaled inits of widths 4 and 256 share one hidden statistic; with scale="fan_in" their tokens
    have about the same spread, without it they are far apart."""
    nets = [build("mlp", w, s) for w in (4, 256) for s in SEEDS]
    layouts = [TokenLayout.of(n, 16) for n in nets]
    spread = {}
    for scale in ("none", "fan_in"):
        tok = WeightTokenizer(16, scale=scale, pool="role").fit([params(n) for n in nets], layouts)
        stds = []
        for net, lay in zip(nets[::3], layouts[::3]):  # seed 0 of width 4, of width 256
            x, seg = tok.encode(params(net), lay), next(s for s in lay.segments if s.name == "fc1.weight")
            stds.append(float(x[seg.start:seg.start + seg.n_tokens][tok.mask(lay)[seg.start:seg.start + seg.n_tokens]].std()))
        spread[scale] = max(stds) / min(stds)
    assert spread["fan_in"] < 1.3 < 4 < spread["none"], spread
    w = tok.factor(next(s for s in layouts[3].segments if s.name == "fc1.bias"), layouts[3])
    assert w == math.sqrt(256)  # a bias takes its module weight's fan-in


def test_role_pool_serves_deeper_nets():
    """pool="layer" has no statistics for a layer index it never saw; pool="role" maps the extra layer
    to the hidden statistics, and the head of a deeper net to the fitted head's."""
    shallow = [N.init_(N.build("mlp", **MNIST1D, width=8, depth=2), s) for s in SEEDS]
    deep = N.init_(N.build("mlp", **MNIST1D, width=8, depth=3), 0)
    lays = [TokenLayout.of(n, 16) for n in shallow]
    by_layer = WeightTokenizer(16).fit([params(n) for n in shallow], lays)
    with pytest.raises(ZooError, match="no statistics for stat key '3:linear_weight'"):
        by_layer.encode(params(deep), TokenLayout.of(deep, 16))
    by_role = WeightTokenizer(16, scale="fan_in", pool="role").fit([params(n) for n in shallow], lays)
    lay = TokenLayout.of(deep, 16)
    assert [by_role.stat_key(s, lay) for s in lay.segments if s.kind == KINDS.index("linear_weight")] == [
        "first:linear_weight", "hidden:linear_weight", "hidden:linear_weight", "last:linear_weight"]
    out = by_role.decode(by_role.encode(params(deep), lay), lay)
    assert all(torch.equal(out[n], t) for n, t in params(deep).items())


def test_bad_scale_and_pool_named():
    with pytest.raises(ZooError, match="scale 'fanin' is not valid; valid: none, fan_in"):
        WeightTokenizer(16, scale="fanin")
    with pytest.raises(ZooError, match="pool 'depth' is not valid; valid: layer, role"):
        WeightTokenizer(16, pool="depth")


def test_decode_batch_matches_decode_and_carries_gradients():
    states, layouts, nets = population("mlp")
    tok = WeightTokenizer(16, scale="fan_in", pool="role").fit(states, layouts)
    lay = layouts[0]
    x = torch.stack([tok.encode(st, lay) for st in states[:2]]).float().requires_grad_()
    out = tok.decode_batch(x, lay)
    for i in range(2):
        ref = tok.decode(x[i].detach().double(), lay)
        for n, t in ref.items():
            assert out[n].shape == (2, *t.shape) and torch.allclose(out[n][i], t, rtol=1e-5, atol=1e-6), n
    sum(v.sum() for v in out.values()).backward()
    seg = next(s for s in lay.segments if s.name == "fc1.weight")  # d weight / d token = s / sqrt(fan_in)
    g = x.grad[0, seg.start][tok.mask(lay)[seg.start]]
    m, s = tok.stats[tok.stat_key(seg, lay)]
    assert torch.allclose(g, torch.full_like(g, s / math.sqrt(seg.row_len)))
    with pytest.raises(ZooError, match="decode_batch: tokens have shape"):
        tok.decode_batch(x[0], lay)
