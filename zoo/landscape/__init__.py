"""Loss-landscape and representation metrics of zoo members: Hessian spectrum, CKA, mode
connectivity, and the rule that turns them into a phase label.

Math only: functions of tensors and Populations, never disk, Ray or the Hub.
"""
from zoo.landscape.cka import linear_cka, mean_pairwise_cka, penultimate_and_logits
from zoo.landscape.connectivity import bezier, connectivity, mode_connectivity
from zoo.landscape.phases import PHASES, PhaseThresholds, label_phase
from zoo.landscape.hessian import (hessian_metrics, hutchinson_trace, hvp, population_loss_fn,
                                   top_eigenvalue)

__all__ = ["PHASES", "PhaseThresholds", "bezier", "connectivity", "label_phase", "mode_connectivity", "hessian_metrics", "hutchinson_trace", "hvp", "linear_cka", "mean_pairwise_cka",
           "penultimate_and_logits", "population_loss_fn", "top_eigenvalue"]
