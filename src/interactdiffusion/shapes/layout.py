"""Sampling one HOI-Shapes scene: its interactions (long-tailed classes) and their geometry.

Every scene is unambiguous by construction:

- entity boxes of the same kind are at least ``entity_gap`` pixels apart, so a blurry generated
  image does not merge two neighbours into one blob (other entities at least one pixel);
- the between box of each interaction (where its bar is drawn) is a real region: ``min_gap`` to
  ``max_gap`` pixels across the axis that separates subject and object, at least ``min_between``
  along the other; it overlaps no other entity and stays a pixel away from every other bar;
- no bar covers more than ``max_ambiguity`` of the between box of a person and an object that do
  *not* interact, so reading the between region of every pair finds exactly the true ones.

Placements are drawn uniformly from the positions that satisfy these rules (found with integral
images of the occupied pixels) rather than by blind rejection, so crowded scenes are cheap. Boxes are
integer pixel boxes ``[x0, x1) × [y0, y1)``, i.e. the continuous 0-based xyxy boxes of the records.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from .world import PERSON, IntBox, ShapesWorld

SPLIT_KEYS = {"train": 1, "test": 2}


@dataclass(frozen=True)
class Entity:
    kind: str  # "person" or an object name
    box: IntBox


@dataclass(frozen=True)
class Action:
    verb: str
    subject: int  # index into ShapesLayout.entities (a person)
    object: int  # index into ShapesLayout.entities (an object)


@dataclass(frozen=True)
class ShapesLayout:
    size: int
    entities: tuple[Entity, ...]
    actions: tuple[Action, ...]

    def between(self, action: Action) -> IntBox:
        return between_int_box(self.entities[action.subject].box, self.entities[action.object].box)


def between_int_box(a: IntBox, b: IntBox) -> IntBox:
    """REFERENCE §1's between box (2nd and 3rd smallest coordinate per axis) on integer boxes."""
    xs = sorted((a[0], a[2], b[0], b[2]))
    ys = sorted((a[1], a[3], b[1], b[3]))
    return (xs[1], ys[1], xs[2], ys[2])


def disjoint(a: IntBox, b: IntBox, margin: int) -> bool:
    """At least ``margin`` pixel columns or rows lie between ``a`` and ``b`` (0: they may touch)."""
    return a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1]


def _integral(size: int, boxes: list[tuple[IntBox, int]]) -> np.ndarray:
    """Summed-area table of the pixels covered by ``boxes``, each grown by its margin."""
    taken = np.zeros((size, size), dtype=np.int32)
    for (x0, y0, x1, y1), m in boxes:
        taken[max(0, y0 - m):max(0, y1 + m), max(0, x0 - m):max(0, x1 + m)] = 1
    integral = np.zeros((size + 1, size + 1), dtype=np.int32)
    integral[1:, 1:] = taken.cumsum(0).cumsum(1)
    return integral


def _window_counts(integral: np.ndarray, box: IntBox, tx0: int, ty0: int, nx: int, ny: int) -> np.ndarray:
    """Covered pixels inside ``box`` shifted by every (tx, ty) of the ``ny × nx`` grid from (tx0, ty0)."""
    x0, y0, x1, y1 = box
    rows_hi, rows_lo = slice(y1 + ty0, y1 + ty0 + ny), slice(y0 + ty0, y0 + ty0 + ny)
    cols_hi, cols_lo = slice(x1 + tx0, x1 + tx0 + nx), slice(x0 + tx0, x0 + tx0 + nx)
    return (integral[rows_hi, cols_hi] - integral[rows_lo, cols_hi]
            - integral[rows_hi, cols_lo] + integral[rows_lo, cols_lo])


