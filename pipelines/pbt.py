"""`zoo build --phase pbt`: population-based training zoos on Ray Tune, with every member's lineage.

One PBT experiment (one `tune.Tuner` run with Tune's own PopulationBasedTraining scheduler, or
PB2) per (seed, load value) of the spec (zoo.pbt); one Tune trial per member. A trial trains its
member as a population of one (zoo.train.Population: the zoo's own optimizer arithmetic) for
`perturbation_interval` epochs, then reports the validation metric with a checkpoint (weights,
optimizer state, hyperparameters and the weights' history). Tune's exploit restores a weaker
trial from a stronger one's checkpoint and explore perturbs the copied hyperparameters; the
trial finds out on restore (the checkpoint's owner is another member) and appends a segment to
the history. PBT runs synchronously, so every exploit copies weights at the same epoch.

Why one member per trial: it is what Tune's scheduler ranks, checkpoints and clones, so exploit
and explore, Tune's restore and its retry of a failed trial all apply unchanged; a trial that
stacked the population and exploited inside itself would replace Tune's PBT with our own loop.
What it costs (measured in bench/pbt_overhead.py, README): the members no longer share one
stacked step, and each perturbation round pauses and resumes every trial.

Rows: a member writes the row of each checkpoint epoch of its own trajectory when it gets there
(atomically, into the state folder), with the schedule and lineage that made those weights; an
experiment's rows are committed to the dataset as one bundle once Tune has finished it. State
lives in <out>/.pbt/<zoo>/ (Tune's experiments, trial identities, member rows): not part of the
dataset, never pushed. A rerun after kill -9 continues each unfinished experiment with Tune's
restore (`Tuner.restore`, which reads the experiment state Tune itself wrote there).

`replay(root, row)` retrains a row's weights from its recorded schedule and lineage as a plain
run, without Tune, through the same MemberRun the trials use: on the same machine it gives the
same bytes.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from ray import tune

from pipelines.bundle import member_configs, model_row
from pipelines.plan import plan
from zoo import nets, store, tasks
from zoo.errors import ZooError
from zoo.pbt import MUTABLE, clip, nearest, temperature_coordinate
from zoo.spec import Cell, Member, ZooSpec, members_by_id, parse_spec
from zoo.train import Population, derived_seed, validation_indices

STATE = ".pbt"
# Tune's per-checkpoint INFO lines ("Checkpoint successfully created", "Restored on ...") from
# every trial drown the progress bar; this module is imported in each trial's worker first
for _name in ("ray.tune.trainable.trainable", "ray.train._internal.storage", "ray.train.v2._internal.execution.storage"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# ---- experiments ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    """One Tune run: the `population` members of one seed and one load value."""

    zoo: str
    index: int
    seed: int
    load_index: int
    members: tuple[Member, ...]

    @property
    def name(self) -> str:
        return f"{self.zoo}-s{self.seed}-L{self.load_index}"

    bundle_id: str


def experiments(spec: ZooSpec) -> list[Experiment]:
    """The spec's experiments in member order (seed-major, then load value): the bundles of
    pipelines.plan.plan, with their seed and load index."""
    n_loads = len(spec.axes.load.values)
    return [Experiment(spec.name, b.index, spec.seeds[b.index // n_loads], b.index % n_loads, b.members, b.bundle_id)
            for b in plan(spec)]


def state_dir(out: Path, zoo: str) -> Path:
    return Path(out) / STATE / zoo


# ---- one member's training, shared by the trials and the replay ---------------------------
class MemberRun:
    """A member trained as a population of one whose hyperparameters change between epochs,
    with the history of its weights: `segments` (who trained them from which epoch), the
    hyperparameters of every epoch, and the curves. Epoch e's data order is drawn from the seed
    of the segment that trains it, so the history alone determines the weights."""

    def __init__(self, spec: ZooSpec, member: Member, state: dict | None = None, optimizer: dict | None = None,
                 history: dict | None = None, hp: dict | None = None):
        self.spec, self.member = spec, member
        task = tasks.load(spec.task, member.task_args)
        self.pop = Population(task, member.arch, spec.model.init, member.training, member_configs([member]),
                              states=[state] if state is not None else None)
        if optimizer is not None:
            self.pop.load_optimizer_state(optimizer)
        vi = validation_indices(task.n_train, member.training["holdout"])
        self.x_val, self.y_val = task.x_train[vi], task.y_train[vi]
        self.history = history or {
            "segments": [{"member": member.model_id, "seed": member.seed, "from_epoch": 0}],
            "schedule": {k: [] for k in MUTABLE}, "curves": {}, "status": "ok", "diverged_epoch": None,
        }
        self.epoch = len(self.history["schedule"]["lr"])
        self.apply(hp or {k: member.training[k] for k in MUTABLE})
        if not self.history["curves"]:
            self._record_curves()  # epoch 0

    def apply(self, hp: dict) -> None:
        """Train the next epochs with these hyperparameters (explore's, or the first ones)."""
        self.hp = {k: (int(hp[k]) if k == "batch_size" else float(hp[k])) for k in MUTABLE}
        self.pop.set_hyperparameters(lr=[self.hp["lr"]], weight_decay=[self.hp["weight_decay"]],
                                     momentum=self.hp["momentum"], batch_size=self.hp["batch_size"])

    def adopt(self, member: Member) -> None:
        """Exploit: these weights (another member's) go on as `member`'s, from this epoch."""
        self.member = member
        self.history = json.loads(json.dumps(self.history))  # a copy: the parent's history is the parent's
        self.history["segments"].append({"member": member.model_id, "seed": member.seed, "from_epoch": self.epoch})

    def train_epoch(self) -> None:
        e = self.epoch + 1
        seg = self.history["segments"][-1]
        self.pop.order_gens = [torch.Generator().manual_seed(derived_seed("pbt-order", seg["seed"], e))]
        self.pop.train_epoch(e)
        for k in MUTABLE:
            self.history["schedule"][k].append(self.hp[k])
        self.epoch = e
        self._record_curves()

    def _record_curves(self) -> None:
        ev = {**{f"train_{k}": v for k, v in self.pop.evaluate_split("train").items()},
              **{f"test_{k}": v for k, v in self.pop.evaluate_split("test").items()},
              **{f"val_{k}": v for k, v in self.pop.evaluate_on(self.x_val, self.y_val).items()}}
        h = self.history
        for k, v in ev.items():
            h["curves"].setdefault(k, []).append(float(v[0]))
        if h["status"] == "ok" and (not bool(self.pop.alive[0]) or not math.isfinite(h["curves"]["train_loss"][-1])):
            h["status"], h["diverged_epoch"] = "diverged", self.pop.diverged_epoch[0] or self.epoch

    def score(self, metric: str) -> float:
        """The ranking metric now; a diverged member ranks last, so exploit replaces it."""
        v = self.history["curves"][metric][-1]
        if self.history["status"] != "ok" or not math.isfinite(v):
            return 0.0 if metric.endswith("acc") else float("inf")
        return v

    # a checkpoint: weights + optimizer state (safetensors) and the rest (JSON); no pickle
    def save(self, d: Path) -> None:
        from safetensors.torch import save_file

        d = Path(d)
        save_file({k: v.contiguous() for k, v in self.pop.member_state(0).items()}, str(d / "state.safetensors"))
        save_file({k: v.contiguous() for k, v in self.pop.optimizer_state().items()}, str(d / "optimizer.safetensors"))
        (d / "run.json").write_text(json.dumps({"owner": self.member.model_id, "hp": self.hp, "history": self.history}))

    @classmethod
    def load(cls, spec: ZooSpec, member: Member, d: Path) -> tuple["MemberRun", str]:
        """A run restored from a checkpoint folder; -> (run, model id of the member that saved it)."""
        from safetensors.torch import load_file

        d = Path(d)
        meta = json.loads((d / "run.json").read_text())
        run = cls(spec, member, state=load_file(str(d / "state.safetensors")),
                  optimizer=load_file(str(d / "optimizer.safetensors")), history=meta["history"], hp=meta["hp"])
        return run, meta["owner"]

    def record(self) -> tuple[dict, dict[str, np.ndarray]]:
        """This epoch's row record (exact single-model metrics, hyperparameters, history) and state."""
        ck = self.pop.checkpoint(0)
        h = self.history
        rec = {"model_id": self.member.model_id, "epoch": self.epoch, "metrics": ck["metrics"], "hp": self.hp,
               "segments": h["segments"], "schedule": h["schedule"], "curves": h["curves"],
               "status": h["status"], "diverged_epoch": h["diverged_epoch"]}
        return rec, ck["state"]


# ---- member rows in the state folder --------------------------------------------------------
def _row_paths(rows: Path, model_id: str, epoch: int) -> tuple[Path, Path]:
    stem = rows / f"{model_id}-{epoch:05d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def write_record(rows: Path, rec: dict, state: dict[str, np.ndarray]) -> None:
    """The tensors, then the JSON (its presence marks the record complete), each atomically. A
    rerun of the same epoch (a retried or restored trial) overwrites both."""
    from safetensors.numpy import save_file

    rows.mkdir(parents=True, exist_ok=True)
    st, js = _row_paths(rows, rec["model_id"], rec["epoch"])
    tmp = st.with_name(st.name + store.TMP_SUFFIX)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp))
    os.replace(tmp, st)
    store.write_text_atomic(js, json.dumps(rec, sort_keys=True))


