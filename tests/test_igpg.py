"""The IGPG-style generator (hypernet.igpg, pipelines.fit_igpg): the FSQ quantizer's round trip,
a prior that overfits, seeded sampling, any depth, exact resume, and its errors; end to end on a
tiny zoo of depth-2 MLPs through `hypernet train`, predict_init and the shared benchmark."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hypernet.api import load_hypernet, predict_init
from hypernet.igpg import FSQ, IGPGConfig, WeightIGPG
from hypernet.tokenizer import TokenLayout
from pipelines.build import build
from tests.conftest import interrupt_after, tiny_spec
from zoo import nets
from zoo.errors import ZooError
from zoo.spec import Collection, parse_spec


def _tiny(**kw) -> WeightIGPG:
    cfg = dict(token_size=16, levels=[4], latent_dims=4, ae_hidden=16, d_model=32, layers=2, heads=2)
    return WeightIGPG(IGPGConfig(**{**cfg, **kw}))


def _layout(width=4, depth=1, token_size=16) -> TokenLayout:
    return TokenLayout.of(nets.build("mlp", "mnist1d", width=width, depth=depth), token_size)


# ---- the quantizer -------------------------------------------------------------------------------
def test_fsq_digits_and_latents_round_trip():
    fsq = FSQ([3, 4, 5, 8, 16])
    z = torch.randn(1000, 5) * 3
    q, digits = fsq(z)
    assert digits.min() >= 0 and (digits.max(0).values < torch.tensor([3, 4, 5, 8, 16])).all()
    # every level is reachable (no dead codes), latents are in [-1, 1], digits <-> latents exactly
    assert all(len(digits[:, i].unique()) == L for i, L in enumerate([3, 4, 5, 8, 16]))
    assert q.abs().max() <= 1 and torch.equal(fsq.latent(digits), q.detach())
    # a draw from a distribution sure of one level per digit is that level's latent, with gradients
    gen = WeightIGPG(IGPGConfig(token_size=16, levels=[4, 8], ae_hidden=16, d_model=16, layers=1, heads=2))
    d = torch.tensor([[0, 7], [3, 0], [2, 5]])
    sure = torch.full((3, 2, 8), -30.0).scatter(-1, d.unsqueeze(-1), 30.0).masked_fill(~gen.valid, float("-inf"))
    sure.requires_grad_(True)
    draw = gen.sampled_latent(sure, torch.Generator().manual_seed(0))
    assert torch.equal(draw.detach(), gen.fsq.latent(d))
    (draw * torch.randn(draw.shape)).sum().backward()
    assert torch.isfinite(sure.grad).all()
    # straight-through: the rounding passes gradients
    z.requires_grad_(True)
    fsq(z)[0].sum().backward()
    assert z.grad.abs().sum() > 0


def test_quantizer_round_trip_within_its_stated_error():
    """With latent_dims == token_size the quantizer starts as a tanh-companded scalar quantizer of
    every value (z = x / 2, 16 levels): a value reconstructs to within half a step of the grid,
    0.5 / (7.5 x sech^2(x / 2)) / 0.5, which is <= 0.17 for |x| <= 1 and <= 0.27 for |x| <= 2; the
    mean squared error of N(0, 1) values is below 0.015 (0.0123 over 800,000 draws; the optimal
    4-bit scalar quantizer's is 0.0095), and the code is idempotent."""
    gen = WeightIGPG(IGPGConfig(token_size=16, levels=[16], latent_dims=16, ae_hidden=16, d_model=16, layers=1,
                                heads=2))
    lay = _layout(width=8)
    x = torch.randn(64, lay.n_tokens, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rec, digits = gen.autoencode(x, lay.ids())
        _, again = gen.quantize(rec, lay.ids())
    err = (rec - x).abs()
    assert err[x.abs() <= 1].max() <= 0.17 and err[x.abs() <= 2].max() <= 0.27
    assert float((err ** 2).mean()) < 0.015
    assert torch.equal(again, digits)
    assert gen.bits_per_value(lay) == pytest.approx(lay.n_tokens * 16 * 4 / sum(s.numel for s in lay.segments))


# ---- the prior -----------------------------------------------------------------------------------
def test_prior_overfits_two_nets_under_two_conditions_and_samples_them_back():
    """A prior trained on two code sequences, one per condition, samples each back exactly at
    top-k 1 from its condition: conditioning, teacher forcing and the cached sampler agree."""
    from hypernet.conditions import AxisNorm, ConditionSpec

    spec = ConditionSpec({"z": {"task": "mnist1d", "family": "mlp",
                                "temperature": AxisNorm.fit("batch_size", [16, 256]).__dict__,
                                "load": AxisNorm.fit("width", [4, 8]).__dict__,
                                "temperature_values": [16, 256], "load_values": [4, 8]}})
    gen = _tiny(conditions=spec.to_dict())
    lay = _layout()
    g = torch.Generator().manual_seed(0)
    digits = torch.randint(0, 4, (2, lay.n_tokens, 4), generator=g)
    cond = torch.stack([spec.vector("z", 16, 4), spec.vector("z", 256, 8)])
    opt = torch.optim.Adam(gen.prior_parameters(), lr=3e-3)
    first = float(gen.prior_loss(digits, lay, cond).detach())
    for _ in range(250):
        opt.zero_grad()
        loss = gen.prior_loss(digits, lay, cond)
        loss.backward()
        opt.step()
    assert first > 1.0 and float(loss.detach()) < 0.02  # uniform over 4 levels: ln 4 = 1.39
    gen.eval()
    for i in range(2):
        out = gen.sample_digits(lay, cond[i], n=2, generator=torch.Generator().manual_seed(1), top_k=1)
        assert torch.equal(out[0], digits[i]) and torch.equal(out[1], digits[i])


def test_sampling_is_deterministic_for_a_seed_and_varies_across_seeds():
    gen = _tiny().eval()
    lay = _layout()
    mask = torch.ones(lay.n_tokens, 16, dtype=torch.bool)
    a = gen.sample_tokens(lay, mask, n=3, generator=torch.Generator().manual_seed(7))
    b = gen.sample_tokens(lay, mask, n=3, generator=torch.Generator().manual_seed(7))
    c = gen.sample_tokens(lay, mask, n=3, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, lay.n_tokens, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the n samples of one call differ
    # a lower temperature concentrates the draws: fewer distinct digits per position
    hot = gen.sample_digits(lay, n=8, generator=torch.Generator().manual_seed(0), temperature=2.0)
    cold = gen.sample_digits(lay, n=8, generator=torch.Generator().manual_seed(0), temperature=0.05)
    spread = lambda d: sum(len(d[:, j, k].unique()) for j in range(d.shape[1]) for k in range(d.shape[2]))  # noqa: E731
    assert spread(cold) < spread(hot)


def test_any_depth_is_a_longer_prefix():
    gen = _tiny().eval()
    for depth in (1, 2, 3, 5):
        lay = _layout(width=6, depth=depth)
        d = gen.sample_digits(lay, n=1, generator=torch.Generator().manual_seed(0))
        assert d.shape == (1, lay.n_tokens, 4)
        assert gen.context_length(lay) == 1 + 2 * (depth + 1) + lay.n_tokens


def test_errors_name_the_module_and_what_is_supported():
    gen = _tiny(trained_kinds=["bias", "linear_weight"])
    conv = TokenLayout.of(nets.build("cnn", "digits", width=4, depth=1), 16)
    with pytest.raises(ZooError, match=r"parameter '.*weight' \(module '.*'\) is a conv_weight, which this generator "
                                        r"never saw in training; it writes bias, linear_weight"):
        gen.check_layout(conv)
    short = _tiny(max_len=20)
    with pytest.raises(ZooError, match=r"needs a context of 29 positions .* IGPGConfig.max_len = 20"):
        short.sample_digits(_layout(), n=1)
    with pytest.raises(ZooError, match="IGPGConfig.levels must be a non-empty list of integers >= 2"):
        IGPGConfig(levels=[1, 4])
    with pytest.raises(ZooError, match="levels has 2 entries but latent_dims is 3"):
        IGPGConfig(levels=[4, 4], latent_dims=3)
    with pytest.raises(ZooError, match="temperature must be > 0"):
        gen.sample_digits(_layout(), n=1, temperature=0)


def test_run_config_errors():
    from pipelines.fit_igpg import IGPGRunConfig
    from pipelines.recipes import load_config

    with pytest.raises(ZooError, match=r"unknown igpg fields \['codebook'\]"):
        IGPGRunConfig.from_dict({"igpg": {"codebook": 512}})
    with pytest.raises(ZooError, match=r"quantizer_steps \(10\) must be below training.steps \(10\)"):
        IGPGRunConfig.from_dict({"training": {"steps": 10, "quantizer_steps": 10}})
    with pytest.raises(ZooError, match="training.quantizer_lr must be > 0"):
        IGPGRunConfig.from_dict({"training": {"quantizer_lr": 0}})
    assert load_config(None, "igpg").kind == "igpg"


# ---- end to end on a tiny zoo of depth-2 MLPs ------------------------------------------------------
TINY = {"kind": "igpg",
        "igpg": {"token_size": 16, "levels": [8], "latent_dims": 16, "ae_hidden": 32, "d_model": 32, "layers": 1,
                 "heads": 2, "max_len": 256},
        "training": {"steps": 10, "quantizer_steps": 5, "batch_size": 3, "lr": 3e-3, "quantizer_lr": 3e-3,
                     "warmup": 1, "augment": 0.5, "task_weight": 0.5, "prior_task_weight": 0.5, "data_batch": 16, "checkpoint_every": 3,
                     "log_every": 2}}


@pytest.fixture(scope="module")
def deep_zoo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("igz") / "zoo"
    spec = parse_spec(tiny_spec("igz", model={"family": "mlp", "depth": 2}, metrics={"enabled": False}))
    build(Collection("igz", [spec]), out, use_ray=False, progress=False)
    return out


@pytest.mark.slow
def test_igpg_trains_predicts_any_depth_and_benchmarks(deep_zoo, tmp_path):
    from pipelines.fit_igpg import IGPGRunConfig
    from pipelines.hypernet_cli import main as hypernet_main
    from pipelines.recipes import train

    out = tmp_path / "igpg"
    meta = train(deep_zoo, out, IGPGRunConfig.from_dict(TINY), progress=False)
    assert meta["kind"] == "igpg" and meta["n_training_members"] == 3 * 2
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6, 8, 10]
    # stage 1 (steps 1-5): the quantizer, its task term on; stage 2: the prior's cross-entropy
    assert [r["stage"] for r in log] == [0, 0, 1, 1, 1]
    assert all(r["recon_mse"] > 0 and r["task"] > 0 and r["nll"] == 0 for r in log[:2])
    assert all(0 < r["nll"] < math.log(8) + 0.5 and r["recon_mse"] == 0 and r["task"] > 0 for r in log[3:])
    # the prior's task term trains the prior only: a prior step leaves the quantizer without gradients
    from pipelines.fit_igpg import IGPGTrainer

    tr = IGPGTrainer(deep_zoo, tmp_path / "unused", IGPGRunConfig.from_dict(TINY), progress=False)
    tr.step(TINY["training"]["quantizer_steps"], torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in tr.model.quantizer_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tr.model.prior_parameters())
    rec = meta["reconstruction"]
    assert rec["metric"] == "acc" and rec["train"]["members"] == 6 and rec["held_out"]["members"] == 2
    assert all(len(r["original"]) == len(r["reconstructed"]) == r["n"] for r in rec["per_cell"])
    assert meta["codes"]["bits_per_token"] == 16 * 3
    gen = load_hypernet(out)
    assert isinstance(gen, WeightIGPG) and gen.config.trained_kinds == ["bias", "linear_weight"]
    # depth 1, 2 (the zoo's) and 4, widths the zoo never had: every parameter, its exact shape
    for depth, width in ((1, 6), (2, 5), (4, 12)):
        model = nets.build("mlp", "mnist1d", width=width, depth=depth)
        shapes = {k: v.shape for k, v in model.named_parameters()}
        predict_init(model, gen, temperature=64, load=width, n=2, seed=3)
        assert {k: v.shape for k, v in model.named_parameters()} == shapes
        assert all(torch.isfinite(v).all() for v in model.state_dict().values())
        again = predict_init(nets.build("mlp", "mnist1d", width=width, depth=depth), str(out), temperature=64,
                             load=width, n=2, seed=3)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # a condition outside the plane is extrapolated (log-axis normalization), one at 0 is refused
    predict_init(nets.build("mlp", "mnist1d", width=4, depth=2), gen, temperature=4096, load=4)
    with pytest.raises(ZooError, match=r"temperature \(batch_size\)=0.0: batch_size must be > 0"):
        predict_init(nets.build("mlp", "mnist1d", width=4, depth=2), gen, temperature=0, load=4)
    # a CNN: the module and the kinds it can write, one line, exit 2 from the CLI
    with pytest.raises(ZooError, match="is a conv_weight, which this generator never saw"):
        predict_init(nets.build("cnn", "mnist1d", width=4, depth=1), gen, task="mnist1d")
    # the shared benchmark, with the memorization audit of a sampling generator
    from pipelines.benchmark import benchmark

    doc = benchmark(out, deep_zoo, out=tmp_path / "res", seeds=[0], progress=False, samples=2)
    assert doc["kind"] == "igpg" and doc["summary"]["n_cases"]["cells"] == 1 and doc["samples"] == 2
    assert doc["memorization"]["nn_distance_ratio_median"] > 0
    md = (tmp_path / "res" / "results.md").read_text()
    assert md.startswith("# Init benchmark: igpg (igpg)") and "2 samples per case, the lowest training loss kept" in md
    assert hypernet_main(["eval", "--hypernet", str(out), "--zoo", str(deep_zoo), "--samples", "0",
                          "--out", str(tmp_path / "r0"), "--quiet"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: igpg\ntraining: {steps: 4, quantizer_steps: 9}\n")
    assert hypernet_main(["train", "--zoo", str(deep_zoo), "--config", str(bad), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.slow
def test_igpg_resume_after_an_interruption_is_exact(deep_zoo, tmp_path, monkeypatch):
    """Interrupted in the prior stage after a checkpoint of the quantizer stage... and one of the
    prior stage: the resumed run ends bitwise equal to the uninterrupted one."""
    from pipelines.fit_igpg import IGPGRunConfig
    from pipelines.recipes import train

    cfg = {**TINY, "training": {**TINY["training"], "steps": 8, "quantizer_steps": 4, "checkpoint_every": 3,
                                "log_every": 2}}
    train(deep_zoo, tmp_path / "whole", IGPGRunConfig.from_dict(cfg), progress=False)
    out = tmp_path / "resumed"
    # inside step 8 (the 4th prior step), after the checkpoint at 6
    interrupt_after(monkeypatch, WeightIGPG, "prior_loss", 3,
                    lambda: train(deep_zoo, out, IGPGRunConfig.from_dict(cfg), progress=False))
    meta = train(deep_zoo, out, IGPGRunConfig.from_dict(cfg), resume=True, progress=False)
    assert meta["resumed_from"] == 6 and meta["steps"] == 8
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [2, 4, 6, 8]
