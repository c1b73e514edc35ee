"""OmegaConf resolvers the configs use; registered before Hydra composes anything.

``${run_name:}`` names a run directory. It never collides between runs (microsecond timestamp + a
random id) and is the same in every process of one distributed run: processes started by Lightning
get the parent's directory on their command line, and processes started by ``srun`` or ``torchrun``
(one Hydra start each) derive the name from the launcher's job id, which all of them share.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf


def _shared_launcher_id() -> str | None:
    """An id that every process of a multi-process launch sees identically, or None."""
    explicit = os.environ.get("INTERACTDIFFUSION_RUN_NAME")
    if explicit:
        return explicit
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        job = os.environ["SLURM_JOB_ID"]
        array = os.environ.get("SLURM_ARRAY_TASK_ID")
        step = os.environ.get("SLURM_STEP_ID")
        return "slurm-" + job + (f"_{array}" if array else "") + (f".{step}" if step else "")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        run_id = os.environ["TORCHELASTIC_RUN_ID"]
        if run_id and run_id != "none":
            return f"torchrun-{run_id}"
        # a static multi-node rendezvous without --rdzv-id: the master's address and port are all the
        # processes share; pass --rdzv-id (or INTERACTDIFFUSION_RUN_NAME) to be sure two runs differ
        addr = os.environ.get("MASTER_ADDR", "localhost").replace(":", "_")
        return f"{datetime.now():%Y-%m-%d}_torchrun-{addr}-{os.environ.get('MASTER_PORT', '0')}"
    return None


def run_name() -> str:
    """``2025-01-31_12-00-00-123456_1a2b3c4d``, or the launcher's shared id (see module docstring)."""
    shared = _shared_launcher_id()
    if shared:
        return shared
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S-%f}_{uuid.uuid4().hex[:8]}"


def run_dir(group_dir: str, ckpt_path=None) -> str:
    """``<group>/runs/<new run_name>``, or, when ``ckpt_path`` resumes a run of this group (``last``,
    a run directory or a checkpoint file under ``<group>/runs/<id>/``), that run's own directory: a
    resumed run goes on writing its checkpoints, logs and samples where it started."""
    group = Path(str(group_dir))
    resumed = _resumed_run(group, ckpt_path)
    return str(resumed) if resumed is not None else str(group / "runs" / run_name())


def _resumed_run(group: Path, ckpt_path) -> Path | None:
    if ckpt_path is None or str(ckpt_path) in ("", "null", "None"):
        return None
    if str(ckpt_path) == "last":
        found = [p for p in group.glob("runs/*/checkpoints/last.ckpt") if p.is_file()]
        if not found:
            return None
        path = max(found, key=lambda p: p.stat().st_mtime)
    else:
        path = Path(str(ckpt_path)).expanduser()
    path = path.resolve()
    runs = (group / "runs").resolve()
    for parent in (path, *path.parents):
        if parent.parent == runs:
            return group / "runs" / parent.name
    return None


ROW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def row_name(row) -> str:
    """An eval row's name, checked: it becomes one folder under ``logs/eval/``, so ``row=../../x`` (or
    ``a/b``) would write elsewhere."""
    text = str(row)
    if not ROW_NAME.fullmatch(text) or ".." in text:
        raise ValueError(
            f"row={text!r}: a row is one folder name under logs/eval/ (letters, digits, '.', '_', '-'), not a path"
        )
    return text


def register_resolvers() -> None:
    """Idempotent; ``run_name`` and ``run_dir`` are cached so every use within one process agrees."""
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_name, use_cache=True)
    if not OmegaConf.has_resolver("row_name"):
        OmegaConf.register_new_resolver("row_name", row_name)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", run_dir, use_cache=True)
    from ..dashboards.run_naming import register_wandb_resolvers

    register_wandb_resolvers()