def read_record(rows: Path, model_id: str, epoch: int) -> tuple[dict, dict[str, np.ndarray]] | None:
    from safetensors.numpy import load_file

    st, js = _row_paths(rows, model_id, epoch)
    if not (js.exists() and st.exists()):
        return None
    return json.loads(js.read_text()), load_file(str(st))


# ---- the Tune trial -------------------------------------------------------------------------
def trial(config: dict, spec_json: dict, root: str, experiment: str) -> None:
    """One member as a Tune function trainable (runs in a Ray worker)."""
    spec = parse_spec(spec_json, f"spec of zoo {spec_json.get('name')}")
    torch.set_num_threads(spec.compute.threads_per_worker)
    by_id = members_by_id(spec_json)
    root = Path(root)
    rows = root / "rows" / experiment
    ident = root / "members" / experiment / f"{tune.get_context().get_trial_id()}.json"
    ckpt = tune.get_checkpoint()
    if ckpt is None:  # a fresh start: the config still names this trial's member
        member = by_id[config["member_id"]]
        store.write_text_atomic(ident, json.dumps({"member_id": member.model_id}))
        run = MemberRun(spec, member)
        if 0 in spec.checkpoints:
            write_record(rows, *run.record())
    else:  # a restore (after a pause, a failure, a kill) or an exploit (the checkpoint is another member's)
        member = by_id[json.loads(ident.read_text())["member_id"]]
        with ckpt.as_directory() as d:
            run, owner = MemberRun.load(spec, member, Path(d))
        if owner != member.model_id:
            run.adopt(member)
    run.apply({k: config[k] for k in MUTABLE})
    p, epochs = spec.pbt, spec.training.epochs
    while run.epoch < epochs:
        run.train_epoch()
        if run.epoch in spec.checkpoints:
            write_record(rows, *run.record())
        # results only where PBT may exploit or pause the trial, each with a checkpoint: Tune
        # pauses a function trial at its last result, which must hold its state (a result without
        # one, reported between perturbations, would leave a paused trial nothing to resume from)
        if run.epoch % p.perturbation_interval == 0 or run.epoch == epochs:
            with tempfile.TemporaryDirectory() as d:
                run.save(Path(d))
                tune.report({"epoch": run.epoch, p.metric: run.score(p.metric), "member_id": member.model_id},
                            checkpoint=tune.Checkpoint.from_directory(d))


