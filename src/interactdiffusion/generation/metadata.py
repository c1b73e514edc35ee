"""The output folder of a generate run: ``metadata.jsonl`` (one record per image), the folder lock and
the resume plan (what is done, what is left, what must not be mixed)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..resume import settings_difference
from ..scene import Scene
from .scenes import output_names
from .settings import InputError, Settings

METADATA_NAME = "metadata.jsonl"


def read_metadata(path: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """Records by scene id (the last one wins), and whether the file needs rewriting (bad lines)."""
    records: dict[str, dict[str, Any]] = {}
    dirty = False
    if not path.is_file():
        return records, dirty
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[str(record["id"])] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            dirty = True  # a line cut short by a crash: dropped, its scene is generated again
    return records, dirty


def image_record(scene: Scene, seed: int, size: tuple[int, int], record: dict[str, Any],
                 draw_boxes: bool) -> dict[str, Any]:
    """The ``metadata.jsonl`` line of one image: its scene, seed, size and the settings record."""
    image_name, boxes_name = output_names(scene)
    height, width = size
    return {
        "id": scene.id,
        "image": image_name,
        "boxes_image": boxes_name if draw_boxes else None,
        "seed": seed,
        "height": height,
        "width": width,
        "scene": scene.to_dict(),
        "settings": record,
    }


def append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line in a single write, flushed to disk before the next scene."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def folder_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``output_dir`` itself for the whole run, or refuse at once.

    Two commands writing one folder would interleave ``metadata.jsonl`` and mix settings; the second
    one stops with a message saying so. The lock is on the folder (no lock file to leave behind) and
    the kernel drops it when its holder dies, even by SIGKILL, so a crashed run never blocks the next.
    """
    import fcntl

    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(output_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"setting 'output_dir': {output_dir} is in use by another interactdiffusion-generate; wait for it "
                "to finish (the same command run again then resumes) or use another output_dir"
            ) from None
        yield
    finally:
        os.close(fd)
        if created and not any(output_dir.iterdir()):
            output_dir.rmdir()  # refused before anything was written: leave no empty folder


def plan_resume(
    scenes: Sequence[Scene], output_dir: Path, settings: Settings, draw_boxes: bool
) -> tuple[list[Scene], list[Scene]]:
    """(scenes to generate, finished scenes missing only their overlay); compacts ``metadata.jsonl``.

    A scene counts as done when its record and image exist. Records made with other settings, or for a
    scene whose definition changed, are an error: mixing them would silently corrupt the output.
    """
    meta_path = output_dir / METADATA_NAME
    records, dirty = read_metadata(meta_path)
    wanted = settings.record()
    by_id = {s.id: s for s in scenes}
    kept: dict[str, dict[str, Any]] = {}
    for sid, record in records.items():
        image = output_dir / record.get("image", f"{sid}.png")
        if not image.is_file():
            dirty = True
            continue
        kept[sid] = record
        if sid not in by_id:
            continue
        # the adapter's grounding block is read from the loaded weights (identified by their sha256)
        old = {k: v for k, v in record.get("settings", {}).items() if k != "grounding"}
        detail = settings_difference(old, {k: v for k, v in wanted.items() if k != "grounding"})
        if detail is not None:
            raise InputError(
                f"{output_dir} holds images made with other settings ({detail}); "
                "use a new output_dir or the same settings to resume"
            )
        if record.get("scene") != by_id[sid].to_dict():
            raise InputError(
                f"scene {sid!r}: {output_dir / record.get('image', '')} was made from a different definition "
                "of this scene; use a new output_dir or remove that image to make it again"
            )
    if dirty:
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept.values())
        write_text_atomic(meta_path, lines)
    todo = [s for s in scenes if s.id not in kept]
    overlays = []
    if draw_boxes:
        overlays = [s for s in scenes if s.id in kept and not (output_dir / output_names(s)[1]).is_file()]
    return todo, overlays
