"""The phase labelling rule on hand-made metric rows, one per phase, plus its edge cases."""
from __future__ import annotations

import math

import pytest

from zoo.landscape.phases import PHASES, PhaseThresholds, label_cell, label_phase

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