def _seeded(cls):
    """`cls` (Tune's PBT or PB2) drawing its exploit and explore choices from its own seeded
    generators instead of Python's and NumPy's global ones, which Ray's driver also draws from
    (a timing-dependent number of times): the same decisions on every uninterrupted run."""

    class Seeded(cls):
        def __init__(self, *args, seed: int, **kw):
            super().__init__(*args, **kw)
            self._py_state = random.Random(seed).getstate()
            self._np_state = np.random.RandomState(seed % 2**32).get_state()

        def on_trial_result(self, tune_controller, trial, result):
            outer_py, outer_np = random.getstate(), np.random.get_state()
            random.setstate(self._py_state)
            np.random.set_state(self._np_state)
            try:
                return super().on_trial_result(tune_controller, trial, result)
            finally:
                self._py_state, self._np_state = random.getstate(), np.random.get_state()
                random.setstate(outer_py)
                np.random.set_state(outer_np)

    Seeded.__name__ = Seeded.__qualname__ = f"Seeded{cls.__name__}"
    return Seeded


def _scheduler(spec: ZooSpec, exp: Experiment):
    seed = derived_seed("pbt", spec.name, exp.seed, exp.load_index)
    p = spec.pbt
    if p.scheduler == "pb2":
        try:
            import GPy  # noqa: F401  (PB2's Gaussian process)
        except ImportError:
            raise ZooError(f"zoo {spec.name}: pbt.scheduler pb2 needs the GPy package; "
                           "pip install -e '.[pb2]' (or use scheduler: pbt)") from None
        from ray.tune.schedulers.pb2 import PB2

        return _seeded(PB2)(seed=seed, time_attr="epoch", metric=p.metric, mode=p.mode, perturbation_interval=p.perturbation_interval,
                   hyperparam_bounds={k: list(m.range) for k, m in p.mutations.items()},
                   quantile_fraction=p.quantile_fraction, synch=True)
    from ray.tune.schedulers import PopulationBasedTraining

    mutations = {}
    for k, m in p.mutations.items():
        if m.values is not None:
            mutations[k] = sorted(m.values)
        else:
            lo, hi = m.range
            mutations[k] = tune.loguniform(lo, hi) if m.log else tune.uniform(lo, hi)
    return _seeded(PopulationBasedTraining)(seed=seed, time_attr="epoch", metric=p.metric, mode=p.mode,
                                   perturbation_interval=p.perturbation_interval, hyperparam_mutations=mutations,
                                   quantile_fraction=p.quantile_fraction, resample_probability=p.resample_probability,
                                   custom_explore_fn=partial(clip, p), synch=True)


