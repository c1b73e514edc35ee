"""The paper's comparison on HOI-Shapes, on a CPU: train the adapters, evaluate every row, write the table.

``reproduce_toy`` re-trains the GLIGEN and InteractDiffusion adapters on the committed caption-only
backbone (``experiment=shapes/{gligen,interactdiffusion}``, one run per training seed), evaluates the
rows with ``interactdiffusion-eval table=shapes/*`` (the real test images as the detector's
ceiling, the backbone alone, each adapter of each seed) and writes ``results.md`` / ``results.json``:
mean ± std over seeds, the per-seed numbers, the mAP-vs-steps curves the training runs measured and
every job's wall time. Jobs are plain subprocesses of the normal CLIs, ``jobs`` at a time with the cores
split between them; everything already done (an export, a row's ``results.json``) is reused, so an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import copy_file_atomic, copy_folder_atomic, write_json_atomic, write_text_atomic
from ..config_path import REPO_ROOT

ADAPTERS = ("gligen", "interactdiffusion")
LABELS = {"gligen": "GLIGEN", "interactdiffusion": "InteractDiffusion"}
COMMITTED_BACKBONE = REPO_ROOT / "experiments" / "hoi-shapes" / "backbone"
COMMITTED_ADAPTERS = REPO_ROOT / "experiments" / "hoi-shapes" / "adapters"
MAIN_PROTOCOL = "fgahoi"
SETTINGS = (("default", "full"), ("default", "rare"), ("default", "non_rare"),
            ("known_object", "full"), ("known_object", "rare"), ("known_object", "non_rare"))


class ToyJobError(RuntimeError):
    """A training or evaluation subprocess failed; the message names its log file."""


@dataclass
class Job:
    name: str
    command: list[str]
    log: Path
    done: Path  # the file whose presence means the job has nothing left to do
    seconds: float | None = None
    skipped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    env.setdefault("WANDB_MODE", "offline")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_jobs(jobs: list[Job], parallel: int, threads: int) -> None:
    """Run ``jobs`` (skipping the done ones), ``parallel`` at a time with ``threads`` threads each."""
    pending = []
    for job in jobs:
        if job.done.exists():
            job.skipped = True
        else:
            pending.append(job)
    running: list[tuple[Job, subprocess.Popen, float, Any]] = []
    failed: list[Job] = []
    while pending or running:
        while pending and len(running) < max(1, parallel):
            job = pending.pop(0)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            handle = open(job.log, "w", encoding="utf-8")
            print(f"[toy] start {job.name} (log: {job.log})", flush=True)
            proc = subprocess.Popen(job.command, cwd=REPO_ROOT, env=_env(threads), stdout=handle,
                                    stderr=subprocess.STDOUT)
            running.append((job, proc, time.perf_counter(), handle))
        time.sleep(0.5)
        still = []
        for job, proc, started, handle in running:
            code = proc.poll()
            if code is None:
                still.append((job, proc, started, handle))
                continue
            handle.close()
            job.seconds = round(time.perf_counter() - started, 1)
            print(f"[toy] {'done' if code == 0 else 'FAILED'} {job.name} in {job.seconds:.0f} s", flush=True)
            if code != 0 or not job.done.exists():
                failed.append(job)
        running = still
    if failed:
        names = "; ".join(f"{j.name} (see {j.log})" for j in failed)
        raise ToyJobError(f"{len(failed)} HOI-Shapes job(s) failed: {names}")


# -- the jobs --------------------------------------------------------------------------------------
def training_job(out: Path, kind: str, seed: int, overrides: list[str]) -> Job:
    """``experiment=shapes/<kind>`` (``kind`` may name a subfolder: ``ablation/union_box``) for one seed."""
    flat = kind.replace("/", "_")
    run_dir = out / "train" / f"{flat}_seed{seed}"
    command = [
        sys.executable, "-m", "interactdiffusion.cli.train", f"experiment=shapes/{kind}", f"seed={seed}",
        f"name=toy_{flat}_seed{seed}", f"hydra.run.dir={run_dir}", *overrides,
    ]
    return Job(f"train {kind} seed {seed}", command, out / "logs" / f"train_{flat}_seed{seed}.log",
               run_dir / "export" / "adapter.safetensors", extra={"run_dir": run_dir, "kind": kind, "seed": seed})


def eval_job(out: Path, row: str, overrides: list[str], weights: Path | None = None, name: str | None = None,
             label: str | None = None) -> Job:
    name = name or f"shapes_{row}"
    output_dir = out / "eval" / name
    command = [sys.executable, "-m", "interactdiffusion.cli.eval", f"table=shapes/{row}",
               f"row={name}", f"output_dir={output_dir}", f"hydra.run.dir={output_dir}/runs/latest", *overrides]
    if weights is not None:
        command.append(f"weights={weights}")
    if label:
        command.append(f"label='{label}'")
    return Job(f"eval {name}", command, out / "logs" / f"eval_{name}.log", output_dir / "results.json",
               extra={"row": row, "name": name})


# -- the table -------------------------------------------------------------------------------------
def _map(results: dict[str, Any], protocol: str, setting: str, split: str) -> float | None:
    value = (((results.get("map") or {}).get(protocol) or {}).get(setting) or {}).get(split)
    return None if value is None else float(value)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    if len(present) == 1:
        return f"{present[0]:.2f}"
    mean, std = _mean_std(present)
    return f"{mean:.2f} ± {std:.2f}"


def read_curve(run_dir: Path, protocol: str = MAIN_PROTOCOL) -> list[tuple[int, float]]:
    """(step, Default Full mAP) from a training run's ``hoi_eval/step_*.json``."""
    points = []
    for path in sorted((run_dir / "hoi_eval").glob("step_*.json")):
        summary = json.loads(path.read_text())
        value = _map(summary, protocol, "default", "full")
        if value is not None:
            points.append((int(summary["step"]), value))
    return points


