"""Closing a wandb run (with the ``wandb sync`` line an offline run needs) and reading an offline run back.

An offline run is a folder ``.../wandb/offline-run-<time>-<id>/`` holding ``run-<id>.wandb`` (wandb's
transaction log: LevelDB-log framing of ``wandb.proto`` ``Record`` messages) and ``files/media/...``
(images, box metadata, tables). ``read_offline_run`` rebuilds what the server would show: the run's
name, group and tags, its config, summary and history, so tests (and ``make demo``) can check what a
dashboard will hold before anything is uploaded.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEADER = struct.Struct("<4sHB")  # ":W&B", magic, version
_RECORD = struct.Struct("<IHB")  # checksum, length, type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def finish_wandb_run() -> str | None:
    """Finish the current wandb run, if any; for an offline run return (and print) its sync command."""
    import wandb

    run = wandb.run
    if run is None:
        return None
    command = f"wandb sync {run.settings.sync_dir}" if run.offline else None
    wandb.finish()
    if command:
        print(f"wandb: offline run written; upload it with: {command}", flush=True)
    return command


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if len(data) < _HEADER.size or _HEADER.unpack_from(data)[0] != b":W&B":
        raise ValueError(f"{path}: not a wandb transaction log (no :W&B header)")
    pos, out, pending = _HEADER.size, [], b""
    while pos + _RECORD.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD.size:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = _RECORD.unpack_from(data, pos)
        if kind == 0 and length == 0:
            pos += left
            continue
        if pos + _RECORD.size + length > len(data):  # a record still being written
            break
        chunk = data[pos + _RECORD.size : pos + _RECORD.size + length]
        pos += _RECORD.size + length
        if kind == _FULL:
            out.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            out.append(pending + chunk)
            pending = b""
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {pos}")
    return out


def _set(target: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = json.loads(item.value_json)


@dataclass
class OfflineRun:
    folder: Path
    run_id: str = ""
    project: str = ""
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False  # the log ends with the run's exit record

    @property
    def files(self) -> Path:
        return self.folder / "files"

    def media_file(self, relative: str) -> dict[str, Any]:
        """A media JSON file (boxes, table) named by a summary/history entry's ``path``."""
        return json.loads((self.files / relative).read_text(encoding="utf-8"))

    def table(self, key: str) -> dict[str, Any]:
        """The last ``wandb.Table`` logged under ``key``: ``{"columns": [...], "data": [[...], ...]}``."""
        entry = self.summary.get(key)
        if not isinstance(entry, dict) or entry.get("_type") != "table-file":
            raise KeyError(f"{self.folder}: no table under {key!r} in the summary")
        return self.media_file(entry["path"])

    def class_labels(self, key: str, group: str) -> dict[int, str]:
        labels = self.config.get("_wandb", {}).get("bounding_box/class_labels", {})
        entry = labels.get(f"{key}_wandb_delimeter_{group}")
        if entry is None:
            raise KeyError(f"{self.folder}: no class labels for box group {group!r} of {key!r}")
        return {int(k): v for k, v in entry["value"].items()}

    def boxes(self, key: str, row: dict[str, Any] | None = None) -> list[dict[str, list[dict[str, Any]]]]:
        """Per image of the image list logged under ``key`` (last logged, or in a history ``row``):
        ``{group: box_data}``, read from ``files/media/metadata/boxes2D``."""
        entry = (row or self.summary).get(key)
        if not isinstance(entry, dict) or "all_boxes" not in entry:
            raise KeyError(f"{self.folder}: no images with boxes under {key!r}")
        return [{group: self.media_file(meta["path"])["box_data"] for group, meta in per_image.items()}
                for per_image in entry["all_boxes"]]


def find_offline_runs(root: str | Path) -> list[Path]:
    """Offline run folders under ``root``, oldest first."""
    return sorted(Path(root).rglob("offline-run-*"), key=lambda p: p.name)


def read_offline_run(folder: str | Path, wait_s: float = 30.0) -> OfflineRun:
    """Read an offline run folder (see the module docstring).

    ``wandb.finish()`` can return while wandb's service process still writes the log's tail, so an
    unfinished log (no exit record yet) is read again for up to ``wait_s`` seconds."""
    import time

    folder = Path(folder)
    logs = sorted(folder.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{folder}: no run-*.wandb transaction log (not an offline wandb run folder)")
    deadline = time.monotonic() + wait_s
    while True:
        run = _parse_log(folder, logs[0])
        if run.finished or time.monotonic() >= deadline:
            return run
        time.sleep(0.2)


def _parse_log(folder: Path, log: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun(folder)
    for raw in _records(log):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            run.run_id, run.project, run.name, run.group = info.run_id, info.project, info.display_name, info.run_group
            run.tags = list(info.tags)
            for item in info.config.update:
                _set(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _set(run.config, item)
        elif kind == "summary":
            for item in record.summary.update:
                _set(run.summary, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, item)
            run.history.append(row)
        elif kind == "exit":
            run.finished = True
    return run


def describe_media(run: OfflineRun) -> list[str]:
    """One line per image list or table the run's summary holds (what its dashboard will show)."""
    lines = []
    for key, entry in sorted(run.summary.items()):
        if not isinstance(entry, dict) or key.startswith("_"):
            continue
        if entry.get("_type") == "table-file":
            lines.append(f"{key}: table of {len(run.table(key)['data'])} rows")
        elif "all_boxes" in entry:
            per_image = run.boxes(key)
            groups = sorted({group for image in per_image for group in image})
            roles = sorted({label for group in groups for label in run.class_labels(key, group).values()})
            lines.append(f"{key}: {len(per_image)} images with box groups {groups}, roles {roles}")
        elif entry.get("_type", "").startswith("images"):
            lines.append(f"{key}: {entry.get('count', 1)} images")
    return lines
