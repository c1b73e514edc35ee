"""``interactdiffusion-data make-shapes``: write HOI-Shapes, and optionally score it with the analytic detector.

    interactdiffusion-data make-shapes --out data/hoi-shapes [--seed 0 --num-train 6000 --num-test 1000
                                       --size 32 --workers 2] [--check]

``--check`` runs the analytic detector on the written test images through the HICO-DET evaluator
(the ceiling any generated image can reach) and prints Default / Known Object Full / Rare / Non-rare.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def _make_shapes(args) -> int:
    from .dataset import write_hoi_shapes

    start = time.perf_counter()
    out = write_hoi_shapes(
        args.out, seed=args.seed, num_train=args.num_train, num_test=args.num_test, size=args.size,
        workers=args.workers,
    )
    seconds = time.perf_counter() - start
    stats = out.stats
    print(f"HOI-Shapes in {out.root} ({args.size}x{args.size}, seed {args.seed}), written in {seconds:.1f} s")
    for split in ("train", "test"):
        s = stats[split]
        per_image = ", ".join(f"{k}: {v}" for k, v in s["pairs_per_image"].items())
        print(f"  {split}: {s['images']:,} images, {s['pairs']:,} pairs (pairs per image {per_image}), "
              f"fewest pairs in a class {s['min_pairs_in_a_class']}")
    print(f"  {stats['classes']} HOI classes ({stats['verbs']} verbs x {stats['objects']} objects), "
          f"{stats['rare_classes']} rare (< 10 training pairs): {', '.join(stats['rare_class_names'])}")
    if args.check:
        from .detector import ShapesDetector, evaluate_detector

        for protocol in ("official", "fgahoi"):
            results = evaluate_detector(out.root, ShapesDetector(out.vocabulary_json), protocol=protocol)
            d, k = results["default"], results["known_object"]
            print(f"  analytic detector, {protocol} protocol: Default {d['full']:.2f} / {d['rare']:.2f} / "
                  f"{d['non_rare']:.2f}, Known Object {k['full']:.2f} / {k['rare']:.2f} / {k['non_rare']:.2f} "
                  f"(Full / Rare / Non-rare), {results['ms_per_image']:.2f} ms per image")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``make-shapes`` to ``interactdiffusion-data``."""
    parser = subparsers.add_parser(
        "make-shapes",
        help="write HOI-Shapes, the synthetic interaction benchmark, in HICO-DET format",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", type=Path, default=Path("data/hoi-shapes"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=6000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (e.g. 32, 48, 64)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes drawing images (the output does not depend on it)")
    parser.add_argument("--check", action="store_true",
                        help="score the test images with the analytic detector (official and fgahoi protocols)")
    parser.set_defaults(func=_make_shapes)
