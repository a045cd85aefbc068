"""The init benchmark's report: results.md, the comparison table of several runs on the same
cases (`hypernet compare`), the curves as PNG, and the one-line summary `hypernet eval` prints.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from zoo.errors import ZooError
from pipelines.benchmark.protocol import BASELINES, BOUNDS, GOALS, speedup_bound

MARKS = {"exact": "", "lower": "≥", "upper": "<", "mixed": "~", None: ""}


MARK_LEGEND = ("≥ x: a lower bound (some seeds met the target at step 0, counted as one step, and none "
               "missed it); < x: an upper bound (some seeds never met it, counted as all steps, and none "
               "met it at step 0); ~ x: neither (some seeds met it at step 0, others never); no mark: exact")


def speedup_cell(rec: dict, random_rec: dict) -> str:
    """A generator's case speedup as printed in the tables: the bound mark, then the median."""
    sp = rec.get("speedup")  # NaN in memory, null in results.json when no seed has a target
    if sp is None or not math.isfinite(sp):
        return "–"
    kind = speedup_bound(random_rec["steps_to_target"], rec["steps_to_target"])
    return f"{MARKS[kind]}{sp:.1f}"


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


LABELS = {"random": "random (zoo init)", "nearest": "nearest zoo model", "weight_selection": "weight selection",
          "lsuv": "LSUV", "zero": "ZerO", "orthogonal": "orthogonal"}


def _ci(x, ci, digits=1) -> str:
    """"12.3 [4.5, 67.8]" (a median and its 95% interval), "–" when undefined."""
    if x is None:
        return "–"
    return f"{_fmt(x, digits)} [{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]" if ci else _fmt(x, digits)


SUMMARY_HEAD = ("| init | speedup, held-out cells | speedup, held-out archs | × best baseline (archs) | "
                "score after 1% (archs / cells) | after 10% | Δfinal vs random |", "|---|---|---|---|---|---|---|")


def summary_row(label: str, g: dict, ratio: tuple | None = None) -> str:
    """One generator's row of the summary table: medians with bootstrap 95% intervals."""
    def score(k):
        return f"{_fmt(g.get(f'score_{k}_archs'), 2)} / {_fmt(g.get(f'score_{k}_cells'), 2)}"

    r = _ci(ratio[0], ratio[1], 2) if ratio and ratio[0] is not None else "–"
    return (f"| {label} | {_ci(g.get('median_speedup_cells'), g.get('median_speedup_cells_ci'))} | "
            f"{_ci(g.get('median_speedup_archs'), g.get('median_speedup_archs_ci'))} | {r} | {score('budget_1pct')} | "
            f"{score('budget_10pct')} | {_ci(g.get('final_acc_delta_median'), g.get('final_acc_delta_median_ci'), 3)} |")


def summary_rows(doc: dict, baselines: bool = True) -> list[str]:
    """The generator's row and (from `by_generator`) random init's and every baseline's."""
    s = doc["summary"]
    by = s.get("by_generator") or {}
    rows = [summary_row(LABELS["random"], by["random"])] if "random" in by and baselines else []
    rows.append(summary_row(f"**{doc['hypernet']}**", s, (s.get("ratio_to_best_baseline_archs"),
                                                          s.get("ratio_to_best_baseline_archs_ci"))))
    return rows + (baseline_rows(s) if baselines else [])


def baseline_rows(s: dict) -> list[str]:
    """The baselines' rows of a summary (from its `by_generator`), the best one named."""
    by = s.get("by_generator") or {}
    return [summary_row(LABELS[b] + (" (best baseline)" if b == s.get("best_baseline") else ""), by[b])
            for b in BASELINES if b in by]


def goals_lines(s: dict) -> list[str]:
    return [f"- {'met' if v else 'not met'}: {GOALS.get(k, k)}" for k, v in s["goals"].items()]


