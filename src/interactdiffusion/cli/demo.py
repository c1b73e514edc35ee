"""`make demo`: the main job on the embedded default, HOI-Shapes, offline on a laptop CPU.

1. HOI-Shapes (``interactdiffusion-data make-shapes``) under ``data/hoi-shapes`` when it is not there yet;
2. ``interactdiffusion-train experiment=shapes/interactdiffusion``: a short training (a few dozen steps) of
   the interaction module on the committed, frozen HOI-Shapes backbone, continuing from the committed
   adapter, with a wandb run in offline mode, exported as safetensors + a diffusers pipeline folder;
3. ``interactdiffusion-data export-layouts`` → ``interactdiffusion-generate``: test scenes generated with
   the committed adapter, their boxes drawn, and one grid;
4. ``interactdiffusion-eval``: HOI mAP (both protocols) of the generated images with the analytic HOI-Shapes
   detector, for the committed InteractDiffusion adapter and, for contrast, the caption-only backbone, each
   an offline wandb run (group ``demo``) with its per-class AP table and a gallery with GT and detection boxes.

At the end the offline wandb runs are read back and what they hold is listed, with their ``wandb sync`` line.

Every step is the real command a researcher runs, started as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..config_path import REPO_ROOT
from ..dashboards.offline import describe_media, find_offline_runs, read_offline_run
from ..reproduce.toy import COMMITTED_ADAPTERS, COMMITTED_BACKBONE


def _run(step: str, command: list[str], env: dict[str, str]) -> float:
    print(f"\n=== {step}\n$ {shlex.join(command)}", flush=True)
    started = time.time()
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True)
    elapsed = time.time() - started
    print(f"--- {step}: {elapsed:.1f} s", flush=True)
    return elapsed


def _grid(images: list[Path], out: Path, columns: int = 4, scale: int = 4) -> Path | None:
    """The generated images side by side, enlarged (nearest neighbour: 32-pixel scenes stay crisp)."""
    from PIL import Image

    if not images:
        return None
    tiles = [Image.open(p).convert("RGB") for p in images]
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w, rows * h), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile.resize((w, h)), ((i % columns) * w, (i // columns) * h))
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    grid.save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interactdiffusion-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "logs" / "demo")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data")
    parser.add_argument("--steps", type=int, default=30, help="training steps of the short training")
    parser.add_argument("--scenes", type=int, default=16, help="test scenes in the grid")
    parser.add_argument("--layouts", type=int, default=100, help="test layouts to evaluate")
    args = parser.parse_args(argv)

    adapter = COMMITTED_ADAPTERS / "interactdiffusion.safetensors"
    for needed in (COMMITTED_BACKBONE / "unet" / "config.json", adapter):
        if not needed.is_file():
            raise SystemExit(f"missing {needed}: the committed HOI-Shapes weights (see experiments/hoi-shapes/README.md)")
    out = args.out.resolve()
    data_dir = args.data_dir.resolve()
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "WANDB_SILENT": "true",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1)))}
    py = sys.executable
    timings: dict[str, float] = {}
    started = time.time()

    from ..shapes.dataset import ensure_hoi_shapes

    t0 = time.time()
    shapes = ensure_hoi_shapes(data_dir / "hoi-shapes")
    timings["data"] = time.time() - t0
    annotations = shapes / "anno_bbox.mat"

    run_dir = out / "train"
    timings["train"] = _run("train the interaction module on the frozen HOI-Shapes backbone (CPU)", [
        py, "-m", "interactdiffusion.cli.train", "experiment=shapes/interactdiffusion", "logger=many",
        f"model.init_from={adapter}", f"trainer.max_steps={args.steps}", "trainer.log_every_n_steps=5",
        "recipe.warmup_steps=1", "~callbacks.hoi_eval", f"callbacks.image_grid.every_n_steps={args.steps}",
        "callbacks.model_checkpoint.every_n_train_steps=1000", "export=true", f"hydra.run.dir={run_dir}",
        f"paths.data_dir={data_dir}", f"paths.log_dir={out / 'logs'}", "name=demo", "tags=[demo]",
        "extras.print_config=false",
    ], env)

    layouts = out / "layouts.jsonl"
    timings["layouts"] = _run("export the test layouts", [
        py, "-m", "interactdiffusion.cli.data", "export-layouts", "--annotations", str(annotations),
        "--split", "test", "--out", str(layouts),
    ], env)
    scenes = out / "scenes.jsonl"
    scenes.write_text("\n".join(layouts.read_text().splitlines()[: args.scenes]) + "\n")

    images = out / "images"
    shutil.rmtree(images, ignore_errors=True)  # a demo run starts its images afresh (earlier runs may differ)
    timings["generate"] = _run("generate test scenes with the committed adapter", [
        py, "-m", "interactdiffusion.cli.generate", "backbone=shapes", "model=shapes_interactdiffusion",
        f"weights={adapter}", f"input={scenes}", f"output_dir={images}", "steps=20", "guidance_scale=3.0",
        "negative_prompt=null", "batch_size=16", "precision=fp32", "device=cpu",
    ], env)
    grid = _grid(sorted(images.glob("*_boxes.png")), out / "grid.png")

    rows = {}
    for row in ("interactdiffusion", "caption_only"):
        eval_dir = out / "eval" / row
        timings[f"eval {row}"] = _run(f"evaluate {row}: HOI mAP with the analytic HOI-Shapes detector", [
            py, "-m", "interactdiffusion.cli.eval", f"table=shapes/{row}", f"row=demo_{row}",
            f"output_dir={eval_dir}", f"hydra.run.dir={eval_dir}/runs/latest", f"paths.data_dir={data_dir}",
            f"paths.log_dir={out / 'logs'}", f"eval.limit={args.layouts}", "eval.overwrite=true",
            "extras.print_config=false", "logger=wandb", "wandb_group=demo",
        ], env)
        rows[row] = json.loads((eval_dir / "results.json").read_text())

    total = time.time() - started
    print(f"\nHOI-Shapes, first {args.layouts} test layouts, FGAHOI protocol (analytic detector):\n")
    print("| row | Default Full | Rare | Non-rare | Known Obj. Full | FD |")
    print("|---|---|---|---|---|---|")
    for row, label in (("caption_only", "caption-only backbone"), ("interactdiffusion", "InteractDiffusion (committed)")):
        m = rows[row]["map"]["fgahoi"]
        fd = rows[row].get("fid")
        fd_text = f"{fd:.2f}" if fd is not None else "–"
        print(f"| {label} | {m['default']['full']:.2f} | {m['default']['rare']:.2f} | {m['default']['non_rare']:.2f} "
              f"| {m['known_object']['full']:.2f} | {fd_text} |")
    print("\nDemo finished in {:.0f} s ({}).".format(total, ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())))
    print(f"  short training:    {run_dir} (adapter {run_dir / 'export' / 'adapter.safetensors'})")
    print(f"  images:            {images} (grid with boxes: {grid})")
    for row in rows:
        print(f"  results ({row}): {out / 'eval' / row / 'results.json'}, {out / 'eval' / row / 'results.md'}")
    _report_wandb("training", find_offline_runs(run_dir))
    _report_wandb("eval interactdiffusion", find_offline_runs(out / "eval" / "interactdiffusion" / "runs" / "latest"))
    return 0


def _report_wandb(what: str, folders: list[Path]) -> None:
    """What the newest offline wandb run holds (read back from its files), and how to upload it."""
    if not folders:
        print(f"  wandb offline run ({what}): none (logger without wandb)")
        return
    run = read_offline_run(folders[-1])
    print(f"  wandb offline run ({what}): {run.folder} (group {run.group!r}, run {run.name!r}); it holds")
    for line in describe_media(run):
        print(f"    {line}")
    print(f"    upload it with: wandb sync {run.folder}")


if __name__ == "__main__":
    sys.exit(main())
