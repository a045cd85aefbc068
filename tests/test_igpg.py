"""The IGPG-style generator (hypernet.igpg, pipelines.fit_igpg): the FSQ quantizer's round trip,
a prior that overfits, seeded sampling, any depth, exact resume, and its errors; end to end on a
tiny zoo of depth-2 MLPs through `hypernet train`, predict_init and the shared benchmark."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from hypernet.api import load_hypernet, predict_init
from hypernet.igpg import FSQ, HEADS, IGPGConfig, WeightIGPG
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
@pytest.mark.parametrize("head", HEADS)
def test_prior_overfits_two_nets_under_two_conditions_and_samples_them_back(head):
    """A prior trained on two code sequences, one per condition, samples each back exactly at
    top-k 1 from its condition: conditioning, teacher forcing and the cached sampler agree. The
    logistic head (one location per digit, so a random digit sequence is harder to memorize than
    with a logit per level) must fit well below uniform, and its cached top-1 samples must be what
    teacher forcing predicts from them, exactly."""
    from hypernet.conditions import AxisNorm, ConditionSpec

    spec = ConditionSpec({"z": {"task": "mnist1d", "family": "mlp",
                                "temperature": AxisNorm.fit("batch_size", [16, 256]).__dict__,
                                "load": AxisNorm.fit("width", [4, 8]).__dict__,
                                "temperature_values": [16, 256], "load_values": [4, 8]}})
    torch.manual_seed(0)
    gen = _tiny(conditions=spec.to_dict(), head=head)
    lay = _layout()
    g = torch.Generator().manual_seed(0)
    digits = torch.randint(0, 4, (2, lay.n_tokens, 4), generator=g)
    cond = torch.stack([spec.vector("z", 16, 4), spec.vector("z", 256, 8)])
    # a cosine-decayed lr: at a constant one Adam's loss spikes late in the fit (the logistic head's
    # loss after 250 steps was 0.03-0.68 over seeds and thread counts; after this, 0.02-0.08, and the
    # categorical head's < 0.002)
    steps = 600
    opt = torch.optim.Adam(gen.prior_parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    first = float(gen.prior_loss(digits, lay, cond).detach())
    for _ in range(steps):
        opt.zero_grad()
        loss = gen.prior_loss(digits, lay, cond)
        loss.backward()
        opt.step()
        sched.step()
    assert first > 1.0 and float(loss.detach()) < (0.02 if head == "categorical" else 0.3)  # uniform: ln 4 = 1.39
    gen.eval()
    for i in range(2):
        out = gen.sample_digits(lay, cond[i], n=2, generator=torch.Generator().manual_seed(1), top_k=1)
        assert torch.equal(out[0], out[1])
        with torch.no_grad():
            assert torch.equal(gen.prior_logits(out[:1], lay, cond[i:i + 1]).argmax(-1)[0], out[0])
        if head == "categorical":
            assert torch.equal(out[0], digits[i])


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


def test_temperature_scales_the_logistic_so_a_cold_draw_stays_near_its_location(tmp_path):
    """A wide digit (scale 3 levels around 1.2, of 4 levels): the end levels hold its tails, so its
    most probable level is 0 (mass 0.442 against 0.083 for level 1). Dividing the log-masses by a low
    temperature ("logits") piles the draws there; scaling the logistic ("scale", the default) puts
    them at level 1, the one holding the location. Configs saved before `temperature_on` existed
    sampled the first way and still do."""
    h = torch.zeros(1, 32)
    base = (torch.full((1, 4), 1.2), torch.full((1, 4), math.log(3.0)))
    for on, cold_level in (("scale", 1), ("logits", 0)):
        gen = _tiny(temperature_on=on).eval()  # the head starts at zero: the digits are the base's
        warm = gen._logits(h, base).exp()[0, 0]
        sig = lambda x: 1 / (1 + math.exp(-(x - 1.2) / 3))  # noqa: E731 - the logistic's CDF
        assert warm.tolist() == pytest.approx([sig(0.5), sig(1.5) - sig(0.5), sig(2.5) - sig(1.5), 1 - sig(2.5)],
                                              abs=1e-6)
        cold = gen._logits(h, base, 0.05).softmax(-1)[0, 0]
        assert int(cold.argmax()) == cold_level and float(cold.max()) > 0.85
    gen = _tiny()
    gen.save_pretrained(tmp_path / "g")
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    assert cfg["temperature_on"] == "scale"
    del cfg["temperature_on"]
    (tmp_path / "g" / "config.json").write_text(json.dumps(cfg))
    old = WeightIGPG.from_pretrained(str(tmp_path / "g"))
    assert old.config.temperature_on == "logits" and old.config.head == "logistic"
    with pytest.raises(ZooError, match="IGPGConfig.temperature_on 'masses' is not valid; valid: scale, logits"):
        _tiny(temperature_on="masses")


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
    with pytest.raises(ZooError, match="IGPGConfig.head 'gaussian' is not valid; valid: logistic, categorical"):
        IGPGConfig(head="gaussian")
    with pytest.raises(ZooError, match="IGPGConfig.base_rows must be >= 1"):
        IGPGConfig(base_rows=0)


def test_discretized_logistic_is_a_distribution_over_each_digits_levels():
    """Masses over the valid levels sum to 1 (invalid ones are -inf), a level's mass is the
    logistic CDF across its edges, the end levels take the tails, and a digit far in a tail still
    has a finite, non-zero gradient (the log-sigmoid form; a difference of sigmoids underflows)."""
    from hypernet.igpg import discretized_logistic

    valid = torch.arange(8)[None, :] < torch.tensor([8, 5])[:, None]
    loc = torch.tensor([[3.2, 1.0], [0.0, 30.0]], requires_grad=True)
    log_s = torch.log(torch.tensor([[0.7, 2.0], [0.05, 0.5]]))
    lp = discretized_logistic(loc, log_s, valid)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 2), atol=1e-6)
    assert torch.isinf(lp[:, 1, 5:]).all() and torch.isfinite(lp[:, 1, :5]).all()
    cdf = lambda v, m, sc: torch.sigmoid(torch.tensor((v - m) / sc))  # noqa: E731
    assert torch.isclose(lp[0, 0, 4].exp(), cdf(4.5, 3.2, 0.7) - cdf(3.5, 3.2, 0.7), atol=1e-6)
    assert torch.isclose(lp[0, 0, 0].exp(), cdf(0.5, 3.2, 0.7), atol=1e-6)  # the bottom tail
    assert torch.isclose(lp[0, 1, 4].exp(), 1 - cdf(3.5, 1.0, 2.0), atol=1e-6)  # the top tail of a 5-level digit
    lp[1, 0, 7].backward()  # level 7 at 140 scales from the location
    assert torch.isfinite(loc.grad).all() and loc.grad[1, 0] > 1.0


def test_init_base_sets_the_per_position_marginals():
    """The logistic head's base table takes the training codes' per-entry mean and spread, and
    the prior starts from them: its teacher-forced log-masses equal the base's (the head starts at
    zero) and put the most mass on each position's mean digit."""
    from hypernet.tokenizer import tile_index

    gen = _tiny(base_chunks=64)
    lay = _layout()
    i = tile_index(lay.ids(), gen.config.n_kinds, 256, 64)
    assert len(set(i.tolist())) == lay.n_tokens  # one table entry per position here (none tiled)
    g = torch.Generator().manual_seed(0)
    centre = torch.randint(0, 4, (lay.n_tokens, 4), generator=g)
    digits = (centre + torch.randint(-1, 2, (64, lay.n_tokens, 4), generator=g) * (torch.rand(64, lay.n_tokens, 4, generator=g) < 0.2)).clamp(0, 3)
    before = gen.base_logits(lay).clone()
    gen.init_base([(digits, lay)])
    after = gen.base_logits(lay)
    assert not torch.allclose(before, after)
    assert torch.allclose(gen.prior_logits(digits[:2], lay), after.expand(2, *after.shape))
    mean = digits.double().mean(0)
    agree = (after.argmax(-1) == mean.round().long()).double().mean()
    assert agree > 0.95
    base_nll = float(F.cross_entropy(after.detach().expand(64, *after.shape).reshape(-1, 4), digits.reshape(-1)))
    assert base_nll < 0.8  # uniform: ln 4 = 1.39; 80% of the digits sit on their centre


