"""``interactdiffusion-hoi-eval``: HICO-DET HOI detection mAP of any detector's output.

    interactdiffusion-hoi-eval --gt anno_bbox.mat --detections dets.jsonl --protocol official \\
        --out results.json [--anno-mat anno.mat]
    interactdiffusion-hoi-eval --gt layouts.jsonl --vocabulary anno_bbox.mat --gt-size 512 512 \\
        --detections dets.jsonl --protocol fgahoi --out results.json

``--gt``: ``anno_bbox.mat`` (test split), ``test_hico.json``, ``instances_test2015.json`` or our layouts
JSONL (``interactdiffusion-data export-layouts``; its class list comes from ``--vocabulary``).
``--detections``: JSONL, one detection per line, continuous 0-based pixels of the GT images (see
``evaluation/detections_io.py``); with ``--gt-size`` the GT is first rescaled to generated ``W×H``
images as the paper did (boxes × W'/W, H'/H, truncated to int). Writes the full results (per-class AP
included) to ``--out`` and prints the six paper numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .. import atomic

PROTOCOL_HELP = (
    "official: ho-rcnn MATLAB semantics (+1 pixel IoU, best GT incl. matched, >= 0.5, no top-k/NMS); "
    "fgahoi: the evaluator behind the paper's table (top-100 per image, triplet NMS 0.5, first free GT, > 0.5)"
)


def build_parser() -> argparse.ArgumentParser:
    from ..evaluation.detections_io import SCHEMA_HELP

    parser = argparse.ArgumentParser(
        prog="interactdiffusion-hoi-eval",
        description="HICO-DET HOI detection mAP (Default / Known Object, Full / Rare / Non-rare).",
        epilog=SCHEMA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gt", required=True, type=Path,
                        help="anno_bbox.mat, test_hico.json, instances_test2015.json or a layouts .jsonl")
    parser.add_argument("--detections", required=True, type=Path, help="detections JSONL, one per line")
    parser.add_argument("--protocol", required=True, choices=("official", "fgahoi"), help=PROTOCOL_HELP)
    parser.add_argument("--out", required=True, type=Path, help="results json to write")
    parser.add_argument("--anno-mat", type=Path, default=None,
                        help="HICO-DET anno.mat: Known Object images from its anno_test labels (official protocol)")
    parser.add_argument("--obj-cat-json", type=Path, default=None,
                        help="GGNet file_name_to_obj_cat.json: Known Object images from that file instead")
    parser.add_argument("--vocabulary", type=Path, default=None,
                        help="class list (anno_bbox.mat, an instances json or a vocabulary json): required for "
                             "layouts and for a test_hico.json without one next to it")
    parser.add_argument("--split", choices=("train", "test"), default="test", help="split of --gt (default test)")
    parser.add_argument("--gt-size", type=int, nargs=2, metavar=("W", "H"), default=None,
                        help="detections are on generated W×H images: rescale the GT to that size first")
    parser.add_argument("--ignore-unknown-images", action="store_true",
                        help="drop detections of images that are not in the GT instead of failing")
    parser.add_argument("--max-per-image", type=int, default=100, help="fgahoi: detections kept per image")
    parser.add_argument("--nms-threshold", type=float, default=0.5, help="fgahoi: triplet NMS threshold")
    parser.add_argument("--per-class", action="store_true", help="also print AP and recall per class")
    parser.add_argument("--cache-dir", type=Path, default=None, help="annotation cache (default ~/.cache/interactdiffusion)")
    parser.add_argument("--no-cache", action="store_true", help="parse --gt without reading or writing the cache")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


class CommandError(Exception):
    """A problem with the command's inputs, reported as ``error: ...`` with exit status 2."""


def records_from_layouts(path: Path):
    """GT records from a layouts JSONL: each scene's ``extra`` holds ``file_name``,
    ``original_width``/``original_height`` and ``gt_pairs`` (continuous 0-based pixels, hoi/verb/object)."""
    from ..data.records import ImageRecord, PairRecord

    records = []
    with path.open(encoding="utf-8") as fh:
        for line_no, text in enumerate(fh, 1):
            if not text.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                scene = json.loads(text)
            except json.JSONDecodeError as err:
                raise CommandError(f"{where}: not valid JSON ({err.msg})") from None
            missing = [k for k in ("file_name", "original_width", "original_height", "gt_pairs") if k not in scene]
            if missing:
                raise CommandError(
                    f"{where}: field {missing[0]!r} is missing (a layouts file from "
                    "`interactdiffusion-data export-layouts` carries the GT pairs)"
                )
            try:
                pairs = [
                    PairRecord(tuple(float(v) for v in p["human_box"]), tuple(float(v) for v in p["object_box"]),
                               int(p["hoi"]), int(p["verb"]), int(p["object"]))
                    for p in scene["gt_pairs"]
                ]
            except (KeyError, TypeError, ValueError) as err:
                raise CommandError(f"{where}: field 'gt_pairs': malformed pair ({err!r})") from None
            records.append(
                ImageRecord(str(scene["file_name"]), int(scene["original_width"]), int(scene["original_height"]), pairs)
            )
    return records


