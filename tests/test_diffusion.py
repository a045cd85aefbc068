"""The diffusion denoiser (hypernet.diffusion): training step, DDIM sampling, save/load, errors."""
from __future__ import annotations

import pytest
import torch

from hypernet.diffusion import DiffusionConfig, WeightDiffusion, sinusoid
from zoo.errors import ZooError

N, K = 30, 8


def _toy():
    """A structured token set: per-position means the model must learn, one padded token tail."""
    ids = torch.stack([torch.arange(N) // 10, torch.arange(N) % 3, torch.arange(N) % 10,
                       torch.zeros(N, dtype=torch.long)], 1)  # (N, 4)
    mask = torch.ones(N, K, dtype=torch.bool)
    mask[-1, 5:] = False
    g = torch.Generator().manual_seed(0)
    x0 = (torch.randn(12, N, K, generator=g) * 0.2 + torch.linspace(-1, 1, K)) * mask  # (12, N, K)
    return ids, mask, x0


def _model(**kw) -> WeightDiffusion:
    torch.manual_seed(0)
    cfg = dict(token_size=K, d_model=32, layers=2, heads=2, n_conditions=3, timesteps=100, sample_steps=10)
    return WeightDiffusion(DiffusionConfig(**{**cfg, **kw}))


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_denoiser_loss_decreases(prediction):
    ids, mask, x0 = _toy()
    model = _model(prediction=prediction)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(1)
    cond = torch.randn(12, 3, generator=gen)
    losses = []
    for _ in range(120):
        loss = model.loss(x0, ids, mask.expand_as(x0), cond, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    # the learned sampler reproduces the data's per-position structure, and padding stays zero
    out = model.sample(ids, mask, cond[0], n=4, generator=torch.Generator().manual_seed(2))
    assert out.shape == (4, N, K)
    assert float(out[:, -1, 5:].abs().max()) == 0.0
    means = out[:, :-1].mean(dim=(0, 1))
    assert float(means[0]) < -0.5 and float(means[-1]) > 0.5


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_clean_estimate_matches_the_prediction_type(prediction):
    """return_x0 turns the prediction into the clean tokens by the scheduler's own ᾱ: an untrained
    (zero-output) denoiser estimates x0 = 0 for "sample", x_t/sqrt(ᾱ) for "epsilon" and sqrt(ᾱ)·x_t
    for "v_prediction"; both of the latter equal x0 up to noise at small t."""
    ids, mask, x0 = _toy()
    model = _model(prediction=prediction)
    gen = torch.Generator().manual_seed(3)
    loss, x0_hat = model.loss(x0[:4], ids, mask.expand(4, N, K), torch.zeros(4, 3), generator=gen, return_x0=True)
    assert x0_hat.shape == (4, N, K) and x0_hat.requires_grad and torch.isfinite(loss)
    assert float(x0_hat[:, -1, 5:].abs().max()) == 0.0  # padding stays zero
    if prediction == "sample":
        assert float(x0_hat.abs().max()) == 0.0
    else:  # at t = 0 (ᾱ ~ 1) the estimate is x_t up to the tiny noise share: the clean tokens
        _, est = model.loss(x0[:4], ids, mask.expand(4, N, K), torch.zeros(4, 3), generator=gen, return_x0=True,
                            t=torch.zeros(4, dtype=torch.long))
        assert torch.allclose(est.detach(), x0[:4] * mask, atol=0.1)
        assert not torch.allclose(x0_hat.detach(), x0[:4] * mask, atol=0.1)  # random t: far from it


def test_bad_prediction_named():
    with pytest.raises(ZooError, match="prediction 'x0' is not valid; valid: epsilon, sample, v_prediction"):
        DiffusionConfig(prediction="x0")


def test_untrained_denoiser_predicts_zero_noise_and_samples_are_shaped():
    ids, mask, _ = _toy()
    model = _model()
    x = torch.randn(2, N, K)
    with torch.no_grad():
        eps = model(x, torch.tensor([5, 50]), ids, torch.zeros(2, 3))
    assert eps.shape == (2, N, K) and float(eps.abs().max()) == 0.0  # zero-initialized head
    s = model.sample(ids, mask, torch.zeros(3), n=2, steps=5)
    assert s.shape == (2, N, K) and torch.isfinite(s).all()


def test_save_load_round_trip(tmp_path):
    ids, mask, x0 = _toy()
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp_path / "gen")
    again = WeightDiffusion.from_pretrained(str(tmp_path / "gen"))
    assert again.config == model.config
    t = torch.tensor([3, 70])
    c = torch.randn(2, 3)
    assert torch.equal(model(x0[:2], t, ids, c), again(x0[:2], t, ids, c))


