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
"""
from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

PHASES = ("I", "II", "III", "IV-A", "IV-B")
MEANING = {
    "I": "under-trained, poorly connected (mc < 0)",
    "II": "under-trained, well connected (mc >= 0)",
    "III": "trained, poorly connected: a loss barrier between seeds (mc < 0)",
    "IV-A": "trained, well connected, dissimilar representations (low CKA)",
    "IV-B": "trained, well connected, similar representations (high CKA)",
}


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
    """

    model_config = ConfigDict(extra="forbid")
    train_loss: float = Field(0.1, gt=0)
    log_hessian_trace: float = 4.0
    mc_tolerance: float = Field(0.1, ge=0)
    cka: float = Field(0.9, gt=0, le=1)
    mc_on: str = Field("loss", pattern="^(loss|error)$")
    cka_on: str = Field("logits", pattern="^(logits|features)$")


def _finite(*xs: float | None) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def label_phase(train_loss: float, log_hessian_trace: float, mc: float, cka: float,
                th: PhaseThresholds | None = None) -> str:
    """I, II, III, IV-A or IV-B for one cell; "" when a needed metric is missing (NaN/None)."""
    th = th or PhaseThresholds()
    if not _finite(train_loss, log_hessian_trace, mc):
        return ""
    trained = train_loss <= th.train_loss and log_hessian_trace <= th.log_hessian_trace
    connected = mc >= -th.mc_tolerance
    if not trained:
        return "II" if connected else "I"
    if not connected:
        return "III"
    if not _finite(cka):
        return ""
    return "IV-B" if cka >= th.cka else "IV-A"


def label_cell(cell: dict, th: PhaseThresholds | None = None) -> str:
    """label_phase on a cells-table row (uses th.mc_on / th.cka_on to pick the columns)."""
    th = th or PhaseThresholds()
    return label_phase(cell.get("train_loss"), cell.get("log_hessian_trace"), cell.get(f"mc_{th.mc_on}"),
                       cell.get(f"cka_{th.cka_on}"), th)
