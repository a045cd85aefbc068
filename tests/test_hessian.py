"""Hessian metrics: known answers on quadratics, and a real Population against the exact Hessian."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from zoo import tasks
from zoo.landscape import hessian_metrics, hutchinson_trace, hvp, population_loss_fn, top_eigenvalue
from zoo.train import MemberConfig, Population


@pytest.fixture(autouse=True)
def _one_thread():
    """These are tiny ops: one intra-op thread is faster, and stays fast on a busy 2-core machine
    (two threads competing with other processes turned a 2 ms HVP into 15-40 ms)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


D = 12
# per member: the top eigenvalue; the other d-1 eigenvalues lie in [0, 0.7 top), a gap power iteration resolves
TOPS = (5.0, 1.0, 20.0)


def quadratic(tops=TOPS, d=D, seed=0):
    """Per-member symmetric PSD A_m = Q_m diag(λ_m) Q_mᵀ with explicit, different spectra."""
    g = torch.Generator().manual_seed(seed)
    A, spectra = [], []
    for top in tops:
        lam = torch.rand(d, generator=g, dtype=torch.float64) * 0.7 * top  # rest in [0, 0.7 top)
        lam[0] = top
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        A.append(Q @ torch.diag(lam) @ Q.T)
        spectra.append(lam)
    A = torch.stack(A).float()  # (M, d, d)
    A = 0.5 * (A + A.transpose(1, 2))
    x = torch.randn(len(tops), d, generator=g).requires_grad_(True)  # (M, d)
    return A, torch.stack(spectra), {"x": x}


def quad_loss(A):
    def loss_fn(params):
        x = params["x"]  # (M, d)
        return 0.5 * torch.einsum("md,mde,me->m", x, A, x)  # (M,)
    return loss_fn


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- quadratic: known answers ------------------------------------------------------------------
def test_hvp_is_each_members_own_matrix_vector_product():
    A, _, params = quadratic()
    v = {"x": torch.randn(params["x"].shape, generator=gen(1))}
    before = params["x"].detach().clone()
    hv = hvp(quad_loss(A), params, v)["x"]  # (M, d)
    expected = torch.einsum("mde,me->md", A, v["x"])
    torch.testing.assert_close(hv, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(params["x"].detach(), before) and params["x"].grad is None  # caller untouched


def test_top_eigenvalue_matches_largest_eigenvalue_of_each_member():
    A, spectra, params = quadratic()
    eig = top_eigenvalue(quad_loss(A), params, max_iter=500, tol=1e-5, generator=gen())
    exact = torch.linalg.eigvalsh(A.double())[:, -1]
    assert eig.shape == (3,)
    torch.testing.assert_close(eig.double(), exact, rtol=1e-3, atol=0)
    torch.testing.assert_close(exact, torch.tensor(TOPS, dtype=torch.float64), rtol=1e-5, atol=0)


def test_top_eigenvalue_is_largest_magnitude_for_indefinite_hessian():
    """Power iteration finds the largest |λ|, here a negative one (PyHessian's behaviour)."""
    g = gen(3)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    lam = torch.tensor([-4.0, 2.0, 1.0, 0.5, -0.3, 0.1], dtype=torch.float64)
    A = (Q @ torch.diag(lam) @ Q.T).float().unsqueeze(0)
    eig = top_eigenvalue(quad_loss(A), {"x": torch.zeros(1, 6)}, max_iter=500, tol=1e-6, generator=gen())
    assert eig.item() == pytest.approx(-4.0, rel=1e-3)


def test_hutchinson_trace_within_four_standard_errors():
    A, spectra, params = quadratic()
    mean, se = hutchinson_trace(quad_loss(A), params, max_iter=200, tol=0.0, generator=gen())
    exact = torch.diagonal(A.double(), dim1=1, dim2=2).sum(1)
    assert mean.shape == se.shape == (3,)
    assert bool((se > 0).all())
    assert bool(((mean.double() - exact).abs() < 4 * se.double()).all()), (mean, exact, se)


def test_hutchinson_is_exact_for_diagonal_hessian():
    """Rademacher probes: vᵀ D v = tr(D) for every probe, so the mean is exact and stderr 0."""
    A = torch.diag_embed(torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, 4.0]]))  # (2, 3, 3)
    mean, se = hutchinson_trace(quad_loss(A), {"x": torch.ones(2, 3)}, max_iter=20, generator=gen())
    torch.testing.assert_close(mean, torch.tensor([6.0, 4.5]))
    torch.testing.assert_close(se, torch.zeros(2), atol=1e-6, rtol=0)


