"""The shared language of the framework: an interaction and a scene of interactions.

Every layer speaks ``Scene``: the datamodule produces them, generation consumes them, evaluation
compares detections against them. Boxes are xyxy normalised to [0, 1] so a scene is independent of
the resolution it is rendered at; ``width``/``height`` say which pixel grid the boxes refer to.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

MAX_INTERACTIONS = 30
Box = tuple[float, float, float, float]


class SceneError(ValueError):
    """A scene or interaction that cannot be used; the message names the scene and the field."""

    def __init__(self, scene_id: str | None, field_name: str, message: str, source: str | None = None):
        where = f"{source}: " if source else ""
        who = f"scene {scene_id!r}" if scene_id is not None else "scene"
        super().__init__(f"{where}{who}, field {field_name!r}: {message}")
        self.scene_id = scene_id
        self.field_name = field_name
        self.source = source


SCENE_KEYS = frozenset({"id", "prompt", "width", "height", "seed", "interactions"})
INTERACTION_KEYS = frozenset({"subject", "action", "object", "subject_box", "object_box"})
# What the project's own producers keep beside a scene (``Scene.extra``: test layouts, training crops),
# so their files read back; any other key is a typo until proven otherwise.
PRODUCER_KEYS = frozenset({"file_name", "original_width", "original_height", "gt_box_convention", "gt_pairs", "flip"})


def _check_keys(item: dict, known: frozenset[str], scene_id: str | None, prefix: str) -> None:
    """An unknown key is an error naming it, with the closest known key: a misspelled ``"interaction"``
    would otherwise give an ungrounded image without a word."""
    import difflib

    for key in item:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise SceneError(scene_id, prefix + str(key), f"unknown key{hint}")


def _validate_box(box: Sequence[float], scene_id: str | None, field_name: str) -> Box:
    if len(box) != 4:
        raise SceneError(scene_id, field_name, f"expected 4 numbers [x1, y1, x2, y2], got {list(box)!r}")
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise SceneError(scene_id, field_name, f"box values must be numbers, got {list(box)!r}") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise SceneError(scene_id, field_name, f"box has a non-finite value: {[x1, y1, x2, y2]}")
    if min(x1, y1, x2, y2) < 0.0 or max(x1, y1, x2, y2) > 1.0:
        raise SceneError(scene_id, field_name, f"box {[x1, y1, x2, y2]} is outside [0, 1] (normalised xyxy)")
    if x2 <= x1 or y2 <= y1:
        raise SceneError(scene_id, field_name, f"box {[x1, y1, x2, y2]} is empty: need x2 > x1 and y2 > y1")
    return (x1, y1, x2, y2)


@dataclass(frozen=True)
class Interaction:
    """One <subject, action, object> triplet with the subject's and the object's box (normalised xyxy)."""

    subject: str
    action: str
    object: str
    subject_box: Box
    object_box: Box

    def validated(self, scene_id: str | None = None, index: int | None = None) -> Interaction:
        prefix = f"interactions[{index}]." if index is not None else ""
        for name in ("subject", "action", "object"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise SceneError(scene_id, prefix + name, f"phrase must be a non-empty string, got {value!r}")
        return replace(
            self,
            subject=self.subject.strip(),
            action=self.action.strip(),
            object=self.object.strip(),
            subject_box=_validate_box(self.subject_box, scene_id, prefix + "subject_box"),
            object_box=_validate_box(self.object_box, scene_id, prefix + "object_box"),
        )

    @property
    def phrase(self) -> str:
        """The caption fragment of the training recipe: "a {subject} is {action} a {object}"."""
        return f"a {self.subject} is {self.action} a {self.object}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "action": self.action,
            "object": self.object,
            "subject_box": list(self.subject_box),
            "object_box": list(self.object_box),
        }


def caption_from_interactions(interactions: Iterable[Interaction]) -> str:
    """The paper's caption: the triplets joined by ", " (REFERENCE §2)."""
    return ", ".join(i.phrase for i in interactions)