def per_zoo_lines(s: dict) -> list[str]:
    """Per zoo (family) of a generator: its speedups with intervals and the final difference."""
    out = []
    for zoo, z in (s.get("per_zoo") or {}).items():
        out.append(f"- `{zoo}`: cells {_ci(z['median_speedup_cells'], z['median_speedup_cells_ci'])}, "
                   f"architectures {_ci(z['median_speedup_archs'], z['median_speedup_archs_ci'])}, "
                   f"Δfinal {_fmt(z['final_acc_delta_median'])}")
    return out


def machine_line(m: dict | None) -> str:
    """One line naming the machine of a results.json (older files have none)."""
    if not m:
        return "machine not recorded"
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')} "
            f"({m.get('cpu_capability', '?')}), {m.get('torch_threads', '?')} threads")


def _bounds_note(counts: dict | None) -> str:
    """E.g. "speedups: 2 exact, 1 ≥, 0 <, 1 ~" (older summaries have no counts: "")."""
    if not counts:
        return ""
    return "speedups: " + ", ".join(f"{counts.get(k, 0)} {MARKS[k] or k}" for k in BOUNDS)


def _subset_line(sub: dict | None) -> str:
    if not sub:
        return ""
    return (f"; {sub['benchmarked']} of the {sub['held_out']} held-out cells (`--cells`, spread over the "
            "architectures and the plane)")


