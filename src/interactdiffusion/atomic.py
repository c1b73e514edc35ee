"""Crash-safe outputs: a file or a whole folder appears under its real name complete, or not at all.

Both helpers write into a temporary sibling (same folder, so the rename never crosses a file
system), fsync what they wrote, and rename it over the real name. A kill at any point leaves either
the old output or the new one, plus at worst a hidden ``.<name>.staging-<pid>`` sibling that the
next write of the same name removes.

A published folder also carries :data:`MARKER` (the size of every file in it). Folders written
before this existed, and folders from elsewhere (an SD download, the official release) have no
marker; loaders accept those when their own checks find every part, and verify the marker when it
is there (:func:`check_folder`).

``INTERACTDIFFUSION_CRASH_AT=before-publish:<name>`` (or ``after-publish:``) kills the process with
SIGKILL at that point of publishing ``<name>`` (a glob on the file or folder name): the crash tests
use it to stop real commands exactly inside the window they guard.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MARKER = ".complete.json"
CRASH_ENV = "INTERACTDIFFUSION_CRASH_AT"


class IncompleteFolderError(FileNotFoundError):
    """A folder whose completion marker does not match its files (an interrupted or edited write)."""


def crash_point(stage: str, name: str) -> None:
    """SIGKILL this process when ``INTERACTDIFFUSION_CRASH_AT`` names ``<stage>:<glob matching name>``."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    for item in spec.split(","):
        want_stage, _, pattern = item.partition(":")
        if want_stage == stage and fnmatch.fnmatch(name, pattern):
            os.kill(os.getpid(), signal.SIGKILL)


def _staging(path: Path) -> Path:
    return path.with_name(f".{path.name}.staging-{os.getpid()}")


def _remove_stale_staging(path: Path) -> None:
    """Leftovers of killed writers of ``path`` (their pid is gone); live writers are left alone."""
    for stale in path.parent.glob(f".{path.name}.staging-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)


def write_file_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` into a temporary sibling, fsync, rename onto ``path``. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(path)
    tmp = _staging(path)
    try:
        write(tmp)
        _fsync_path(tmp)
        crash_point("before-publish", path.name)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_path(path.parent)
    crash_point("after-publish", path.name)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_file_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2, sort_keys: bool = False,
                      allow_nan: bool = False) -> Path:
    """JSON with a final newline, published atomically. NaN is refused unless ``allow_nan`` (it is not JSON)."""
    return write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan) + "\n")


def copy_file_atomic(source: str | Path, target: str | Path) -> Path:
    """``shutil.copy2`` published atomically: ``target`` is the old file or the whole new one."""
    return write_file_atomic(target, lambda tmp: shutil.copy2(source, tmp))


def copy_folder_atomic(source: str | Path, target: str | Path) -> Path:
    """``shutil.copytree`` published whole (replacing ``target``), with a fresh completion marker."""
    with folder_atomic(target) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MARKER))
    return Path(target)


def _manifest(folder: Path) -> dict[str, int]:
    return {str(f.relative_to(folder)): f.stat().st_size
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name != MARKER}


@contextlib.contextmanager
def folder_atomic(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder; on success publish it as ``path`` (replacing an older one) whole.

    ``replace=False``: when ``path`` already exists (another process published it first) the staged
    copy is dropped instead: for caches whose every copy is identical, readers never see a gap.

    The staging folder gets :data:`MARKER` and every file is fsynced before the rename. Replacing an
    existing folder takes two renames (old aside, new in): a kill between them leaves no folder under
    the name (never a mixed one) and the old one as ``.<name>.staging-<pid>.old``, removed next time.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(path)
    staging = _staging(path)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
        files = _manifest(staging)
        (staging / MARKER).write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        for name in [*files, MARKER]:
            _fsync_path(staging / name)
        for sub in sorted({p for p in staging.rglob("*") if p.is_dir()}, reverse=True):
            _fsync_path(sub)
        _fsync_path(staging)
        crash_point("before-publish", path.name)
        old = staging.with_name(staging.name + ".old")
        if path.exists() and not replace:
            return
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(staging, path)
        except OSError:
            if replace or not path.is_dir():
                raise  # else another process published it between the check and the rename
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    _fsync_path(path.parent)
    crash_point("after-publish", path.name)


def has_marker(folder: str | Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def check_folder(folder: str | Path) -> bool:
    """True when ``folder`` carries a marker matching its files; False when it has none (a folder from
    elsewhere or from before markers). A marker that does not match raises :class:`IncompleteFolderError`
    naming the first difference."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise IncompleteFolderError(f"{marker}: unreadable completion marker ({error})") from None
    for name, size in recorded.items():
        file = folder / name
        if not file.is_file():
            raise IncompleteFolderError(f"{folder}: {name} is missing (the folder is incomplete; write it again)")
        if file.stat().st_size != size:
            raise IncompleteFolderError(
                f"{folder}: {name} has {file.stat().st_size} bytes, its completion marker says {size} "
                "(changed or cut short; write the folder again)"
            )
    return True
