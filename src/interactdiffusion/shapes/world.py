"""The HOI-Shapes world: its entities, verbs, colours, HOI classes and their frequencies.

Every name is a real HICO-DET name (COCO object names, HICO verbs with their "-ing" phrases), so the
parsers, phrase embeddings and vocabulary converters see an ordinary, smaller HICO-DET: 22 classes
of 8 verbs and 6 objects. What makes it learnable at 32×32 and readable by an analytic detector:

- every entity class has its own colour *and* shape (a person is a black figure); colours come from
  the grid {0, 128, 255}³ restricted to colours with a 0 channel, on a light grey background, so any
  two are ≥ 128 apart and a blurred edge (a blend with the background) is still closest to its own
  colour's blend line (see ``detector.py``);
- the **action** is a bar of the verb's colour that fills exactly the between box of its subject and
  object (REFERENCE §1): nothing else in the image says what the person does;
- an image holds 2–3 persons and 1–3 interactions with pairwise different verbs, often two of them
  with the same object class, so neither the caption nor the object boxes say which person does what
  to which object: only the action tokens with their between boxes do;
- the verb–object distribution is long-tailed (``CLASS_FREQUENCIES``): six classes get fewer than 10
  training pairs at the default 6,000 training images, like HICO-DET's rare split (23 % of classes).
  The test split is drawn from a tempered version of the same distribution, and its first scenes
  hold one class each, so every class, rare ones included, has test pairs to be scored.

Scene geometry is in ``layout.py``, drawing in ``render.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..vocab import HOIVocabulary

Color = tuple[int, int, int]
IntBox = tuple[int, int, int, int]  # x0, y0, x1, y1: pixel columns x0..x1-1, rows y0..y1-1

BACKGROUND: Color = (240, 240, 240)
PERSON = "person"


@dataclass(frozen=True)
class EntityKind:
    """A drawable entity class: its colour, its shape and its box size as fractions of the image side."""

    name: str
    color: Color
    shape: str
    width: tuple[float, float]
    height: tuple[float, float]


@dataclass(frozen=True)
class VerbKind:
    name: str  # HICO-DET verb name (``vname``)
    ing: str  # its action phrase (``vname_ing``)
    color: Color


PERSON_KIND = EntityKind(PERSON, (0, 0, 0), "figure", (0.19, 0.28), (0.34, 0.47))

OBJECT_KINDS: tuple[EntityKind, ...] = (
    EntityKind("cup", (0, 0, 255), "cup", (0.19, 0.25), (0.22, 0.31)),
    EntityKind("frisbee", (0, 128, 255), "disc", (0.22, 0.34), (0.19, 0.22)),
    EntityKind("kite", (255, 0, 255), "diamond", (0.19, 0.28), (0.25, 0.38)),
    EntityKind("skateboard", (0, 128, 0), "board", (0.31, 0.44), (0.19, 0.22)),
    EntityKind("sports_ball", (255, 128, 0), "ball", (0.19, 0.28), (0.19, 0.28)),
    EntityKind("umbrella", (255, 0, 0), "umbrella", (0.28, 0.40), (0.22, 0.31)),
)

VERB_KINDS: tuple[VerbKind, ...] = (
    VerbKind("carry", "carrying", (0, 255, 255)),
    VerbKind("catch", "catching", (0, 128, 128)),
    VerbKind("fly", "flying", (128, 0, 255)),
    VerbKind("hold", "holding", (255, 255, 0)),
    VerbKind("inspect", "inspecting", (128, 0, 128)),
    VerbKind("kick", "kicking", (255, 0, 128)),
    VerbKind("ride", "riding", (128, 0, 0)),
    VerbKind("throw", "throwing", (0, 255, 0)),
)

# Every HICO-DET (verb, object) pair of these verbs and objects with its relative frequency in training
# (about pairs per 10,000): a head of common classes and a tail of six rare ones (< 10 training
# pairs at the default 6,000 training images). Each verb and each object also appears in a frequent
# class, so a rare class is a new *composition* of a verb and an object that are common on their own,
# as most of HICO-DET's rare classes are.
CLASS_FREQUENCIES: tuple[tuple[str, str, float], ...] = (
    ("hold", "cup", 1800),
    ("kick", "sports_ball", 1400),
    ("fly", "kite", 1100),
    ("ride", "skateboard", 900),
    ("carry", "umbrella", 800),
    ("throw", "frisbee", 700),
    ("hold", "umbrella", 600),
    ("catch", "sports_ball", 500),
    ("inspect", "cup", 400),
    ("hold", "sports_ball", 350),
    ("carry", "skateboard", 300),
    ("throw", "sports_ball", 250),
    ("hold", "kite", 200),
    ("catch", "frisbee", 150),
    ("carry", "kite", 120),
    ("inspect", "kite", 90),
    # the rare tail
    ("hold", "frisbee", 4),
    ("carry", "cup", 4),
    ("inspect", "skateboard", 4),
    ("hold", "skateboard", 4),
    ("carry", "sports_ball", 4),
    ("inspect", "sports_ball", 4),
)


def _check_palette(colors: list[Color]) -> None:
    if len(set(colors)) != len(colors):
        raise ValueError("two HOI-Shapes kinds share a colour")
    for c in colors:
        if any(v not in (0, 128, 255) for v in c) or 0 not in c:
            raise ValueError(f"palette colour {c} is not on the {{0,128,255}}³ grid with a zero channel")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that shapes a dataset besides the seed and the split sizes.

    Lengths are fractions of the image side so the same world renders at 32, 48 or 64 pixels.
    """

    size: int = 32
    interactions_per_image: tuple[float, ...] = (0.35, 0.4, 0.25)  # P(1), P(2), P(3)
    extra_person_prob: float = 0.35  # a third person (on top of the two every image has) with 1-2 interactions
    distractor_object_prob: float = 0.2  # an object nobody interacts with
    distinct_objects_accept: float = 0.3  # keep this share of multi-interaction class sets without a repeated object
    shared_subject_prob: float = 0.25  # a further interaction reuses an earlier interaction's person
    diagonal_prob: float = 0.15  # object placed off both axes: the between box is the corner gap
    gap: tuple[float, float] = (0.125, 0.28)  # subject-object distance along the separating axis
    min_between: float = 0.125  # the between box's extent along the other axis
    entity_gap: int = 2  # background pixels at least between two entities of the same kind (else 1)
    test_temperature: float = 0.4  # test class weights = train weights ** this
    color_jitter: int = 12  # per-instance colour offset, each channel uniform in [-j, j]
    max_ambiguity: float = 0.15  # share of a non-interacting pair's between box a bar may cover

    def __post_init__(self):
        if self.size < 24:
            raise ValueError(f"size must be ≥ 24 pixels, got {self.size}")
        if len(self.interactions_per_image) != 3 or not math.isclose(sum(self.interactions_per_image), 1.0):
            raise ValueError("interactions_per_image must be three probabilities (1, 2, 3) summing to 1")

    def px(self, fraction: float) -> int:
        return max(1, round(fraction * self.size))

    @property
    def min_gap(self) -> int:
        return max(3, self.px(self.gap[0]))

    @property
    def max_gap(self) -> int:
        return max(self.min_gap, self.px(self.gap[1]))

    @property
    def min_between_px(self) -> int:
        return max(4, self.px(self.min_between))