def test_a_trained_architecture_has_its_own_base_entries():
    """Architectures the recipe trained on (IGPGConfig.base_layouts, keyed by layout_signature) get
    one base entry per token, set from their own nets only; any other architecture reads the tiled
    table, which pools every net."""
    from hypernet.igpg import layout_signature

    lay, other = _layout(), _layout(width=6, depth=2)
    sig = layout_signature(lay)
    assert sig != layout_signature(other) and sig == layout_signature(_layout())
    assert sig.startswith("0:linear_weight:")
    gen = _tiny(base_layouts=[[sig, lay.n_tokens]])
    g = torch.Generator().manual_seed(0)
    own = torch.randint(0, 4, (lay.n_tokens, 4), generator=g).expand(8, -1, -1)
    gen.init_base([(own, lay), (torch.zeros(8, other.n_tokens, 4, dtype=torch.long), other)])
    assert torch.equal(gen.base_logits(lay).argmax(-1), own[0])  # its own marginals, not the pooled ones
    assert torch.equal(gen.base_of(lay)[0], own[0].float())
    # the tiled table pools both architectures' nets: an entry's location is the mean digit of
    # every token that maps to it (row mod base_rows, chunk mod base_chunks, per role and kind)
    from hypernet.tokenizer import tile_index

    c = gen.config
    sums: dict[int, list] = {}
    for layout, d in ((lay, own[0]), (other, torch.zeros(other.n_tokens, 4, dtype=torch.long))):
        for e, row in zip(tile_index(layout.ids(), c.n_kinds, c.base_rows, c.base_chunks).tolist(), d):
            sums.setdefault(e, []).append(row.double())
    expect = torch.stack([torch.stack(sums[e]).mean(0) for e in
                          tile_index(other.ids(), c.n_kinds, c.base_rows, c.base_chunks).tolist()]).float()
    assert torch.allclose(gen.base_of(other)[0], expect)


