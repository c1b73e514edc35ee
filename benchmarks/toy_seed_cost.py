"""Where one HOI-Shapes seed's time goes: data, UNet step, fusers, callbacks, evaluation.

Runs the real commands under cProfile in subprocesses at ``--threads`` threads: a short
``experiment=shapes/interactdiffusion`` training (``--steps`` steps, one curve point, one sample grid and
one checkpoint at its last step) and an ``table=shapes/interactdiffusion`` evaluation of the
committed adapter on ``--layouts`` test layouts. Prints each component's seconds and share, and scales
them to one adapter run of the committed budget (3,600 steps, a curve point and a grid every 600 steps, a
500-layout evaluation). cProfile adds a little overhead to Python-heavy parts; shares are what to read,
and on a shared machine the absolute times move with its load.

    python benchmarks/toy_seed_cost.py [--steps 100] [--layouts 64] [--threads 1] [--out /tmp/toy_seed_cost]
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

BUDGET_STEPS, CURVE_EVERY, EVAL_LAYOUTS = 3600, 600, 500


def cumulative(stats: pstats.Stats, path_suffix: str, function: str) -> float:
    """Cumulative seconds of ``function`` defined in a file ending with ``path_suffix`` (summed over matches)."""
    return sum(entry[3] for (path, _, name), entry in stats.stats.items()  # type: ignore[attr-defined]
               if name == function and path.replace(os.sep, "/").endswith(path_suffix))


def count(stats: pstats.Stats, path_suffix: str, function: str) -> int:
    return sum(entry[1] for (path, _, name), entry in stats.stats.items()  # type: ignore[attr-defined]
               if name == function and path.replace(os.sep, "/").endswith(path_suffix))


def profile(module: str, overrides: list[str], target: Path, threads: int) -> tuple[pstats.Stats, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
    started = time.perf_counter()
    with open(target.with_suffix(".log"), "w") as log:
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(target), "-m", module, *overrides],
                       env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return pstats.Stats(str(target)), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--layouts", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="/tmp/toy_seed_cost")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps
    train, train_wall = profile("interactdiffusion.cli.train", [
        "experiment=shapes/interactdiffusion", f"trainer.max_steps={steps}", f"hydra.run.dir={out / 'train'}",
        f"callbacks.model_checkpoint.every_n_train_steps={steps}", f"callbacks.image_grid.every_n_steps={steps}",
        f"callbacks.hoi_eval.every_n_steps={steps}", "callbacks.hoi_eval.at_start=false",
        "extras.print_config=false", "trainer.enable_progress_bar=false"], out / "train.prof", args.threads)
    evaluation, eval_wall = profile("interactdiffusion.cli.eval", [
        "table=shapes/interactdiffusion", f"eval.limit={args.layouts}", f"output_dir={out / 'eval'}",
        f"hydra.run.dir={out / 'eval' / 'runs'}", "eval.overwrite=true"], out / "eval.prof", args.threads)

    fit = cumulative(train, "lightning/pytorch/loops/fit_loop.py", "run")
    data = cumulative(train, "lightning/pytorch/loops/fetchers.py", "__next__") / 2  # two nested __next__
    loss = cumulative(train, "interactdiffusion/training/module.py", "compute_loss")
    text = cumulative(train, "interactdiffusion/training/module.py", "encode_text")
    backward = cumulative(train, "torch/_tensor.py", "backward")
    adam = cumulative(train, "torch/optim/adam.py", "adam")
    curve = cumulative(train, "interactdiffusion/training/eval_callback.py", "run")
    grid = cumulative(train, "interactdiffusion/training/callbacks.py", "log_grid")
    ckpt = cumulative(train, "lightning/pytorch/callbacks/model_checkpoint.py", "_save_checkpoint")
    unet = cumulative(train, "diffusers/models/unets/unet_2d_condition.py", "forward")
    fusers = cumulative(train, "interactdiffusion/models/positional_fuser.py", "forward")
    other = fit - (data + loss + backward + adam + curve + grid + ckpt)
    gen = cumulative(evaluation, "interactdiffusion/evaluation/generation.py", "generate_images")
    detect = cumulative(evaluation, "interactdiffusion/evaluation/run.py", "_detect_all")
    eval_total = cumulative(evaluation, "interactdiffusion/cli/eval.py", "<module>")
    run_eval = cumulative(evaluation, "interactdiffusion/evaluation/run.py", "run_evaluation")
    build = cumulative(evaluation, "interactdiffusion/evaluation/generation.py", "build_pipeline")
    startup = eval_total - run_eval + build  # imports, configs, the backbone and adapter loaded

    rows = [("data loading (next batch)", data, data / steps),
            ("training forward (noising, text encoder, grounded UNet, loss)", loss, loss / steps),
            ("  of which the caption text encoder", text, text / steps),
            ("training backward", backward, backward / steps),
            ("AdamW update", adam, adam / steps),
            ("Lightning per-step bookkeeping (logging, hooks)", other, other / steps),
            (f"curve point ({count(train, 'interactdiffusion/training/eval_callback.py', 'run')}x, 64 layouts)",
             curve, curve),
            ("sample grid (8 scenes)", grid, grid),
            ("checkpoint save", ckpt, ckpt)]
    print(f"training: {steps} steps at {args.threads} thread(s), fit loop {fit:.1f} s (process wall {train_wall:.1f} s)")
    print(f"{'component':66s} {'s':>7s} {'share':>6s} {'per step/call':>13s}")
    for name, seconds, per in rows:
        print(f"{name:66s} {seconds:7.1f} {seconds / fit:6.1%} {per:12.3f}s")
    print(f"fusers' share of every UNet forward in the run (training and sampling): {fusers / unet:.1%} "
          f"({fusers:.1f} of {unet:.1f} s)")
    print(f"\nevaluation: {args.layouts} layouts, process {eval_total:.1f} s (wall {eval_wall:.1f} s)")
    for name, seconds in (("start-up (imports, configs, pipeline)", startup),
                          ("generation (PLMS 20, CFG 3)", gen), ("detection", detect),
                          ("scoring, FD, image files, reports", eval_total - startup - gen - detect)):
        print(f"{name:66s} {seconds:7.1f} {seconds / eval_total:6.1%}")

    step = (data + loss + backward + adam + other) / steps
    points = BUDGET_STEPS // CURVE_EVERY + 1
    run_s = step * BUDGET_STEPS + curve * points + grid * (points - 1) + ckpt * (points - 1)
    eval_s = startup + (eval_total - startup) * EVAL_LAYOUTS / args.layouts
    print(f"\nscaled to one adapter of the committed budget at {args.threads} thread(s): training {run_s / 60:.1f} min "
          f"(steps {step * BUDGET_STEPS / 60:.1f}, {points} curve points {curve * points / 60:.1f}), "
          f"500-layout evaluation {eval_s / 60:.1f} min")


if __name__ == "__main__":
    main()
