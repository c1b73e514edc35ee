"""``interactdiffusion-eval``: one row of the paper's table (Hydra overrides on the command line).

    interactdiffusion-eval backbone=sd14 weights=/weights/interact-diffusion-v1.pth eval=paper \\
        data.annotations=/data/hico_20160224_det/anno_bbox.mat detector=qpic \\
        detector.weights=/weights/qpic_resnet50_hico.pth row=interactdiffusion
    interactdiffusion-eval eval=tiny                         # offline, seconds, meaningless numbers
    interactdiffusion-eval ... eval.real_images=true row=real  # the detector on the real test images
    torchrun --nproc-per-node 4 -m interactdiffusion.cli.eval ...   # generation over 4 GPUs

Composes ``configs/eval.yaml`` and calls ``evaluation.run.run_evaluation``; see there for what a row
writes and how it resumes. Bad settings print one message and exit with code 2.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from ..config_path import config_dir
from ..utils import RankedLogger, extras, get_metric_value, register_resolvers, task_wrapper

register_resolvers()
log = RankedLogger(__name__, rank_zero_only=True)

EXIT_BAD_INPUT = 2


@task_wrapper
def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate the row; returns (logger metrics, {"results": results.json's dict (None off rank 0),
    "error": the message of a bad setting or input, else None})."""
    from ..evaluation.run import EvalError, log_to_loggers, run_evaluation

    try:
        results = run_evaluation(cfg)
    except EvalError as error:  # the user's to fix: one message, no traceback
        return {}, {"cfg": cfg, "results": None, "error": str(error)}
    metrics = log_to_loggers(cfg, results) if results is not None else {}
    return metrics, {"cfg": cfg, "results": results, "error": None}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def _hydra_main(cfg: DictConfig) -> float | None:
    extras(cfg)
    metrics, objects = evaluate(cfg)
    if objects["error"]:
        _remove_empty_run_dir()
        print(f"interactdiffusion-eval: error: {objects['error']}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    return get_metric_value(metrics, cfg.get("optimized_metric")) if metrics else None


HYDRA_ONLY = {".hydra", "eval.log", "config_tree.log"}  # what every run writes before its task


def _remove_empty_run_dir() -> None:
    """A run stopped by a bad setting leaves nothing behind: its run folder (Hydra's files only) and the
    row folders left empty go, so ``logs/eval/`` shows only real rows."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not run_dir.is_dir() or any(p.name not in HYDRA_ONLY for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in list(run_dir.parents)[:2]:  # <row>/runs, then <row>
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break


def _check_row_arguments(argv: list[str]) -> None:
    """``row=`` from the command line, checked for a path before Hydra makes any folder for it (a sweep's
    ``row=a,b`` passes here; every job's row is checked in full by the ``row_name`` resolver)."""
    from ..utils.resolvers import row_name

    for arg in argv:
        if arg.startswith(("row=", "+row=", "++row=")):
            value = arg.split("=", 1)[1]
            if not any(part in value for part in ("/", "\\", "..")):
                continue
            try:
                row_name(value)
            except ValueError as error:
                print(f"interactdiffusion-eval: error: {error}", file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)


def main() -> None:
    """Console entry point (``interactdiffusion-eval key=value ...``)."""
    _check_row_arguments(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