_REPORTERS: dict[str, tuple] = {}  # experiment name -> (Reporter, epochs seen per trial), in the driver


class _Progress(tune.Callback):
    """Member-epochs done, through the build's Reporter (one progress bar for every stage). Tune
    pickles its callbacks with the experiment (for restore), so this one holds only the
    experiment's name and finds the driver's Reporter in _REPORTERS."""

    def __init__(self, experiment: str):
        self.experiment = experiment

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from pipelines.runner import Job

        reporter, seen = _REPORTERS.get(self.experiment, (None, {}))
        epoch, before = int(result.get("epoch", 0)), seen.get(trial.trial_id, 0)
        if reporter is not None and epoch > before:  # a restored trial's repeated epochs count once
            seen[trial.trial_id] = epoch
            reporter.advance(Job(f"{self.experiment} epoch {epoch}", (), epoch - before, lambda _: None), None)


def run_experiment(spec: ZooSpec, exp: Experiment, out: Path, workers: int, reporter) -> None:
    """Run (or continue, with Tune's restore) one experiment until every trial has finished."""
    root = state_dir(out, spec.name).resolve()  # absolute: Tune's storage is a URI, and trials run in their own folders
    storage = root / "tune"
    path = storage / exp.name
    trainable = tune.with_resources(
        tune.with_parameters(trial, spec_json=spec.to_json(), root=str(root), experiment=exp.name),
        {"cpu": spec.compute.threads_per_worker})
    _REPORTERS[exp.name] = (reporter, {})
    run_config = tune.RunConfig(
        name=exp.name, storage_path=str(storage), stop={"epoch": spec.training.epochs},
        failure_config=tune.FailureConfig(max_failures=3),  # a trial whose worker died resumes from its checkpoint
        checkpoint_config=tune.CheckpointConfig(num_to_keep=4), verbose=0, callbacks=[_Progress(exp.name)])
    if tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=None)
    else:
        initial = {m.model_id: {k: m.training[k] for k in MUTABLE} for m in exp.members}
        space = {"member_id": tune.grid_search([m.model_id for m in exp.members]),
                 **{k: tune.sample_from(partial(_initial, initial, k)) for k in MUTABLE}}
        tuner = tune.Tuner(trainable, param_space=space, run_config=run_config,
                           # no max_concurrent_trials: Tune would then create the next trials only as
                           # earlier ones finish, and PBT would rank a population of `workers`; the
                           # CPUs Ray was given (`workers`) bound how many trials run at once, the
                           # others wait paused at the perturbation barrier
                           tune_config=tune.TuneConfig(scheduler=_scheduler(spec, exp), reuse_actors=True))
    results = tuner.fit()
    failed = [r for r in results if r.error is not None]
    if failed:
        raise ZooError(f"zoo {spec.name}: PBT experiment {exp.name}: {len(failed)} trial(s) failed after retries "
                       f"({str(failed[0].error).splitlines()[0][:200]}); rerun `zoo build` to continue")