@dataclass
class ShapesWorld:
    """The fixed world: kinds, colours, HOI classes (official order) and class weights."""

    config: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self):
        _check_palette([PERSON_KIND.color] + [k.color for k in OBJECT_KINDS] + [v.color for v in VERB_KINDS])
        self.person = PERSON_KIND
        self.objects = {k.name: k for k in OBJECT_KINDS}
        self.verbs = {v.name: v for v in VERB_KINDS}
        frequency = {}
        for verb, obj, weight in CLASS_FREQUENCIES:
            if verb not in self.verbs or obj not in self.objects:
                raise ValueError(f"class ({verb}, {obj}) uses an unknown verb or object")
            frequency[(verb, obj)] = weight
        # Official order as in HICO-DET: objects alphabetical, then verbs alphabetical.
        self.class_pairs: list[tuple[str, str]] = sorted(frequency, key=lambda p: (p[1], p[0]))
        weights = np.array([frequency[p] for p in self.class_pairs], dtype=np.float64)
        self.train_weights = weights / weights.sum()
        tempered = weights**self.config.test_temperature
        self.test_weights = tempered / tempered.sum()

    # -- vocabulary ------------------------------------------------------------------------------
    def action_list(self) -> list[tuple[str, str, str]]:
        """``(object, verb, verb_ing)`` per HOI class in official order (``list_action`` of the mat)."""
        return [(obj, verb, self.verbs[verb].ing) for verb, obj in self.class_pairs]

    def vocabulary(self, train_counts=None) -> HOIVocabulary:
        return HOIVocabulary.from_action_list(self.action_list(), train_counts)

    @property
    def num_classes(self) -> int:
        return len(self.class_pairs)

    # -- palette ---------------------------------------------------------------------------------
    def palette(self) -> list[tuple[str, str, Color]]:
        """``(role, name, colour)`` of every colour a clean image can contain except the background."""
        out = [("entity", PERSON, self.person.color)]
        out += [("entity", k.name, k.color) for k in OBJECT_KINDS]
        out += [("verb", v.name, v.color) for v in VERB_KINDS]
        return out

    def weights(self, split: str) -> np.ndarray:
        return self.train_weights if split == "train" else self.test_weights
