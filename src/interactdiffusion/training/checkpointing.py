"""Finding the checkpoint to resume from, and loading one outside ``trainer.fit`` (export, evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..utils.pylogger import RankedLogger

log = RankedLogger(__name__, rank_zero_only=True)

LAST = "last.ckpt"


def _newest(paths: list[Path]) -> Path | None:
    existing = [p for p in paths if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def checkpoint_in_run_dir(run_dir: Path) -> Path | None:
    """``<run>/checkpoints/last.ckpt``, else the newest ``.ckpt`` of the run."""
    for folder in (run_dir / "checkpoints", run_dir):
        if (folder / LAST).is_file():
            return folder / LAST
    return _newest(sorted((run_dir / "checkpoints").glob("*.ckpt")) + sorted(run_dir.glob("*.ckpt")))


def find_last_checkpoint(group_dir: str | Path, current_run_dir: str | Path | None = None) -> Path | None:
    """The newest ``last.ckpt`` of a run group (``logs/<task>/<name>``), single runs and multiruns alike.

    The current run directory comes first: a job requeued by SLURM runs again in its own directory.
    """
    if current_run_dir is not None:
        here = Path(current_run_dir) / "checkpoints" / LAST
        if here.is_file():
            return here
    group = Path(group_dir)
    candidates = list(group.glob(f"runs/*/checkpoints/{LAST}")) + list(group.glob(f"multiruns/*/*/checkpoints/{LAST}"))
    return _newest(candidates)


def resolve_ckpt_path(
    ckpt_path: str | Path | None, group_dir: str | Path, current_run_dir: str | Path | None = None
) -> str | None:
    """What ``ckpt_path=`` means: None; ``last`` (newest of this run group, or None: start fresh); a
    run directory (its ``checkpoints/last.ckpt``); or a checkpoint file."""
    if ckpt_path is None or str(ckpt_path) in ("", "null", "None"):
        return None
    if str(ckpt_path) == "last":
        found = find_last_checkpoint(group_dir, current_run_dir)
        if found is None:
            log.info(f"ckpt_path=last: no checkpoint under {group_dir} yet, starting from scratch")
            return None
        log.info(f"ckpt_path=last: resuming from {found}")
        return str(found)
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        found = checkpoint_in_run_dir(path)
        if found is None:
            raise FileNotFoundError(f"ckpt_path={path}: a folder without checkpoints (looked for checkpoints/{LAST})")
        log.info(f"resuming from {found}")
        return str(found)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file or run directory")
    return str(path)


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint written by this project: plain containers and tensors, so ``weights_only``."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_module_weights(module, path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint's adapter (and EMA) into ``module``; returns the checkpoint."""
    checkpoint = read_training_checkpoint(path)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    return checkpoint
