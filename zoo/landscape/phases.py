"""The phase label of a cell: one explicit rule from its loss-landscape metrics.

Taxonomy of Yang et al. 2021 ("Taxonomizing local versus global structure in neural network
loss landscapes"), as used by the phase model zoo (Schürholt et al. 2025):

    locally                    globally (mode connectivity mc)      representations (CKA)
    under-trained  ──┬── mc < 0  (barrier)          -> I
                     └── mc ≥ 0  (connected)        -> II
    trained        ──┬── mc < 0  (barrier)          -> III
                     └── mc ≥ 0  (connected) ──┬── CKA < τ  -> IV-A
                                               └── CKA ≥ τ  -> IV-B

"Trained" is local: a low training loss *and* a minimum that is not sharp (log₁₀ of the Hessian
trace below a bound); an under-trained model sits on a steep, high-loss slope (Yang et al. find
the trace large exactly where the loss is high). A barrier is mc below −`mc_tolerance`, so a
curve that is flat within noise counts as connected.

How sure a label is (`decide_phase`): each comparison on the decision path has a *margin*, the
distance of the cell's value from its threshold in units of the seeds' spread,

    margin = |value − threshold| / s,   s = sample standard deviation (ddof 1) of the metric
                                            over the cell's seeds (train loss, log₁₀ trace) or
                                            seed pairs (mc, CKA)

and the label's margin is the smallest one along the path (see `decide_phase` for how the two
conditions of "trained" combine). Float32 training rounds differently on different CPUs and the
difference grows over training, so a cell whose margin is below `PhaseThresholds.margin` (one
spread by default) may get another label on another machine: it is flagged uncertain.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field

PHASES = ("I", "II", "III", "IV-A", "IV-B")
MEANING = {
    "I": "under-trained, poorly connected (mc < 0)",
    "II": "under-trained, well connected (mc >= 0)",
    "III": "trained, poorly connected: a loss barrier between seeds (mc < 0)",
    "IV-A": "trained, well connected, dissimilar representations (low CKA)",
    "IV-B": "trained, well connected, similar representations (high CKA)",
}
NAN = float("nan")


class PhaseThresholds(BaseModel):
    """Thresholds of the rule (the `metrics.phases` section of a zoo spec).

    train_loss = 0.1 nats: the geometric-mean probability the model gives the correct training
      label is e^-0.1 ≈ 0.90 — the model fits its training data with margin, not just by argmax.
    log_hessian_trace = 4: a trace of 10⁴ is two orders of magnitude above what interpolating
      MLP/CNN zoo members show (10⁰–10²) and is reached on the high-loss slopes of under-trained
      or unstable training; it only overrules the loss for sharp, unstable minima.
    mc_tolerance = 0.1: on mc of the training loss (nats). A Bezier curve fitted for the default
      20 epochs still leaves a residual bump between interpolating seeds that longer fitting
      removes (default zoo, width 256, batch 64: mc −0.29 after 10 epochs, −0.07 after 20,
      −0.06 after 40), while real barriers there are 0.3–0.8 nats; 0.1 separates the two.
    cka = 0.9: linear CKA of logits between seeds; ≥ 0.9 means the seeds compute nearly the same
      function up to a linear map (IV-B, the "best" phase in Yang et al.); under-trained and
      noisy cells of the default zoo sit at 0.3–0.85.
    mc_on: which curve metric decides connectivity ("loss" as in Yang et al., or "error").
    cka_on: which representation CKA uses ("logits" or "features").
    margin = 1.0: a cell whose label margin (distance of the deciding metric from its threshold,
      in seed standard deviations) is below this is flagged uncertain. One spread: the seeds of
      the cell themselves disagree about that much, and so may a rebuild on another CPU.
      A margin that cannot be estimated (NaN: fewer than 2 seeds / seed pairs) is uncertain too.
    """

    model_config = ConfigDict(extra="forbid")
    train_loss: float = Field(0.1, gt=0)
    log_hessian_trace: float = 4.0
    mc_tolerance: float = Field(0.1, ge=0)
    cka: float = Field(0.9, gt=0, le=1)
    mc_on: str = Field("loss", pattern="^(loss|error)$")
    cka_on: str = Field("logits", pattern="^(logits|features)$")
    margin: float = Field(1.0, ge=0)


@dataclass(frozen=True)
class PhaseDecision:
    """A cell's label and how close it came to another one.

    label: I, II, III, IV-A, IV-B, or "" when a needed metric is missing.
    margin: the smallest margin along the decision path, in seed spreads (≥ 0; +inf when the
      seeds agree exactly; NaN when a spread on the path cannot be estimated or a metric is missing).
    decided_by: the metric with that margin ("train_loss", "log_hessian_trace", "mc_loss" /
      "mc_error", "cka_logits" / "cka_features"); for "" the metric that is missing.
    uncertain: margin < th.margin, or margin NaN (conservative).
    """

    label: str
    margin: float
    decided_by: str
    uncertain: bool


def _finite(*xs: float | None) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def seed_spread(values: Iterable[float | None] | None) -> float:
    """Sample standard deviation (ddof 1) of the finite values; NaN when fewer than 2 remain."""
    xs = [float(v) for v in (values if values is not None else []) if v is not None and math.isfinite(float(v))]
    return statistics.stdev(xs) if len(xs) >= 2 else NAN


def threshold_margin(value: float, threshold: float, spread: float | None) -> float:
    """|value − threshold| / spread: how many seed spreads the value lies from its threshold.

    NaN when the spread is unknown (None/NaN); 0 when the value sits on the threshold; +inf when
    the spread is 0 (all seeds agree exactly) and the value is off the threshold.
    """
    if spread is None or not math.isfinite(spread) or not _finite(value):
        return NAN
    d = abs(value - threshold)
    if d == 0:
        return 0.0
    return math.inf if spread == 0 else d / spread


Step = tuple[float, str]  # (margin, metric name)


def _weakest(steps: list[Step]) -> Step:
    """The step that flips first: smallest margin; an unknown (NaN) margin could be anything,
    so the first NaN wins. Ties go to the earlier step on the path."""
    for m, name in steps:
        if math.isnan(m):
            return m, name
    return min(steps, key=lambda s: s[0])


def _strongest(steps: list[Step]) -> Step:
    """The margin of a decision that flips only when *every* step flips: the largest margin.
    An unknown (NaN) margin is skipped when a known one exists, because the known one alone is
    a lower bound of the max (reporting it can only understate the margin). All NaN -> NaN."""
    known = [s for s in steps if not math.isnan(s[0])]
    if not known:
        return steps[0]
    return max(known, key=lambda s: s[0])  # ties: the earlier step (max keeps the first)


def decide_phase(train_loss: float, log_hessian_trace: float, mc: float, cka: float,
                 th: PhaseThresholds | None = None, spreads: Mapping[str, float] | None = None) -> PhaseDecision:
    """The label of one cell, its margin, the metric that decided it, and whether it is uncertain.

    `train_loss`, `log_hessian_trace`, `mc`, `cka`: the cell's values (means over seeds / pairs;
    `mc` and `cka` are the columns named by th.mc_on / th.cka_on). `spreads`: the seeds' sample
    standard deviation of each metric, keyed by metric name ("train_loss", "log_hessian_trace",
    "mc_loss" or "mc_error", "cka_logits" or "cka_features"); a missing key = unknown (NaN).

    The decision path and its margin:
      1. trained = train_loss ≤ th AND log trace ≤ th. If trained, one failing condition is
         enough to flip it: margin = min(m_loss, m_trace). If not trained, every failing
         condition must flip (a passing one already passes): margin = max over the failing ones.
      2. connected = mc ≥ −mc_tolerance: margin = m_mc (always on the path).
      3. only when trained and connected: CKA ≥ th.cka: margin = m_cka.
    The label's margin is the smallest over the steps (an unknown one wins: see `_weakest`).
    """
    th = th or PhaseThresholds()
    sp = dict(spreads or {})
    mc_name, cka_name = f"mc_{th.mc_on}", f"cka_{th.cka_on}"
    for value, name in ((train_loss, "train_loss"), (log_hessian_trace, "log_hessian_trace"), (mc, mc_name)):
        if not _finite(value):
            return PhaseDecision("", NAN, name, True)

    loss = (threshold_margin(train_loss, th.train_loss, sp.get("train_loss")), "train_loss")
    trace = (threshold_margin(log_hessian_trace, th.log_hessian_trace, sp.get("log_hessian_trace")), "log_hessian_trace")
    loss_ok, trace_ok = train_loss <= th.train_loss, log_hessian_trace <= th.log_hessian_trace
    trained = loss_ok and trace_ok
    if trained:
        path = [_weakest([loss, trace])]
    else:
        path = [_strongest([s for s, ok in ((loss, loss_ok), (trace, trace_ok)) if not ok])]

    connected = mc >= -th.mc_tolerance
    path.append((threshold_margin(mc, -th.mc_tolerance, sp.get(mc_name)), mc_name))
    if not trained:
        label = "II" if connected else "I"
    elif not connected:
        label = "III"
    else:
        if not _finite(cka):
            return PhaseDecision("", NAN, cka_name, True)
        path.append((threshold_margin(cka, th.cka, sp.get(cka_name)), cka_name))
        label = "IV-B" if cka >= th.cka else "IV-A"
    margin, decided_by = _weakest(path)
    return PhaseDecision(label, margin, decided_by, uncertain=not margin >= th.margin)  # NaN -> uncertain


def label_phase(train_loss: float, log_hessian_trace: float, mc: float, cka: float,
                th: PhaseThresholds | None = None) -> str:
    """I, II, III, IV-A or IV-B for one cell; "" when a needed metric is missing (NaN/None)."""
    return decide_phase(train_loss, log_hessian_trace, mc, cka, th).label


def _log10_positive(values: Iterable[float | None] | None) -> list[float]:
    return [math.log10(float(v)) for v in (values if values is not None else [])
            if v is not None and math.isfinite(float(v)) and float(v) > 0]


def cell_spreads(cell: Mapping, th: PhaseThresholds | None = None) -> dict[str, float]:
    """The seeds' spread of each deciding metric, from a cells-table row's per-member / per-pair lists:
    member_train_loss, log₁₀ of member_hessian_trace (positive traces only), pair_mc_<on>, pair_cka_<on>.
    A list that is missing (a cell written before these columns existed) gives NaN."""
    th = th or PhaseThresholds()
    mc_name, cka_name = f"mc_{th.mc_on}", f"cka_{th.cka_on}"
    return {
        "train_loss": seed_spread(cell.get("member_train_loss")),
        "log_hessian_trace": seed_spread(_log10_positive(cell.get("member_hessian_trace"))),
        mc_name: seed_spread(cell.get(f"pair_{mc_name}")),
        cka_name: seed_spread(cell.get(f"pair_{cka_name}")),
    }


def decide_cell(cell: Mapping, th: PhaseThresholds | None = None) -> PhaseDecision:
    """decide_phase on a cells-table row (th.mc_on / th.cka_on pick the columns, cell_spreads the spreads)."""
    th = th or PhaseThresholds()
    return decide_phase(cell.get("train_loss"), cell.get("log_hessian_trace"), cell.get(f"mc_{th.mc_on}"),
                        cell.get(f"cka_{th.cka_on}"), th, cell_spreads(cell, th))


def label_cell(cell: Mapping, th: PhaseThresholds | None = None) -> str:
    """label_phase on a cells-table row (uses th.mc_on / th.cka_on to pick the columns)."""
    return decide_cell(cell, th).label
