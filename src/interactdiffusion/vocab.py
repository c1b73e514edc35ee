"""The HOI vocabulary: 600 <verb, object> classes, 117 verbs, 80 objects, validity and rarity.

The class list always comes from the user's annotation files (``list_action`` of ``anno_bbox.mat``
or the ``correspondence`` of ``instances_*.json``); only the COCO id table, which is a constant of
the COCO dataset, is embedded here. Internally objects are indexed in HICO-DET's alphabetical order
(person = 49 for the real dataset); COCO-91 ids and COCO-80 indices are converted at the edges.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RARE_THRESHOLD = 10

# COCO category names (spaces replaced by underscores, as HICO-DET writes them) with their COCO-91 ids,
# in COCO-80 contiguous order (person = 0).
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic_light"), (11, "fire_hydrant"), (13, "stop_sign"),
    (14, "parking_meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports_ball"), (38, "kite"), (39, "baseball_bat"), (40, "baseball_glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis_racket"), (44, "bottle"), (46, "wine_glass"),
    (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot_dog"), (59, "pizza"),
    (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted_plant"), (65, "bed"),
    (67, "dining_table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"),
    (76, "keyboard"), (77, "cell_phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy_bear"),
    (89, "hair_drier"), (90, "toothbrush"),
)


# HICO-DET's 117 verbs (``list_action.vname``), alphabetical: the verb order of every HICO-DET file.
HICO_VERBS: tuple[str, ...] = (
    "adjust", "assemble", "block", "blow", "board", "break", "brush_with", "buy", "carry", "catch", "chase",
    "check", "clean", "control", "cook", "cut", "cut_with", "direct", "drag", "dribble", "drink_with", "drive",
    "dry", "eat", "eat_at", "exit", "feed", "fill", "flip", "flush", "fly", "greet", "grind", "groom", "herd",
    "hit", "hold", "hop_on", "hose", "hug", "hunt", "inspect", "install", "jump", "kick", "kiss", "lasso",
    "launch", "lick", "lie_on", "lift", "light", "load", "lose", "make", "milk", "move", "no_interaction",
    "open", "operate", "pack", "paint", "park", "pay", "peel", "pet", "pick", "pick_up", "point", "pour",
    "pull", "push", "race", "read", "release", "repair", "ride", "row", "run", "sail", "scratch", "serve",
    "set", "shear", "sign", "sip", "sit_at", "sit_on", "slide", "smell", "spin", "squeeze", "stab",
    "stand_on", "stand_under", "stick", "stir", "stop_at", "straddle", "swing", "tag", "talk_on", "teach",
    "text_on", "throw", "tie", "toast", "train", "turn", "type_on", "walk", "wash", "watch", "wave", "wear",
    "wield", "zip",
)
_HICO_VERB_SET = frozenset(HICO_VERBS)
NO_INTERACTION = "no_interaction"
# The official phrase cache (``DATA/clip_phrases_feature_cache.pth``, whose embeddings the released
# weights were trained on) holds the action of ``no_interaction`` as "with".
NO_INTERACTION_PHRASE = "with"
# ``list_action.vname_ing`` keeps these spellings (not "controlling", "sipping", ...); the official
# phrases, and so the released weights, use them. Every other HICO-DET verb follows the rules below.
_HICO_ING = {"control": "controling", "sip": "siping", "spin": "spining", "stir": "stiring", "tie": "tieing",
             "lie": "lying", NO_INTERACTION: NO_INTERACTION}
_VOWELS = set("aeiou")


def phrase_of(name: str) -> str:
    """Annotation names use underscores ("sports_ball", "sit_on"); phrases use spaces."""
    return name.replace("_", " ").strip()


def verb_ing(verb: str) -> str:
    """The "-ing" form of a verb name as HICO-DET's ``list_action.vname_ing`` spells it
    ("ride" → "riding", "sit_on" → "sitting_on", "control" → "controling").

    Needed for files that carry no "-ing" forms (fredzzhang's json), so that every annotation format
    gives the same phrases; verbs outside HICO-DET get the ordinary English spelling rules.
    """
    head, sep, tail = verb.partition("_")
    if verb in _HICO_ING:
        return _HICO_ING[verb]
    if head in _HICO_ING:
        return _HICO_ING[head] + sep + tail
    if head.endswith("ie"):
        ing = head[:-2] + "ying"
    elif head.endswith("e") and not head.endswith(("ee", "ye", "oe")) and len(head) > 2:
        ing = head[:-1] + "ing"
    else:
        vowel_groups = sum(
            1 for i, ch in enumerate(head) if ch in _VOWELS and (i == 0 or head[i - 1] not in _VOWELS)
        )
        cvc = (
            len(head) >= 3
            and head[-1] not in _VOWELS | set("wxy")
            and head[-2] in _VOWELS
            and head[-3] not in _VOWELS
        )
        ing = head + head[-1] + "ing" if cvc and vowel_groups == 1 else head + "ing"
    return ing + sep + tail


def official_action_phrase(verb: str, ing: str | None = None) -> str:
    """The action phrase of a verb as the official phrase cache has it: "riding", "sitting on",
    "controling", and "with" for ``no_interaction``. ``ing``: the file's own "-ing" form, if any."""
    if verb == NO_INTERACTION:
        return NO_INTERACTION_PHRASE
    if verb in _HICO_VERB_SET or not ing:  # HICO-DET's own spelling, whatever the file wrote
        return phrase_of(verb_ing(verb))
    return phrase_of(ing)


def official_phrases() -> list[str]:
    """HICO-DET's 197 phrases (80 object names, then 117 actions), the keys of the official phrase cache."""
    objects = sorted(phrase_of(name) for _, name in COCO_CATEGORIES)
    return objects + [official_action_phrase(v) for v in HICO_VERBS]


@dataclass(frozen=True)
class HOIClass:
    verb: int  # index into HOIVocabulary.verbs
    object: int  # index into HOIVocabulary.objects


@dataclass
class HOIVocabulary:
    """Class lists in one index space, with converters at the edges.

    ``objects`` and ``verbs`` are annotation names (underscored); ``verb_ing`` the "-ing" forms used
    as action phrases; ``classes[h]`` the (verb, object) of HOI id ``h`` (0-based, official order).
    """

    objects: list[str]
    verbs: list[str]
    verb_ing: list[str]
    classes: list[HOIClass]
    train_counts: np.ndarray | None = None  # [num_classes] visible training pairs per class
    _index: dict[tuple[int, int], int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if len(self.verbs) != len(self.verb_ing):
            raise ValueError("verbs and verb_ing must have the same length")
        self._index = {(c.verb, c.object): h for h, c in enumerate(self.classes)}
        if len(self._index) != len(self.classes):
            raise ValueError("duplicate (verb, object) pair in the HOI class list")
        if self.train_counts is not None:
            self.train_counts = np.asarray(self.train_counts, dtype=np.int64)
            if self.train_counts.shape != (len(self.classes),):
                raise ValueError(f"train_counts must have shape ({len(self.classes)},)")

    # -- sizes and lookups -------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_verbs(self) -> int:
        return len(self.verbs)

    @property
    def num_objects(self) -> int:
        return len(self.objects)

    @property
    def person_index(self) -> int:
        return self.objects.index("person")

    def hoi_id(self, verb: int, obj: int) -> int:
        """HOI id of a (verb, object) pair; KeyError when the pair is not one of the classes."""
        return self._index[(verb, obj)]

    def has_pair(self, verb: int, obj: int) -> bool:
        return (verb, obj) in self._index

    def object_index(self, name: str) -> int:
        key = name.strip().replace(" ", "_")
        try:
            return self.objects.index(key)
        except ValueError:
            raise KeyError(f"unknown object name {name!r}") from None

    def verb_index(self, name: str) -> int:
        key = name.strip().replace(" ", "_")
        if key in self.verbs:
            return self.verbs.index(key)
        if name.strip() in self.verb_ing:
            return self.verb_ing.index(name.strip())
        raise KeyError(f"unknown verb {name!r}")

    def action_phrase(self, verb: int) -> str:
        """The official phrase of a verb (``official_action_phrase``): the token and caption text."""
        return official_action_phrase(self.verbs[verb], self.verb_ing[verb])

    def object_phrase(self, obj: int) -> str:
        return phrase_of(self.objects[obj])

    def phrases(self) -> list[str]:
        """Every distinct phrase a scene of this vocabulary can contain (subjects, actions, objects)."""
        seen: dict[str, None] = {}
        for name in ["person"] + [self.object_phrase(o) for o in range(self.num_objects)]:
            seen.setdefault(phrase_of(name), None)
        for v in range(self.num_verbs):
            seen.setdefault(self.action_phrase(v), None)
        return list(seen)

    # -- tables --------------------------------------------------------------------------------------
    def validity(self) -> np.ndarray:
        """Boolean [num_verbs, num_objects]: which (verb, object) pairs are HOI classes."""
        table = np.zeros((self.num_verbs, self.num_objects), dtype=bool)
        for c in self.classes:
            table[c.verb, c.object] = True
        return table

    def hoi_table(self) -> np.ndarray:
        """Int [num_verbs, num_objects]: HOI id of each valid pair, -1 elsewhere."""
        table = np.full((self.num_verbs, self.num_objects), -1, dtype=np.int64)
        for h, c in enumerate(self.classes):
            table[c.verb, c.object] = h
        return table

    def rare_mask(self) -> np.ndarray:
        """Boolean [num_classes]: fewer than 10 visible training pairs (HICO-DET's rare split)."""
        if self.train_counts is None:
            raise ValueError(
                "the rare/non-rare split needs training counts: build the vocabulary from the training "
                "annotations (or pass train_counts)"
            )
        return self.train_counts < RARE_THRESHOLD

    # -- COCO conversions ------------------------------------------------------------------------
    def _coco_rows(self) -> list[int]:
        names = [name for _, name in COCO_CATEGORIES]
        rows = []
        for obj in self.objects:
            if obj not in names:
                raise KeyError(f"object {obj!r} is not a COCO category")
            rows.append(names.index(obj))
        return rows

    def object_to_coco80(self, obj: int) -> int:
        return [name for _, name in COCO_CATEGORIES].index(self.objects[obj])

    def coco80_to_object(self, index: int) -> int:
        return self.object_index(COCO_CATEGORIES[index][1])

    def object_to_coco91(self, obj: int) -> int:
        return COCO_CATEGORIES[self.object_to_coco80(obj)][0]

    def coco91_to_object(self, coco_id: int) -> int:
        for cid, name in COCO_CATEGORIES:
            if cid == coco_id:
                return self.object_index(name)
        raise KeyError(f"{coco_id} is not a COCO-91 category id")

    # -- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "objects": self.objects,
            "verbs": self.verbs,
            "verb_ing": self.verb_ing,
            "classes": [[c.verb, c.object] for c in self.classes],
            "train_counts": None if self.train_counts is None else self.train_counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> HOIVocabulary:
        return cls(
            objects=list(data["objects"]),
            verbs=list(data["verbs"]),
            verb_ing=list(data["verb_ing"]),
            classes=[HOIClass(int(v), int(o)) for v, o in data["classes"]],
            train_counts=None if data.get("train_counts") is None else np.asarray(data["train_counts"]),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> HOIVocabulary:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_action_list(
        cls,
        entries: Sequence[tuple[str, str, str]],
        train_counts: Sequence[int] | None = None,
    ) -> HOIVocabulary:
        """Build from ``(object_name, verb_name, verb_ing)`` per HOI class in official order.

        Objects and verbs are indexed alphabetically, which is HICO-DET's own order (and the verb
        order of the PPDM/QPIC files, whose verb ids are 1-based alphabetical).
        """
        objects = sorted({o for o, _, _ in entries})
        verb_forms: dict[str, str] = {}
        for _, v, ing in entries:
            if verb_forms.setdefault(v, ing) != ing:
                raise ValueError(f"verb {v!r} has two -ing forms: {verb_forms[v]!r} and {ing!r}")
        verbs = sorted(verb_forms)
        classes = [HOIClass(verbs.index(v), objects.index(o)) for o, v, _ in entries]
        return cls(objects, verbs, [verb_forms[v] for v in verbs], classes, train_counts)