def summarise(out: Path, seeds: list[int]) -> dict[str, Any]:
    """Everything results.md shows, from the rows' results.json and the runs' curves."""
    def load(name: str) -> dict[str, Any]:
        return json.loads((out / "eval" / name / "results.json").read_text())

    rows: list[dict[str, Any]] = []
    for name, label in (("shapes_real", "real HOI-Shapes test images (detector ceiling)"),
                        ("shapes_caption_only", "caption-only backbone (\"Stable Diffusion\")")):
        rows.append({"label": label, "runs": [load(name)]})
    for kind in ADAPTERS:
        rows.append({"label": LABELS[kind], "kind": kind, "runs": [load(f"shapes_{kind}_seed{s}") for s in seeds]})
    curves = {kind: {seed: read_curve(out / "train" / f"{kind}_seed{seed}") for seed in seeds} for kind in ADAPTERS}
    return {"rows": rows, "curves": curves}


def doubles_gligen(ours: float, gligen: float) -> bool:
    """The issue's per-seed bar: InteractDiffusion at least twice the GLIGEN adapter of the same seed (and above 0)."""
    return ours > 0 and ours >= 2.0 * gligen


def merge_timings(out: Path, jobs: list[Job]) -> dict[str, float]:
    """This invocation's job times merged into ``<out>/timings.json`` (reused jobs keep their earlier times)."""
    timings = {job.name: job.seconds for job in jobs if job.seconds is not None}
    previous = out / "timings.json"
    if previous.is_file():
        timings = {**json.loads(previous.read_text()), **timings}
    write_json_atomic(previous, timings, allow_nan=True)
    return timings


def check_expectations(summary: dict[str, Any], protocol: str = MAIN_PROTOCOL) -> list[tuple[str, bool, str]]:
    """The statements the table must support, each with its numbers."""
    by_label = {row["label"]: row for row in summary["rows"]}
    rows = summary["rows"]
    real = _map(rows[0]["runs"][0], protocol, "default", "full") or 0.0
    caption = _map(rows[1]["runs"][0], protocol, "default", "full") or 0.0
    gligen = [_map(r, protocol, "default", "full") or 0.0 for r in by_label["GLIGEN"]["runs"]]
    ours = [_map(r, protocol, "default", "full") or 0.0 for r in by_label["InteractDiffusion"]["runs"]]
    g_mean, g_std = _mean_std(gligen)
    o_mean, o_std = _mean_std(ours)
    spread = max(g_std, o_std)
    return [
        ("real images ≥ 95 (detector ceiling)", real >= 95.0, f"{real:.2f}"),
        ("caption-only near 0 (< 5)", caption < 5.0, f"{caption:.2f}"),
        ("InteractDiffusion above GLIGEN on Default Full by more than the seed-to-seed spread",
         o_mean - g_mean > spread,
         f"{o_mean:.2f} − {g_mean:.2f} = {o_mean - g_mean:.2f} vs largest std {spread:.2f} "
         f"(seeds: InteractDiffusion {', '.join(f'{v:.2f}' for v in ours)}; GLIGEN {', '.join(f'{v:.2f}' for v in gligen)})"),
        ("every InteractDiffusion seed at least 2x its GLIGEN seed (Default Full)",
         all(doubles_gligen(o, g) for o, g in zip(ours, gligen)),
         "; ".join(f"{o:.2f} / {g:.2f} = {o / g:.1f}x" if g > 0 else f"{o:.2f} / {g:.2f}" for o, g in zip(ours, gligen))),
    ]