def test_schedulers_come_from_diffusers_and_share_betas():
    model = _model()
    ddpm, ddim = model.train_scheduler(), model.sample_scheduler()
    assert type(ddpm).__name__ == "DDPMScheduler" and type(ddim).__name__ == "DDIMScheduler"
    assert torch.equal(ddpm.betas, ddim.betas) and ddpm.config.num_train_timesteps == 100
    for k, first in ((1, 99), (4, 99), (10, 99)):  # "trailing": every sampler starts from pure noise
        ddim.set_timesteps(k)
        assert int(ddim.timesteps[0]) == first and len(ddim.timesteps) == k


def test_one_step_sample_is_the_clean_estimate_from_noise():
    """sample_steps = 1: one DDIM step from t = T-1 to the end returns the clean estimate
    sqrt(ᾱ)·x_T − sqrt(1−ᾱ)·v of the noise it starts from."""
    ids, mask, _ = _toy()
    model = _model(prediction="v_prediction", base_rows=4)
    with torch.no_grad():  # a head that depends on its input, as after training
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    s = model.sample(ids, mask, torch.zeros(3), n=2, steps=1, generator=torch.Generator().manual_seed(5))
    x = torch.randn((2, N, K), generator=torch.Generator().manual_seed(5)) * mask
    a = model.train_scheduler().alphas_cumprod[99]
    with torch.no_grad():
        v = model(x, torch.tensor([99, 99]), ids, torch.zeros(2, 3), mask.expand(2, N, K)) * mask
    assert torch.allclose(s, (a.sqrt() * x - (1 - a).sqrt() * v) * mask, atol=1e-5)
    assert not torch.allclose(s[0], s[1], atol=1e-2)  # different noise, different nets


def test_errors_name_the_field():
    with pytest.raises(ZooError, match="schedule 'cosine' is not valid"):
        DiffusionConfig(schedule="cosine")
    with pytest.raises(ZooError, match="d_model"):
        DiffusionConfig(d_model=30, heads=4)
    with pytest.raises(ZooError, match="sample_steps"):
        DiffusionConfig(timesteps=10, sample_steps=50)
    ids, mask, x0 = _toy()
    model = _model()
    with pytest.raises(ZooError, match="conditioned"):
        model(x0[:1], torch.tensor([1]), ids, None)
    big = ids.clone()
    big[0, 0] = 99
    with pytest.raises(ZooError, match="max_layers"):
        model(x0[:1], torch.tensor([1]), big, torch.zeros(1, 3))


def test_sinusoid_features():
    f = sinusoid(torch.tensor([0, 1, 1000]), 16)
    assert f.shape == (3, 16) and torch.allclose(f[0, :8], torch.zeros(8)) and torch.allclose(f[0, 8:], torch.ones(8))
    assert not torch.allclose(f[1], f[2])


def test_base_net_index_tiles_and_is_the_clean_estimate_at_full_noise():
    """The base net: one token per (role, kind, row mod base_rows, chunk mod base_chunks). An untrained
    v-prediction denoiser (zero head) estimates exactly the base net at the last timestep, a random
    net of unit-scale tokens rather than the zoo's mean."""
    model = _model(prediction="v_prediction", base_rows=4, base_chunks=2)
    c = model.config
    ids = torch.tensor([[0, 0, 0, 0], [0, 0, 5, 3], [1, 0, 1, 0], [2, 2, 1, 1], [2, 0, 1, 1]])
    idx = model.base_index(ids)
    role_kind = [(0, 0), (0, 0), (1, 0), (2, 2), (2, 0)]  # layer 0 first, 2 last (the largest id), 1 hidden
    want = [((r * c.n_kinds + k) * 4 + row % 4) * 2 + ch % 2 for (r, k), (_, _, row, ch) in zip(role_kind, ids.tolist())]
    assert idx.tolist() == want
    assert idx[1] == ((0 * c.n_kinds + 0) * 4 + 1) * 2 + 1  # row 5 -> 1, chunk 3 -> 1: tiled
    ids_toy, mask, x0 = _toy()
    _, est = model.loss(x0[:2], ids_toy, mask.expand(2, N, K), torch.zeros(2, 3), return_x0=True,
                        t=torch.full((2,), c.timesteps - 1), generator=torch.Generator().manual_seed(0))
    base = model.base(model.base_index(ids_toy.expand(2, N, 4))) * mask
    assert torch.allclose(est, base, atol=0.02)  # up to sqrt(ᾱ_T)·x_T
    assert 0.8 < float(base[mask.expand(2, N, K)].std()) < 1.2
    with pytest.raises(ZooError, match="base_rows needs prediction 'sample' or 'v_prediction'"):
        DiffusionConfig(base_rows=4)
