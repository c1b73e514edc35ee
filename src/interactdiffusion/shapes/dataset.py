"""Writing HOI-Shapes to disk as a real HICO-DET: annotations in the official layouts plus PNG images.

Folder layout (the same as the synthetic HICO-DET of ``data/synthetic.py``, so the same configs and
parsers apply)::

    out/anno_bbox.mat                        official annotations, both splits + list_action
    out/instances_{train,test}2015.json      fredzzhang/hicodet layout
    out/hoi_vocabulary.json                  the vocabulary with training counts (our own json)
    out/images/{train2015,test2015}/HICO_{train,test}2015_XXXXXXXX.png
    out/hoi_shapes.json                      how it was generated (arguments, world) and statistics

PPDM/QPIC json is not written: its layout stores the person as an object category, and no HOI-Shapes
class has "person" as its object, so ``anno_bbox.mat`` / ``instances`` parse to a vocabulary without
it. Images are PNG, not JPEG: compression artefacts at 32×32 would be a texture of their own.

Everything is a pure function of the arguments: scene ``i`` of a split is drawn from its own generator
(seed, split, i), so the bytes do not depend on the number of worker processes.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.folder import SPLIT_DIRS, HICODETFolder
from ..data.records import ImageRecord, PairRecord
from ..data.writers import write_anno_bbox_mat, write_instances_json
from ..vocab import HOIVocabulary
from .layout import SPLIT_KEYS, LayoutSampler, ShapesLayout
from .render import Renderer
from .world import ShapesWorld, WorldConfig

MARKER = "hoi_shapes.json"
FORMAT_VERSION = 1
# scipy stamps the creation time into the .mat header; a fixed text keeps the file a function of the seed.
MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, HOI-Shapes (deterministic header)"


def file_name(split: str, index: int) -> str:
    return f"HICO_{SPLIT_DIRS[split]}_{index + 1:08d}.png"


def layout_record(layout: ShapesLayout, name: str, vocab: HOIVocabulary) -> ImageRecord:
    """The annotation record of a scene: one visible pair per interaction, boxes continuous 0-based."""
    pairs = []
    for action in layout.actions:
        subject, obj = layout.entities[action.subject], layout.entities[action.object]
        v, o = vocab.verb_index(action.verb), vocab.object_index(obj.kind)
        pairs.append(
            PairRecord(
                human_box=tuple(float(x) for x in subject.box),
                object_box=tuple(float(x) for x in obj.box),
                hoi=vocab.hoi_id(v, o),
                verb=v,
                object=o,
            )
        )
    return ImageRecord(name, layout.size, layout.size, pairs)


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _chunks(count: int, workers: int) -> list[tuple[int, int]]:
    size = max(1, min(500, -(-count // max(1, 2 * workers))))
    return [(s, min(count, s + size)) for s in range(0, count, size)]


def _sample_chunk(args) -> list[ShapesLayout]:
    """Scenes ``start..stop`` of a split (runs in a worker process)."""
    config, seed, split, start, stop = args
    sampler = LayoutSampler(ShapesWorld(config), seed, split)
    return [sampler.sample(i) for i in range(start, stop)]


def render_image(renderer: Renderer, layout: ShapesLayout, seed: int, split: str, index: int) -> np.ndarray:
    """The image of scene ``index``; its colour offsets come from their own generator."""
    return renderer.render(layout, np.random.default_rng([seed, 100 + SPLIT_KEYS[split], index]))


def _render_chunk(args) -> int:
    """Draw scenes ``start..`` of a split and write their PNGs (runs in a worker process)."""
    config, seed, split, start, layouts, image_dir = args
    renderer = Renderer(ShapesWorld(config))
    for i, layout in enumerate(layouts, start):
        (Path(image_dir) / file_name(split, i)).write_bytes(
            _png_bytes(render_image(renderer, layout, seed, split, i))
        )
    return len(layouts)


def _write_annotations(root: Path, train: list[ImageRecord], test: list[ImageRecord], vocab: HOIVocabulary) -> None:
    write_anno_bbox_mat(root / "anno_bbox.mat", train, test, vocab)
    normalize_mat_header(root / "anno_bbox.mat")
    write_instances_json(root / "instances_train2015.json", train, vocab)
    write_instances_json(root / "instances_test2015.json", test, vocab)
    vocab.save(root / "hoi_vocabulary.json")


def normalize_mat_header(path: Path) -> None:
    """Overwrite the 116-byte description of a MATLAB 5 file (scipy writes the current time there)."""
    with open(path, "r+b") as fh:
        fh.seek(0)
        fh.write(MAT_HEADER.ljust(116, b" ")[:116])


@dataclass
class ShapesDataset(HICODETFolder):
    """What :func:`write_hoi_shapes` wrote."""

    vocab: HOIVocabulary
    train_records: list[ImageRecord]
    test_records: list[ImageRecord]
    stats: dict


def dataset_stats(vocab: HOIVocabulary, train: list[ImageRecord], test: list[ImageRecord]) -> dict:
    rare = vocab.rare_mask()
    out = {
        "classes": vocab.num_classes,
        "verbs": vocab.num_verbs,
        "objects": vocab.num_objects,
        "rare_classes": int(rare.sum()),
        "non_rare_classes": int((~rare).sum()),
        "rare_class_names": [
            f"{vocab.verbs[c.verb]} {vocab.objects[c.object]}" for c, r in zip(vocab.classes, rare) if r
        ],
    }
    for split, records in (("train", train), ("test", test)):
        counts = np.bincount([p.hoi for r in records for p in r.pairs], minlength=vocab.num_classes)
        out[split] = {
            "images": len(records),
            "pairs": int(counts.sum()),
            "pairs_per_image": dict(sorted(Counter(len(r.pairs) for r in records).items())),
            "pairs_per_class": counts.tolist(),
            "min_pairs_in_a_class": int(counts.min()),
            "rare_pairs": int(counts[rare].sum()),
        }
    return out


def write_hoi_shapes(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_train: int = 6000,
    num_test: int = 1000,
    size: int = 32,
    workers: int = 1,
    config: WorldConfig | None = None,
) -> ShapesDataset:
    """Generate HOI-Shapes into ``out_dir`` (see the module docstring for the layout)."""
    start = time.perf_counter()
    config = config or WorldConfig(size=size)
    if config.size != size:
        config = WorldConfig(**{**asdict(config), "size": size})
    world = ShapesWorld(config)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).unlink(missing_ok=True)  # written last: a folder without it is incomplete
    base_vocab = world.vocabulary()

    counts_by_split = {"train": num_train, "test": num_test}
    # "spawn": the caller may be a training process with threads, which a fork could deadlock
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None
    try:
        # 1. the scenes (layouts only: cheap to send between processes)
        layouts: dict[str, list[ShapesLayout]] = {}
        for split, count in counts_by_split.items():
            jobs = [(config, seed, split, a, b) for a, b in _chunks(count, workers)]
            parts = pool.map(_sample_chunk, jobs) if pool else map(_sample_chunk, jobs)
            layouts[split] = [layout for part in parts for layout in part]
        records = {
            split: [layout_record(lay, file_name(split, i), base_vocab) for i, lay in enumerate(layouts[split])]
            for split in counts_by_split
        }
        counts = np.bincount([p.hoi for r in records["train"] for p in r.pairs], minlength=base_vocab.num_classes)
        vocab = world.vocabulary(train_counts=counts)
        # 2. the annotation files and the images, side by side (the .mat writer is the slowest part)
        render_jobs = []
        for split in counts_by_split:
            image_dir = root / "images" / SPLIT_DIRS[split]
            image_dir.mkdir(parents=True, exist_ok=True)
            render_jobs += [(config, seed, split, a, layouts[split][a:b], str(image_dir))
                            for a, b in _chunks(counts_by_split[split], workers)]
        if pool:
            pending = [pool.submit(_write_annotations, root, records["train"], records["test"], vocab)]
            pending += [pool.submit(_render_chunk, job) for job in render_jobs]
            for future in pending:
                future.result()
        else:
            _write_annotations(root, records["train"], records["test"], vocab)
            for job in render_jobs:
                _render_chunk(job)
    finally:
        if pool:
            pool.shutdown()
    for split, count in counts_by_split.items():  # images of an earlier, larger generation
        for stale in (root / "images" / SPLIT_DIRS[split]).glob(f"HICO_{SPLIT_DIRS[split]}_*.png"):
            if not stale.stem[-8:].isdigit() or int(stale.stem[-8:]) > count:
                stale.unlink()
    out = ShapesDataset(root, vocab, records["train"], records["test"], {})
    out.stats = dataset_stats(vocab, records["train"], records["test"])
    marker = {
        "format_version": FORMAT_VERSION,
        "arguments": generation_arguments(seed, num_train, num_test, size, config),
        "statistics": out.stats,
    }
    (root / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
    out.stats["seconds"] = time.perf_counter() - start
    return out


def generation_arguments(seed: int, num_train: int, num_test: int, size: int, config: WorldConfig | None = None):
    config = config or WorldConfig(size=size)
    return {
        "seed": int(seed),
        "num_train": int(num_train),
        "num_test": int(num_test),
        "size": int(size),
        "world": json.loads(json.dumps(asdict(config))),
    }


def ensure_hoi_shapes(out_dir: str | Path, **kwargs) -> Path:
    """Generate into ``out_dir`` unless the same generation (same arguments and format) is already there."""
    root = Path(out_dir)
    marker = root / MARKER
    wanted = generation_arguments(
        kwargs.get("seed", 0), kwargs.get("num_train", 6000), kwargs.get("num_test", 1000),
        kwargs.get("size", 32), kwargs.get("config"),
    )
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
            if found.get("format_version") == FORMAT_VERSION and found.get("arguments") == wanted:
                return root
        except json.JSONDecodeError:
            pass
    total = kwargs.get("num_train", 6000) + kwargs.get("num_test", 1000)
    # a worker process costs about a second to start: only worth it for a real data set
    kwargs.setdefault("workers", max(1, min(4, os.cpu_count() or 1, total // 1000)))
    write_hoi_shapes(root, **kwargs)
    return root
