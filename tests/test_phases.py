"""The phase labelling rule on hand-made metric rows, one per phase, plus its edge cases, and the
label's margin (distance from the threshold in seed spreads) on every branch of the decision path."""
from __future__ import annotations

import math

import pytest

from zoo.landscape.phases import (PHASES, PhaseThresholds, cell_spreads, decide_cell, decide_phase, label_cell,
                                  label_phase, seed_spread, threshold_margin)

TH = PhaseThresholds(mc_tolerance=0.05)  # train_loss 0.1, log trace 4, cka 0.9

ROWS = {
    # (train_loss, log10 trace, mc, cka)
    "I": (1.2, 2.5, -0.4, 0.5),       # high loss, barrier
    "II": (0.8, 2.0, 0.02, 0.6),      # high loss, connected
    "III": (0.02, 1.0, -0.3, 0.95),   # fits the data, barrier between seeds
    "IV-A": (0.01, 0.5, 0.0, 0.7),    # fits, connected, dissimilar logits
    "IV-B": (0.005, 0.3, 0.01, 0.97),  # fits, connected, similar logits
}


@pytest.mark.parametrize("phase", PHASES)
def test_every_phase(phase):
    assert label_phase(*ROWS[phase], TH) == phase


def test_sharp_minimum_is_not_trained():
    loss, _, mc, cka = ROWS["IV-B"]
    assert label_phase(loss, 5.0, mc, cka, TH) == "II"
    assert label_phase(loss, 5.0, -0.5, cka, TH) == "I"


def test_tolerance_and_thresholds_are_used():
    assert label_phase(0.01, 0.5, -0.04, 0.95, TH) == "IV-B"  # within mc tolerance
    assert label_phase(0.01, 0.5, -0.06, 0.95, TH) == "III"
    strict = PhaseThresholds(train_loss=0.001, cka=0.99)
    assert label_phase(0.01, 0.5, 0.0, 0.95, strict) == "II"
    assert label_phase(0.0005, 0.5, 0.0, 0.95, strict) == "IV-A"


def test_missing_metrics_give_no_label():
    assert label_phase(math.nan, 1.0, 0.0, 0.9, TH) == ""
    assert label_phase(0.01, 1.0, math.nan, 0.9, TH) == ""  # one seed: no pairs, no connectivity
    assert label_phase(0.01, 1.0, 0.0, math.nan, TH) == ""  # IV needs CKA to split A/B
    assert label_phase(1.0, 1.0, -1.0, math.nan, TH) == "I"  # ...but I/II/III do not


def test_label_cell_picks_configured_columns():
    cell = {"train_loss": 0.01, "log_hessian_trace": 0.5, "mc_loss": -0.3, "mc_error": 0.0,
            "cka_logits": 0.95, "cka_features": 0.5}
    assert label_cell(cell, TH) == "III"
    assert label_cell(cell, PhaseThresholds(mc_on="error")) == "IV-B"
    assert label_cell(cell, PhaseThresholds(mc_on="error", cka_on="features")) == "IV-A"


def test_thresholds_validate():
    with pytest.raises(ValueError):
        PhaseThresholds(mc_on="accuracy")
    with pytest.raises(ValueError):
        PhaseThresholds(cka=1.5)
    with pytest.raises(ValueError):
        PhaseThresholds(margin=-1.0)
    assert PhaseThresholds().margin == 1.0


# ---- margins: how far the deciding metric lies from its threshold, in seed spreads ----------
# Values below are binary fractions, so every margin is exact in floating point.
BY_HAND = PhaseThresholds(train_loss=0.25, log_hessian_trace=4.0, mc_tolerance=0.125, cka=0.875)


def _cell(**over) -> dict:
    cell = {
        "train_loss": 0.125, "member_train_loss": [0.0625, 0.125, 0.1875],      # sd 0.0625 -> (0.25-0.125)/0.0625 = 2
        "log_hessian_trace": 2.0, "member_hessian_trace": [10.0, 100.0, 1000.0],  # log10: 1, 2, 3, sd 1 -> (4-2)/1 = 2
        "mc_loss": 0.0, "pair_mc_loss": [-0.125, 0.0, 0.125],                   # sd 0.125 -> (0+0.125)/0.125 = 1
        "mc_error": 0.0, "pair_mc_error": [0.0, 0.0, 0.0],
        "cka_logits": 0.75, "pair_cka_logits": [0.5, 0.75, 1.0],               # sd 0.25 -> |0.75-0.875|/0.25 = 0.5
        "cka_features": 0.5, "pair_cka_features": [0.5],
    }
    return {**cell, **over}


