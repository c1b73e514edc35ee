"""HOI mAP evaluator at the full HICO-DET test scale, on synthetic data.

9,658 images, ~33k GT pairs over 600 classes, 100 detections per image (jittered copies of the GT —
true positives, duplicates for NMS, near misses — plus random ones). Prints the time of each protocol
(ground-truth preparation and evaluation separately), of the JSONL round trip, and a worst case for
fgahoi's triplet NMS (every image's 100 detections in one class, all overlapping).

    python benchmarks/hoi_eval.py [--images 9658] [--per-image 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from interactdiffusion.data.records import ImageRecord, PairRecord
from interactdiffusion.evaluation.detections_io import read_detections_jsonl, write_detection_arrays
from interactdiffusion.evaluation.hoi_map import DetectionArrays, HOIEvaluator
from interactdiffusion.vocab import COCO_CATEGORIES, HOIVocabulary

NUM_CLASSES, NUM_VERBS, NUM_RARE = 600, 117, 138


def synthetic_vocabulary(rng: np.random.Generator) -> HOIVocabulary:
    """600 (verb, object) classes over 117 verbs and the 80 COCO objects; 138 rare."""
    objects = [name for _, name in COCO_CATEGORIES]
    verbs = [f"verb{v:03d}" for v in range(NUM_VERBS)]
    pairs: set[tuple[int, int]] = {(o % NUM_VERBS, o) for o in range(len(objects))}  # every object used
    while len(pairs) < NUM_CLASSES:
        pairs.add((int(rng.integers(NUM_VERBS)), int(rng.integers(len(objects)))))
    entries = [(objects[o], verbs[v], verbs[v] + "ing") for v, o in sorted(pairs, key=lambda p: (p[1], p[0]))]
    counts = rng.integers(10, 2000, NUM_CLASSES)
    counts[rng.choice(NUM_CLASSES, NUM_RARE, replace=False)] = rng.integers(0, 10, NUM_RARE)
    return HOIVocabulary.from_action_list(entries, train_counts=counts)


def _random_boxes(rng, n, width, height):
    x1 = rng.uniform(0, width * 0.7, n)
    y1 = rng.uniform(0, height * 0.7, n)
    w = rng.uniform(20, width * 0.3, n)
    h = rng.uniform(20, height * 0.3, n)
    return np.stack([x1, y1, np.minimum(x1 + w, width), np.minimum(y1 + h, height)], axis=1)


def synthetic_ground_truth(rng, vocab: HOIVocabulary, num_images: int) -> list[ImageRecord]:
    """Integer 1-based boxes converted like the parsers do; ~3.46 pairs per image, ~1% empty images."""
    records = []
    for k in range(num_images):
        width, height = int(rng.integers(400, 641)), int(rng.integers(300, 481))
        n = 0 if rng.random() < 0.012 else 1 + int(rng.poisson(2.5))
        human = np.floor(_random_boxes(rng, n, width, height))
        obj = np.floor(_random_boxes(rng, n, width, height))
        hois = rng.integers(0, vocab.num_classes, n)
        pairs = []
        for i in range(n):
            c = vocab.classes[int(hois[i])]
            pairs.append(PairRecord(tuple(human[i].tolist()), tuple(obj[i].tolist()), int(hois[i]), c.verb, c.object))
        records.append(ImageRecord(f"HICO_test2015_{k + 1:08d}.jpg", width, height, pairs))
    return records


def synthetic_detections(rng, records: list[ImageRecord], vocab: HOIVocabulary, per_image: int) -> DetectionArrays:
    """60% jittered GT copies (right class or a class of the same object), 40% random."""
    same_object = {}
    for h, c in enumerate(vocab.classes):
        same_object.setdefault(c.object, []).append(h)
    image, hoi, human, obj = [], [], [], []
    for k, record in enumerate(records):
        n_gt = len(record.pairs)
        n_copy = int(per_image * 0.6) if n_gt else 0
        src = rng.integers(0, max(n_gt, 1), n_copy)
        jitter = rng.normal(0, 8, (n_copy, 2, 4))
        hb = np.array([record.pairs[s].human_box for s in src]).reshape(-1, 4) + jitter[:, 0]
        ob = np.array([record.pairs[s].object_box for s in src]).reshape(-1, 4) + jitter[:, 1]
        cls = np.array([record.pairs[s].hoi for s in src], dtype=np.int64)
        swap = rng.random(n_copy) < 0.3
        for i in np.flatnonzero(swap):
            options = same_object[vocab.classes[cls[i]].object]
            cls[i] = options[int(rng.integers(len(options)))]
        n_rand = per_image - n_copy
        image.append(np.full(per_image, k))
        hoi.append(np.concatenate([cls, rng.integers(0, vocab.num_classes, n_rand)]))
        human.append(np.concatenate([hb, _random_boxes(rng, n_rand, record.width, record.height)]))
        obj.append(np.concatenate([ob, _random_boxes(rng, n_rand, record.width, record.height)]))
    n = len(records) * per_image
    return DetectionArrays(
        np.concatenate(image),
        np.concatenate(hoi),
        np.sort(np.concatenate(human).reshape(n, 2, 2), axis=1).reshape(n, 4),
        np.sort(np.concatenate(obj).reshape(n, 2, 2), axis=1).reshape(n, 4),
        rng.random(n),
    )


def worst_case_nms(rng, records: list[ImageRecord], per_image: int) -> DetectionArrays:
    """Every image's detections in a single class, all overlapping: the most NMS pairs possible."""
    n = len(records) * per_image
    base = np.array([[100.0, 100.0, 300.0, 300.0]])
    boxes = base + rng.normal(0, 3, (n, 4))
    return DetectionArrays(
        np.repeat(np.arange(len(records)), per_image), np.zeros(n, dtype=np.int64), boxes, boxes + 10.0, rng.random(n)
    )