def test_run_config_errors():
    from pipelines.fit_igpg import IGPGRunConfig
    from pipelines.recipes import load_config

    with pytest.raises(ZooError, match=r"unknown igpg fields \['codebook'\]"):
        IGPGRunConfig.from_dict({"igpg": {"codebook": 512}})
    with pytest.raises(ZooError, match=r"quantizer_steps \(10\) must be below training.steps \(10\)"):
        IGPGRunConfig.from_dict({"training": {"steps": 10, "quantizer_steps": 10}})
    with pytest.raises(ZooError, match="training.quantizer_lr must be > 0"):
        IGPGRunConfig.from_dict({"training": {"quantizer_lr": 0}})
    with pytest.raises(ZooError, match=r"training.temperatures must be a list of numbers > 0 \(got \[1.0, 0\]\)"):
        IGPGRunConfig.from_dict({"training": {"temperatures": [1.0, 0]}})
    with pytest.raises(ZooError, match=r"training.temperature_archs must be >= 1 \(got 0\)"):
        IGPGRunConfig.from_dict({"training": {"temperature_archs": 0}})
    assert load_config(None, "igpg").kind == "igpg"


def test_the_temperature_choice_spreads_its_architectures_and_cells():
    from pipelines.fit_igpg import spread

    archs = list(range(120))  # the architecture-diverse zoo: 24 of its 120, both ends included
    got = spread(archs, 24)
    assert len(got) == 24 and got[0] == 0 and got[-1] == 119 and got == sorted(set(got))
    assert max(b - a for a, b in zip(got, got[1:])) - min(b - a for a, b in zip(got, got[1:])) <= 1
    assert spread(list("abcde"), 3) == ["a", "c", "e"] and spread(list("abcde"), 1) == ["c"]
    assert spread(list("ab"), 3) == ["a", "b"] and spread([], 3) == []


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
    # the prior's code length beside its base table's (the logistic head's per-position marginals)
    for split in ("train", "held_out"):
        assert 0 < meta["prior"][split]["bits_per_value"] and 0 < meta["prior"][split]["marginal_bits_per_value"]
    # the saved sampling temperature: the listed one whose samples have the lowest training loss
    sampling = meta["sampling"]
    assert sorted(sampling["losses"]) == ["0.1", "0.25", "0.5", "1.0"]
    assert sampling["losses"][str(sampling["temperature"])] == min(sampling["losses"].values())
    # scored on 3 training cells spread over the plane: its lowest and highest temperature among them
    from pipelines.zoodata import load_cells

    temps = {c.key: c.temperature for c in load_cells(deep_zoo) if c.key in meta["train_cells"]}
    used = [temps[k] for k in sampling["cells"]]
    assert len(sampling["cells"]) == 3 and min(used) == min(temps.values()) and max(used) == max(temps.values())
    gen = load_hypernet(out)
    assert isinstance(gen, WeightIGPG) and gen.config.trained_kinds == ["bias", "linear_weight"]
    assert gen.config.temperature == sampling["temperature"] and gen.config.head == "logistic"
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
    # the speed / novelty frontier: a fresh init added to a draw moves it away from every checkpoint
    import subprocess
    import sys

    got = subprocess.run([sys.executable, "bench/sampling_frontier.py", "--hypernet", str(out), "--zoo", str(deep_zoo),
                          "--cells", "1", "--seeds", "0", "--fresh", "1", "--variants", "0.1:0", "0.1:1", "0.1:0r",
                          "0.1:1r"], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert got.returncode == 0, got.stderr
    front = json.loads(got.stdout.strip().splitlines()[-1])["variants"]
    assert front["T0.1+1"]["ratio"]["median"] > front["T0.1+0"]["ratio"]["median"] > 0
    assert front["T0.1+0"]["ratio_over_fresh"]["median"] > 0 and "speedup" in front["T0.1+0"]
    # swapping no init is the draw itself (in the bank's frame); swapping it whole moves the draw away
    assert front["T0.1 swap 0"]["ratio"]["median"] == pytest.approx(front["T0.1+0"]["ratio"]["median"], rel=1e-6)
    assert front["T0.1 swap 1"]["ratio"]["median"] > front["T0.1 swap 0"]["ratio"]["median"]
    # a bank member's init is permuted as its trained net was: training's travel is the same in both frames
    from pipelines.benchmark.audit import _flat, bank_for
    from pipelines.benchmark.protocol import cases_of
    from pipelines.zoodata import load_cells, make_split

    cells = load_cells(deep_zoo)
    split = make_split(cells)
    case = next(c for c in cases_of(cells, split) if c.group == "cells")
    train = [c for c in cells if c.key not in set(split.held_out_cells)]
    b = bank_for({}, case, train, deep_zoo)
    cell, j = b._where[1]
    raw = float((_flat(cell.states(deep_zoo)[j], b.names) - _flat(cell.init_states(deep_zoo)[j], b.names)).norm())
    assert float((b.T[1] - _flat(b.canonical_init(1), b.names)).norm()) == pytest.approx(raw, rel=1e-6) and raw > 0
    import dataclasses

    unknown = dataclasses.replace(cell, rows=[{**cell.rows[0], "model_id": "no-such-member"}])
    with pytest.raises(ZooError, match="stores no checkpoint 0 of .*add 0 to the spec's checkpoints"):
        unknown.init_states(deep_zoo)
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
    # the same sampling temperature, base layouts and the rest of the saved config
    assert json.loads((tmp_path / "whole" / "config.json").read_text()) == json.loads((out / "config.json").read_text())
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [2, 4, 6, 8]
    # a finished run resumed with other sampling settings redoes the temperature choice only
    again = {**cfg, "training": {**cfg["training"], "temperatures": [0.5]}}
    meta = train(deep_zoo, out, IGPGRunConfig.from_dict(again), resume=True, progress=False)
    assert meta["resumed_from"] == 8 and meta["sampling"]["temperature"] == 0.5 and list(meta["sampling"]["losses"]) == ["0.5"]
    c = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a) and load_hypernet(out).config.temperature == 0.5
    # any other change is refused, naming the setting
    other = {**cfg, "training": {**cfg["training"], "lr": 1e-2}}
    with pytest.raises(ZooError, match=r"different hypernet config \(differs in training.lr\)"):
        train(deep_zoo, out, IGPGRunConfig.from_dict(other), resume=True, progress=False)