def machine_description() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPU cores ({cpu}), no GPU, Python {platform.python_version()}, "
            f"torch {torch.__version__}, {platform.system()} {platform.release()}")


def render_results(summary: dict[str, Any], seeds: list[int], command: str, timings: dict[str, float],
                   machine: str, wall_s: float | None) -> str:
    lines = ["# HOI-Shapes: the paper's comparison on a CPU", ""]
    lines += [f"Command: `{command}`  ", f"Machine: {machine}  ",
              f"Training seeds: {', '.join(map(str, seeds))} (mean ± sample std over seeds; the real and "
              "caption-only rows do not depend on a training seed)  ",
              "Detector: the analytic HOI-Shapes detector (`detector=shapes`). Fréchet distance (FD): FID's "
              "formula on the 64 features of a seeded random conv net (`metrics=shapes_fd`, offline), "
              "against the real test images; comparable across these rows only.", ""]
    for protocol, title in ((MAIN_PROTOCOL, "mAP, FGAHOI protocol (the paper's table)"),
                            ("official", "mAP, official HICO-DET protocol")):
        lines += [f"## {title}", "",
                  "| row | Default Full | Default Rare | Default Non-rare | Known Obj. Full | Known Obj. Rare "
                  "| Known Obj. Non-rare | FD ↓ | images |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in summary["rows"]:
            cells = [_cell([_map(r, protocol, s, p) for r in row["runs"]]) for s, p in SETTINGS]
            fd = _cell([r.get("fid") if r.get("fid") == r.get("fid") else None for r in row["runs"]])
            images = row["runs"][0].get("num_images") or row["runs"][0].get("num_layouts")
            lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {fd} | {images} |")
        lines.append("")
    lines += ["## Per seed (FGAHOI Default Full / Rare / Non-rare)", "", "| row | seed | Full | Rare | Non-rare | FD |",
              "|---|---|---|---|---|---|"]
    for row in summary["rows"][2:]:
        for seed, r in zip(seeds, row["runs"]):
            vals = [_map(r, MAIN_PROTOCOL, "default", s) for s in ("full", "rare", "non_rare")]
            lines.append(f"| {row['label']} | {seed} | " + " | ".join(_cell([v]) for v in vals)
                         + f" | {_cell([r.get('fid')])} |")
    lines += ["", "## What the table shows", ""]
    for statement, ok, numbers in check_expectations(summary):
        lines.append(f"- {'yes' if ok else 'NO'}: {statement}: {numbers}")
    lines += ["", "## mAP against training steps (FGAHOI Default Full, 64 fixed test layouts)", ""]
    steps = sorted({s for kind in ADAPTERS for curve in summary["curves"][kind].values() for s, _ in curve})
    if steps:
        lines.append("| step | " + " | ".join(f"{LABELS[k]} (mean over seeds)" for k in ADAPTERS) + " |")
        lines.append("|---|" + "---|" * len(ADAPTERS))
        for step in steps:
            cells = []
            for kind in ADAPTERS:
                values = [dict(curve).get(step) for curve in summary["curves"][kind].values()]
                cells.append(_cell(values))
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "## Wall times (seconds)", "", "| job | s |", "|---|---|"]
    for name, seconds in timings.items():
        lines.append(f"| {name} | {seconds:.0f} |")
    if wall_s is not None:
        lines.append(f"| whole command | {wall_s:.0f} |")
    lines.append("")
    return "\n".join(lines)


# -- the whole run ---------------------------------------------------------------------------------
def prepare_toy_run(train_overrides: list[str] | None, eval_overrides: list[str] | None,
                    data_dir: str | Path | None) -> tuple[list[str], list[str]]:
    """The overrides every job gets (``paths.data_dir`` added), once HOI-Shapes and the backbone are there."""
    from ..shapes.dataset import ensure_hoi_shapes

    train_overrides = list(train_overrides or [])
    eval_overrides = list(eval_overrides or [])
    if data_dir is not None:
        train_overrides.append(f"paths.data_dir={data_dir}")
        eval_overrides.append(f"paths.data_dir={data_dir}")
    shapes_args = {}  # the generator's arguments, as the training runs will be told them
    for override in train_overrides:
        key, _, value = override.partition("=")
        if key in {f"data.shapes.{name}" for name in ("seed", "num_train", "num_test", "size")}:
            shapes_args[key.rsplit(".", 1)[-1]] = int(value)
    ensure_hoi_shapes(Path(data_dir or REPO_ROOT / "data") / "hoi-shapes", **shapes_args)
    if not any(o.startswith("backbone.path=") for o in train_overrides) and not (COMMITTED_BACKBONE / "unet").is_dir():
        raise FileNotFoundError(f"the HOI-Shapes backbone is missing at {COMMITTED_BACKBONE}: run `make toy-backbone`")
    return train_overrides, eval_overrides


