"""`make reproduce-table`: the paper's table end to end — check inputs, run every row, aggregate.

    interactdiffusion-reproduce --dry-run                 # what each row needs, what is missing, the commands
    interactdiffusion-reproduce                           # run all rows (one Hydra multirun), then aggregate
    interactdiffusion-reproduce --profile tiny            # the same machinery offline in minutes (meaningless numbers)
    interactdiffusion-reproduce --launcher slurm          # rows as SLURM jobs (configs/launcher/slurm.yaml)

Rows are eval table-row configs (`configs/table/paper/*.yaml`). Every row is scored by each detector of
the profile (paper: FGAHOI-Swin-T and FGAHOI-Swin-L, the paper's two column groups; `--detectors` picks
others, e.g. `qpic`): one eval run per (row, detector) in `<row folder>/<detector>/`, all reading the row's one
set of images (`<row folder>/images`, generated once). Each writes into its own stable folder, so running the
command again resumes row by row and image by image.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..config_path import REPO_ROOT, config_dir
from ..reproduce.aggregate import aggregate
from ..reproduce.paper_numbers import ROW_ORDER
from ..reproduce.prerequisites import collect_inputs, format_report
from ..reproduce.tiny_profile import prepare_tiny_inputs, tiny_row_overrides

PAPER_LAYOUTS = 9546
DEFAULT_ROWS = ["sd14", "gligen", "gligen_star", "interactdiffusion", "real"]
# configs/detector/<name>.yaml per profile: the paper scored every row with both FGAHOI backbones.
PROFILE_DETECTORS = {"paper": ["fgahoi_swin_t", "fgahoi_swin_l"], "tiny": ["fgahoi_random", "random"]}


def compose_row(row: str, overrides: list[str]):
    """The row's eval config exactly as `interactdiffusion-eval table=paper/<row>` would compose it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from ..utils import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"table=paper/{row}", *overrides])
    # Only Hydra's own run-time values are unknown outside a run; the paths a row reads never use them.
    cfg.paths.output_dir = str(REPO_ROOT)
    cfg.paths.work_dir = str(REPO_ROOT)
    return OmegaConf.to_container(cfg, resolve=True)


def count_layouts(annotations: str, limit: int | None) -> int | None:
    """Layouts a row will generate (test images with a visible pair), when the annotations are here."""
    if not Path(annotations).is_file():
        return None
    from ..data.annotations import load_annotations

    records = load_annotations(annotations, split="test").records
    n = sum(1 for r in records if r.has_pairs)
    return min(n, limit) if limit else n


def row_command(row: str, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "interactdiffusion.cli.eval", f"table=paper/{row}", *overrides]


