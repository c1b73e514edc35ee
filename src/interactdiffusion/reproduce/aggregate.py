"""Collect the rows of a paper-table run into one Markdown table and one JSON file.

Each row is a finished ``interactdiffusion-eval`` run whose ``results.json`` follows the eval command's schema;
a row scored by several detectors has one run per detector. Our numbers stand next to the paper's, one table per
(detector, protocol); every mAP column names its detector and protocol, because numbers from different detectors
(QPIC vs the paper's FGAHOI, FGAHOI-Swin-T vs -Swin-L) are not comparable. An FGAHOI-Swin-L table is set beside
the paper's Swin-L columns, every other one beside its Swin-T columns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic, write_text_atomic
from .paper_numbers import PAPER_DETECTOR, PAPER_PROTOCOL, PAPER_TABLE, ROW_ORDER

SPLITS = ("full", "rare", "non_rare")
SETTINGS = ("default", "known_object")


def find_results(root: str | Path) -> list[Path]:
    """Every ``results.json`` below ``root`` (a multirun folder, or one folder per row)."""
    return sorted(Path(root).rglob("results.json"))


def load_rows(paths: Iterable[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        for key in ("row", "map", "detector"):
            if key not in data:
                raise ValueError(f"{path}: missing field {key!r}; is it an interactdiffusion-eval results file?")
        data["_path"] = str(path)
        rows.append(data)
    order = {name: i for i, name in enumerate(ROW_ORDER)}
    rows.sort(key=lambda r: (order.get(r["row"], len(order)), r["row"]))
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _protocols(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for protocol in row["map"]:
            seen.setdefault(protocol, None)
    return list(seen)


def _detectors(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.setdefault(str(row["detector"].get("name", "?")), None)
    return sorted(seen, key=lambda name: (paper_backbone(name) == "swin_l", name))


def paper_backbone(detector: str) -> str:
    """The paper's column group a detector's numbers stand beside: ``swin_l`` for FGAHOI-Swin-L, else ``swin_t``."""
    name = detector.lower()
    return "swin_l" if "fgahoi" in name and ("swin_l" in name or "large" in name) else "swin_t"


def _table(rows: list[dict[str, Any]], detector: str, protocol: str) -> list[str]:
    backbone = paper_backbone(detector)
    paper_name = f"{PAPER_DETECTOR}-{'Swin-L' if backbone == 'swin_l' else 'Swin-T'}"
    lines = [f"## {detector}, `{protocol}` protocol (ours) vs {paper_name}, `{PAPER_PROTOCOL}` (paper)", ""]
    header = ["row", "FID", "KID"]
    for setting in SETTINGS:
        label = "Default" if setting == "default" else "Known Object"
        header += [f"{label} {s.replace('_', '-').title()} ({detector})" for s in SPLITS]
    header += ["paper FID", "paper KID", f"paper Default Full/Rare ({paper_name})",
               f"paper KO Full/Rare ({paper_name})", "images", "wall time", "device"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        result = row["map"].get(protocol)
        cells = [row.get("label") or row["row"], _fmt(row.get("fid")), _fmt(row.get("kid_mean"), 5)]
        for setting in SETTINGS:
            for split in SPLITS:
                cells.append(_fmt(result[setting][split]) if result else "–")
        paper = PAPER_TABLE.get(row["row"])
        if paper:
            numbers, suffix = paper.get(backbone), ""
            if numbers is None:  # published with one backbone only (the XL row: Swin-L)
                other = "swin_l" if backbone == "swin_t" else "swin_t"
                numbers, suffix = paper[other], " (Swin-L)" if other == "swin_l" else " (Swin-T)"
            cells += [_fmt(paper["fid"]), _fmt(paper["kid"], 5)]
            cells += ["/".join(_fmt(v) for v in numbers[s]) + suffix for s in ("default", "known_object")]
        else:
            cells += ["–", "–", "–", "–"]
        wall = row.get("wall_time_s", {}).get("total")
        cells += [str(row.get("num_images", "–")), "–" if wall is None else f"{wall / 60:.1f} min",
                  str(row.get("device", "–"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def render_markdown(rows: list[dict[str, Any]], title: str = "InteractDiffusion paper table", command: str = "") -> str:
    detectors = _detectors(rows)
    protocols = _protocols(rows)
    lines = [f"# {title}", ""]
    if command:
        lines += [f"Produced by `{command}`.", ""]
    if any(not r.get("meaningful", True) for r in rows):
        lines += [
            "**These numbers are meaningless**: at least one row ran on the tiny offline backbone, a random-init",
            "detector or a tiny feature extractor. They only show that the machinery runs end to end.",
            "",
        ]
    lines += [
        f"Our mAP columns are measured with **{', '.join(detectors)}** (one table per detector and protocol); the",
        f"paper's with **{PAPER_DETECTOR}** Swin-T and Swin-L under the `{PAPER_PROTOCOL}` protocol. Numbers from",
        "different detectors are not comparable: compare rows within one detector. The paper published Full and",
        "Rare only (no Non-rare).",
        "",
    ]
    for detector in detectors:
        of_detector = [r for r in rows if str(r["detector"].get("name", "?")) == detector]
        for protocol in protocols:
            lines += _table(of_detector, detector, protocol)
    lines += ["## Rows", ""]
    for row in rows:
        lines.append(
            f"- `{row['row']}`: backbone `{row.get('backbone')}`, weights `{row.get('weights')}`, detector "
            f"`{row['detector'].get('name')}` ({row['detector'].get('weights')}), results `{row['_path']}`"
        )
    return "\n".join(lines) + "\n"


def aggregate(root: str | Path, out_dir: str | Path, title: str = "InteractDiffusion paper table",
              command: str = "") -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.json`` for every row found below ``root``."""
    rows = load_rows(find_results(root))
    if not rows:
        raise FileNotFoundError(f"no results.json below {root}: did the rows run?")
    out_dir = Path(out_dir)
    md = out_dir / "results.md"
    js = out_dir / "results.json"
    write_text_atomic(md, render_markdown(rows, title=title, command=command))
    payload = {
        "command": command,
        "paper": {"detector": PAPER_DETECTOR, "protocol": PAPER_PROTOCOL, "rows": PAPER_TABLE},
        "rows": [{k: v for k, v in r.items() if k != "_path"} | {"results_file": r["_path"]} for r in rows],
    }
    write_json_atomic(js, payload, allow_nan=True)
    return md, js
