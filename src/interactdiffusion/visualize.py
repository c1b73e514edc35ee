"""Draw a scene's layout on an image: subject, object and action (between) boxes with triplet labels.

For visual checks of generated images and of data: each role has its own colour, the action is drawn on
the same between box the interaction module conditions on (``models.grounding.between_box``), and each
label carries the interaction's index so a triplet can be read off the picture.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from PIL import Image, ImageDraw, ImageFont

from .models.grounding import between_box
from .scene import Scene

ROLE_COLOURS: dict[str, tuple[int, int, int]] = {
    "subject": (230, 57, 70),  # red
    "object": (29, 114, 243),  # blue
    "action": (46, 170, 80),  # green
}
ROLES = ("subject", "object", "action")


def scene_boxes(scene: Scene) -> list[tuple[str, tuple[float, float, float, float], str]]:
    """``(role, normalised xyxy box, label)`` for every interaction; the action box is the between box."""
    out = []
    for k, inter in enumerate(scene.interactions):
        action = between_box(torch.tensor(inter.subject_box), torch.tensor(inter.object_box)).tolist()
        out.append(("subject", inter.subject_box, f"{k}: {inter.subject}"))
        out.append(("object", inter.object_box, f"{k}: {inter.object}"))
        out.append(("action", tuple(action), f"{k}: {inter.action}"))
    return out


def draw_scene(
    image: Image.Image | None,
    scene: Scene,
    *,
    min_size: int = 256,
    line_width: int | None = None,
    labels: bool = True,
    roles: tuple[str, ...] = ROLES,
) -> Image.Image:
    """A copy of ``image`` (or a white canvas of the scene's size) with the scene's boxes drawn on it.

    Small images are enlarged (nearest neighbour) so the shorter side is at least ``min_size`` and the
    labels stay legible. Identical boxes of the same role (one person in several interactions) are
    drawn once with their labels joined.
    """
    if image is None:
        image = Image.new("RGB", (scene.width, scene.height), "white")
    canvas = image.convert("RGB")
    short = min(canvas.size)
    if short < min_size:
        scale = min_size / short
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.NEAREST)
    w, h = canvas.size
    width = line_width or max(1, round(min(w, h) / 170))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()

    grouped: dict[tuple[str, tuple[int, ...]], list[str]] = defaultdict(list)
    for role, box, label in scene_boxes(scene):
        if role not in roles:
            continue
        pixels = (round(box[0] * (w - 1)), round(box[1] * (h - 1)), round(box[2] * (w - 1)), round(box[3] * (h - 1)))
        grouped[(role, pixels)].append(label)

    # Boxes first, then labels, so no box is drawn over a label; actions last so they stay visible.
    order = sorted(grouped, key=lambda key: ROLES.index(key[0]))
    for role, (x1, y1, x2, y2) in order:
        draw.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=ROLE_COLOURS[role], width=width)
    if labels:
        for role, (x1, y1, x2, y2) in order:
            text = ", ".join(grouped[(role, (x1, y1, x2, y2))])
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left + 4, bottom - top + 4
            tx = min(max(0, x1), max(0, w - tw))
            ty = y1 if role != "object" else max(0, y2 - th)  # objects labelled at the bottom: fewer clashes
            ty = min(max(0, ty), max(0, h - th))
            draw.rectangle((tx, ty, tx + tw, ty + th), fill=ROLE_COLOURS[role])
            draw.text((tx + 2 - left, ty + 2 - top), text, fill=(255, 255, 255), font=font)
    return canvas
