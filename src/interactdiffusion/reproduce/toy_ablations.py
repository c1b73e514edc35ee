"""The paper's ablations of the interaction module on HOI-Shapes, on a CPU: ``ablations.md``.

``reproduce_ablations`` trains full InteractDiffusion, GLIGEN and the four ablations
(``experiment=shapes/ablation/*``: without instance embedding, without role embedding, without action
tokens, union box instead of between box) over the same training seeds with the machinery of
``reproduce.toy`` (the same jobs, run folders and eval rows, so the table's InteractDiffusion and GLIGEN
runs in the same ``--out`` are reused, not retrained), evaluates each adapter with
``table=shapes/{interactdiffusion,gligen,ablation/*}`` and writes mean ± std per row with one
sentence per row. The sentences are templates filled from the numbers: whether a row differs from full
InteractDiffusion by more than the seed-to-seed spread is computed, never written by hand.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic, write_text_atomic
from .toy import (
    MAIN_PROTOCOL,
    _cell,
    _map,
    _mean_std,
    doubles_gligen,
    eval_job,
    machine_description,
    merge_timings,
    prepare_toy_run,
    read_curve,
    run_jobs,
    training_job,
)

# kind (experiment=shapes/<kind>, table=shapes/<kind>) -> row label; full InteractDiffusion first
ABLATION_ROWS = {
    "interactdiffusion": "InteractDiffusion (full)",
    "gligen": "GLIGEN",
    "ablation/no_instance_embedding": "w/o instance embedding",
    "ablation/no_role_embedding": "w/o role embedding",
    "ablation/no_action_tokens": "w/o action tokens",
    "ablation/union_box": "union box instead of between box",
}
# what a row changes against full InteractDiffusion: how its sentence starts, and the change as a subject
CHANGES = {
    "gligen": ("With GLIGEN's subject and object tokens instead of the interaction module",
               "replacing the interaction module by GLIGEN's tokens"),
    "ablation/no_instance_embedding": ("Without the instance embedding", "dropping the instance embedding"),
    "ablation/no_role_embedding": ("Without the role embedding", "dropping the role embedding"),
    "ablation/no_action_tokens": ("Without the action tokens", "dropping the action tokens"),
    "ablation/union_box": ("With the action token on the union box instead of the between box",
                           "the union box instead of the between box"),
}
REFERENCE = "interactdiffusion"
SPLITS = (("default", "full"), ("default", "rare"), ("default", "non_rare"), ("known_object", "full"))


def slug(kind: str) -> str:
    """The run folder and eval row name of a kind, as ``training_job`` spells them."""
    return kind.replace("/", "_")


def _full(results: dict[str, Any]) -> float | None:
    return _map(results, MAIN_PROTOCOL, "default", "full")


def verdict(kind: str, values: list[float], reference: list[float], gligen: list[float]) -> dict[str, Any]:
    """The row's sentence and the numbers behind it: the difference to full InteractDiffusion against the spread."""
    if kind == REFERENCE:
        doubled = sum(1 for o, g in zip(values, gligen) if doubles_gligen(o, g))
        return {"allows": None, "sentence": (
            f"The reference row: on {doubled} of {len(values)} seeds full InteractDiffusion is at least twice "
            "the GLIGEN adapter of the same seed on Default Full.")}
    if len(values) < 2 or len(reference) < 2:
        return {"allows": False, "sentence": (
            "One seed only: there is no spread to compare the difference with, so the row allows no conclusion.")}
    mean, std = _mean_std(values)
    ref_mean, ref_std = _mean_std(reference)
    difference = ref_mean - mean
    spread = max(std, ref_std)
    allows = abs(difference) > spread
    effect = "lowers" if difference > 0 else "raises"
    opening, change = CHANGES[kind]
    sentence = (
        f"{opening}, Default Full mAP is {mean:.2f} ± {std:.2f} against full InteractDiffusion's "
        f"{ref_mean:.2f} ± {ref_std:.2f} over {len(values)} seeds (full minus row: {difference:+.2f}); that is "
        f"{'more' if allows else 'not more'} than the larger std ({spread:.2f}), so the spread "
        f"{'allows' if allows else 'does not allow'} the conclusion that {change} {effect} mAP on HOI-Shapes.")
    return {"allows": allows, "difference": difference, "spread": spread, "sentence": sentence}


def row_kinds(ablations: list[str] | None = None) -> list[str]:
    """Full InteractDiffusion and GLIGEN, then the chosen ablations (default: all four), by kind or short name."""
    known = [k for k in ABLATION_ROWS if k.startswith("ablation/")]
    chosen = []
    for name in ablations or known:
        kind = name if name.startswith("ablation/") else f"ablation/{name}"
        if kind not in known:
            raise ValueError(f"unknown HOI-Shapes ablation {name!r}; known: {', '.join(k[9:] for k in known)}")
        chosen.append(kind)
    return [REFERENCE, "gligen", *[k for k in known if k in chosen]]


