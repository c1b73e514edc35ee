"""A small synthetic HICO-DET: real JPEG images and annotation files in the real layouts.

What tests, the demo and the benchmarks train, generate and evaluate on when the real data set is not
there. The vocabulary is a 12-class slice of the real one (real HICO-DET verbs, "-ing" forms and object
names, in the official class order), three of its classes are rare by construction (fewer than 10
training pairs). Images are flat-coloured scenes with a "person" ellipse and an object rectangle drawn
at the annotated boxes, so a model can in principle learn the layout. Everything is a pure function of
the arguments and ``seed``.

Folder layout, mirroring where the real files usually live::

    out_dir/anno_bbox.mat                       official annotations, both splits + list_action
    out_dir/anno.mat                            image-level test labels (anno_test, list_test)
    out_dir/instances_{train,test}2015.json     fredzzhang/hicodet layout
    out_dir/annotations/trainval_hico.json      PPDM/QPIC layout (+ corre_hico.npy)
    out_dir/annotations/test_hico.json
    out_dir/hoi_vocabulary.json                 the vocabulary (our own json, with training counts)
    out_dir/images/{train2015,test2015}/HICO_{train,test}2015_XXXXXXXX.jpg
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..vocab import RARE_THRESHOLD, HOIVocabulary
from .folder import HICODETFolder
from .records import ImageRecord, PairRecord
from .writers import (
    group_pairs_by_hoi,
    write_anno_bbox_mat,
    write_anno_mat,
    write_corre_hico,
    write_instances_json,
    write_qpic_json,
)

# (object, verb, verb -ing form) in HICO-DET's class order: objects alphabetical, then verbs.
SYNTHETIC_ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("bicycle", "hold", "holding"),
    ("bicycle", "ride", "riding"),
    ("cake", "cut", "cutting"),
    ("cup", "drink_with", "drinking_with"),
    ("dog", "walk", "walking"),
    ("horse", "feed", "feeding"),
    ("horse", "ride", "riding"),
    ("kite", "fly", "flying"),
    ("person", "hug", "hugging"),
    ("skateboard", "jump", "jumping"),
    ("sports_ball", "kick", "kicking"),
    ("umbrella", "carry", "carrying"),
)
# Classes given fewer than RARE_THRESHOLD training pairs on purpose (cut cake, hug person, kick ball).
SYNTHETIC_RARE = (2, 8, 10)
FORMATS = ("mat", "qpic", "instances")
MARKER = "synthetic.json"

SizeSpec = tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]


def synthetic_vocabulary() -> HOIVocabulary:
    """The 12-class vocabulary (no training counts: those come from the generated training split)."""
    return HOIVocabulary.from_action_list(SYNTHETIC_ACTIONS)


@dataclass
class SyntheticHICODET(HICODETFolder):
    """Where ``write_synthetic_hicodet`` put everything, and what it wrote."""

    vocab: HOIVocabulary
    train_records: list[ImageRecord]
    test_records: list[ImageRecord]
    invisible: dict[str, list[int]] = field(default_factory=dict)


def _size_ranges(image_size: SizeSpec) -> tuple[tuple[int, int], tuple[int, int]]:
    w, h = image_size
    w_range = (int(w), int(w)) if isinstance(w, (int, np.integer)) else (int(w[0]), int(w[1]))
    h_range = (int(h), int(h)) if isinstance(h, (int, np.integer)) else (int(h[0]), int(h[1]))
    if min(w_range + h_range) < 16:
        raise ValueError(f"synthetic images must be at least 16 pixels wide and high, got {image_size}")
    return w_range, h_range


def _pixel_box(rng: np.random.Generator, width: int, height: int, frac_w, frac_h, center=None):
    """A 1-based inclusive integer box inside the image, returned as continuous 0-based xyxy."""
    bw = max(4, int(width * rng.uniform(*frac_w)))
    bh = max(4, int(height * rng.uniform(*frac_h)))
    if center is None:
        x1 = int(rng.integers(1, width - bw + 2))
        y1 = int(rng.integers(1, height - bh + 2))
    else:
        cx, cy = center
        x1 = int(np.clip(cx - bw // 2 + rng.integers(-bw // 3, bw // 3 + 1), 1, width - bw + 1))
        y1 = int(np.clip(cy - bh // 2 + rng.integers(-bh // 3, bh // 3 + 1), 1, height - bh + 1))
    x2, y2 = x1 + bw - 1, y1 + bh - 1
    return (float(x1 - 1), float(y1 - 1), float(x2), float(y2))


def _class_schedule(rng, total: int, vocab: HOIVocabulary, rare: Sequence[int]) -> list[int]:
    """HOI ids for ``total`` training pairs: rare classes 1-3 pairs each, the rest balanced."""
    rare = [h for h in rare if h < vocab.num_classes]
    schedule = [h for k, h in enumerate(rare) for _ in range(min(1 + k % 3, RARE_THRESHOLD - 1))][:total]
    common = [h for h in range(vocab.num_classes) if h not in rare]
    order = list(rng.permutation(common)) if common else list(rare)
    while len(schedule) < total:
        schedule.append(int(order[(len(schedule)) % len(order)]))
    return [int(h) for h in rng.permutation(schedule)]


def _make_records(
    rng, split: str, count: int, vocab: HOIVocabulary, sizes, rare: Sequence[int], max_pairs: int
) -> tuple[list[ImageRecord], dict[str, list[int]]]:
    (w_lo, w_hi), (h_lo, h_hi) = sizes
    per_image = rng.integers(1, max_pairs + 1, size=count)
    if split == "train":
        classes = _class_schedule(rng, int(per_image.sum()), vocab, rare)
    else:
        classes = [int(h) for h in rng.integers(0, vocab.num_classes, size=int(per_image.sum()))]
    records, invisible, cursor = [], {}, 0
    for k in range(count):
        file_name = f"HICO_{split}2015_{k + 1:08d}.jpg"
        width, height = int(rng.integers(w_lo, w_hi + 1)), int(rng.integers(h_lo, h_hi + 1))
        pairs: list[PairRecord] = []
        empty_image = split == "test" and count >= 4 and k == 1  # one test image with no visible pair
        for _ in range(int(per_image[k])):
            hoi = classes[cursor]
            cursor += 1
            if empty_image:
                invisible.setdefault(file_name, []).append(hoi)
                continue
            c = vocab.classes[hoi]
            if pairs and rng.random() < 0.25:
                human = pairs[-1].human_box  # the same person doing a second thing
            else:
                human = _pixel_box(rng, width, height, (0.2, 0.5), (0.4, 0.9))
            hx, hy = (human[0] + human[2]) / 2, (human[1] + human[3]) / 2
            obj = _pixel_box(rng, width, height, (0.15, 0.45), (0.15, 0.45), center=(int(hx) + 1, int(hy) + 1))
            pairs.append(PairRecord(human, obj, hoi, c.verb, c.object))
        if split == "train" and k % 7 == 3:
            invisible.setdefault(file_name, []).append(int(rng.integers(0, vocab.num_classes)))
        record = ImageRecord(file_name, width, height, pairs)
        # Pairs grouped by HOI class, the only order anno_bbox.mat can store: every format parses back equal.
        record.pairs = [p for _, group in group_pairs_by_hoi(record) for p in group]
        records.append(record)
    return records, invisible


def _colour(name: str) -> tuple[int, int, int]:
    code = zlib.crc32(name.encode())
    return (64 + code % 160, 64 + (code >> 8) % 160, 64 + (code >> 16) % 160)


def _draw_image(record: ImageRecord, vocab: HOIVocabulary, rng: np.random.Generator, path: Path, quality: int):
    from PIL import Image, ImageDraw

    background = tuple(int(v) for v in rng.integers(150, 256, size=3))
    image = Image.new("RGB", (record.width, record.height), background)
    draw = ImageDraw.Draw(image)
    for _ in range(3):  # clutter, so images are not trivially flat
        x, y = int(rng.integers(0, record.width)), int(rng.integers(0, record.height))
        r = int(rng.integers(2, max(3, min(record.width, record.height) // 6)))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(100, 256, size=3)))
    for pair in record.pairs:
        draw.rectangle([int(v) for v in pair.object_box], fill=_colour(vocab.objects[pair.object]),
                       outline=(20, 20, 20))
        draw.ellipse([int(v) for v in pair.human_box], fill=(224, 172, 105), outline=(60, 30, 10), width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=quality)


def with_train_counts(vocab: HOIVocabulary, train_records: Sequence[ImageRecord]) -> HOIVocabulary:
    counts = np.zeros(vocab.num_classes, dtype=np.int64)
    for record in train_records:
        for pair in record.pairs:
            counts[pair.hoi] += 1
    return HOIVocabulary(list(vocab.objects), list(vocab.verbs), list(vocab.verb_ing), list(vocab.classes), counts)


def generate_synthetic_records(
    num_train: int = 48,
    num_test: int = 16,
    image_size: SizeSpec = ((96, 160), (80, 128)),
    seed: int = 0,
    vocab: HOIVocabulary | None = None,
    max_pairs: int = 4,
) -> tuple[HOIVocabulary, list[ImageRecord], list[ImageRecord], dict[str, list[int]]]:
    """Records only (no files): the vocabulary with training counts, both splits, invisible HOIs."""
    base = vocab or synthetic_vocabulary()
    rare = SYNTHETIC_RARE if vocab is None else ()
    sizes = _size_ranges(image_size)
    rng = np.random.default_rng(seed)
    train, invisible = _make_records(rng, "train", num_train, base, sizes, rare, max_pairs)
    test, invisible_test = _make_records(rng, "test", num_test, base, sizes, rare, max_pairs)
    invisible.update(invisible_test)
    return with_train_counts(base, train), train, test, invisible


def write_synthetic_hicodet(
    out_dir: str | Path,
    num_train: int = 48,
    num_test: int = 16,
    image_size: SizeSpec = ((96, 160), (80, 128)),
    seed: int = 0,
    formats: Sequence[str] = FORMATS,
    vocab: HOIVocabulary | None = None,
    write_images: bool = True,
    max_pairs: int = 4,
    jpeg_quality: int = 90,
) -> SyntheticHICODET:
    """Write a synthetic HICO-DET under ``out_dir`` (see the module docstring for the layout).

    ``image_size`` is ``(w, h)`` or ``((w_min, w_max), (h_min, h_max))``. ``vocab`` replaces the 12-class
    vocabulary (e.g. a 600-class one for full-scale benchmarks). ``write_images=False`` writes the
    annotation files only.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {list(FORMATS)}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    custom_vocab = vocab is not None
    vocab, train, test, invisible = generate_synthetic_records(num_train, num_test, image_size, seed, vocab, max_pairs)
    out = SyntheticHICODET(root, vocab, train, test, invisible)
    if "mat" in formats:
        write_anno_bbox_mat(out.anno_bbox_mat, train, test, vocab, invisible=invisible)
        write_anno_mat(root / "anno.mat", test, vocab, invisible=invisible)
    if "qpic" in formats:
        write_qpic_json(out.trainval_hico, train, vocab, with_hoi_ids=True)
        write_qpic_json(out.test_hico, test, vocab, with_hoi_ids=False)
        write_corre_hico(out.trainval_hico.parent / "corre_hico.npy", vocab)
    if "instances" in formats:
        write_instances_json(out.instances_train, train, vocab)
        write_instances_json(out.instances_test, test, vocab)
    vocab.save(out.vocabulary_json)
    if write_images:
        image_rng = np.random.default_rng([seed, 1])
        for split_dir, records in ((out.train_image_dir, train), (out.test_image_dir, test)):
            for record in records:
                _draw_image(record, vocab, image_rng, split_dir / record.file_name, jpeg_quality)
    marker = {
        "num_train": num_train, "num_test": num_test, "image_size": json.loads(json.dumps(image_size)),
        "seed": seed, "formats": sorted(formats), "write_images": write_images, "max_pairs": max_pairs,
        "custom_vocab": custom_vocab,
    }
    (root / MARKER).write_text(json.dumps(marker, sort_keys=True))
    return out