def markdown(doc: dict) -> str:
    s = doc["summary"]
    bounds = s.get("speedup_bounds", {})
    lines = [
        f"# Init benchmark: {doc['hypernet']} ({doc.get('kind')})",
        "",
        f"Zoo `{doc['zoo']}`, seeds {doc['seeds']}"
        f"{'; ' + str(doc['samples']) + ' samples per case, the lowest training loss kept' if doc.get('samples') else ''}"
        f"{_subset_line(doc.get('cells_subset'))}"
        f"; score = {doc['results'][0]['metric']}. Speedup = steps "
        f"for random init to reach its own final score / steps for the init (per case the median over seeds; "
        f"below the median over cases, with a bootstrap 95% interval over cases and seeds). Machine: "
        f"{machine_line(doc.get('machine'))}.",
        "",
        f"Marks: {MARK_LEGEND}.",
        "",
        *SUMMARY_HEAD,
        *summary_rows(doc),
        "",
        f"Held-out cells: {s['n_cases']['cells']}, of which {s['at_target_from_step0']['cells']} at random init's "
        f"final score from step 0" + (f" ({_bounds_note(bounds.get('cells'))})" if bounds else "")
        + f"; held-out architectures: {s['n_cases']['archs']}"
        + (f" ({_bounds_note(bounds.get('archs'))})" if bounds else "") + ". "
        f"Seed-to-seed std of random init's final score: {_fmt(s['seed_noise_final_std_median'])}."
        + (f" Best baseline on held-out architectures: {LABELS.get(s['best_baseline'], s['best_baseline'])}."
           if s.get("best_baseline") else ""),
        "",
        "Goals:", "", *goals_lines(s), "",
    ]
    if s.get("per_zoo"):
        lines += [f"Per zoo ({doc['hypernet']}):", "", *per_zoo_lines(s), ""]
    lines += ["| case | T | load | init | step 0 | step 10 | step 100 | 1% | 10% | end | steps to target | speedup |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        for g, rec in r["generators"].items():
            steps = ", ".join("never" if x is None else str(x) for x in rec["steps_to_target"])
            sp = "1" if g == "random" else speedup_cell(rec, r["generators"]["random"])
            a = rec["at_step"]
            lines.append(f"| {r['case']} | {r['temperature']:g} | {r['load']:g} | {g} | {_fmt(a['0'])} | "
                         f"{_fmt(a['10'])} | {_fmt(a['100'])} | {_fmt(a.get('1%'))} | {_fmt(a.get('10%'))} | "
                         f"{_fmt(a['end'])} | {steps} / {r['steps_total']} | {sp} |")
    mem = doc.get("memorization")
    if mem and "nn_distance_ratio_median" in mem:
        lines += ["", "Memorization audit (held-out cells; distances after canonicalization, divided by the "
                  "distance between two trained seeds of the held-out cell; medians over cells with bootstrap "
                  "95% intervals):", "",
                  f"- generated nets, distance to the nearest training checkpoint: "
                  f"**{_ci(mem['nn_distance_ratio_median'], mem.get('nn_distance_ratio_ci'), 2)}**"
                  f" (goal ≥ 1: {'met' if mem.get('goal_not_closer_than_seeds') else 'not met'}; "
                  f"{mem['samples_per_case']} samples per cell"
                  + (f", each the best of {mem['draws_per_sample']} draws" if mem.get("draws_per_sample", 1) > 1 else "")
                  + f"); prediction agreement with it "
                  f"{_fmt(mem['agreement_with_nearest_median'])} (two trained seeds: {_fmt(mem['seed_agreement_median'])})",
                  f"- baselines: a training checkpoint + 10% noise {_fmt(mem['baseline_trained_plus_noise_median'])}, "
                  f"the average of a cell's members {_fmt(mem['baseline_cell_average_median'])}",
                  f"- references: the zoo's own trained members of the held-out cells (real training runs the "
                  f"generator never saw, but with init seeds the training cells share) "
                  f"{_fmt(mem.get('reference_held_out_members_median'))}"
                  + (f"; nets trained there from new seeds {mem['fresh_seeds']} (independent training: what a "
                     f"new net scores) {_ci(mem['reference_fresh_runs_median'], mem.get('reference_fresh_runs_ci'), 2)}"
                     if mem.get("reference_fresh_runs_median") is not None else "")]
        if mem.get("ratio_over_fresh_runs_median") is not None:
            lines.append(f"- generated over independent training (each sample's ratio over its cell's fresh runs'): "
                         f"**{_ci(mem['ratio_over_fresh_runs_median'], mem.get('ratio_over_fresh_runs_ci'), 2)}** "
                         f"(≥ 1: as new as a fresh training run; "
                         f"{'met' if mem.get('goal_as_new_as_fresh_runs') else 'not met'})")
        if mem.get("fresh_run_travel_median") is not None:
            lines.append(f"- how far training moved the fresh runs from their own inits, in seed distances: "
                         f"{_ci(mem['fresh_run_travel_median'], mem.get('fresh_run_travel_ci'), 2)} (below 1: a "
                         f"trained net is nearer its own init than to another seed's net; what makes it new is "
                         f"mostly its init)")
    if doc["summary"].get("unsupported"):
        lines += ["", "Not produced by the generator: " + "; ".join(f"{k} ({v})" for k, v in
                                                                    doc["summary"]["unsupported"].items())]
    skipped = [f"{LABELS.get(b, b)} on {r['case']} ({why})" for r in doc["results"]
               for b, why in (r.get("unsupported") or {}).items() if b in BASELINES]
    if skipped:
        lines += ["", "Baselines without an init for a case (not in their medians): " + "; ".join(skipped)]
    if doc.get("split_notes"):
        lines += ["", "Notes: " + "; ".join(doc["split_notes"])]
    return "\n".join(lines) + "\n"


def read_results(path: str | Path) -> dict:
    """results.json of `hypernet eval` (a results folder or the file itself)."""
    p = Path(path)
    p = p / "results.json" if p.is_dir() else p
    if not p.exists():
        raise ZooError(f"{path}: no results.json; run `hypernet eval --hypernet RUN --out {path}` first")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ZooError(f"{p}: not valid JSON ({e})") from None
    for k in ("summary", "results", "seeds", "hypernet"):
        if k not in doc:
            raise ZooError(f"{p}: field {k!r} missing; this is not a `hypernet eval` results.json")
    return doc


def compare(docs: list[dict]) -> str:
    """One markdown table of several benchmark results on the same held-out cases (same zoo split and
    seeds, which makes random init and the nearest zoo model identical across them): per case the
    step-0 score, final-score difference to random and speedup of every generator, then the
    summaries and goals, and the memorization audits of generators that have one."""
    if not docs:
        raise ZooError("compare: no results given")
    names = [d["hypernet"] for d in docs]
    if len(set(names)) != len(names):
        raise ZooError(f"compare: two results have the same name ({', '.join(names)}); name them with --out")
    cases = [r["case"] for r in docs[0]["results"]]
    for d in docs[1:]:
        if [r["case"] for r in d["results"]] != cases or d["seeds"] != docs[0]["seeds"]:
            raise ZooError(f"compare: {d['hypernet']} was evaluated on other cases or seeds than {names[0]} "
                           f"({[r['case'] for r in d['results']]}, seeds {d['seeds']} vs {cases}, seeds "
                           f"{docs[0]['seeds']}); evaluate every run on the same zoo with the same --seeds")
    base = docs[0]["results"]
    metric = base[0]["metric"]
    present = [b for b in BASELINES if any(b in r["generators"] for r in base)]
    gens = [*((n, i) for i, n in enumerate(names)), *((b, None) for b in present)]
    head = "| case | T | load | random final | " + " | ".join(
        f"{LABELS.get(g, g)} step 0 / Δfinal / speedup" for g, _ in gens) + " |"
    lines = [f"Same held-out cases, seeds {docs[0]['seeds']}; score = {metric}. Per init: score at step 0, "
             "final score minus random init's, speedup (steps of random init to its final score / the "
             f"init's, median over seeds). Random init and the baselines are those of {names[0]}'s run. "
             f"Marks: {MARK_LEGEND}.", ""]
    machines = [d.get("machine") for d in docs]
    if all(m == machines[0] for m in machines):
        lines += [f"Machine: {machine_line(machines[0])}.", ""]
    else:
        lines += ["Machines differ (float32 training drifts apart across CPUs, kernels and thread counts, so "
                  "differences of a few seed-noise widths may come from the machine, not the generator):", ""]
        lines += [f"- {d['hypernet']}: {machine_line(m)}" for d, m in zip(docs, machines)] + [""]
    lines += [head, "|" + "---|" * (4 + len(gens))]
    for k, case in enumerate(cases):
        r0 = base[k]
        row = [case, f"{r0['temperature']:g}", f"{r0['load']:g}", _fmt(r0["generators"]["random"]["final"])]
        for g, i in gens:
            r = (docs[i] if i is not None else docs[0])["results"][k]
            rec = r["generators"].get("hypernet" if i is not None else g)
            if rec is None:
                row.append("unsupported" if (r.get("unsupported") or {}).get("hypernet" if i is not None else g) else "–")
                continue
            row.append(f"{_fmt(rec['at_step']['0'])} / {rec['final_delta']:+.3f} / "
                       f"{speedup_cell(rec, r['generators']['random'])}")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Medians over cases with bootstrap 95% intervals over cases and seeds:", "", *SUMMARY_HEAD]
    by0 = docs[0]["summary"].get("by_generator") or {}
    if "random" in by0:
        lines.append(summary_row(LABELS["random"], by0["random"]))
    for d in docs:
        lines += summary_rows(d, baselines=False)
    lines += baseline_rows(docs[0]["summary"])
    lines += ["", "| generator | goals met |", "|---|---|"]
    for d in docs:
        met = [k for k, v in d["summary"]["goals"].items() if v]
        lines.append(f"| {d['hypernet']} | {len(met)} of {len(d['summary']['goals'])}{': ' + ', '.join(met) if met else ''} |")
    for d in docs:
        mem = d.get("memorization")
        if mem and "nn_distance_ratio_median" in mem:
            lines += ["", f"Memorization ({d['hypernet']}): nearest-training-checkpoint distance / seed distance "
                      f"{_fmt(mem['nn_distance_ratio_median'])} (goal ≥ 1); checkpoint + 10% noise "
                      f"{_fmt(mem['baseline_trained_plus_noise_median'])}, cell average "
                      f"{_fmt(mem['baseline_cell_average_median'])}, the held-out cells' own trained members "
                      f"{_fmt(mem.get('reference_held_out_members_median'))}"
                      + (f", nets trained there from new seeds {_fmt(mem['reference_fresh_runs_median'])} "
                         f"(generated over that: {_fmt(mem.get('ratio_over_fresh_runs_median'))})"
                         if mem.get("reference_fresh_runs_median") is not None else "") + "."]
    return "\n".join(lines) + "\n"


def plot_curves(doc: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"random": "#555555", "hypernet": "#d62728", "nearest": "#1f77b4", "weight_selection": "#2ca02c",
              "lsuv": "#9467bd", "zero": "#8c564b", "orthogonal": "#e377c2"}
    paths = []
    for group in ("cells", "archs"):
        rs = [r for r in doc["results"] if r["group"] == group]
        if not rs:
            continue
        n = len(rs)
        cols = min(n, 3)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
        for ax, r in zip(axes.flat, rs):
            for g, rec in r["generators"].items():
                steps = np.array(rec["curve_steps"], dtype=float)
                vals = np.array(rec["curves"]).mean(0)
                ax.plot(np.maximum(steps, 0.5), vals, color=colors.get(g, "k"), label=g, lw=1.5)
            ax.set_xscale("log")
            ax.axhline(r["generators"]["random"]["final"], color="#999999", ls=":", lw=1)
            ax.set_title(f"{r['name']} ({r['temperature_param']} {r['temperature']:g}, "
                         f"{r['load_param']} {r['load']:g})", fontsize=9)
            ax.set_xlabel("SGD step (step 0 drawn at 0.5)")
            ax.set_ylabel(r["metric"])
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8)
        title = "held-out cells" if group == "cells" else "held-out architectures"
        fig.suptitle(f"{doc['hypernet']}: {title} (mean over seeds; dotted: random init's final score)")
        fig.tight_layout()
        p = out / f"curves-{group}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def write_outputs(doc: dict, out: Path) -> None:
    """results.json, results.md and the curve PNGs, each written atomically."""
    from zoo.store import finite_json, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(finite_json(doc), indent=1, allow_nan=False) + "\n")
    write_text_atomic(out / "results.md", markdown(doc))
    plot_curves(doc, out)


