"""Transfer per cell: fine-tune the cell's trained members on a second task, against a random
init of the same architecture, for the same small budget.

The second task is a shifted version of the zoo's own (zoo.tasks.TRANSFER_TARGETS; for MNIST-1D a
new draw with twice the correlated noise), so the whole net, head included, carries over. Both
start from the members' seeds (the random init is the zoo's own scheme at that seed) and train
with the zoo's trainer at the cell's hyperparameters for `epochs` over `data_fraction` of the
target's training set. Reported: zero-shot accuracy on the target (before fine-tuning), accuracy
after fine-tuning, random init's after the same budget, and the gain (paired by seed).
"""
from __future__ import annotations

import numpy as np

from pipelines.studies.common import as_tensors, build, load_task, population, train
from zoo import nets
from zoo.errors import ZooError
from zoo.tasks import TRANSFER_TARGETS

SETTINGS = {"epochs": 1, "data_fraction": 0.25}


def target_of(payload: dict) -> tuple[str, dict]:
    t = payload["task"]
    if t not in TRANSFER_TARGETS:
        raise ZooError(f"zoo {payload['zoo']}: `zoo study transfer` has a second task for the tasks "
                       f"{', '.join(sorted(TRANSFER_TARGETS))}; this zoo's task is {t!r}")
    return TRANSFER_TARGETS[t]


def compute(payload: dict, states: list[dict], settings: dict) -> dict:
    target = target_of(payload)
    task = load_task(payload, target)
    module = build(payload, task)
    seeds = payload["seeds"]
    trained = as_tensors(states, module)
    random = [nets.init_(build(payload, task), s, payload["init"]).state_dict() for s in seeds]
    pop = population(payload, task, trained + random, seeds + seeds, epochs=int(settings["epochs"]),
                     data_fraction=float(settings["data_fraction"]))
    before = pop.evaluate_split("test")
    key = "acc" if "acc" in before else "rel_l2"
    higher = key == "acc"
    zero_shot = [float(v) for v in before[key][: len(seeds)]]
    train(pop)
    after = [float(v) for v in pop.evaluate_split("test")[key]]
    ft, rnd = after[: len(seeds)], after[len(seeds):]
    sign = 1.0 if higher else -1.0
    gain = [sign * (a - b) for a, b in zip(ft, rnd)]
    return {"metric": f"test_{key}", "higher_is_better": higher, "target": {"task": target[0], "task_args": target[1]},
            "steps": pop.step_count, "zero_shot": zero_shot, "finetuned": ft, "random": rnd,
            "finetuned_median": float(np.median(ft)), "random_median": float(np.median(rnd)),
            "zero_shot_median": float(np.median(zero_shot)), "gain": float(np.median(gain)), "per_seed": {"gain": gain}}


FIGURES = {"gain": "fine-tuned − random init, same budget", "finetuned_median": "accuracy after fine-tuning"}
COLUMNS = ("zero_shot_median", "finetuned_median", "random_median", "gain")