def ensure_synthetic_hicodet(out_dir: str | Path, **kwargs) -> Path:
    """Generate into ``out_dir`` unless the same generation (same arguments) is already there."""
    root = Path(out_dir)
    marker = root / MARKER
    wanted = {
        "num_train": kwargs.get("num_train", 48), "num_test": kwargs.get("num_test", 16),
        "image_size": json.loads(json.dumps(kwargs.get("image_size", ((96, 160), (80, 128))))),
        "seed": kwargs.get("seed", 0), "formats": sorted(kwargs.get("formats", FORMATS)),
        "write_images": kwargs.get("write_images", True), "max_pairs": kwargs.get("max_pairs", 4),
        "custom_vocab": False,
    }
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == wanted:
                return root
        except json.JSONDecodeError:
            pass
    write_synthetic_hicodet(root, **kwargs)
    return root


def hico_verbs_vocabulary() -> HOIVocabulary:
    """All 117 HICO-DET verbs, each with one of the 80 COCO objects (every object used), "-ing" forms as
    ``list_action.vname_ing`` spells them: what tests need to compare the phrases of the three formats."""
    from ..vocab import COCO_CATEGORIES, HICO_VERBS, verb_ing

    objects = sorted(name for _, name in COCO_CATEGORIES)
    pairs = sorted((objects[k % len(objects)], verb) for k, verb in enumerate(HICO_VERBS))
    return HOIVocabulary.from_action_list([(o, v, verb_ing(v)) for o, v in pairs])


def full_scale_vocabulary(num_classes: int = 600, num_verbs: int = 117) -> HOIVocabulary:
    """A vocabulary with HICO-DET's sizes (600 classes, 117 verbs, the 80 COCO objects) for benchmarks.

    Object names are the real COCO ones; verbs are placeholders ("act_000", "acting_000", ...). Every
    object gets at least one class, as in HICO-DET.
    """
    from ..vocab import COCO_CATEGORIES

    objects = sorted(name for _, name in COCO_CATEGORIES)
    verbs = [f"act_{v:03d}" for v in range(num_verbs)]
    pairs = {(o, v % num_verbs) for o, v in zip(objects, range(len(objects)))}
    rng = np.random.default_rng(600)
    while len(pairs) < num_classes:
        pairs.add((objects[int(rng.integers(len(objects)))], int(rng.integers(num_verbs))))
    entries = [(o, verbs[v], f"acting_{v:03d}") for o, v in sorted(pairs)]
    return HOIVocabulary.from_action_list(entries)