class LayoutSampler:
    """Draws scenes of one split; ``sample(index)`` is a pure function of (seed, split, index)."""

    def __init__(self, world: ShapesWorld, seed: int, split: str, max_tries: int = 200):
        if split not in SPLIT_KEYS:
            raise ValueError(f"split must be one of {sorted(SPLIT_KEYS)}, got {split!r}")
        self.world = world
        self.cfg = cfg = world.config
        self.seed = int(seed)
        self.split = split
        self.max_tries = max_tries
        self.weights = world.weights(split)
        self.cum_weights = np.cumsum(self.weights).tolist()
        self.class_indices = list(range(len(world.class_pairs)))
        self.class_verbs = [v for v, _ in world.class_pairs]
        self.class_objects = [o for _, o in world.class_pairs]
        self.object_names = sorted(world.objects)
        self.size = cfg.size
        kinds = {PERSON: world.person, **world.objects}
        self.sizes = {
            name: ((cfg.px(k.width[0]), cfg.px(k.width[1])), (cfg.px(k.height[0]), cfg.px(k.height[1])))
            for name, k in kinds.items()
        }

    def rng(self, index: int) -> random.Random:
        """The scene's own generator: scenes do not depend on each other or on the order of drawing."""
        state = np.random.SeedSequence([self.seed, SPLIT_KEYS[self.split], int(index)]).generate_state(2)
        return random.Random(int(state[0]) << 32 | int(state[1]))

    # -- which interactions ----------------------------------------------------------------------
    def sample_classes(self, rng: random.Random, k: int, include: int | None = None) -> list[tuple[str, str]]:
        """``k`` (verb, object) classes with pairwise different verbs (the first is ``include`` if given).

        Classes are drawn independently from the split's distribution and the set is rejected when
        two verbs repeat, or (with probability ``1 - distinct_objects_accept``) when no object class
        repeats. Rejecting whole sets keeps every class's share close to its weight, so the rare tail
        stays rare; restricting later draws to the remaining classes would inflate it.
        """
        for _ in range(1000):
            drawn = rng.choices(self.class_indices, cum_weights=self.cum_weights, k=k)
            if include is not None:
                drawn[0] = include
            if len({self.class_verbs[c] for c in drawn}) < k:
                continue
            distinct_objects = len({self.class_objects[c] for c in drawn}) == k
            if k > 1 and distinct_objects and rng.random() >= self.cfg.distinct_objects_accept:
                continue
            return [self.world.class_pairs[c] for c in drawn]
        raise RuntimeError("no class set with distinct verbs found")

    # -- geometry ----------------------------------------------------------------------------------
    def _size(self, rng: random.Random, kind: str) -> tuple[int, int]:
        (w0, w1), (h0, h1) = self.sizes[kind]
        return w0 + int(rng.random() * (w1 - w0 + 1)), h0 + int(rng.random() * (h1 - h0 + 1))

    def _gap(self, kind_a: str, kind_b: str) -> int:
        return self.cfg.entity_gap if kind_a == kind_b else 1

    def _beside(self, rng: random.Random, subject: IntBox, w: int, h: int) -> IntBox:
        """A ``w × h`` box beside ``subject`` (one axis apart, overlapping on the other), or diagonal."""
        cfg = self.cfg
        sx0, sy0, sx1, sy1 = subject
        mb, g0, g1 = cfg.min_between_px, cfg.min_gap, cfg.max_gap

        def uniform(lo: int, hi: int) -> int:
            return lo + int(rng.random() * (hi - lo + 1))

        if rng.random() < cfg.diagonal_prob:
            gx, gy = uniform(mb, max(mb, g1)), uniform(mb, max(mb, g1))
            x0 = sx1 + gx if rng.random() < 0.5 else sx0 - gx - w
            y0 = sy1 + gy if rng.random() < 0.5 else sy0 - gy - h
        else:
            g, side = uniform(g0, g1), int(rng.random() * 4)
            if side < 2:
                y0 = uniform(sy0 - h + mb, sy1 - mb)
                x0 = sx1 + g if side == 0 else sx0 - g - w
            else:
                x0 = uniform(sx0 - w + mb, sx1 - mb)
                y0 = sy1 + g if side == 2 else sy0 - g - h
        return (x0, y0, x0 + w, y0 + h)

    def _group_shape(self, rng: random.Random, subject: str | None, interactions) -> tuple | None:
        """A group in its own coordinates: a person with one object per interaction around it.

        ``subject=None`` and one ``(None, kind)`` entry is a lone object (a distractor). Returns
        ``(members [(kind, box)], bars, actions [(verb, member index)])`` that respect every rule
        among themselves, or None.
        """
        members: list[tuple[str, IntBox]] = []
        bars: list[IntBox] = []
        actions: list[tuple[str, int]] = []
        if subject is None:
            (_, kind), = interactions
            w, h = self._size(rng, kind)
            return [(kind, (0, 0, w, h))], bars, actions
        w, h = self._size(rng, PERSON)
        person = (0, 0, w, h)
        members.append((PERSON, person))
        for verb, obj in interactions:
            for _ in range(10):
                box = self._beside(rng, person, *self._size(rng, obj))
                bar = between_int_box(person, box)
                if (
                    all(disjoint(box, e, self._gap(obj, k)) for k, e in members)
                    and all(disjoint(box, b, 1) for b in bars)
                    and all(disjoint(bar, e, 0) for _, e in members[1:])
                    and all(disjoint(bar, b, 1) for b in bars)
                ):
                    break
            else:
                return None
            members.append((obj, box))
            bars.append(bar)
            actions.append((verb, len(members) - 1))
        return members, bars, actions

    def _place(self, rng: random.Random, group, placed: list[tuple[str, IntBox]], bars: list[IntBox], maps: dict):
        """Translate ``group`` to a position drawn uniformly among those where it breaks no rule.

        ``maps`` caches the integral images of ``placed`` and ``bars`` between calls (clear it when
        they change).
        """
        members, group_bars, _ = group
        s = self.size
        gx0 = min(b[0] for _, b in members)
        gy0 = min(b[1] for _, b in members)
        gx1 = max(b[2] for _, b in members)
        gy1 = max(b[3] for _, b in members)
        if gx1 - gx0 > s or gy1 - gy0 > s:
            return None
        tx0, ty0 = -gx0, -gy0  # translations keeping the group inside the image
        nx, ny = s - gx1 + 1 - tx0, s - gy1 + 1 - ty0
        ok = np.ones((ny, nx), dtype=bool)
        bars_grown = [(b, 1) for b in bars]
        for kind, box in members:
            if kind not in maps:  # where an entity of this kind may not go
                maps[kind] = _integral(s, [(e, self._gap(kind, k)) for k, e in placed] + bars_grown)
            ok &= _window_counts(maps[kind], box, tx0, ty0, nx, ny) == 0
        if group_bars:
            if "bars" not in maps:  # where a bar may not go: into an entity, next to another bar
                maps["bars"] = _integral(s, [(e, 0) for _, e in placed]) + _integral(s, bars_grown)
            for bar in group_bars:
                ok &= _window_counts(maps["bars"], bar, tx0, ty0, nx, ny) == 0
        candidates = np.flatnonzero(ok)
        if len(candidates) == 0:
            return None
        k = int(candidates[int(rng.random() * len(candidates))])
        return tx0 + k % nx, ty0 + k // nx

    def _try_geometry(self, rng, classes, n_persons: int, subjects: list[int], distractor: str | None):
        kinds: list[str] = []
        boxes: list[IntBox] = []
        bars: list[IntBox] = []
        actions: list[Action] = []
        person_index: dict[int, int] = {}
        # Persons with interactions first, the busiest first, each with its objects as one group;
        # then the idle persons and the distractor object.
        busy = sorted(set(subjects), key=lambda p: -subjects.count(p))
        order = busy + [p for p in range(n_persons) if p not in subjects]
        groups = [(p, PERSON, [c for c, subj in zip(classes, subjects) if subj == p]) for p in order]
        if distractor is not None:
            groups.append((None, None, [(None, distractor)]))
        for p, subject, interactions in groups:
            maps: dict = {}
            placed = list(zip(kinds, boxes))
            for _ in range(6):
                shape = self._group_shape(rng, subject, interactions)
                if shape is None:
                    continue
                shift = self._place(rng, shape, placed, bars, maps)
                if shift is not None:
                    break
            else:
                if p is None:  # the distractor is optional
                    continue
                return None
            dx, dy = shift
            members, group_bars, group_actions = shape
            first = len(boxes)
            for kind, (x0, y0, x1, y1) in members:
                kinds.append(kind)
                boxes.append((x0 + dx, y0 + dy, x1 + dx, y1 + dy))
            bars.extend((x0 + dx, y0 + dy, x1 + dx, y1 + dy) for x0, y0, x1, y1 in group_bars)
            if p is not None:
                person_index[p] = first
            actions.extend(Action(verb, first, first + m) for verb, m in group_actions)
        # Entities in a fixed order: persons (by person number), then objects in the order placed.
        persons = [person_index[p] for p in range(n_persons)]
        others = [i for i in range(len(boxes)) if kinds[i] != PERSON]
        new_index = {old: new for new, old in enumerate(persons + others)}
        entities = tuple(Entity(kinds[i], boxes[i]) for i in persons + others)
        actions = [Action(a.verb, new_index[a.subject], new_index[a.object]) for a in actions]
        layout = ShapesLayout(self.size, entities, tuple(actions))
        return layout if self.ambiguity(layout) <= self.cfg.max_ambiguity else None

    @staticmethod
    def ambiguity(layout: ShapesLayout) -> float:
        """The largest share of a non-interacting person-object pair's between box covered by bars."""
        s = layout.size
        bar_map = np.zeros((s, s), dtype=bool)
        for a in layout.actions:
            x0, y0, x1, y1 = layout.between(a)
            bar_map[y0:y1, x0:x1] = True
        pairs = {(a.subject, a.object) for a in layout.actions}
        worst = 0.0
        for i, e in enumerate(layout.entities):
            if e.kind != PERSON:
                continue
            for j, o in enumerate(layout.entities):
                if o.kind == PERSON or (i, j) in pairs:
                    continue
                x0, y0, x1, y1 = between_int_box(e.box, o.box)
                if x1 > x0 and y1 > y0:
                    worst = max(worst, float(bar_map[y0:y1, x0:x1].mean()))
        return worst

    def sample(self, index: int) -> ShapesLayout:
        rng = self.rng(index)
        cfg = self.cfg
        # The number of interactions and persons is kept over retries, so crowded scenes are not
        # under-represented; the classes and the geometry are redrawn.
        k = rng.choices((1, 2, 3), weights=cfg.interactions_per_image)[0]
        # a third person only while there is room for it (three interactions fill a 32² scene)
        n_persons = 2 + int(k < 3 and rng.random() < cfg.extra_person_prob)
        # The first test scenes hold one class each, so every class is scored even on a small test
        # split (a class without test pairs would count as AP 0).
        include = index if self.split == "test" and index < len(self.class_indices) else None
        for _ in range(self.max_tries):
            classes = self.sample_classes(rng, k, include)
            subjects = [0]
            for _k in range(1, len(classes)):
                unused = [p for p in range(n_persons) if p not in subjects]
                if unused and rng.random() >= cfg.shared_subject_prob:
                    subjects.append(unused[0])
                else:
                    subjects.append(rng.choice(sorted(set(subjects))))
            distractor = None
            if rng.random() < cfg.distractor_object_prob:
                distractor = rng.choice(self.object_names)
            for _g in range(10):
                layout = self._try_geometry(rng, classes, n_persons, subjects, distractor)
                if layout is not None:
                    return layout
        raise RuntimeError(f"could not place a {self.split} scene {index} in {self.max_tries} tries")


