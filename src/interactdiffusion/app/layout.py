"""What the page holds ↔ a ``Scene``: labelled pixel boxes on a canvas plus one triplet per row.

Each drawn box carries a role label, ``"subject k"`` or ``"object k"``, that ties it to the k-th
interaction row; its pixel coordinates are normalised by the canvas size. The scene itself is checked
by ``Scene.from_dict``, the same validation the generate CLI runs on a scene file, so the page and the
CLI accept and refuse the same layouts. Every refusal is a ``LayoutError`` whose message is shown in
the page as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..scene import Scene, SceneError
from ..visualize import ROLE_COLOURS
from ..vocab import HOIVocabulary, phrase_of

ROLES = ("subject", "object")
_LABEL = re.compile(r"^\s*(subject|object)\s+(\d+)\s*$")
_FIELD = re.compile(r"^interactions\[(\d+)\]\.(\w+)$")


class LayoutError(ValueError):
    """A layout the page cannot turn into a scene; the message says which box or row, and why."""


@dataclass(frozen=True)
class Triplet:
    """One interaction row of the page: the three phrases (empty until picked)."""

    subject: str = ""
    action: str = ""
    object: str = ""

    def phrases(self) -> dict[str, str]:
        return {"subject": self.subject.strip(), "action": self.action.strip(), "object": self.object.strip()}


def box_label(role: str, index: int) -> str:
    """The label of the box of ``role`` in the ``index``-th (0-based) row, as the page lists it."""
    return f"{role} {index + 1}"


def box_labels(rows: int) -> list[str]:
    return [box_label(role, k) for k in range(rows) for role in ROLES]


def box_colours(rows: int) -> list[str]:
    """Subject boxes red, object boxes blue: the colours of ``visualize.draw_scene``."""
    return ["#{:02x}{:02x}{:02x}".format(*ROLE_COLOURS[role]) for _ in range(rows) for role in ROLES]


def parse_label(label: str | None) -> tuple[str, int] | None:
    """``"subject 2"`` → ``("subject", 1)``; None for anything else."""
    match = _LABEL.match(label or "")
    if not match or int(match.group(2)) < 1:
        return None
    return match.group(1), int(match.group(2)) - 1


def _pixel_box(box: dict[str, Any]) -> tuple[float, float, float, float]:
    return tuple(float(box[k]) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[return-value]


def boxes_by_role(boxes: Sequence[dict[str, Any]], rows: int) -> dict[tuple[str, int], tuple[float, ...]]:
    """``(role, row) → pixel box``; refuses unlabelled, doubled and out-of-range boxes."""
    found: dict[tuple[str, int], tuple[float, ...]] = {}
    for box in boxes:
        label = str(box.get("label") or "").strip()
        parsed = parse_label(label)
        corners = [round(v) for v in _pixel_box(box)]
        if parsed is None:
            what = f"labelled {label!r}" if label else "without a label"
            raise LayoutError(
                f"The box at {corners} is {what}: click it and choose 'subject N' or 'object N'."
            )
        if parsed[1] >= rows:
            raise LayoutError(
                f"Box '{label}' belongs to interaction {parsed[1] + 1}, but the page has {rows} "
                f"interaction{'s' if rows != 1 else ''}: raise 'interactions' or delete the box."
            )
        if parsed in found:
            raise LayoutError(f"Two boxes are labelled '{label}': delete one or relabel it.")
        found[parsed] = _pixel_box(box)
    return found


def _friendly(error: SceneError) -> str:
    """``scene 'x', field 'interactions[0].subject_box': ...`` → ``Interaction 1, box 'subject 1': ...``."""
    detail = str(error).split(f"field {error.field_name!r}: ", 1)[-1]
    match = _FIELD.match(error.field_name)
    if not match:
        return f"{error.field_name}: {detail}"
    index, name = int(match.group(1)), match.group(2)
    if name.endswith("_box"):
        role = name[: -len("_box")]
        return f"Interaction {index + 1}, box '{box_label(role, index)}': {detail}"
    return f"Interaction {index + 1}, {name}: {detail}"


def scene_from_layout(
    boxes: Sequence[dict[str, Any]],
    triplets: Sequence[Triplet],
    *,
    width: int,
    height: int,
    prompt: str | None = None,
    seed: int | None = None,
    scene_id: str = "scene",
) -> Scene:
    """The scene the page shows: one interaction per row, its boxes normalised by the canvas size."""
    placed = boxes_by_role(boxes, len(triplets))
    interactions = []
    for k, triplet in enumerate(triplets):
        phrases = triplet.phrases()
        for name, value in phrases.items():
            if not value:
                raise LayoutError(f"Interaction {k + 1}: pick or type its {name}.")
        corners = {}
        for role in ROLES:
            if (role, k) not in placed:
                raise LayoutError(
                    f"Interaction {k + 1} ({phrases['subject']}, {phrases['action']}, {phrases['object']}) has "
                    f"no {role} box: draw one and label it '{box_label(role, k)}'."
                )
            x1, y1, x2, y2 = placed[(role, k)]
            corners[f"{role}_box"] = [x1 / width, y1 / height, x2 / width, y2 / height]
        interactions.append({**phrases, **corners})
    data: dict[str, Any] = {"id": scene_id, "width": int(width), "height": int(height), "interactions": interactions}
    if prompt and prompt.strip():
        data["prompt"] = prompt.strip()
    if seed is not None:
        data["seed"] = int(seed)
    try:
        return Scene.from_dict(data)
    except SceneError as error:
        raise LayoutError(_friendly(error)) from None


def layout_from_scene(scene: Scene) -> tuple[list[dict[str, Any]], list[Triplet]]:
    """The page's boxes (canvas pixels of ``scene.width`` x ``scene.height``, labelled) and rows."""
    colours = dict(zip(ROLES, box_colours(1)))
    boxes: list[dict[str, Any]] = []
    triplets = []
    for k, inter in enumerate(scene.interactions):
        triplets.append(Triplet(inter.subject, inter.action, inter.object))
        for role, box in zip(ROLES, (inter.subject_box, inter.object_box)):
            x1, y1, x2, y2 = box
            boxes.append({
                "label": box_label(role, k),
                "color": tuple(int(colours[role][i : i + 2], 16) for i in (1, 3, 5)),
                "xmin": round(x1 * scene.width),
                "ymin": round(y1 * scene.height),
                "xmax": round(x2 * scene.width),
                "ymax": round(y2 * scene.height),
            })
    return boxes, triplets


@dataclass(frozen=True)
class PhraseChoices:
    """What the pickers offer: the phrases of the training vocabulary, by role."""

    subjects: list[str]
    actions: list[str]
    objects: list[str]

    @classmethod
    def from_vocabulary(cls, vocab: HOIVocabulary) -> PhraseChoices:
        # A HICO-DET subject is always a person; "person" is also one of the objects (hug person).
        objects = sorted(vocab.object_phrase(o) for o in range(vocab.num_objects))
        actions = sorted({vocab.action_phrase(v) for v in range(vocab.num_verbs)})
        return cls(subjects=["person"], actions=actions, objects=objects)

    def outside(self, triplets: Sequence[Triplet]) -> list[str]:
        """One line per typed phrase that the training vocabulary does not hold (roles without a list
        are not judged)."""
        known = {"subject": set(self.subjects), "action": set(self.actions), "object": set(self.objects)}
        notes = []
        for k, triplet in enumerate(triplets):
            for role, value in triplet.phrases().items():
                if value and known[role] and phrase_of(value) not in known[role]:
                    notes.append(f"interaction {k + 1}: {role} '{value}' is outside the training vocabulary")
        return notes