@dataclass(frozen=True)
class Scene:
    """An image to generate or an annotated image: a prompt and up to 30 interactions.

    ``extra`` carries what a producer wants to keep alongside (original file name and size, GT pairs
    in pixels for the evaluator) and is written back unchanged.
    """

    id: str
    interactions: tuple[Interaction, ...] = ()
    prompt: str | None = None
    width: int = 512
    height: int = 512
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "id", str(self.id))
        if not isinstance(self.interactions, tuple):
            object.__setattr__(self, "interactions", tuple(self.interactions))
        if len(self.interactions) > MAX_INTERACTIONS:
            raise SceneError(
                self.id,
                "interactions",
                f"{len(self.interactions)} interactions; at most {MAX_INTERACTIONS} are supported "
                "(pass truncate=True to keep the first 30 with a warning)",
            )
        checked = tuple(i.validated(self.id, k) for k, i in enumerate(self.interactions))
        object.__setattr__(self, "interactions", checked)
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SceneError(self.id, name, f"must be a positive integer, got {value!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise SceneError(self.id, "seed", f"must be an integer, got {self.seed!r}")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise SceneError(self.id, "prompt", f"must be a string, got {self.prompt!r}")

    @property
    def caption(self) -> str:
        """The prompt, or the training caption built from the triplets when none is given."""
        if self.prompt is not None:
            return self.prompt
        return caption_from_interactions(self.interactions)

    def seed_for(self, base_seed: int) -> int:
        """One seed per scene: explicit, or derived from the base seed and the scene id.

        Derived from the id (not the position in a batch) so an image never depends on batch size,
        order or the number of devices.
        """
        if self.seed is not None:
            return self.seed
        if self.id.isdigit():
            return base_seed + int(self.id)
        import zlib

        return base_seed + zlib.crc32(self.id.encode("utf-8"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        out["width"] = self.width
        out["height"] = self.height
        if self.seed is not None:
            out["seed"] = self.seed
        out["interactions"] = [i.to_dict() for i in self.interactions]
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        default_id: str | None = None,
        *,
        box_format: str = "normalized",
        truncate: bool = False,
        source: str | None = None,
    ) -> Scene:
        """Build a scene from plain JSON; every error names the scene id and the field."""
        if not isinstance(data, dict):
            raise SceneError(default_id, "<scene>", f"expected an object, got {type(data).__name__}", source)
        scene_id = str(data.get("id", default_id))
        try:
            raw = data.get("interactions", [])
            if not isinstance(raw, list):
                raise SceneError(scene_id, "interactions", "must be a list")
            width = data.get("width", 512)
            height = data.get("height", 512)
            if len(raw) > MAX_INTERACTIONS:
                if not truncate:
                    raise SceneError(
                        scene_id,
                        "interactions",
                        f"{len(raw)} interactions; at most {MAX_INTERACTIONS} are supported "
                        "(set truncate=true to keep the first 30 with a warning)",
                    )
                import warnings

                warnings.warn(
                    f"scene {scene_id!r}: {len(raw)} interactions truncated to {MAX_INTERACTIONS}",
                    stacklevel=2,
                )
                raw = raw[:MAX_INTERACTIONS]
            _check_keys(data, SCENE_KEYS | PRODUCER_KEYS, scene_id, "")
            interactions = []
            for k, item in enumerate(raw):
                if not isinstance(item, dict):
                    raise SceneError(scene_id, f"interactions[{k}]", "must be an object")
                _check_keys(item, INTERACTION_KEYS, scene_id, f"interactions[{k}].")
                missing = [f for f in ("subject", "action", "object", "subject_box", "object_box") if f not in item]
                if missing:
                    raise SceneError(scene_id, f"interactions[{k}].{missing[0]}", "is missing")
                boxes = []
                for name in ("subject_box", "object_box"):
                    box = item[name]
                    if not isinstance(box, (list, tuple)):
                        raise SceneError(scene_id, f"interactions[{k}].{name}", f"must be a list, got {box!r}")
                    if box_format == "pixels":
                        if not all(isinstance(v, (int, float)) for v in box) or len(box) != 4:
                            raise SceneError(scene_id, f"interactions[{k}].{name}", f"bad box {box!r}")
                        box = [box[0] / width, box[1] / height, box[2] / width, box[3] / height]
                    elif box_format != "normalized":
                        raise SceneError(scene_id, "box_format", f"unknown box format {box_format!r}")
                    boxes.append(tuple(box))
                interactions.append(
                    Interaction(item["subject"], item["action"], item["object"], boxes[0], boxes[1])
                )
            extra = {k: v for k, v in data.items() if k not in SCENE_KEYS}
            return cls(
                id=scene_id,
                interactions=tuple(interactions),
                prompt=data.get("prompt"),
                width=width,
                height=height,
                seed=data.get("seed"),
                extra=extra,
            )
        except SceneError as err:
            if source and not err.source:
                raise SceneError(err.scene_id, err.field_name, str(err).split(": ", 1)[-1], source) from None
            raise


def read_scenes(
    path: str | Path, *, box_format: str = "normalized", truncate: bool = False
) -> list[Scene]:
    """Read a JSON list, JSONL or YAML list of scenes; all are validated before any is returned.

    Errors name the file (and for JSONL the 1-based line), the scene and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SceneError(None, "<file>", f"not a UTF-8 text file (byte {err.start}): expected JSON, JSONL or YAML",
                         str(path)) from None
    suffix = path.suffix.lower()
    sources: list[str] | None = None
    try:
        if suffix == ".jsonl":
            items, sources = [], []
            for line_no, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        items.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise SceneError(None, "<line>", f"cannot parse JSON: {err.msg}", f"{path}:{line_no}") from None
                    sources.append(f"{path}:{line_no}")
        elif suffix in (".yaml", ".yml"):
            import yaml

            items = yaml.safe_load(text)
        else:
            items = json.loads(text)
    except SceneError:
        raise
    except Exception as err:
        raise SceneError(None, "<file>", f"cannot parse {suffix or 'file'}: {err}", str(path)) from None
    if isinstance(items, dict) and "scenes" in items:
        items = items["scenes"]
    if not isinstance(items, list):
        raise SceneError(None, "<file>", "expected a list of scenes", str(path))
    scenes = [
        Scene.from_dict(item, default_id=str(k), box_format=box_format, truncate=truncate,
                        source=sources[k] if sources else str(path))
        for k, item in enumerate(items)
    ]
    seen: dict[str, int] = {}
    for k, scene in enumerate(scenes):
        if scene.id in seen:
            raise SceneError(scene.id, "id", "duplicate scene id", sources[k] if sources else str(path))
        seen[scene.id] = k
    return scenes


def write_scenes_jsonl(scenes: Iterable[Scene], path: str | Path) -> int:
    """Write scenes as JSONL through a temporary file, so a crash never leaves half a file."""
    from .atomic import write_file_atomic

    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with tmp.open("w", encoding="utf-8") as fh:
            for scene in scenes:
                fh.write(json.dumps(scene.to_dict()) + "\n")
                count += 1

    write_file_atomic(path, write)
    return count