def share_row_images(row_dir: Path, run_dir: Path) -> None:
    """``run_dir/images`` → ``row_dir/images``: every detector's run of a row scores the same images (the eval
    command keeps them in ``<output_dir>/images`` and regenerates only what is missing or was made otherwise)."""
    shared = row_dir / "images"
    link = run_dir / "images"
    shared.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() != shared.resolve():
            raise RuntimeError(f"{link} exists and is not the row's image folder {shared}; move it away")
        return
    link.symlink_to(os.path.relpath(shared, run_dir), target_is_directory=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interactdiffusion-reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["paper", "tiny"], default="paper")
    parser.add_argument("--rows", default=None, help=f"comma-separated rows (default: {','.join(DEFAULT_ROWS)})")
    parser.add_argument("--dry-run", action="store_true", help="print the check, the commands and the estimate; stop")
    parser.add_argument("--launcher", choices=["local", "slurm"], default="local")
    parser.add_argument("--detectors", default=None,
                        help="comma-separated configs/detector names scoring every row (default: the profile's, "
                        f"paper {','.join(PROFILE_DETECTORS['paper'])})")
    parser.add_argument("--out", default=None, help="where results.md/.json go (default experiments/paper-table)")
    parser.add_argument("--weights", action="append", default=[], metavar="ROW=PATH",
                        help="weights for a row, e.g. interactdiffusion_ours=/runs/x/export/adapter.safetensors "
                        "(adds that row when it is not chosen yet)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every row (e.g. paths.data_dir=...)")
    args = parser.parse_args(argv)

    rows = args.rows.split(",") if args.rows else list(DEFAULT_ROWS)
    unknown = [r for r in rows if r not in ROW_ORDER]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {ROW_ORDER}")
    row_weights = {}
    for item in args.weights:
        row, sep, path = item.partition("=")
        if not sep or row not in ROW_ORDER:
            parser.error(f"--weights expects ROW=PATH with ROW one of {ROW_ORDER}, got {item!r}")
        row_weights[row] = path
        if row not in rows:
            rows.append(row)
    overrides = list(args.overrides)
    tiny = args.profile == "tiny"
    if tiny:
        work = Path(os.environ.get("INTERACTDIFFUSION_TINY_DIR", REPO_ROOT / "logs" / "reproduce-tiny"))
        if not args.dry_run:
            prepare_tiny_inputs(work, rows)
        overrides = [*overrides, *tiny_row_overrides(work)]
    out_dir = Path(args.out) if args.out else (work / "table" if tiny else REPO_ROOT / "experiments" / "paper-table")

    detectors = args.detectors.split(",") if args.detectors else PROFILE_DETECTORS[args.profile]
    runs: dict[tuple[str, str], tuple[dict, list[str]]] = {}
    image_folders: dict[str, Path] = {}
    for row in rows:
        row_overrides = overrides + (tiny_row_overrides(work, row) if tiny else [])
        if row in row_weights:
            row_overrides.append(f"weights={row_weights[row]}")
        # absolute: the eval runs in REPO_ROOT, this command may not
        row_dir = image_folders[row] = REPO_ROOT / Path(compose_row(row, row_overrides)["output_dir"]).expanduser()
        for detector in detectors:
            run_overrides = [*row_overrides, f"detector={detector}", f"output_dir={row_dir / detector}"]
            runs[(row, detector)] = (compose_row(row, run_overrides), run_overrides)
    inputs = collect_inputs([(row, cfg) for (row, _), (cfg, _) in runs.items()])
    print(format_report(inputs))
    print()
    print(f"Commands, one per row and detector ({', '.join(detectors)}; each resumes where it stopped):")
    total = 0
    for (row, detector), (cfg, run_overrides) in runs.items():
        print("  " + shlex.join(row_command(row, run_overrides)))
        if detector == detectors[0] and not cfg.get("eval", {}).get("real_images"):
            n = count_layouts(cfg["data"]["annotations"], cfg["eval"].get("limit"))
            total += n if n is not None else (min(PAPER_LAYOUTS, cfg["eval"]["limit"]) if cfg["eval"].get("limit")
                                               else PAPER_LAYOUTS)
    print(f"\nImages to generate: about {total:,} ({len([r for r in rows if r != 'real'])} generating rows; "
          f"each row's images are generated once and scored by {len(detectors)} detector(s)).")
    if args.dry_run:
        return 0
    missing = [i for i in inputs if not i.present]
    if missing:
        print(f"\n{len(missing)} inputs are missing: put them where the check says, then run again.", file=sys.stderr)
        return 1

    started = time.time()
    failures = []
    for (row, detector), (cfg, run_overrides) in runs.items():
        share_row_images(image_folders[row], Path(cfg["output_dir"]))
        command = row_command(row, run_overrides)
        if args.launcher == "slurm":
            command = [*command[:3], "-m", *command[3:], "+launcher=slurm_eval"]
        print(f"\n== row {row}, detector {detector}: {shlex.join(command)}", flush=True)
        if subprocess.run(command, cwd=REPO_ROOT).returncode != 0:
            failures.append(f"{row}/{detector}")
    if failures:
        print(f"rows failed: {failures}; fix and run again (finished rows are kept)", file=sys.stderr)
        return 1
    roots = {Path(cfg["output_dir"]) for cfg, _ in runs.values()}
    results_root = os.path.commonpath([str(r) for r in roots])
    command = "make reproduce-table" + (" PROFILE=tiny" if tiny else "")
    md, js = aggregate(results_root, out_dir, command=command,
                       title="InteractDiffusion paper table" + (" (tiny profile)" if tiny else ""))
    rows_json = json.loads(js.read_text())["rows"]
    print(f"\n{len(rows_json)} rows in {time.time() - started:.0f} s -> {md}, {js}")
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
