"""What an evaluation row reports: ``results.json`` (a fixed schema), a Markdown table, logger metrics.

``results.json`` of one row (the paper-table aggregation reads exactly these keys)::

    {"row", "label", "backbone", "weights", "detector": {"name", "weights"}, "metrics_extractor",
     "num_layouts", "num_images", "resolution", "fid", "kid_mean", "kid_std",
     "map": {"<protocol>": {"default": {"full", "rare", "non_rare"}, "known_object": {...}}},
     "wall_time_s": {"generate", "detect", "metrics", "total"}, "device", "settings", "meaningful"}

mAP values are percentages; a value that cannot be computed (FID of the real-images row, a Rare mean
without rare classes) is ``null``. ``meaningful`` is false when any part is a stand-in (the tiny
backbone, a random detector, the tiny feature extractor): such numbers only prove the plumbing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .. import atomic

RESULTS_KEYS = (
    "row", "label", "backbone", "weights", "detector", "metrics_extractor", "num_layouts", "num_images",
    "resolution", "fid", "kid_mean", "kid_std", "map", "wall_time_s", "device", "settings", "meaningful",
)
SETTINGS = ("default", "known_object")
SPLITS = ("full", "rare", "non_rare")
WALL_TIME_KEYS = ("generate", "detect", "metrics", "total")
PAPER_DETECTOR = "FGAHOI"

COLUMNS = (
    ("FID", None, None),
    ("KID", None, None),
    ("Default Full", "default", "full"),
    ("Default Rare", "default", "rare"),
    ("Default Non-rare", "default", "non_rare"),
    ("Known Object Full", "known_object", "full"),
    ("Known Object Rare", "known_object", "rare"),
    ("Known Object Non-rare", "known_object", "non_rare"),
)


def finite_or_none(value: Any) -> float | None:
    """A float for JSON, or None for missing / NaN / infinite values (strict JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def map_summary(evaluation: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """The six numbers of one protocol's evaluator output (``HOIEvaluator.evaluate``)."""
    return {s: {k: finite_or_none(evaluation[s][k]) for k in SPLITS} for s in SETTINGS}


def check_results(results: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming what a results dict lacks (or has extra) against the schema."""
    missing = [k for k in RESULTS_KEYS if k not in results]
    extra = [k for k in results if k not in RESULTS_KEYS]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if extra:
        problems.append(f"unexpected keys {extra}")
    if not missing:
        if set(results["detector"]) != {"name", "weights"}:
            problems.append(f"detector must have exactly name and weights, got {sorted(results['detector'])}")
        if set(results["wall_time_s"]) != set(WALL_TIME_KEYS):
            problems.append(f"wall_time_s must have {list(WALL_TIME_KEYS)}, got {sorted(results['wall_time_s'])}")
        for protocol, values in results["map"].items():
            for setting in SETTINGS:
                if set(values.get(setting, {})) != set(SPLITS):
                    problems.append(f"map.{protocol}.{setting} must have {list(SPLITS)}")
    if problems:
        raise ValueError("results do not follow the schema: " + "; ".join(problems))


write_json_atomic = atomic.write_json_atomic
write_text_atomic = atomic.write_text_atomic


def _cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """One Markdown row per protocol of one results dict."""
    detector = results["detector"]["name"]
    rows = []
    for protocol, values in results["map"].items():
        cells = [str(results.get("label") or results["row"]), detector, protocol,
                 _cell(results.get("fid"), 2), _cell(results.get("kid_mean"), 5)]
        cells += [_cell(values[setting][split], 2) for _, setting, split in COLUMNS[2:]]
        rows.append(cells)
    return rows


def results_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The paper's columns (FID, KID, Default and Known Object Full / Rare / Non-rare), one line per row
    and protocol, with the detector named on every line."""
    header = ["Model", "Detector", "Protocol", *(name for name, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for item in results:
        lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(item)]
    return "\n".join(lines)


def known_object_warnings(evaluations: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A warning for every protocol whose Known Object setting fell back to the GT objects although the
    protocol defines it by ``anno.mat``'s image-level labels (the official one, REFERENCE §5)."""
    out = []
    for protocol, evaluation in evaluations.items():
        source = (evaluation.get("settings") or {}).get("known_object_source")
        if protocol == "official" and source == "gt_objects":
            out.append("**Warning**: Known Object (`official`) used the objects of each image's GT, not HICO-DET's "
                       "image-level labels: `data.anno_mat` (anno.mat) was not given, so these Known Object numbers "
                       "are not the official protocol's.")
    return out


def results_markdown(results: Mapping[str, Any], warnings: Sequence[str] = ()) -> str:
    """``results.md`` of one row: the table and what it was measured with (``warnings`` first)."""
    settings = results.get("settings", {})
    wall = results["wall_time_s"]
    detector = results["detector"]
    lines = [f"# {results.get('label') or results['row']} (row `{results['row']}`)", ""]
    for warning in warnings:
        lines += [f"> {warning}", ""]
    if not results.get("meaningful", True):
        lines += [
            "> **These numbers are meaningless**: a stand-in was used (tiny backbone, random detector or tiny "
            "feature extractor). They only show that the evaluation runs end to end.",
            "",
        ]
    lines += [results_table([results]), ""]
    lines += [
        f"- mAP in %, scored by **{detector['name']}** (weights: `{detector['weights'] or 'none'}`). Numbers from different "
        f"detectors are not comparable: the paper's table was scored by {PAPER_DETECTOR}.",
        "- Protocols: `official` = HICO-DET MATLAB evaluation; `fgahoi` = the FGAHOI/GGNet evaluator that "
        "produced the paper's table (top-100, triplet NMS).",
        f"- FID / KID with `{results.get('metrics_extractor')}` against the real test images resized to "
        f"{results['resolution']}²" + (" (not computed for the real-images row)." if settings.get("real_images") else "."),
        f"- {results['num_images']} images for {results['num_layouts']} test layouts at {results['resolution']}²; "
        f"backbone `{results['backbone']}`, weights `{results['weights'] or 'none (the backbone as it is)'}`.",
        f"- Wall time: generate {wall['generate']:.1f} s, detect {wall['detect']:.1f} s, metrics "
        f"{wall['metrics']:.1f} s, total {wall['total']:.1f} s on {results['device']}.",
    ]
    keys = ("steps", "guidance_scale", "beta", "seed", "scheduler", "precision", "limit", "image_format",
            "jpeg_quality", "quantize")
    shown = ", ".join(f"{k}={settings[k]}" for k in keys if k in settings)
    if shown:
        lines.append(f"- Settings: {shown}.")
    return "\n".join(lines) + "\n"


def logger_metrics(results: Mapping[str, Any], prefix: str = "eval") -> dict[str, float]:
    """Flat numbers for Lightning loggers: ``eval/fid``, ``eval/<protocol>/map_default_full``, ..."""
    out: dict[str, float] = {}
    for key in ("fid", "kid_mean", "kid_std"):
        if results.get(key) is not None:
            out[f"{prefix}/{key}"] = float(results[key])
    for protocol, values in results["map"].items():
        for setting in SETTINGS:
            for split in SPLITS:
                value = values[setting][split]
                if value is not None:
                    out[f"{prefix}/{protocol}/map_{setting}_{split}"] = float(value)
    out[f"{prefix}/num_images"] = float(results["num_images"])
    for key, value in results["wall_time_s"].items():
        out[f"{prefix}/wall_time_s/{key}"] = float(value)
    return out