def test_members_together_equal_members_alone():
    A, _, params = quadratic()
    loss = quad_loss(A)
    together = top_eigenvalue(loss, params, max_iter=500, tol=1e-5, generator=gen())
    t_mean, t_se = hutchinson_trace(loss, params, max_iter=100, tol=0.0, generator=gen())
    for m in range(A.shape[0]):
        alone_params = {"x": params["x"][m : m + 1]}
        alone = top_eigenvalue(quad_loss(A[m : m + 1]), alone_params, max_iter=500, tol=1e-5, generator=gen(7))
        assert alone.item() == pytest.approx(together[m].item(), rel=1e-3)
        a_mean, a_se = hutchinson_trace(quad_loss(A[m : m + 1]), alone_params, max_iter=100, tol=0.0,
                                        generator=gen(7))
        assert abs(a_mean.item() - t_mean[m].item()) < 4 * (a_se.item() ** 2 + t_se[m].item() ** 2) ** 0.5


def test_members_together_equal_members_alone_with_the_same_per_member_probes():
    """With one generator per member, member m's draws are its own: results equal, not just close."""
    A, _, params = quadratic()
    loss = quad_loss(A)
    gens = lambda: [gen(10 + m) for m in range(3)]  # noqa: E731
    eig = top_eigenvalue(loss, params, max_iter=500, tol=1e-5, generator=gens())
    mean, se = hutchinson_trace(loss, params, max_iter=30, tol=0.0, generator=gens())
    for m in range(3):
        alone_loss, alone_params = quad_loss(A[m : m + 1]), {"x": params["x"][m : m + 1]}
        a_eig = top_eigenvalue(alone_loss, alone_params, max_iter=500, tol=1e-5, generator=[gen(10 + m)])
        a_mean, a_se = hutchinson_trace(alone_loss, alone_params, max_iter=30, tol=0.0, generator=[gen(10 + m)])
        assert a_eig.item() == pytest.approx(eig[m].item(), rel=1e-5)
        assert a_mean.item() == pytest.approx(mean[m].item(), rel=1e-5)
        assert a_se.item() == pytest.approx(se[m].item(), rel=1e-4)
    with pytest.raises(ValueError, match="2 generators for 3 members"):
        top_eigenvalue(loss, params, generator=[gen(0), gen(1)])