class Clock:
    """Wall and CPU seconds of one call (CPU time shows the cost when the machine is shared)."""

    def __init__(self, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        self.out = fn()
        self.wall, self.cpu = time.perf_counter() - wall, time.process_time() - cpu

    def __str__(self) -> str:
        return f"{self.wall:6.2f} s (cpu {self.cpu:5.2f})"


def timed(fn):
    clock = Clock(fn)
    return clock.out, clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=9658)
    parser.add_argument("--per-image", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-io", action="store_true", help="skip the JSONL round trip")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    vocab = synthetic_vocabulary(rng)
    records = synthetic_ground_truth(rng, vocab, args.images)
    det = synthetic_detections(rng, records, vocab, args.per_image)
    num_pairs = sum(len(r.pairs) for r in records)
    print(f"{args.images} images, {num_pairs} GT pairs, {len(det)} detections, {vocab.num_classes} classes; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    for protocol in ("official", "fgahoi"):
        evaluator, prep = timed(lambda p=protocol: HOIEvaluator(records, vocab, p))
        results, run = timed(lambda e=evaluator: e.evaluate(det))
        d = results["default"]
        print(
            f"{protocol:9s} prepare {prep}   evaluate {run}   "
            f"(Default full {d['full']:.2f} rare {d['rare']:.2f} non-rare {d['non_rare']:.2f}; "
            f"{results['num_detections_evaluated']} scored)"
        )

    worst = worst_case_nms(rng, records, args.per_image)
    evaluator = HOIEvaluator(records, vocab, "fgahoi")
    _, run = timed(lambda: evaluator.evaluate(worst))
    print(f"fgahoi    worst-case NMS ({args.per_image} overlapping detections of one class per image): {run}")

    if not args.skip_io:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "detections.jsonl"
            names = [r.file_name for r in records]
            _, write = timed(lambda: write_detection_arrays(path, det, names))
            table, read = timed(lambda: read_detections_jsonl(path, vocab))
            again, convert = timed(lambda: table.to_arrays(names))
            assert np.array_equal(again.scores, det.scores) and np.array_equal(again.human_boxes, det.human_boxes)
            print(f"JSONL     write {write}   read+validate {read}   match names {convert}")


if __name__ == "__main__":
    main()