def test_seed_spread_and_threshold_margin():
    assert seed_spread([0.0625, 0.125, 0.1875]) == 0.0625  # sample sd (ddof 1)
    assert seed_spread([1.0, None, math.nan, 3.0, math.inf]) == pytest.approx(math.sqrt(2))  # non-finite skipped
    assert math.isnan(seed_spread([1.0])) and math.isnan(seed_spread([])) and math.isnan(seed_spread(None))
    assert threshold_margin(0.125, 0.25, 0.0625) == 2.0
    assert threshold_margin(0.5, 0.25, 0.0625) == 4.0  # distance, not signed
    assert threshold_margin(0.25, 0.25, 0.0625) == 0.0 and threshold_margin(0.25, 0.25, 0.0) == 0.0  # on the threshold
    assert threshold_margin(0.125, 0.25, 0.0) == math.inf  # seeds agree exactly, off the threshold
    assert math.isnan(threshold_margin(0.125, 0.25, math.nan)) and math.isnan(threshold_margin(0.125, 0.25, None))


def test_margin_computed_by_hand():
    cell = _cell()
    assert cell_spreads(cell, BY_HAND) == {"train_loss": 0.0625, "log_hessian_trace": 1.0, "mc_loss": 0.125,
                                          "cka_logits": 0.25}
    d = decide_cell(cell, BY_HAND)
    # trained (min(2, 2) = 2), connected (1), IV-A by CKA (0.5): the smallest, 0.5, decides
    assert (d.label, d.margin, d.decided_by, d.uncertain) == ("IV-A", 0.5, "cka_logits", True)
    assert label_cell(cell, BY_HAND) == "IV-A"
    # CKA 0.75 of pairs 0.625, 0.75, 0.875: margin 0.125/0.125 = 1, ties with mc (1): the earlier step
    # names it, and a margin equal to the bound is not below it -> certain
    d = decide_cell(_cell(pair_cka_logits=[0.625, 0.75, 0.875]), BY_HAND)
    assert (d.label, d.margin, d.decided_by, d.uncertain) == ("IV-A", 1.0, "mc_loss", False)
    # the bound is a threshold field
    d = decide_cell(cell, BY_HAND.model_copy(update={"margin": 0.5}))
    assert (d.margin, d.uncertain) == (0.5, False)


def test_trained_flips_on_either_condition_min():
    sp = {"train_loss": 0.01, "log_hessian_trace": 2.0, "mc_loss": 0.01, "cka_logits": 0.001}
    # loss 0.05 below 0.1 by 5 spreads, log trace 3 below 4 by 0.5 spreads: trained, margin min = 0.5
    d = decide_phase(0.05, 3.0, 0.0, 0.95, PhaseThresholds(), sp)
    assert (d.label, d.margin, d.decided_by, d.uncertain) == ("IV-B", 0.5, "log_hessian_trace", True)


def test_not_trained_one_failing_condition():
    # loss 0.3 fails by 0.2/0.1 = 2 spreads; the trace passes by only 0.1 spreads but cannot flip the
    # decision alone (the loss still fails): the step's margin is the failing loss's, 2
    sp = {"train_loss": 0.1, "log_hessian_trace": 10.0, "mc_loss": 0.01}
    d = decide_phase(0.3, 3.0, 0.5, math.nan, PhaseThresholds(), sp)
    assert d.label == "II" and d.margin == pytest.approx(2.0) and d.decided_by == "train_loss" and not d.uncertain


