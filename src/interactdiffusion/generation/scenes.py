"""The scene file of a generate run: read and validated as a whole, named, sized and batched."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from omegaconf import DictConfig

from ..scene import Scene, SceneError, read_scenes
from .settings import InputError, Settings, setting

BOX_FORMATS = ("normalized", "pixels")


def output_names(scene: Scene) -> tuple[str, str]:
    return f"{scene.id}.png", f"{scene.id}_boxes.png"


def check_ids(scenes: Sequence[Scene], source: str) -> None:
    """Scene ids become file names: they must be usable as such and never collide."""
    owner: dict[str, str] = {}
    for scene in scenes:
        sid = scene.id
        if not sid or sid in (".", "..") or any(c in sid for c in '/\\\0') or sid.startswith("."):
            raise InputError(
                f"{source}: scene {sid!r}, field 'id': cannot be used as a file name "
                "(no '/', '\\', leading '.', or empty id)"
            )
        for name in output_names(scene):
            if name in owner:
                raise InputError(
                    f"{source}: scene {sid!r}, field 'id': its output {name} collides with scene {owner[name]!r}"
                )
            owner[name] = sid


def scene_size(scene: Scene, settings: Settings) -> tuple[int, int]:
    """(height, width) to draw ``scene`` at: the fixed resolution, or its own size on a multiple of 8."""
    if not settings.use_scene_size:
        return settings.resolution, settings.resolution
    return max(8, scene.height // 8 * 8), max(8, scene.width // 8 * 8)


def scene_phrases(scenes: Iterable[Scene]) -> list[str]:
    """Every phrase the scenes use, sorted: what is embedded once before any image."""
    return sorted({p for s in scenes for i in s.interactions for p in (i.subject, i.action, i.object)})


def load_input(cfg: DictConfig) -> tuple[list[Scene], list[str]]:
    """Read and validate the whole scene file; returns the scenes and the warnings it raised."""
    source = str(setting(cfg, "input"))
    box_format = str(setting(cfg, "box_format"))
    if box_format not in BOX_FORMATS:
        raise InputError(f"setting 'box_format' must be one of {', '.join(BOX_FORMATS)}, got {box_format!r}")
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scenes = read_scenes(path, box_format=box_format, truncate=bool(setting(cfg, "truncate")))
        except SceneError as error:
            raise InputError(str(error)) from None
    if not scenes:
        raise InputError(f"{path}: no scenes")
    check_ids(scenes, str(path))
    messages = [str(w.message) for w in caught]
    vocabulary = cfg.get("vocabulary")
    if vocabulary:
        messages += out_of_vocabulary(scenes, str(vocabulary), str(path))
    return scenes, messages


def out_of_vocabulary(scenes: Sequence[Scene], vocabulary: str, source: str) -> list[str]:
    """One warning per phrase outside the training vocabulary (generation still runs: CLIP embeds any
    phrase, but the adapter only learnt the training ones)."""
    from ..data.annotations import load_vocabulary

    try:
        known = set(load_vocabulary(vocabulary).phrases())
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise InputError(f"setting 'vocabulary': {error}") from None
    seen: dict[str, str] = {}
    for scene in scenes:
        for k, item in enumerate(scene.interactions):
            for name in ("subject", "action", "object"):
                phrase = getattr(item, name)
                if phrase not in known and phrase not in seen:
                    seen[phrase] = f"scene {scene.id!r}, field 'interactions[{k}].{name}'"
    return [f"{source}: {where}: {phrase!r} is outside the training vocabulary ({vocabulary})"
            for phrase, where in seen.items()]


def batches(scenes: Sequence[Scene], settings: Settings) -> Iterator[tuple[tuple[int, int], list[Scene]]]:
    """Scenes in input order, ``batch_size`` at a time, one image size per batch."""
    groups: dict[tuple[int, int], list[Scene]] = {}
    for scene in scenes:
        groups.setdefault(scene_size(scene, settings), []).append(scene)
    for size, group in groups.items():
        for start in range(0, len(group), settings.batch_size):
            yield size, group[start : start + settings.batch_size]


def at_size(scene: Scene, size: int) -> Scene:
    """The scene drawn at ``size``² (boxes are normalised, so they follow)."""
    from dataclasses import replace

    if scene.width == size and scene.height == size:
        return scene
    return replace(scene, width=size, height=size)