def summarise_ablations(out: Path, seeds: list[int], kinds: list[str] | None = None) -> list[dict[str, Any]]:
    """One entry per row: its per-seed eval results, mean curve and verdict."""
    def load(kind: str, seed: int) -> dict[str, Any]:
        return json.loads((out / "eval" / f"shapes_{slug(kind)}_seed{seed}" / "results.json").read_text())

    kinds = kinds or row_kinds()
    runs = {kind: [load(kind, s) for s in seeds] for kind in kinds}
    full = {kind: [_full(r) or 0.0 for r in rs] for kind, rs in runs.items()}
    rows = []
    for kind in kinds:
        rows.append({"kind": kind, "label": ABLATION_ROWS[kind], "runs": runs[kind], "full": full[kind],
                     "curves": {s: read_curve(out / "train" / f"{slug(kind)}_seed{s}") for s in seeds},
                     **verdict(kind, full[kind], full[REFERENCE], full["gligen"])})
    return rows


def render_ablations(rows: list[dict[str, Any]], seeds: list[int], command: str, timings: dict[str, float],
                     machine: str, wall_s: float | None) -> str:
    lines = ["# HOI-Shapes: the ablations of the interaction module on a CPU", "",
             f"Command: `{command}`  ", f"Machine: {machine}  ",
             f"Training seeds: {', '.join(map(str, seeds))} (mean ± sample std over seeds); every row has the "
             "budget and recipe of `experiment=shapes/interactdiffusion`, only the adapter differs.  ",
             "Detector: the analytic HOI-Shapes detector (`detector=shapes`), FGAHOI protocol.", "",
             "| row | Default Full | Default Rare | Default Non-rare | Known Obj. Full | per seed (Default Full) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        cells = [_cell([_map(r, MAIN_PROTOCOL, s, p) for r in row["runs"]]) for s, p in SPLITS]
        per_seed = ", ".join(f"{v:.2f}" for v in row["full"])
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {per_seed} |")
    lines += ["", "## What each row shows", ""]
    lines += [f"- **{row['label']}**: {row['sentence']}" for row in rows]
    lines += ["", "## mAP against training steps (FGAHOI Default Full, mean over seeds)", ""]
    steps = sorted({s for row in rows for curve in row["curves"].values() for s, _ in curve})
    if steps:
        lines.append("| step | " + " | ".join(row["label"] for row in rows) + " |")
        lines.append("|---|" + "---|" * len(rows))
        for step in steps:
            cells = [_cell([dict(curve).get(step) for curve in row["curves"].values()]) for row in rows]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "## Wall times (seconds)", "", "| job | s |", "|---|---|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    if wall_s is not None:
        lines.append(f"| whole command | {wall_s:.0f} |")
    lines.append("")
    return "\n".join(lines)


def reproduce_ablations(out: str | Path, seeds: list[int], parallel: int = 2, threads: int | None = None,
                        results: str | Path | None = None, train_overrides: list[str] | None = None,
                        eval_overrides: list[str] | None = None, data_dir: str | Path | None = None,
                        command: str = "", ablations: list[str] | None = None) -> Path:
    """Train and evaluate every row over ``seeds``; returns the ablations.md written.

    ``ablations`` picks some of the four ablations (default all); full InteractDiffusion and GLIGEN are always rows.
    """
    kinds = row_kinds(ablations)
    started = time.perf_counter()
    out = Path(out).resolve()
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, parallel))
    train_overrides, eval_overrides = prepare_toy_run(train_overrides, eval_overrides, data_dir)

    trainings = [training_job(out, kind, seed, train_overrides) for seed in seeds for kind in kinds]
    run_jobs(trainings, parallel, threads)
    evals = [eval_job(out, job.extra["kind"], eval_overrides, weights=job.done,
                      name=f"shapes_{slug(job.extra['kind'])}_seed{job.extra['seed']}",
                      label=f"{ABLATION_ROWS[job.extra['kind']]} seed {job.extra['seed']}") for job in trainings]
    run_jobs(evals, parallel, threads)

    timings = merge_timings(out, trainings + evals)  # the table's reused runs keep their times
    timings = {job.name: timings[job.name] for job in trainings + evals if job.name in timings}
    rows = summarise_ablations(out, seeds, kinds)
    wall = time.perf_counter() - started
    machine = machine_description()
    text = render_ablations(rows, seeds, command, timings, machine, wall)
    target = Path(results) if results else out / "ablations.md"
    write_text_atomic(target, text)
    write_json_atomic(target.with_suffix(".json"), {
        "command": command, "machine": machine, "seeds": seeds, "timings_s": timings, "wall_s": wall,
        "rows": [{"kind": r["kind"], "label": r["label"], "default_full": r["full"],
                  "mean_std": list(_mean_std(r["full"])), "allows_conclusion": r["allows"], "sentence": r["sentence"],
                  "curves": {str(s): c for s, c in r["curves"].items()},
                  "results": [{k: x.get(k) for k in ("row", "map", "fid", "num_images")} for x in r["runs"]]}
                 for r in rows],
    }, allow_nan=True)
    print(text)
    return target