def _initial(initial: dict, key: str, spec) -> float:
    return initial[spec["config"]["member_id"]][key]


# ---- rows of a finished experiment ----------------------------------------------------------
def position(spec: ZooSpec, hp: dict) -> float:
    """The temperature coordinate of hyperparameters `hp` on the spec's plane (zoo.pbt)."""
    base = spec.training.model_dump(mode="json")
    return temperature_coordinate(spec.axes.temperature.param, hp, base, spec.training.optimizer)


def experiment_rows(spec: ZooSpec, exp: Experiment, out: Path) -> tuple[list[dict], list[tuple[str, dict]]]:
    """The bundle of a finished experiment: every member's row at every checkpoint epoch. Each
    member's rows carry the grid cell nearest to where it ended (its metrics group, like a grid
    model's cell) and, per row, the coordinates of that checkpoint's hyperparameters."""
    rows_dir = state_dir(out, spec.name) / "rows" / exp.name
    t_axis, l_axis = spec.axes.temperature, spec.axes.load
    cells = spec.cells()
    rows, tensors = [], []
    first = exp.members[0]
    knobs = {k: v for k, v in first.arch.items() if k != "family"}
    n_params = nets.n_params(nets.build(first.arch["family"], tasks.load(spec.task, first.task_args), **knobs))
    for m in exp.members:
        recs = []
        for e in spec.checkpoints:
            got = read_record(rows_dir, m.model_id, e)
            if got is None:
                raise ZooError(f"zoo {spec.name}: PBT experiment {exp.name} finished without a row for member "
                               f"{m.model_id} at epoch {e}; rerun `zoo build` to continue it")
            recs.append(got)
        final_t = position(spec, recs[-1][0]["hp"])
        group = cells[nearest(t_axis.values, final_t) * len(l_axis.values) + exp.load_index].id
        for rec, state in recs:
            t = position(spec, rec["hp"])
            cell = Cell(0, exp.load_index, t_axis.param, t, l_axis.param, l_axis.values[exp.load_index])
            member = Member(m.model_id, cell, m.seed, m.arch, {**m.training, **rec["hp"]}, m.task_args,
                            m.arch_id, group)
            result = SimpleNamespace(curves={k: v for k, v in rec["curves"].items() if not k.startswith("val_")},
                                     status=rec["status"], diverged_epoch=rec["diverged_epoch"])
            prefix = f"{m.model_id}/{rec['epoch']}/"
            row = model_row(spec, member, result, rec["epoch"], {"metrics": rec["metrics"], "state": state},
                       n_params, exp.bundle_id, prefix)
            segs = rec["segments"]
            row.update(pbt_experiment=exp.name, parent_id=segs[-2]["member"] if len(segs) > 1 else None,
                       lineage=json.dumps(segs), curve_val_loss=rec["curves"]["val_loss"],
                       curve_val_acc=rec["curves"].get("val_acc"),
                       **{f"schedule_{k}": rec["schedule"][k] for k in MUTABLE})
            rows.append(row)
            tensors.append((prefix, state))
    return rows, tensors