def test_not_trained_two_failing_conditions_max():
    # loss fails by 0.4/0.2 = 2 spreads, log trace 6.5 fails by 2.5/0.5 = 5: both must flip -> 5
    sp = {"train_loss": 0.2, "log_hessian_trace": 0.5, "mc_loss": 0.05}
    d = decide_phase(0.5, 6.5, 0.4, 0.5, PhaseThresholds(), sp)  # mc 0.4: (0.4+0.1)/0.05 = 10 spreads
    assert (d.label, d.decided_by) == ("II", "log_hessian_trace") and d.margin == pytest.approx(5.0)
    d = decide_phase(0.5, 6.5, -0.25, 0.5, PhaseThresholds(), sp)  # mc −0.25: 0.15/0.05 = 3 < 5 decides
    assert (d.label, d.decided_by) == ("I", "mc_loss") and d.margin == pytest.approx(3.0)
    # an unknown spread of one failing condition: the known one is a lower bound of the max
    d = decide_phase(0.5, 6.5, 0.4, 0.5, PhaseThresholds(), {**sp, "log_hessian_trace": math.nan})
    assert d.decided_by == "train_loss" and d.margin == pytest.approx(2.0) and not d.uncertain
    d = decide_phase(0.5, 6.5, 0.4, 0.5, PhaseThresholds(), {"mc_loss": 0.05})  # both unknown
    assert math.isnan(d.margin) and d.decided_by == "train_loss" and d.uncertain


def test_barrier_decides_phase_three_and_cka_is_off_the_path():
    # III: trained, mc −0.3 is 0.2/0.1 = 2 spreads below −0.1; CKA (spread unknown) is not consulted
    sp = {"train_loss": 0.001, "log_hessian_trace": 0.1, "mc_loss": 0.1}
    d = decide_phase(0.02, 1.0, -0.3, 0.95, PhaseThresholds(), sp)
    assert (d.label, d.decided_by, d.uncertain) == ("III", "mc_loss", False) and d.margin == pytest.approx(2.0)


def test_unknown_spread_is_uncertain():
    # one seed pair: no spread of mc -> NaN margin, uncertain, even with every other margin large
    cell = _cell(pair_mc_loss=[0.0], pair_cka_logits=[0.75])
    d = decide_cell(cell, BY_HAND)
    assert d.label == "IV-A" and math.isnan(d.margin) and d.decided_by == "mc_loss" and d.uncertain


def test_zero_spread_gives_infinite_margin():
    sp = {"train_loss": 0.0, "log_hessian_trace": 0.0, "mc_loss": 0.0, "cka_logits": 0.0}
    d = decide_phase(0.05, 1.0, 0.0, 0.95, PhaseThresholds(), sp)
    assert d.label == "IV-B" and d.margin == math.inf and not d.uncertain
    d = decide_phase(0.1, 1.0, 0.0, 0.95, PhaseThresholds(), sp)  # loss exactly on the threshold: margin 0
    assert d.label == "IV-B" and (d.margin, d.decided_by, d.uncertain) == (0.0, "train_loss", True)


def test_configured_columns_and_old_rows():
    d = decide_cell(_cell(), BY_HAND.model_copy(update={"mc_on": "error", "cka_on": "features"}))
    # mc_error 0 with zero spread (inf); cka_features 0.5 from a single pair: no spread -> NaN
    assert (d.label, d.decided_by, d.uncertain) == ("IV-A", "cka_features", True) and math.isnan(d.margin)
    # a cell written before the per-seed lists existed: labelled as before, margin NaN, uncertain
    old = {"train_loss": 0.01, "log_hessian_trace": 0.5, "mc_loss": -0.3, "mc_error": 0.0, "cka_logits": 0.95,
           "cka_features": 0.5}
    d = decide_cell(old, TH)
    assert d.label == label_cell(old, TH) == "III" and math.isnan(d.margin) and d.uncertain


def test_missing_metric_names_what_is_missing():
    d = decide_phase(0.01, 1.0, math.nan, 0.9, TH)
    assert (d.label, d.decided_by, d.uncertain) == ("", "mc_loss", True) and math.isnan(d.margin)
    d = decide_phase(0.01, 1.0, 0.0, math.nan, TH)
    assert (d.label, d.decided_by) == ("", "cka_logits")


@pytest.mark.parametrize("phase", PHASES)
def test_decision_label_is_the_rule(phase):
    assert decide_phase(*ROWS[phase], TH).label == label_phase(*ROWS[phase], TH) == phase
