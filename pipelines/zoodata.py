"""What a hypernetwork learns from: the cells of a built zoo folder, their trained members, and the
split into training cells and held-out cells / architectures that the init benchmark uses.

    cells = load_cells("build/phases")              # every cell of every complete zoo
    split = make_split(cells)                       # held-out cells (~20%) + held-out architectures
    train_cells = [c for c in cells if c.key not in split.held_out_cells]

The split is a pure function of the zoo specs, so `hypernet train` and `hypernet eval` agree on it
(the run folder also records it, and eval checks that it still holds).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from torch import nn

from zoo import nets, store, tasks
from zoo.errors import ZooError
from zoo.spec import Member, ZooSpec, parse_spec

HOLDOUT_PERIOD = 5  # hold out the cells with (2·ti + li) % 5 == 1: 20%, one per row and column of a 5x5 plane


@dataclass
class ZooCell:
    """One cell of a zoo: its hyperparameters and its trained members (final checkpoint, status ok)."""

    zoo: str
    cell: str  # e.g. "T2L3"; "P00012" for a sampled point; "T2L3-<arch_id>" with sampled architectures
    ti: int
    li: int
    temperature: float
    load: float
    temperature_param: str
    load_param: str
    task: str
    task_args: dict
    arch: dict  # family + knobs
    init: str
    training: dict  # the training fields with this cell's axis values applied (Member.training)
    members: list[Member]
    final_epoch: int
    rows: list[dict] = field(default_factory=list)  # the members' final-checkpoint rows, status ok

    @property
    def key(self) -> str:
        return f"{self.zoo}/{self.cell}"

    def load_task(self) -> tasks.Task:
        return tasks.load(self.task, self.task_args)

    def build(self, arch: dict | None = None) -> nn.Module:
        arch = dict(arch or self.arch)
        family = arch.pop("family")
        return nets.build(family, self.load_task(), **arch)

    def states(self, root: str | Path) -> list[dict[str, torch.Tensor]]:
        """The trained members' final checkpoints (state_dicts in the module's own shapes), seed order.

        Shapes come from the module: a shard stores 0-d tensors (BatchNorm's num_batches_tracked)
        as shape (1,)."""
        return self._read(root, self.rows)

    def init_states(self, root: str | Path, index: dict[str, dict] | None = None) -> list[dict[str, torch.Tensor]]:
        """The same members' inits (checkpoint 0), in the order of `states`; an error if the zoo
        did not store checkpoint 0 for them (its spec's `checkpoints`). index: the zoo's
        init_index, for a caller that reads the inits of many cells (read here otherwise)."""
        by_id = init_index(root, self.zoo) if index is None else index
        missing = [r["model_id"] for r in self.rows if r["model_id"] not in by_id]
        if missing:
            raise ZooError(f"{root}: zoo {self.zoo} stores no checkpoint 0 of {self.cell}'s members ({missing[0]}, ...); "
                           "add 0 to the spec's checkpoints and rebuild")
        return self._read(root, [by_id[r["model_id"]] for r in self.rows])

    def _read(self, root: str | Path, rows: list[dict]) -> list[dict[str, torch.Tensor]]:
        template = self.build().state_dict()
        out = []
        for r in rows:
            state = store.read_state(Path(root), r)
            missing = sorted(set(template) - set(state))
            if missing:
                raise ZooError(f"{r['shard']}: checkpoint {r['tensor_prefix']} lacks {missing[:3]}")
            out.append({k: torch.from_numpy(np.array(state[k])).reshape(v.shape).to(v.dtype)
                        for k, v in template.items()})
        return out

    def summary(self) -> dict:
        return {"zoo": self.zoo, "cell": self.cell, "temperature_param": self.temperature_param,
                "temperature": self.temperature, "load_param": self.load_param, "load": self.load,
                "arch": self.arch}


def zoo_specs(root: str | Path) -> list[ZooSpec]:
    """The specs of the complete zoos in a dataset folder."""
    root = Path(root)
    manifest = store.open_manifest(root)
    specs = []
    for name, z in sorted(manifest.get("zoos", {}).items()):
        if z.get("status") != "complete":
            continue
        spec = z.get("spec")
        if not isinstance(spec, dict):
            raise ZooError(f"{root}/manifest.json: zoo {name!r} has no spec; rebuild it with `zoo build`")
        specs.append(parse_spec(spec, f"{root}/manifest.json: zoo {name}"))
    if not specs:
        raise ZooError(f"{root}: no complete zoo in manifest.json; run `zoo build` first")
    return specs


def epoch_rows(root: str | Path, zoo: str, epoch: int, columns: list[str]) -> list[dict]:
    """`columns` of the zoo's rows at one checkpoint epoch (only those columns are read)."""
    table = store.read_rows(Path(root), zoo, columns=sorted(set(columns) | {"epoch"}))
    return table.filter(pc.equal(table["epoch"], epoch)).select(columns).to_pylist()


def init_index(root: str | Path, zoo: str) -> dict[str, dict]:
    """model id -> the row of its checkpoint 0 (shard and tensor prefix), for ZooCell.init_states."""
    return {r["model_id"]: r for r in epoch_rows(root, zoo, 0, ["model_id", "shard", "tensor_prefix"])}


def load_cells(root: str | Path, zoos: list[str] | None = None) -> list[ZooCell]:
    """Every cell of the (selected) complete zoos in `root`, with its final-checkpoint rows."""
    root = Path(root)
    specs = zoo_specs(root)
    if zoos:
        known = [s.name for s in specs]
        unknown = sorted(set(zoos) - set(known))
        if unknown:
            raise ZooError(f"{root}: no complete zoo {unknown}; valid: {', '.join(known)}")
        specs = [s for s in specs if s.name in zoos]
    out = []
    for spec in specs:
        final = spec.training.epochs
        by_id = {r["model_id"]: r for r in epoch_rows(root, spec.name, final, ["model_id", "seed", "status", "shard",
                                                                                "tensor_prefix", "cell"])}
        for group, members in _groups(spec, by_id).items():  # a cell, or a (cell, architecture) pair
            rows = [by_id[m.model_id] for m in members if m.model_id in by_id and by_id[m.model_id]["status"] == "ok"]
            first = members[0]
            c = first.cell
            out.append(ZooCell(
                zoo=spec.name, cell=group, ti=c.ti, li=c.li, temperature=float(c.temperature), load=float(c.load),
                temperature_param=c.temperature_param, load_param=c.load_param, task=spec.task,
                task_args=dict(first.task_args), arch=dict(first.arch), init=spec.model.init,
                training=dict(first.training), members=members, final_epoch=final, rows=rows,
            ))
    return out


def _groups(spec: ZooSpec, final_rows: dict[str, dict]) -> dict[str, list[Member]]:
    """The members by metrics group. A PBT zoo's members are grouped by the grid cell they ended
    nearest to (their rows' `cell`), each group standing for that cell: its members are the
    cell's own grid members in position (their training = the cell's hyperparameters, what a
    hypernetwork conditioned on the cell is asked to initialize for), holding the PBT members'
    model ids so their weights are found."""
    if spec.phase != "pbt":
        return spec.groups()
    out: dict[str, list[Member]] = {}
    members = spec.members()
    for c in spec.cells():
        here = [m for m in members if final_rows.get(m.model_id, {}).get("cell") == c.id]
        if here:
            base = spec.member(c, 0)
            out[c.id] = [dataclasses.replace(base, model_id=m.model_id, seed=m.seed) for m in here]
    return out


# ---- the split --------------------------------------------------------------------------------
def held_out_cell(ti: int, li: int) -> bool:
    """The held-out pattern: 20% of a plane, spread so every temperature row and load column of a
    5x5 plane loses exactly one cell (and every column keeps trained cells)."""
    return (2 * ti + li) % HOLDOUT_PERIOD == 1


@dataclass
class ArchCase:
    """A held-out architecture, benchmarked at one point of its zoo's plane."""

    zoo: str
    name: str  # one of ARCH_VARIANTS
    arch: dict
    temperature: float
    load: float
    reference_cell: str  # the zoo cell whose training hyperparameters it is trained with

    @property
    def key(self) -> str:
        return f"{self.zoo}/arch:{self.name}"


@dataclass
class Split:
    held_out_cells: list[str]  # ZooCell.key
    arch_cases: list[ArchCase]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"held_out_cells": self.held_out_cells,
                "arch_cases": [a.__dict__ for a in self.arch_cases], "notes": self.notes}

    @classmethod
    def from_json(cls, d: dict) -> Split:
        return cls(list(d["held_out_cells"]), [ArchCase(**a) for a in d["arch_cases"]], list(d.get("notes", [])))


def _buildable(cell: ZooCell, arch: dict) -> str | None:
    try:
        cell.build(arch)
    except Exception as e:  # noqa: BLE001 - any construction error means "not this variant"
        return f"{type(e).__name__}: {e}"
    return None


ARCH_VARIANTS = ("between", "narrower", "wider", "shallower", "deeper", "activation", "depth-x-width")
UNSEEN_ACTIVATIONS = ("tanh", "gelu", "silu", "relu")  # the first one the zoo does not use is held out


def _arch_cases(cells: list[ZooCell], notes: list[str]) -> list[ArchCase]:
    """Per zoo, architectures no member has (ARCH_VARIANTS), each trained with the hyperparameters
    of a cell at the middle temperature of the zoo's plane:

    - between: a width in the widest gap between trained widths (its geometric middle);
      narrower: half the narrowest trained width; wider: twice the widest;
    - shallower / deeper: one hidden layer fewer than the shallowest member / more than the deepest;
    - activation: the zoo's architecture with an activation no member has (tanh for a ReLU zoo);
    - depth-x-width: with sampled architectures, a (depth, width) pair whose depth and width both
      occur in the zoo but never together; with one architecture, the deeper depth at the between
      width (both unseen).

    A variant the family cannot build (no depth knob, depth below 0, ...) is skipped with a note."""
    out = []
    for zoo in sorted({c.zoo for c in cells}):
        zc = [c for c in cells if c.zoo == zoo]
        temps = sorted({c.temperature for c in zc})
        t_mid = temps[len(temps) // 2]
        mid_cells = [c for c in zc if c.temperature == t_mid]
        family = zc[0].arch["family"]
        knobs = nets.knobs(family)
        widths = sorted({c.arch["width"] for c in zc if "width" in c.arch})
        depths = sorted({c.arch["depth"] for c in zc if "depth" in c.arch})
        by_width: dict = {}
        for c in mid_cells:  # the first cell (plan order) of each width at the middle temperature
            by_width.setdefault(c.arch.get("width"), c)
        # a sampled plane has one temperature a point: a width without a cell at the middle one takes
        # its cell nearest to it (a grid has every width there, so this changes no grid split)
        for w in widths:
            if w not in by_width:
                near = min((c for c in zc if c.arch.get("width") == w),
                           key=lambda c: (abs(math.log(c.temperature / t_mid)) if c.temperature > 0 < t_mid
                                          else abs(c.temperature - t_mid), c.cell))
                by_width[w] = near
                mid_cells.append(near)
        load_is_width = zc[0].load_param == "width"

        def ref_of(depth=None, width=None) -> ZooCell:
            """The middle-temperature cell closest to (depth, width): same depth first, then width."""
            def key(c):
                d = abs(c.arch.get("depth", 0) - depth) if depth is not None else 0
                w = abs(math.log(c.arch["width"] / width)) if width and "width" in c.arch else 0
                return (d, w, c.cell)
            return min(mid_cells, key=key)

        variants: list[tuple[str, dict, ZooCell]] = []
        between = None  # (width, reference cell) of the between architecture
        if len(widths) >= 2:
            # the widest gap (ratio) between neighbouring trained widths; its geometric middle
            lo, hi = max(zip(widths, widths[1:]), key=lambda p: (p[1] / p[0], -p[0]))
            mid = int(round(math.sqrt(lo * hi)))
            if lo < mid < hi:
                between = (mid, by_width[lo])
                variants.append(("between", {**by_width[lo].arch, "width": mid}, by_width[lo]))
        if widths:
            if widths[0] >= 2:
                variants.append(("narrower", {**by_width[widths[0]].arch, "width": widths[0] // 2}, by_width[widths[0]]))
            variants.append(("wider", {**by_width[widths[-1]].arch, "width": 2 * widths[-1]}, by_width[widths[-1]]))
        else:
            notes.append(f"{zoo}: the architecture has no width knob; no between/narrower/wider architectures")
        if depths:
            w_mid = widths[len(widths) // 2] if widths else None
            shallow, deep = depths[0] - 1, depths[-1] + 1
            if shallow >= 0:
                ref = ref_of(depths[0], w_mid)
                variants.append(("shallower", {**ref.arch, "depth": shallow}, ref))
            else:
                notes.append(f"{zoo}: its shallowest members have depth 0; no shallower architecture")
            ref = ref_of(depths[-1], w_mid)
            variants.append(("deeper", {**ref.arch, "depth": deep}, ref))
            seen = {(c.arch["depth"], c.arch.get("width")) for c in zc}
            if widths and len(depths) > 1:
                unseen = [(d, w) for d in depths for w in widths if (d, w) not in seen]
                if unseen:  # the pair nearest the middle of the zoo's depths and widths
                    d, w = min(unseen, key=lambda p: (abs(p[0] - depths[len(depths) // 2]),
                                                      abs(math.log(p[1] / w_mid)), p))
                    ref = ref_of(d, w)
                    variants.append(("depth-x-width", {**ref.arch, "depth": d, "width": w}, ref))
                else:
                    notes.append(f"{zoo}: every (depth, width) pair of its members occurs; no depth-x-width architecture")
            elif between is not None:
                width, ref = between
                variants.append(("depth-x-width", {**ref.arch, "depth": deep, "width": width}, ref))
        else:
            notes.append(f"{zoo}: the architecture has no depth knob; no shallower/deeper architecture")
        if "activation" in knobs:
            used = {c.arch.get("activation", knobs["activation"]) for c in zc}
            act = next((a for a in UNSEEN_ACTIVATIONS if a not in used), None)
            if act:
                ref = ref_of(depths[len(depths) // 2] if depths else None, widths[len(widths) // 2] if widths else None)
                variants.append(("activation", {**ref.arch, "activation": act}, ref))
        else:
            notes.append(f"{zoo}: family {family} has no activation knob; no activation architecture")
        for name, arch, ref in variants:
            why = _buildable(ref, arch)
            if why:
                notes.append(f"{zoo}: held-out architecture {name} {arch} cannot be built ({why}); skipped")
                continue
            load = float(arch["width"]) if load_is_width else ref.load
            out.append(ArchCase(zoo, name, arch, ref.temperature, load, ref.cell))
    return out


def make_split(cells: list[ZooCell]) -> Split:
    """Held-out cells (the HOLDOUT pattern) and held-out architectures of every zoo."""
    notes: list[str] = []
    held = [c.key for c in cells if held_out_cell(c.ti, c.li)]
    for zoo in sorted({c.zoo for c in cells}):
        zc = [c for c in cells if c.zoo == zoo]
        if all(c.key in held for c in zc):
            notes.append(f"{zoo}: every cell matched the held-out pattern; all are kept for training")
            held = [k for k in held if not k.startswith(zoo + "/")]
        elif not any(c.key in held for c in zc):
            notes.append(f"{zoo}: its plane is too small for a held-out cell")
    return Split(held, _arch_cases(cells, notes), notes)


def split_digest(split: Split) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(split.to_json(), sort_keys=True).encode()).hexdigest()[:16]