def load_ground_truth(args):
    """(records, vocabulary, description) for ``--gt``."""
    from ..data.annotations import load_annotations, load_vocabulary

    cache = False if args.no_cache else args.cache_dir
    if args.gt.suffix.lower() == ".jsonl":
        if not args.gt.is_file():
            raise FileNotFoundError(f"layouts file not found: {args.gt}")
        if args.vocabulary is None:
            raise CommandError(f"{args.gt}: a layouts file has no class list; pass --vocabulary")
        vocab = load_vocabulary(args.vocabulary, cache_dir=cache)
        records = records_from_layouts(args.gt)
        for record in records:
            for pair in record.pairs:
                if not 0 <= pair.hoi < vocab.num_classes:
                    raise CommandError(f"{args.gt}: {record.file_name} has hoi {pair.hoi}, "
                                       f"but --vocabulary has {vocab.num_classes} classes")
        return records, vocab, f"{args.gt} [layouts]"
    annotations = load_annotations(args.gt, args.split, args.vocabulary, cache_dir=cache)
    return annotations.records, annotations.vocab, annotations.summary()


def known_object_mask(args, records, vocab):
    from ..evaluation.hoi_map import known_object_from_anno_mat, known_object_from_obj_cat_json

    names = [r.file_name for r in records]
    if args.obj_cat_json is not None:
        return known_object_from_obj_cat_json(args.obj_cat_json, names, vocab), "obj_cat_json"
    if args.anno_mat is not None:
        if args.protocol != "official":
            print("note: --anno-mat is the official protocol's Known Object source; fgahoi uses the GT objects",
                  file=sys.stderr)
            return None, None
        return known_object_from_anno_mat(args.anno_mat, names, vocab), "anno_mat"
    return None, None


def write_json_atomic(path: Path, data) -> None:
    atomic.write_json_atomic(path, data, indent=1)


def run(args) -> int:
    from ..evaluation.detections_io import read_detections_jsonl
    from ..evaluation.hoi_map import HOIEvaluator, format_results_table, rescale_ground_truth

    start = time.perf_counter()
    records, vocab, description = load_ground_truth(args)
    if args.gt_size is not None:
        records = rescale_ground_truth(records, tuple(args.gt_size))
    mask, source = known_object_mask(args, records, vocab)
    evaluator = HOIEvaluator(
        records,
        vocab,
        args.protocol,
        known_object=mask,
        known_object_source=source,
        max_per_image=args.max_per_image,
        nms_threshold=args.nms_threshold,
    )
    if evaluator.rare_mask is None:
        print("warning: the vocabulary has no training counts, so Rare / Non-rare are not reported "
              "(pass --vocabulary anno_bbox.mat or a vocabulary json with train_counts)", file=sys.stderr)
    table = read_detections_jsonl(args.detections, vocab)
    detections = table.to_arrays(evaluator.file_names, ignore_unknown=args.ignore_unknown_images)
    if len(detections) == 0:
        print(f"warning: {args.detections} has no detection of a GT image: every mAP is 0", file=sys.stderr)
    results = evaluator.evaluate(detections)
    results.update(
        gt=str(args.gt),
        detections_file=str(args.detections),
        gt_size=list(args.gt_size) if args.gt_size else None,
        num_invalid_pairs_dropped=table.num_invalid_pairs,
        unknown_images=table.unknown_images,
        wall_time_s=time.perf_counter() - start,
    )
    write_json_atomic(args.out, results)

    print(description)
    if table.num_invalid_pairs:
        print(f"{table.num_invalid_pairs} detections with a verb-object pair outside the class list were dropped")
    if table.unknown_images:
        print(f"{len(table.unknown_images)} detected images are not in the GT and were ignored")
    print(format_results_table(results))
    if args.per_class:
        print(f"{'hoi':>4}  {'class':32}{'AP':>8}{'recall':>8}{'#gt':>6}{'#det':>7}")
        for row in results["per_class"]:
            ap = "–" if row["ap"] is None else f"{row['ap']:.2f}"
            rec = "–" if row["recall"] is None else f"{row['recall']:.2f}"
            print(f"{row['hoi']:>4}  {row['name'][:31]:32}{ap:>8}{rec:>8}{row['num_gt']:>6}{row['num_det']:>7}")
    print(f"results -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from ..data.formats.common import AnnotationError

    try:
        return run(args)
    except (CommandError, AnnotationError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
