"""Landscape metrics of one cell (the seeds of one (temperature, load) point). Runs in a Ray task."""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from pipelines.bundle import member_configs
from zoo import tasks
from zoo.landscape.cka import pairwise_cka, penultimate_and_logits
from zoo.landscape.connectivity import connectivity, pairs
from zoo.landscape.hessian import hessian_metrics
from zoo.spec import members_by_id, parse_spec
from zoo.train import Population, derived_seed

NAN = float("nan")


def finite_mean(xs) -> float:
    """Mean of the finite values (None/NaN/inf skipped); NaN when there are none."""
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return float(np.mean(xs)) if xs else NAN


def cell_metrics(spec_json: dict, cell_id: str, member_ids: list[str], states: list[dict[str, np.ndarray]]) -> dict:
    """Hessian (per member, batched), CKA and mode connectivity (over seed pairs) of one cell.

    `member_ids`/`states`: the cell's models that did not diverge, at the metrics epoch (at most
    `metrics.seeds` of them: the stage picks them); CKA and the curves use `metrics.pairs` of their
    pairs when set (a choice seeded by the cell id, stored as `pair_members`).
    Besides the means, the per-member Hessian values and the per-pair CKA and mc values are kept
    (member_*, pair_*, pairs in connectivity.pairs order): the phase rule measures how far a cell
    lies from a threshold in units of their spread (zoo.landscape.phases.decide_phase).
    """
    t0 = time.perf_counter()
    spec = parse_spec(spec_json, f"spec of zoo {spec_json.get('name')}")
    ms = spec.metrics
    out = {"hessian_top_eig": NAN, "hessian_trace": NAN, "hessian_trace_stderr": NAN, "log_hessian_trace": NAN,
           "cka_logits": NAN, "cka_features": NAN, "mc_loss": NAN, "mc_error": NAN, "n_pairs": 0,
           "curve_t": [], "curve_loss": [], "curve_error": [], "member_ids": list(member_ids),
           "member_hessian_top_eig": [], "member_hessian_trace": [],
           "pair_members": [], "pair_mc_loss": [], "pair_mc_error": [], "pair_cka_logits": [], "pair_cka_features": []}
    if not member_ids:
        return {**out, "seconds": time.perf_counter() - t0}
    torch.set_num_threads(spec.compute.threads_per_worker)
    by_id = members_by_id(spec_json)
    members = [by_id[i] for i in member_ids]
    first = members[0]
    task = tasks.load(spec.task, first.task_args)
    pop = Population.from_states(task, first.arch, first.training, member_configs(members), states)
    x, y = pop.x, pop.y[0]  # the cell's training subset and its (possibly noisy) labels, shared by seeds

    # Hessian of the training loss on fixed batches, every member at once
    h = ms.hessian
    g = torch.Generator().manual_seed(derived_seed("hessian_batches", cell_id))
    idx = torch.randperm(x.shape[0], generator=g)[: h.batches * h.batch_size]
    hm = hessian_metrics(pop, x[idx], y[idx], iters=h.max_iter, probes=h.probes, tol=h.tol, seed=0)
    eig, tr = hm["top_eigenvalue"].tolist(), hm["trace"].tolist()
    trace = finite_mean(tr)
    out.update(hessian_top_eig=finite_mean(eig), hessian_trace=trace, hessian_trace_stderr=finite_mean(hm["trace_stderr"].tolist()),
               log_hessian_trace=math.log10(trace) if trace > 0 else NAN,
               member_hessian_top_eig=eig, member_hessian_trace=tr)

    if len(members) >= 2:
        # the seed pairs CKA and mode connectivity compare: all, or metrics.pairs of them
        pr = pairs(len(members), ms.pairs, derived_seed("pairs", cell_id))
        # CKA between seeds on held-out data
        xt = task.x_test[: spec.metrics.cka.samples]
        reps = [penultimate_and_logits(pop.member_module(i), xt) for i in range(len(members))]
        ck_features, ck_logits = pairwise_cka([r[0] for r in reps], pr), pairwise_cka([r[1] for r in reps], pr)
        out.update(cka_features=sum(ck_features) / len(ck_features), cka_logits=sum(ck_logits) / len(ck_logits),
                   pair_cka_features=ck_features, pair_cka_logits=ck_logits)  # mean: NaN if a pair is NaN
        # mode connectivity over the same pairs, the curves trained together
        a, b = [i for i, _ in pr], [j for _, j in pr]
        theta0 = {k: v.detach()[a] for k, v in pop.params.items()}
        theta1 = {k: v.detach()[b] for k, v in pop.params.items()}
        buffers = {k: v[a] for k, v in pop.buffers.items()}
        c = ms.connectivity
        res = connectivity(pop._fwd, buffers, theta0, theta1, x, y, epochs=c.epochs, batch_size=c.batch_size,
                           lr=c.lr, points=c.points, seed=derived_seed("curve", cell_id) % 2**31,
                           objective=pop.objective, template=pop.template)
        out.update(mc_loss=float(res["mc_loss"].mean()), mc_error=float(res["mc_error"].mean()), n_pairs=len(pr),
                   pair_members=[list(p) for p in pr],
                   pair_mc_loss=res["mc_loss"].double().tolist(), pair_mc_error=res["mc_error"].double().tolist(),
                   curve_t=res["t"].double().tolist(), curve_loss=res["curve_loss"].mean(0).tolist(),
                   curve_error=res["curve_error"].mean(0).tolist())
    return {**out, "seconds": time.perf_counter() - t0}