def test_reproducible_from_generator_seed():
    A, _, params = quadratic()
    loss = quad_loss(A)
    a = hutchinson_trace(loss, params, max_iter=15, tol=0.0, generator=gen(5))
    b = hutchinson_trace(loss, params, max_iter=15, tol=0.0, generator=gen(5))
    c = hutchinson_trace(loss, params, max_iter=15, tol=0.0, generator=gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_nonfinite_member_is_nan_and_does_not_spoil_the_others():
    A, _, params = quadratic()
    x = params["x"].detach().clone()
    x[1, 0] = float("nan")
    eig = top_eigenvalue(quad_loss(A), {"x": x}, max_iter=500, tol=1e-5, generator=gen())
    mean, se = hutchinson_trace(quad_loss(A), {"x": x}, max_iter=50, generator=gen())
    assert torch.isnan(eig[1]) and torch.isnan(mean[1]) and torch.isnan(se[1])
    exact = torch.linalg.eigvalsh(A.double())[:, -1]
    assert eig[0].item() == pytest.approx(exact[0].item(), rel=1e-3)
    assert eig[2].item() == pytest.approx(exact[2].item(), rel=1e-3)
    assert bool(torch.isfinite(mean[[0, 2]]).all())


# ---- a real Population against the exact Hessian of one plain module -------------------------
@pytest.fixture(scope="module")
def population():
    pop = Population(tasks.load("mnist1d"), {"family": "mlp", "width": 8, "depth": 1}, "kaiming_uniform",
                     {"optimizer": "sgd", "batch_size": 128, "epochs": 1, "data_fraction": 0.1},
                     [MemberConfig("a", 0, 0.1), MemberConfig("b", 1, 0.1)])
    pop.train_epoch(1)  # move off the initialization
    return pop


def exact_hessian(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The full Hessian of the mean cross-entropy w.r.t. the flattened parameters, in float64."""
    net = net.double().eval()
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])

    def loss(w):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = w[i : i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(functional_call(net, parts, (x.double(),)), y)

    return torch.autograd.functional.hessian(loss, flat)


def test_population_metrics_match_exact_hessian_of_member_0(population):
    pop = population
    x, y = pop.x[:256], pop.y[0, :256]
    before = {k: v.detach().clone() for k, v in pop.params.items()}
    out = hessian_metrics(pop, x, y, iters=200, probes=100, tol=1e-4, seed=0)
    assert set(out) == {"top_eigenvalue", "trace", "trace_stderr"}
    assert all(v.shape == (2,) for v in out.values())
    assert all(torch.equal(before[k], pop.params[k].detach()) for k in before)  # weights untouched

    H = exact_hessian(pop.member_module(0), x, y)  # (P, P)
    lam = torch.linalg.eigvalsh(H)
    top = lam[lam.abs().argmax()]
    assert out["top_eigenvalue"][0].item() == pytest.approx(top.item(), rel=1e-2)
    tr, se = out["trace"][0].item(), out["trace_stderr"][0].item()
    assert se > 0
    assert abs(tr - torch.trace(H).item()) < 4 * se, (tr, torch.trace(H).item(), se)


def test_population_loss_fn_matches_plain_modules(population):
    pop = population
    x = pop.x[:64]
    y = pop.y[:, :64]  # per-member labels (M, N)
    losses = population_loss_fn(pop, x, y)(pop.params)
    for i in range(2):
        plain = F.cross_entropy(pop.member_module(i)(x), y[i])
        assert losses[i].item() == pytest.approx(plain.item(), rel=1e-5)


def test_vmap_and_stacked_forward_give_the_same_metrics(population):
    """The double backward also works through the vmap(functional_call) path."""
    pop = population
    vm = Population(pop.task, pop.arch, pop.init, pop.common, pop.members, vectorize="vmap")
    vm.params = {k: v.detach().clone().requires_grad_(True) for k, v in pop.params.items()}
    x, y = pop.x[:128], pop.y[0, :128]
    a = hessian_metrics(pop, x, y, iters=20, probes=10, tol=0.0)
    b = hessian_metrics(vm, x, y, iters=20, probes=10, tol=0.0)
    assert vm.vectorized_by == "vmap" and pop.vectorized_by == "stacked"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5)


def test_member_metrics_do_not_depend_on_the_population(population):
    """hessian_metrics seeds each member by its model_id: a member alone gets the same numbers."""
    pop = population
    x, y = pop.x[:128], pop.y[0, :128]
    both = hessian_metrics(pop, x, y, iters=15, probes=12, tol=0.0, seed=3)
    solo = Population(pop.task, pop.arch, pop.init, pop.common, pop.members[1:])
    solo.params = {k: v[1:].detach().clone().requires_grad_(True) for k, v in pop.params.items()}
    alone = hessian_metrics(solo, x, y, iters=15, probes=12, tol=0.0, seed=3)
    for k in both:
        assert alone[k].item() == pytest.approx(both[k][1].item(), rel=1e-4), k
    other_seed = hessian_metrics(solo, x, y, iters=15, probes=12, tol=0.0, seed=4)
    assert other_seed["trace"].item() != alone["trace"].item()
