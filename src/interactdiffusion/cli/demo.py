"""`make demo`: the whole path on the embedded default, offline, on a laptop CPU.

1. a small synthetic HICO-DET in the real formats (anno_bbox.mat + JPEGs) under ``<out>/data``;
2. ``interactdiffusion-train``: a short training of the interaction module on the tiny backbone, with a wandb
   run in offline mode, exported as safetensors + a diffusers pipeline folder;
3. ``interactdiffusion-data export-layouts`` → ``interactdiffusion-generate``: images of the test layouts with
   their boxes drawn, and one grid;
4. ``interactdiffusion-eval``: HOI mAP (both protocols) with a random-init QPIC and FID/KID with a tiny feature
   extractor, written to results.json / results.md.

Every step is the real command a researcher runs, started as a subprocess; the numbers are meaningless (an
untrained tiny backbone, a random detector) and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..config_path import REPO_ROOT


def _run(step: str, command: list[str], env: dict[str, str]) -> float:
    print(f"\n=== {step}\n$ {shlex.join(command)}", flush=True)
    started = time.time()
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True)
    elapsed = time.time() - started
    print(f"--- {step}: {elapsed:.1f} s", flush=True)
    return elapsed


def _grid(images: list[Path], out: Path, columns: int = 4) -> Path | None:
    from PIL import Image

    if not images:
        return None
    tiles = [Image.open(p).convert("RGB") for p in images]
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w, rows * h), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile.resize((w, h)), ((i % columns) * w, (i // columns) * h))
    grid.save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interactdiffusion-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "logs" / "demo")
    parser.add_argument("--steps", type=int, default=40, help="training steps")
    parser.add_argument("--layouts", type=int, default=8, help="test layouts to generate and evaluate")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    data_dir = out / "data"
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "WANDB_SILENT": "true",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           # tiny models: one thread per process avoids oversubscribing a small, possibly busy CPU
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    py = sys.executable
    timings: dict[str, float] = {}
    started = time.time()

    from ..data.synthetic import write_synthetic_hicodet

    synthetic = data_dir / "synthetic"
    if not (synthetic / "anno_bbox.mat").is_file():
        write_synthetic_hicodet(synthetic, num_train=48, num_test=16, seed=0)
    annotations = synthetic / "anno_bbox.mat"

    run_dir = out / "train"
    timings["train"] = _run("train the interaction module (tiny backbone, CPU)", [
        py, "-m", "interactdiffusion.cli.train", "backbone=tiny", "model=interactdiffusion", "data=synthetic",
        "trainer=cpu", "logger=many", f"trainer.max_steps={args.steps}", "trainer.log_every_n_steps=5",
        "recipe.warmup_steps=5", "recipe.lr=1e-3", "export=true", f"hydra.run.dir={run_dir}",
        f"paths.data_dir={data_dir}", f"paths.log_dir={out / 'logs'}", "name=demo", "tags=[demo]",
    ], env)
    adapter = run_dir / "export" / "adapter.safetensors"

    layouts = out / "layouts.jsonl"
    timings["layouts"] = _run("export the test layouts", [
        py, "-m", "interactdiffusion.cli.data", "export-layouts", "--annotations", str(annotations),
        "--split", "test", "--out", str(layouts),
    ], env)
    lines = layouts.read_text().splitlines()[: args.layouts]
    scenes = out / "scenes.jsonl"
    scenes.write_text("\n".join(lines) + "\n")

    images = out / "images"
    timings["generate"] = _run("generate the layouts with the trained adapter", [
        py, "-m", "interactdiffusion.cli.generate", "backbone=tiny", f"weights={adapter}", f"input={scenes}",
        f"output_dir={images}", "steps=20", "batch_size=4", "resolution=32", "precision=fp32", "device=cpu",
    ], env)
    grid = _grid(sorted(images.glob("*_boxes.png")), out / "grid.png")

    eval_dir = out / "eval"
    timings["evaluate"] = _run("evaluate: HOI mAP (random-init QPIC) and FID/KID (tiny extractor)", [
        py, "-m", "interactdiffusion.cli.eval", "eval=tiny", f"weights={adapter}", "row=demo",
        f"output_dir={eval_dir}", f"paths.data_dir={data_dir}", f"paths.log_dir={out / 'logs'}",
        f"eval.limit={args.layouts}", "eval.overwrite=true",
    ], env)

    results = json.loads((eval_dir / "results.json").read_text())
    total = time.time() - started
    print("\n" + (eval_dir / "results.md").read_text())
    default = {k: results["map"][p]["default"]["full"] for p in results["map"] for k in [p]}
    print("Demo finished in {:.0f} s ({}).".format(total, ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())))
    print(f"  mAP Default Full: {default} (meaningless: untrained tiny backbone, random detector)")
    print(f"  trained adapter:   {adapter} (+ pipeline folder {run_dir / 'export' / 'pipeline'})")
    print(f"  images:            {images} (grid: {grid})")
    wandb_runs = sorted((out / "logs").rglob("offline-run-*")) + sorted(run_dir.rglob("offline-run-*"))
    print(f"  wandb offline run: {wandb_runs[-1] if wandb_runs else 'none (logger without wandb)'}")
    print(f"  results:           {eval_dir / 'results.json'}, {eval_dir / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