def check_layout(layout: ShapesLayout, world: ShapesWorld) -> list[str]:
    """Every rule of the module docstring that ``layout`` breaks (empty when it is a valid scene)."""
    cfg = world.config
    problems = []
    boxes = [e.box for e in layout.entities]
    for i, a in enumerate(boxes):
        if min(a) < 0 or max(a[2], a[3]) > layout.size or a[2] <= a[0] or a[3] <= a[1]:
            problems.append(f"entity {i} box {a} is empty or outside the image")
        for j in range(i + 1, len(boxes)):
            gap = cfg.entity_gap if layout.entities[i].kind == layout.entities[j].kind else 1
            if not disjoint(a, boxes[j], gap):
                problems.append(f"entities {i} and {j} are closer than {gap} pixels")
    bars = [layout.between(a) for a in layout.actions]
    verbs = [a.verb for a in layout.actions]
    if len(set(verbs)) != len(verbs):
        problems.append(f"repeated verb in {verbs}")
    for k, (action, bar) in enumerate(zip(layout.actions, bars)):
        if layout.entities[action.subject].kind != PERSON or layout.entities[action.object].kind == PERSON:
            problems.append(f"interaction {k} is not person → object")
        w, h = bar[2] - bar[0], bar[3] - bar[1]
        subject, obj = boxes[action.subject], boxes[action.object]
        separated_x = subject[2] <= obj[0] or obj[2] <= subject[0]
        separated_y = subject[3] <= obj[1] or obj[3] <= subject[1]
        across, along = (w, h) if separated_x and not separated_y else (h, w)
        if separated_x and separated_y:
            across, along = min(w, h), min(w, h)
        if not (cfg.min_gap <= across and along >= cfg.min_between_px and min(w, h) >= cfg.min_gap):
            problems.append(f"interaction {k} between box {bar} is too thin")
        for i, e in enumerate(boxes):
            if i not in (action.subject, action.object) and not disjoint(bar, e, 0):
                problems.append(f"interaction {k} bar overlaps entity {i}")
        for m in range(k + 1, len(bars)):
            if not disjoint(bar, bars[m], 1):
                problems.append(f"bars of interactions {k} and {m} touch")
    if LayoutSampler.ambiguity(layout) > cfg.max_ambiguity:
        problems.append("a non-interacting pair's between box is covered by a bar")
    return problems