def reproduce_toy(out: str | Path, seeds: list[int], parallel: int = 2, threads: int | None = None,
                  results: str | Path | None = None, train_overrides: list[str] | None = None,
                  eval_overrides: list[str] | None = None, data_dir: str | Path | None = None,
                  command: str = "", publish_seed: int | None = None) -> Path:
    """Train, evaluate and tabulate; returns the results.md written (``results`` or ``<out>/results.md``)."""
    started = time.perf_counter()
    out = Path(out).resolve()
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, parallel))
    train_overrides, eval_overrides = prepare_toy_run(train_overrides, eval_overrides, data_dir)

    trainings = [training_job(out, kind, seed, train_overrides) for seed in seeds for kind in ADAPTERS]
    run_jobs(trainings, parallel, threads)
    evals = [eval_job(out, "real", eval_overrides), eval_job(out, "caption_only", eval_overrides)]
    for job in trainings:
        kind, seed = job.extra["kind"], job.extra["seed"]
        evals.append(eval_job(out, kind, eval_overrides, weights=job.done, name=f"shapes_{kind}_seed{seed}",
                              label=f"{LABELS[kind]} seed {seed}"))
    run_jobs(evals, parallel, threads)

    timings = merge_timings(out, trainings + evals)
    summary = summarise(out, seeds)
    wall = time.perf_counter() - started
    text = render_results(summary, seeds, command, timings, machine_description(), wall)
    target = Path(results) if results else out / "results.md"
    write_text_atomic(target, text)
    write_json_atomic(target.with_suffix(".json"), {
        "command": command, "machine": machine_description(), "seeds": seeds, "timings_s": timings,
        "curves": {k: {str(s): c for s, c in v.items()} for k, v in summary["curves"].items()},
        "rows": [{"label": r["label"], "results": [{k: x.get(k) for k in ("row", "map", "fid", "num_images")}
                                                   for x in r["runs"]]} for r in summary["rows"]],
        "checks": [{"statement": s, "holds": ok, "numbers": n} for s, ok, n in check_expectations(summary)],
    }, allow_nan=True)
    if publish_seed is not None:
        publish_adapters(out, publish_seed)
    print(text)
    return target


def publish_adapters(out: Path, seed: int, dest: Path = COMMITTED_ADAPTERS) -> list[Path]:
    """Copy the seed's two exported adapters to ``experiments/hoi-shapes/adapters/<kind>.safetensors``."""
    written = []
    for kind in ADAPTERS:
        source = out / "train" / f"{kind}_seed{seed}" / "export" / "adapter.safetensors"
        for suffix in (".safetensors", ".json"):  # the weights carry their config: loaders never pair old and new
            copy_file_atomic(source.with_suffix(suffix), dest / f"{kind}{suffix}")
        written.append(dest / f"{kind}.safetensors")
    return written


def train_toy_backbone(out: str | Path, dest: str | Path = COMMITTED_BACKBONE, overrides: list[str] | None = None,
                       threads: int | None = None) -> Path:
    """``experiment=shapes/backbone`` through the train CLI, then its export copied to ``dest``."""
    out = Path(out).resolve()
    run_dir = out / "backbone"
    job = Job("train backbone", [sys.executable, "-m", "interactdiffusion.cli.train", "experiment=shapes/backbone",
                                 f"hydra.run.dir={run_dir}", *(overrides or [])],
              out / "logs" / "train_backbone.log", run_dir / "export" / "backbone" / "unet" / "config.json")
    run_jobs([job], 1, threads or os.cpu_count() or 1)
    dest = copy_folder_atomic(run_dir / "export" / "backbone", dest)
    if job.seconds is not None:
        write_text_atomic(out / "backbone_seconds.txt", f"{job.seconds}\n")
    print(f"[toy] backbone trained in {job.seconds if job.seconds is not None else '(reused)'} s -> {dest}")
    return dest
