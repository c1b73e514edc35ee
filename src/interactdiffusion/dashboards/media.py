"""Scenes and detections as native wandb box overlays.

A burnt-in PNG cannot be toggled; wandb's ``boxes=`` can. Every image carries one box group per source
(``layout`` or ``ground_truth`` for the scene, ``detections`` for a detector's output) whose classes are
the three roles the interaction module conditions on: the subject box, the object box and the action's
*between* box (``models.grounding.between_box``, as ``visualize.scene_boxes`` draws it). Each box's caption
names its interaction (index and triplet), so a role can be switched off in the UI and a triplet still read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from ..scene import Scene
from ..visualize import ROLES, scene_boxes

ROLE_CLASS_IDS: dict[str, int] = {role: k for k, role in enumerate(ROLES)}
ROLE_CLASS_LABELS: dict[int, str] = {k: role for role, k in ROLE_CLASS_IDS.items()}
MIN_DISPLAY_SIZE = 256  # 32-pixel scenes are enlarged (nearest neighbour) so boxes and pixels stay legible


def _position(box: Sequence[float]) -> dict[str, float]:
    """A normalised xyxy box as wandb's relative position, clamped to the image."""
    x1, y1, x2, y2 = (min(1.0, max(0.0, float(v))) for v in box)
    return {"minX": min(x1, x2), "maxX": max(x1, x2), "minY": min(y1, y2), "maxY": max(y1, y2)}


def scene_box_data(scene: Scene) -> list[dict[str, Any]]:
    """wandb ``box_data`` of a scene: three boxes per interaction, one class per role."""
    triplets = [f"{inter.subject} {inter.action} {inter.object}" for inter in scene.interactions]
    out = []
    for k, (role, box, _) in enumerate(scene_boxes(scene)):
        index = k // len(ROLES)
        out.append({"position": _position(box), "class_id": ROLE_CLASS_IDS[role],
                    "box_caption": f"{index}: {role} ({triplets[index]})"})
    return out


def detection_box_data(detections: Sequence[tuple[Sequence[float], Sequence[float], str, float]],
                       width: int, height: int) -> list[dict[str, Any]]:
    """wandb ``box_data`` of detections ``(human_box, object_box, "verb object", score)`` in pixels of a
    ``width × height`` image: subject, object and between box of each, with its score."""
    import torch

    from ..models.grounding import between_box

    scale = (width, height, width, height)
    out = []
    for k, (human, obj, name, score) in enumerate(detections):
        subject_box = [v / s for v, s in zip(human, scale)]
        object_box = [v / s for v, s in zip(obj, scale)]
        action_box = between_box(torch.tensor(subject_box), torch.tensor(object_box)).tolist()
        for role, box in (("subject", subject_box), ("object", object_box), ("action", action_box)):
            out.append({"position": _position(box), "class_id": ROLE_CLASS_IDS[role],
                        "box_caption": f"{k}: {role} ({name} {score:.2f})", "scores": {"score": float(score)}})
    return out


def display_copy(image: Image.Image, min_size: int = MIN_DISPLAY_SIZE) -> Image.Image:
    """The image enlarged by nearest neighbour until its shorter side is at least ``min_size``."""
    image = image.convert("RGB")
    short = min(image.size)
    if short >= min_size:
        return image
    factor = -(-min_size // short)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def boxed_image(image: Image.Image, caption: str, groups: dict[str, list[dict[str, Any]]]):
    """A ``wandb.Image`` with one box group per entry of ``groups`` (each with the role classes)."""
    import wandb

    boxes = {name: {"box_data": data, "class_labels": dict(ROLE_CLASS_LABELS)} for name, data in groups.items()}
    return wandb.Image(display_copy(image), caption=caption, boxes=boxes)


def scene_caption(scene: Scene) -> str:
    return f"{scene.id}: " + "; ".join(f"{i.subject} {i.action} {i.object}" for i in scene.interactions)


def sample_pair(scene: Scene, generated: Image.Image, real: Image.Image | None) -> list:
    """A training sample as wandb images: the generated image with the layout it was asked for, and
    the real image with the same boxes as its ground truth beside it."""
    images = [boxed_image(generated, f"generated · {scene_caption(scene)}", {"layout": scene_box_data(scene)})]
    if real is not None:
        images.append(boxed_image(real, f"ground truth · {scene_caption(scene)}",
                                  {"ground_truth": scene_box_data(scene)}))
    return images
