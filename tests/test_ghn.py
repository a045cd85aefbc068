"""hypernet.decoders and hypernet.ghn: exact shapes for the six families with both decoders,
decoder interface and sizes, fan-in scaling at init, functional_call through the prediction,
gradients into the message passing, a tiny training run, conditions, the residual form, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import zoo.nets as N
from hypernet import module_to_graph
from hypernet.decoders import DECODERS, DecoderConfig, DecoderError, build_decoder, n_params
from hypernet.ghn import GHNConfig, GraphHyperNetwork
from zoo.errors import ZooError

MNIST1D = {"input_shape": (1, 40), "n_classes": 10}
DIGITS = {"input_shape": (1, 8, 8), "n_classes": 10}
_G = torch.Generator().manual_seed(0)

FAMILIES = {  # name -> (net, a batch of inputs)
    "mlp": (lambda: N.build("mlp", **MNIST1D, width=16, depth=2), torch.randn(4, 1, 40, generator=_G)),
    "cnn": (lambda: N.build("cnn", **MNIST1D, width=8, depth=2), torch.randn(4, 1, 40, generator=_G)),
    "resnet": (lambda: N.build("resnet", **DIGITS, width=4), torch.randn(4, 1, 8, 8, generator=_G)),
    "vit": (lambda: N.build("vit", **DIGITS, width=16), torch.randn(4, 1, 8, 8, generator=_G)),
    "gpt": (lambda: N.build("gpt", input_shape=(16,), n_classes=20, width=16, depth=1),
            torch.randint(0, 20, (4, 16), generator=_G)),
    "pinn": (lambda: N.build("pinn", input_shape=(2,), n_classes=1, width=16, depth=2), torch.randn(4, 2, generator=_G)),
}
SMALL = {"hidden": 32, "layers": 2, "dec_hidden": 32, "max_out": 64, "max_in": 64, "rank": 8}


def _ghn(seed: int = 0, **kw) -> GraphHyperNetwork:
    torch.manual_seed(seed)
    return GraphHyperNetwork(GHNConfig(**{**SMALL, **kw}))


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    out = {}
    for name, (make, x) in FAMILIES.items():
        net = make()
        out[name] = (net, module_to_graph(net), x)
    return out


@pytest.fixture(scope="module")
def ghns():
    return {(dec, gnn): _ghn(decoder=dec, gnn=gnn) for dec in ("tiled", "lowrank") for gnn in ("gated", "transformer")}


# ---- the GHN on every family -----------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("decoder", ["tiled", "lowrank"])
def test_every_parameter_predicted_with_its_shape(nets, ghns, family, decoder):
    net, g, x = nets[family]
    for gnn in ("gated", "transformer"):
        pred = ghns[decoder, gnn](g)
        want = dict(net.named_parameters())
        assert list(pred) == [p for ps in g.param_names for p in ps]  # graph order, each once
        assert set(pred) == set(want)
        for name, p in want.items():
            assert pred[name].shape == p.shape, name
        with torch.no_grad():
            y = functional_call(net, pred, (x,))
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_predicted_weights_have_fan_in_scale_at_init(nets, ghns, family):
    net, g, _ = nets[family]
    for ghn in ghns.values():
        with torch.no_grad():
            pred = ghn(g)
        for name, p in net.named_parameters():
            w = pred[name]
            module = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)) and name.endswith("weight"):
                target = math.sqrt(2.0 / p[0].numel())  # He: fan_in = in * kernel size
            elif p.dim() >= 2:  # embeddings and pos_embed: GPT-2's 0.02
                target = 0.02
            else:
                continue
            rms = w.pow(2).mean().sqrt().item()
            assert rms == pytest.approx(target, rel=1e-3), name  # normalized exactly at init
            if w.numel() >= 16:
                assert target / 3 < w.std().item() < 3 * target, name
        for name, p in net.named_parameters():  # norm weights around 1, biases around 0
            if p.dim() == 1 and isinstance(net.get_submodule(name.rsplit(".", 1)[0]),
                                           (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
                assert (pred[name] - (1.0 if name.endswith("weight") else 0.0)).abs().max() < 1.0


def test_predict_builds_the_graph_itself(ghns, nets):
    net, g, _ = nets["cnn"]
    ghn = ghns["lowrank", "gated"]
    a, b = ghn.predict(net), ghn(g)
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("decoder", ["tiled", "lowrank"])
def test_wider_than_the_decoder_maxima_is_tiled(decoder):
    net = N.build("mlp", **MNIST1D, width=100, depth=1)  # fc0 (100, 40), head (10, 100); maxima 64
    pred = _ghn(decoder=decoder).predict(net)
    assert {k: v.shape for k, v in pred.items()} == {k: p.shape for k, p in net.named_parameters()}
    w = pred["fc0.weight"]
    assert w.std().item() == pytest.approx(math.sqrt(2 / 40), rel=0.2)
    copy, first = w[64:].detach(), w[:36].detach()  # rows 64.. read the chunk's rows 0.. again
    assert ((copy - first).abs().amax(1) > 1e-4).all() and ((copy + first).abs().amax(1) > 1e-4).all()


@pytest.mark.parametrize("gnn", ["gated", "transformer"])
def test_gradients_reach_the_message_passing(nets, gnn):
    net, g, x = nets["resnet"]
    ghn = _ghn(gnn=gnn)
    y = functional_call(net, ghn(g), (x,))
    F.cross_entropy(y, torch.arange(4)).backward()
    for block in ghn.blocks:
        grads = [p.grad for p in block.parameters()]
        assert all(gr is not None for gr in grads)
        assert sum(gr.abs().sum().item() for gr in grads) > 0
    assert ghn.op_emb.weight.grad.abs().sum() > 0 and ghn.decoder.trunk[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("decoder", ["tiled", "lowrank"])
def test_a_tiny_ghn_learns_to_predict_mlps(decoder):
    torch.manual_seed(0)
    x = torch.randn(128, 1, 40)  # an MNIST-1D-shaped batch, labels from a fixed random teacher
    y = (x.flatten(1) @ torch.randn(40, 10)).argmax(1)
    mlps = [N.build("mlp", **MNIST1D, width=w, depth=2) for w in (8, 16)]
    graphs = [module_to_graph(m) for m in mlps]
    ghn = _ghn(hidden=32, layers=1, dec_hidden=32, max_out=32, max_in=64, decoder=decoder)
    opt = torch.optim.Adam(ghn.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return sum(F.cross_entropy(functional_call(m, ghn(g), (x,)), y) for m, g in zip(mlps, graphs)) / 2

    with torch.no_grad():
        first = loss().item()
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        last = loss().item()
    assert last < 0.6 * first, (first, last)  # typically 2.5-3.3 -> 0.3-1.5


def test_condition_changes_the_prediction(nets):
    _, g, _ = nets["mlp"]
    ghn = _ghn(n_conditions=3)
    with torch.no_grad():
        a = ghn(g, torch.tensor([1.0, 4.0, 5.0]))
        b = ghn(g, torch.tensor([1.0, 6.0, 3.0]))
        a2 = ghn(g, torch.tensor([1.0, 4.0, 5.0]))
        none = ghn(g)
    assert all(torch.equal(a[k], a2[k]) for k in a)  # deterministic
    assert all(not torch.allclose(a[k], b[k]) for k in a)  # every tensor moves
    assert all(torch.equal(none[k], ghn(g, torch.zeros(3))[k]) for k in a)  # None = zeros
    with pytest.raises(ZooError, match="size 3"):
        ghn(g, torch.zeros(4))
    with pytest.raises(ZooError, match="takes no condition"):
        _ghn()(g, torch.zeros(3))


def test_residual_form_returns_the_base_at_init(nets):
    net, g, x = nets["vit"]
    ghn = _ghn(residual=True, delta_init=0.0)
    base = {n: p.detach().clone() for n, p in net.named_parameters()}
    pred = ghn.predict(net)  # θ0 defaults to the model's own parameters
    assert all(torch.equal(pred[k], base[k]) for k in base)
    F.cross_entropy(functional_call(net, pred, (x,)), torch.arange(4)).backward()
    assert ghn.out_scale.grad.abs().sum() > 0  # the Δ scale learns first, then Δθ opens up
    moved = _ghn(residual=True, delta_init=0.1)(g, base=base)
    assert all(not torch.equal(moved[k], base[k]) for k in base)
    with pytest.raises(ZooError, match="pass base"):
        ghn(g)


# ---- decoders --------------------------------------------------------------------------------
SHAPES = [(), (7,), (5, 3), (4, 3, 3), (4, 2, 3, 3), (3, 2, 5), (2, 1, 1, 1)]


@pytest.mark.parametrize("name", ["tiled", "lowrank"])
def test_decoders_share_one_interface(name):
    torch.manual_seed(0)
    dec = build_decoder(name, DecoderConfig(d_in=12, hidden=16, max_out=8, max_in=8, max_kernel=3, rank=4))
    h1, hn = torch.randn(12), torch.randn(5, 12)
    for shape in SHAPES + [(20, 11), (19, 3, 4)]:  # the last two: beyond the maxima, tiled
        assert dec(h1, shape).shape == shape
        out = dec(hn, shape)
        assert out.shape == (5, *shape)
        assert torch.allclose(out[2], dec(hn[2], shape), atol=1e-6)  # batched = one by one
    w = dec(h1, (20, 11))
    assert torch.allclose(w[:8, :8], dec(h1, (8, 8)), atol=1e-6)  # slicing: a smaller shape is a corner
    assert not torch.allclose(w[8:16, :8], w[:8, :8])  # tiled rows are not duplicates (±1 pattern)
    assert torch.equal(w[8:16, :8].abs(), w[:8, :8].abs())  # the block itself repeats, up to signs
    assert torch.equal(w, dec(h1, (20, 11)))  # the pattern is fixed
    with pytest.raises(DecoderError, match="5-D"):
        dec(h1, (2, 2, 2, 2, 2))


@pytest.mark.parametrize("name", ["tiled", "lowrank"])
def test_tiling_off_raises_beyond_the_maxima(name):
    dec = build_decoder(name, DecoderConfig(d_in=4, hidden=4, max_out=8, max_in=6, max_kernel=3, tile=False))
    h = torch.randn(4)
    assert dec(h, (8, 6, 3, 3)).shape == (8, 6, 3, 3)
    with pytest.raises(DecoderError, match=r"in = 7 exceeds the decoder's maximum 6 \(DecoderConfig.max_in\)"):
        dec(h, (8, 7))
    with pytest.raises(DecoderError, match=r"out = 9 exceeds .* 8 \(DecoderConfig.max_out\)"):
        dec(h, (9,))
    with pytest.raises(DecoderError, match=r"kernel\[1\] = 5 exceeds .* 3 \(DecoderConfig.max_kernel\)"):
        dec(h, (2, 2, 3, 5))


def test_lowrank_is_far_smaller_at_a_large_width():
    cfg = DecoderConfig(d_in=64, hidden=64, max_out=256, max_in=256, max_kernel=3, rank=16)
    tiled, lowrank = n_params("tiled", cfg), n_params("lowrank", cfg)
    h, k = cfg.hidden, cfg.max_kernel
    shared = (64 * h + h) + (h * h + h) + (h * cfg.max_out + cfg.max_out) + (h * h * (1 + k + k * k) + h * (1 + k + k * k))
    assert tiled == shared + (h + 1) * 256 * 256  # the chunk map: max_out * max_in outputs
    assert lowrank == shared + (h + 1) * 16 * (256 + 256)  # A and B heads: (max_out + max_in) * r outputs
    assert (tiled, lowrank) == (4_338_880, 611_520)
    assert lowrank * 7 < tiled
    # at the maxima the gap grows like max_out * max_in / ((max_out + max_in) * r)
    big = DecoderConfig(d_in=64, hidden=64, max_out=512, max_in=512, rank=16)
    assert n_params("lowrank", big) * 12 < n_params("tiled", big)


def test_unknown_decoder_lists_the_valid_names():
    assert DECODERS.names() == ["lowrank", "tiled"]
    with pytest.raises(ZooError, match="unknown decoder 'diffusion'; valid: lowrank, tiled"):
        build_decoder("diffusion")
    with pytest.raises(ZooError, match="unknown decoder 'big'; valid: lowrank, tiled"):
        GHNConfig(decoder="big")
    with pytest.raises(ZooError, match="unknown gnn 'gcn'; valid: gated, transformer"):
        GHNConfig(gnn="gcn")


# ---- the generator registry (hypernet.generators) ----------------------------------------------
def test_generator_registry_finds_the_kind_of_instances_and_saved_configs(tmp_path):
    import json as _json

    from hypernet.diffusion import DiffusionConfig, WeightDiffusion
    from hypernet.generators import GENERATORS, get, kind_of, kind_of_config
    from hypernet.ghn import GHNConfig, GraphHyperNetwork
    from hypernet.igpg import IGPGConfig, WeightIGPG
    from zoo.errors import ZooError

    assert GENERATORS.names() == ["diffusion", "ghn", "ghn-lowrank", "igpg"]
    with pytest.raises(ZooError, match=r"unknown generator kind 'gan'; valid: diffusion, ghn, ghn-lowrank, igpg"):
        get("gan")
    models = {"ghn": GraphHyperNetwork(GHNConfig(hidden=8, dec_hidden=8)),
              "ghn-lowrank": GraphHyperNetwork(GHNConfig(hidden=8, dec_hidden=8, decoder="lowrank", rank=2)),
              "diffusion": WeightDiffusion(DiffusionConfig(token_size=8, d_model=16, layers=1, heads=2)),
              "igpg": WeightIGPG(IGPGConfig(token_size=8, levels=[3, 3], ae_hidden=8, d_model=16, layers=1, heads=2))}
    for name, model in models.items():
        assert kind_of(model).name == name
        model.save_pretrained(tmp_path / name)
        saved = _json.loads((tmp_path / name / "config.json").read_text())
        assert kind_of_config(saved).name == name and kind_of_config(saved).model is type(model)
    assert [get(k).samples for k in ("ghn", "ghn-lowrank", "diffusion", "igpg")] == [False, False, True, True]
    with pytest.raises(ZooError, match=r"x.json: not the config of a known generator kind .*its fields: colour"):
        kind_of_config({"colour": 1}, "x.json")
    with pytest.raises(ZooError, match=r"Linear is not a generator of a known kind"):
        kind_of(torch.nn.Linear(2, 2))