def train(spec: ZooSpec, out: Path, workers: int, address: str | None = None, console=None) -> None:
    """Run every unfinished experiment of a PBT zoo on Ray Tune (a local Ray, or the cluster at
    `address`) and commit each as a bundle, with progress in member-epochs."""
    import ray

    from pipelines.runner import Reporter, start_ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard logs per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    done = store.committed_bundles(out, spec.name, "pbt")
    exps = experiments(spec)
    pending = [e for e in exps if e.bundle_id not in done]
    epochs = spec.training.epochs
    total = sum(len(e.members) for e in exps) * epochs
    if not pending:
        return
    owned = not ray.is_initialized()
    if owned:
        start_ray(address, workers)
    try:
        with Reporter(console, f"PBT {spec.name}", "member-epochs", total - sum(len(e.members) for e in pending) * epochs,
                      total) as reporter:
            for exp in pending:
                t0 = time.perf_counter()
                run_experiment(spec, exp, out, workers, reporter)
                rows, tensors = experiment_rows(spec, exp, out)
                store.write_bundle(out, spec.name, exp.index, exp.bundle_id, rows, tensors,
                                   spec.storage.shard_max_mb, phase="pbt")
                if console is not None:
                    console.print(f"PBT experiment {exp.name}: {len(exp.members)} members committed "
                                  f"({time.perf_counter() - t0:.1f}s)")
    finally:
        if owned:
            ray.shutdown()


# ---- replay ---------------------------------------------------------------------------------
def find_row(root: Path, row_id: str) -> tuple[ZooSpec, dict]:
    """The PBT row `<model_id>/<epoch>` (or `<model_id>`: its last checkpoint) of the dataset at
    root, with its zoo's spec. A ZooError names what is wrong: no such id, or not a PBT zoo."""
    import pyarrow.compute as pc

    manifest = store.open_manifest(root)
    model_id, _, epoch = row_id.partition("/")
    if epoch and not epoch.isdigit():
        raise ZooError(f"row id {row_id!r}: expected <model_id>/<epoch> with an integer epoch, or <model_id>")
    for name, z in sorted(manifest.get("zoos", {}).items()):
        try:
            t = store.read_rows(root, name)
        except ZooError:
            continue
        t = t.filter(pc.equal(t["model_id"], model_id))
        if t.num_rows == 0:
            continue
        if z["spec"].get("phase") != "pbt":
            raise ZooError(f"row {row_id}: zoo {name} was built with --phase {z['spec'].get('phase', 'grid')}; "
                           "only PBT rows (--phase pbt) have a schedule to replay")
        rows = sorted(t.to_pylist(), key=lambda r: r["epoch"])
        if epoch:
            rows = [r for r in rows if r["epoch"] == int(epoch)]
            if not rows:
                raise ZooError(f"row {row_id}: model {model_id} has no checkpoint at epoch {epoch}; its epochs: "
                               f"{', '.join(str(r['epoch']) for r in sorted(t.to_pylist(), key=lambda r: r['epoch']))}")
        return parse_spec(z["spec"], f"{root}/manifest.json: zoo {name}"), rows[-1]
    raise ZooError(f"row {row_id}: no model {model_id!r} in {root} (zoos: {', '.join(sorted(manifest.get('zoos', {})))})")


def replay(spec: ZooSpec, row: dict) -> dict[str, torch.Tensor]:
    """Retrain a PBT row's weights from its schedule and lineage, as one plain run: from the
    first segment's initialization, each epoch with the recorded hyperparameters and the data
    order of the segment that trained it (a copy between segments is a continuation: the copied
    member's weights and optimizer state are the run's own). -> the state_dict at row['epoch']."""
    by_id = members_by_id(spec.to_json())
    segs = json.loads(row["lineage"])
    for s in segs:
        if s["member"] not in by_id:
            raise ZooError(f"row {row['model_id']} epoch {row['epoch']}: lineage names member {s['member']}, "
                           f"which zoo {spec.name}'s spec does not have")
    torch.set_num_threads(spec.compute.threads_per_worker)
    run = MemberRun(spec, by_id[segs[0]["member"]])
    starts = {s["from_epoch"]: s["member"] for s in segs[1:]}
    for e in range(1, int(row["epoch"]) + 1):
        if e - 1 in starts:
            run.adopt(by_id[starts[e - 1]])
        run.apply({k: row[f"schedule_{k}"][e - 1] for k in MUTABLE})
        run.train_epoch()
    return run.pop.member_state(0)
