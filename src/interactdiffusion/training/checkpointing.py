"""Writing checkpoints atomically, finding the one to resume from, and loading one outside ``trainer.fit``."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ..atomic import write_file_atomic
from ..utils.pylogger import RankedLogger

log = RankedLogger(__name__, rank_zero_only=True)

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, publishing each file atomically (temporary sibling, fsync, rename).

    Lightning writes ``last.ckpt`` in place: a kill during the write (a preemption, an OOM kill) left
    a truncated file that ``ckpt_path=last`` then failed on. Here the previous file stays intact until
    the new one is whole.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        write_file_atomic(Path(path), lambda tmp: torch.save(checkpoint, tmp))


def checkpoint_problem(path: Path) -> str | None:
    """None when ``path`` is a whole ``torch.save`` zip; else why not (cut short, not a zip).

    Cheap at any size: only the zip directory at the end of the file is read, and every member must
    end inside the file. A file cut short by a kill has lost that directory.
    """
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            end = max((i.header_offset + i.compress_size for i in archive.infolist()), default=0)
    except (OSError, zipfile.BadZipFile) as error:
        return f"unreadable ({error})"
    if end > size:
        return f"cut short ({size} bytes, its directory needs {end})"
    return None


def _newest(paths: list[Path]) -> Path | None:
    existing = [p for p in paths if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime) if existing else None


def _newest_intact(paths: list[Path], what: str) -> Path | None:
    """The newest intact checkpoint among ``paths``; each damaged one skipped is named in the log."""
    def age(p: Path) -> tuple[int, bool]:
        return p.stat().st_mtime_ns, p.name == LAST  # on a tie, last.ckpt (saved after its step file)

    for path in sorted({p for p in paths if p.is_file()}, key=age, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning(f"{what}: skipping {path}: {problem} (killed while it was written?)")
    return None


def checkpoint_in_run_dir(run_dir: Path) -> Path | None:
    """``<run>/checkpoints/last.ckpt``, else the newest ``.ckpt`` of the run."""
    for folder in (run_dir / "checkpoints", run_dir):
        if (folder / LAST).is_file():
            return folder / LAST
    return _newest(sorted((run_dir / "checkpoints").glob("*.ckpt")) + sorted(run_dir.glob("*.ckpt")))


def find_last_checkpoint(group_dir: str | Path, current_run_dir: str | Path | None = None) -> Path | None:
    """The newest intact checkpoint of a run group (``logs/<task>/<name>``), single runs and multiruns alike.

    The current run directory comes first (a job requeued by SLURM runs again in its own directory),
    newest first. A checkpoint that is cut short (written by a version without atomic writes, or
    copied partly) is skipped with a log line naming it, and the newest intact one (``last.ckpt`` or
    ``step_*.ckpt``) is used instead.
    """
    what = "ckpt_path=last"
    if current_run_dir is not None:
        found = _newest_intact(list((Path(current_run_dir) / "checkpoints").glob("*.ckpt")), what)
        if found is not None:
            return found
    group = Path(group_dir)
    folders = list(group.glob("runs/*/checkpoints")) + list(group.glob("multiruns/*/*/checkpoints"))
    return _newest_intact([p for f in folders for p in f.glob("*.ckpt")], what)


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