def summary_line(doc: dict) -> str:
    s = doc["summary"]
    best = s.get("best_baseline")
    vs = (f"; {_ci(s.get('ratio_to_best_baseline_archs'), s.get('ratio_to_best_baseline_archs_ci'), 2)}x the best "
          f"baseline ({LABELS.get(best, best)}) there") if best else ""
    met = sum(bool(v) for v in s["goals"].values())
    return (f"{doc['hypernet']}: median speedup {_ci(s['median_speedup_cells'], s.get('median_speedup_cells_ci'))}x "
            f"on held-out cells, {_ci(s['median_speedup_archs'], s.get('median_speedup_archs_ci'))}x on held-out "
            f"architectures{vs}; final {doc['results'][0]['metric']} vs random init "
            f"{_fmt(s['final_acc_delta_median'])} (seed noise {_fmt(s['seed_noise_final_std_median'])}); "
            f"goals met {met} of {len(s['goals'])}" + _memorization_note(doc.get("memorization")))


def _memorization_note(mem: dict | None) -> str:
    if not mem or mem.get("nn_distance_ratio_median") is None:
        return ""
    cal = mem.get("ratio_over_fresh_runs_median")
    return (f"; memorization {_fmt(mem['nn_distance_ratio_median'], 2)} (goal >= 1)"
            + (f", {_fmt(cal, 2)} of a fresh training run's" if cal is not None else ""))
