"""``interactdiffusion-data``: look at, export and synthesise HICO-DET annotations.

    interactdiffusion-data stats --annotations PATH [--split test] [--vocabulary PATH] [--json]
    interactdiffusion-data export-layouts --annotations PATH --split test --out layouts.jsonl
    interactdiffusion-data make-synthetic --out DIR [--num-train 48 --num-test 16 --seed 0]
    interactdiffusion-data make-shapes ...      (HOI-Shapes, when that module is installed)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _add_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, type=Path,
                        help="anno_bbox.mat, trainval_hico.json/test_hico.json or instances_{train,test}2015.json")
    parser.add_argument("--split", choices=("train", "test"), default=None,
                        help="which split (default: train for anno_bbox.mat, else from the file name)")
    parser.add_argument("--vocabulary", type=Path, default=None,
                        help="class names for a PPDM/QPIC json: anno_bbox.mat, an instances json or a vocabulary json")
    parser.add_argument("--image-dir", type=Path, default=None, help="images, for sizes a PPDM/QPIC json lacks")
    parser.add_argument("--cache-dir", type=Path, default=None, help="annotation cache (default ~/.cache/interactdiffusion)")
    parser.add_argument("--no-cache", action="store_true", help="parse without reading or writing the cache")


def _load(args):
    from ..data.annotations import load_annotations

    return load_annotations(args.annotations, args.split, args.vocabulary, image_dir=args.image_dir,
                            cache_dir=False if args.no_cache else args.cache_dir)


def _stats(args) -> int:
    annotations = _load(args)
    stats = annotations.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{stats['source']}  [{stats['format']}, {stats['split']}]")
    print(f"images {stats['images']:,} / non-empty images {stats['non_empty_images']:,} / pairs {stats['pairs']:,}")
    print(f"classes present {stats['classes_present']} of {stats['classes']} ({stats['verbs']} verbs, "
          f"{stats['objects']} objects)")
    if "rare_classes" in stats:
        print(f"rare classes {stats['rare_classes']} ({stats['rare_pairs']:,} pairs), non-rare "
              f"{stats['non_rare_classes']} ({stats['non_rare_pairs']:,} pairs)")
    print("pairs per image: " + ", ".join(f"{k}: {v:,}" for k, v in stats["pairs_per_image"].items()))
    if stats["skipped"]:
        print("skipped/repaired: " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats["skipped"].items())))
    return 0


def _export_layouts(args) -> int:
    from ..data.layouts import layout_scenes
    from ..scene import write_scenes_jsonl

    annotations = _load(args)
    count = write_scenes_jsonl(layout_scenes(annotations.records, annotations.vocab, args.resolution), args.out)
    print(f"wrote {count:,} layouts ({len(annotations.records) - count:,} images without visible pairs left out) "
          f"to {args.out}")
    if annotations.skipped:
        print("skipped/repaired while parsing: " + ", ".join(f"{k} {v:,}" for k, v in sorted(annotations.skipped.items())))
    return 0


def _make_synthetic(args) -> int:
    from ..data.synthetic import write_synthetic_hicodet

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())) and not args.overwrite:
        print(f"error: --out {args.out} is not empty (it may hold a real anno_bbox.mat or images); "
              "pick an empty folder, or pass --overwrite to replace the synthetic files in it", file=sys.stderr)
        return 2
    out = write_synthetic_hicodet(args.out, num_train=args.num_train, num_test=args.num_test, seed=args.seed)
    print(f"synthetic HICO-DET in {out.root}: {len(out.train_records)} train / {len(out.test_records)} test images, "
          f"{out.vocab.num_classes} classes ({int(out.vocab.rare_mask().sum())} rare)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interactdiffusion-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    subparsers = parser.add_subparsers(dest="command", required=True)

    stats = subparsers.add_parser("stats", help="counts of images, pairs, classes, rare split")
    _add_source(stats)
    stats.add_argument("--json", action="store_true", help="print the statistics as json")
    stats.set_defaults(func=_stats)

    export = subparsers.add_parser("export-layouts", help="one Scene per image with a visible pair, as JSONL")
    _add_source(export)
    export.add_argument("--out", required=True, type=Path)
    export.add_argument("--resolution", type=int, default=512, help="the pixel grid the scenes are generated at")
    export.set_defaults(func=_export_layouts)

    synthetic = subparsers.add_parser("make-synthetic", help="write a small synthetic HICO-DET (all three formats)")
    synthetic.add_argument("--out", required=True, type=Path)
    synthetic.add_argument("--num-train", type=int, default=48)
    synthetic.add_argument("--num-test", type=int, default=16)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    synthetic.set_defaults(func=_make_synthetic)

    try:
        from ..shapes import cli as shapes_cli
    except ImportError:
        shapes_cli = None
    if shapes_cli is not None:
        shapes_cli.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from ..data.formats.common import AnnotationError

    try:
        return int(args.func(args) or 0)
    except (AnnotationError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
