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


def test_denoiser_loss_decreases():
    ids, mask, x0 = _toy()
    model = _model()
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
