"""Drawing a HOI-Shapes layout: entity shapes inside their boxes, verb bars in the between boxes.

Each shape is a boolean mask that touches all four sides of its box, so the bounding box of the drawn
pixels *is* the annotated box (what the analytic detector measures). Drawing is crisp (no
anti-aliasing): at 32×32 a blended edge would be a colour of its own.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .layout import ShapesLayout
from .world import BACKGROUND, PERSON, ShapesWorld


def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in the unit box: u across, v down, both in (0, 1)."""
    u = (np.arange(w) + 0.5) / w
    v = (np.arange(h) + 0.5) / h
    return np.meshgrid(u, v)


def _ellipse(u, v, cx, cy, rx, ry, power: float = 2.0):
    return (np.abs(u - cx) / rx) ** power + (np.abs(v - cy) / ry) ** power <= 1.0


def _figure(u, v, w, h):
    """A person: a round head on a body as wide as the box; legs apart when there is room.

    Solid on purpose: thin limbs would vanish in a blurry generated image and take the box with them.
    """
    head = _ellipse(u, v, 0.5, 0.18, 0.32, 0.19 + 0.5 / h)
    torso = (v >= 0.32) & (np.abs(u - 0.5) <= 0.5 - 0.12 * np.clip((v - 0.6) / 0.4, 0, 1))
    gap = (v > 0.8) & (np.abs(u - 0.5) < 0.5 / w) if w >= 8 else np.zeros_like(torso)
    return (head | torso) & ~gap


def _ball(u, v, w, h):
    return _ellipse(u, v, 0.5, 0.5, 0.5, 0.5)


def _disc(u, v, w, h):
    """A flat disc seen from the side: a squarish ellipse with a rim."""
    outer = _ellipse(u, v, 0.5, 0.5, 0.5, 0.5, power=4.0)
    hole = _ellipse(u, v, 0.5, 0.5, 0.22, 0.2) if min(w, h) >= 8 else np.zeros_like(outer)
    return outer & ~hole


def _diamond(u, v, w, h):
    slack = 1.0 / min(w, h)
    return np.abs(2 * u - 1) + np.abs(2 * v - 1) <= 1.0 + slack


def _cup(u, v, w, h):
    """A beaker: wide at the rim, narrower at the foot."""
    return np.abs(u - 0.5) <= 0.5 - 0.16 * v


def _umbrella(u, v, w, h):
    """A dome with a handle down the middle (at least two pixels wide, so blur does not erase it)."""
    canopy = (v <= 0.55) & _ellipse(u, v, 0.5, 0.55, 0.5, 0.55)
    handle = np.abs(u - 0.5) <= max(1.0 / w, 0.11)
    return canopy | handle


def _board(u, v, w, h):
    """A deck with rounded ends over two wheels."""
    deck = (v <= 0.62) & _ellipse(u, v, 0.5, 0.31, 0.5, 0.45, power=6.0)
    wheels = (v > 0.62) & (np.abs(np.abs(u - 0.5) - 0.27) <= 0.12)
    return deck | wheels


SHAPES = {
    "figure": _figure,
    "ball": _ball,
    "disc": _disc,
    "diamond": _diamond,
    "cup": _cup,
    "umbrella": _umbrella,
    "board": _board,
}


@lru_cache(maxsize=4096)
def shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    """Boolean [h, w]; its pixels span the whole box (first and last row and column are used)."""
    u, v = _grid(w, h)
    mask = SHAPES[shape](u, v, w, h)
    # Guarantee the bounding box: tiny sizes can round a tip away.
    if not mask[0].any():
        mask[0, w // 2] = True
    if not mask[-1].any():
        mask[-1, w // 2] = True
    if not mask[:, 0].any():
        mask[h // 2, 0] = True
    if not mask[:, -1].any():
        mask[h // 2, -1] = True
    mask.setflags(write=False)
    return mask


class Renderer:
    """Turns a layout into a label map (palette indices) and an RGB image."""

    def __init__(self, world: ShapesWorld):
        self.world = world
        palette = world.palette()
        self.names = [(role, name) for role, name, _ in palette]
        self.colors = np.array([BACKGROUND] + [c for _, _, c in palette], dtype=np.int16)
        self.index = {key: k + 1 for k, key in enumerate(self.names)}  # 0 = background

    def label_map(self, layout: ShapesLayout) -> tuple[np.ndarray, np.ndarray]:
        """(labels [S, S] palette index, instances [S, S] 0 = background, 1.. one per drawn thing)."""
        s = layout.size
        labels = np.zeros((s, s), dtype=np.int16)
        instances = np.zeros((s, s), dtype=np.int16)
        n = 0
        for action in layout.actions:
            x0, y0, x1, y1 = layout.between(action)
            n += 1
            labels[y0:y1, x0:x1] = self.index[("verb", action.verb)]
            instances[y0:y1, x0:x1] = n
        for entity in layout.entities:
            x0, y0, x1, y1 = entity.box
            spec = self.world.person if entity.kind == PERSON else self.world.objects[entity.kind]
            mask = shape_mask(spec.shape, x1 - x0, y1 - y0)
            n += 1
            labels[y0:y1, x0:x1][mask] = self.index[("entity", entity.kind)]
            instances[y0:y1, x0:x1][mask] = n
        return labels, instances

    def render(self, layout: ShapesLayout, rng: np.random.Generator) -> np.ndarray:
        """uint8 [S, S, 3]: palette colours with one random offset per drawn instance."""
        labels, instances = self.label_map(layout)
        j = self.world.config.color_jitter
        n = int(instances.max())
        offsets = np.zeros((n + 1, 3), dtype=np.int16)
        if j > 0 and n > 0:
            offsets[1:] = rng.integers(-j, j + 1, size=(n, 3))
        image = self.colors[labels] + offsets[instances]
        return np.clip(image, 0, 255).astype(np.uint8)
