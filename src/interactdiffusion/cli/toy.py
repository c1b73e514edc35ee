"""HOI-Shapes on a CPU: pre-train the caption-only backbone, or reproduce the paper's comparison.

    python -m interactdiffusion.cli.toy backbone                # make toy-backbone
    python -m interactdiffusion.cli.toy table --seeds 3         # make reproduce-table-toy SEEDS=3
    python -m interactdiffusion.cli.toy ablations --seeds 2     # make reproduce-ablations-toy SEEDS=2
    python -m interactdiffusion.cli.toy probe ADAPTER           # does the adapter read its boxes?

``table`` trains the GLIGEN and InteractDiffusion adapters (one run per seed) on the committed backbone,
evaluates every row and writes experiments/hoi-shapes/results.md (see ``reproduce.toy``); ``ablations``
adds the four ablations of the interaction module and writes experiments/hoi-shapes/ablations.md
(``reproduce.toy_ablations``; the table's runs in the same ``--out`` are reused). Extra Hydra
overrides go to the training runs with ``--train key=value`` and to the eval rows with ``--eval``.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..atomic import write_json_atomic
from ..reproduce.toy import COMMITTED_BACKBONE, reproduce_toy, train_toy_backbone


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="interactdiffusion-toy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    backbone = sub.add_parser("backbone", help="pre-train the caption-only backbone and copy it to --dest")
    backbone.add_argument("--out", default="logs/toy", help="working folder (runs, logs)")
    backbone.add_argument("--dest", default=str(COMMITTED_BACKBONE), help="where backbone=shapes reads it")
    backbone.add_argument("--threads", type=int, default=None)
    backbone.add_argument("overrides", nargs="*", help="Hydra overrides for the training run")
    table = sub.add_parser("table", help="train the adapters, evaluate every row, write the results table")
    ablations = sub.add_parser("ablations", help="train and evaluate full InteractDiffusion, GLIGEN and the "
                               "four ablations over the same seeds, write the ablation table")
    for name, parser_, results in (("table", table, "results.md"), ("ablations", ablations, "ablations.md")):
        parser_.add_argument("--seeds", type=int, default=1 if name == "table" else 2, help="training seeds 0..N-1")
        parser_.add_argument("--jobs", type=int, default=2, help="subprocesses at a time (the cores are split)")
        parser_.add_argument("--threads", type=int, default=None, help="threads per job (default: cores / jobs)")
        parser_.add_argument("--out", default="logs/toy", help="working folder (runs, eval rows, logs)")
        parser_.add_argument("--results", default=f"experiments/hoi-shapes/{results}")
        parser_.add_argument("--data-dir", default=None, help="paths.data_dir of every job (default: data/)")
        parser_.add_argument("--train", action="append", default=[], metavar="OVERRIDE")
        parser_.add_argument("--eval", action="append", default=[], metavar="OVERRIDE")
    ablations.add_argument("--ablations", default=None, help="comma-separated subset of no_instance_embedding,"
                           "no_role_embedding,no_action_tokens,union_box (default: all four)")
    table.add_argument("--publish-seed", type=int, default=None,
                       help="copy this seed's adapters to experiments/hoi-shapes/adapters/")
    probe = sub.add_parser("probe", help="denoising loss with true, moved, shuffled and null grounding")
    probe.add_argument("adapter", help="an adapter export (.safetensors with its .json)")
    probe.add_argument("--backbone", default=str(COMMITTED_BACKBONE))
    probe.add_argument("--data", default="data/hoi-shapes", help="a HOI-Shapes folder (its test split)")
    probe.add_argument("--num-scenes", type=int, default=96)
    probe.add_argument("--timesteps", default="950,800,600")
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.command == "probe":
        return run_probe(args)
    if args.command == "backbone":
        train_toy_backbone(args.out, args.dest, args.overrides, args.threads)
        return 0
    command = "python -m interactdiffusion.cli.toy " + " ".join(shlex.quote(a) for a in argv)
    if args.command == "ablations":
        from ..reproduce.toy_ablations import reproduce_ablations

        reproduce_ablations(args.out, list(range(args.seeds)), parallel=args.jobs, threads=args.threads,
                            results=args.results, train_overrides=args.train, eval_overrides=args.eval,
                            data_dir=args.data_dir, command=command,
                            ablations=args.ablations.split(",") if args.ablations else None)
        return 0
    reproduce_toy(args.out, list(range(args.seeds)), parallel=args.jobs, threads=args.threads,
                  results=args.results, train_overrides=args.train, eval_overrides=args.eval,
                  data_dir=args.data_dir, command=command, publish_seed=args.publish_seed)
    return 0


def run_probe(args: argparse.Namespace) -> int:

    from ..evaluation.grounding_probe import format_probe
    from ..shapes.probe import probe_adapter

    timesteps = tuple(int(t) for t in args.timesteps.split(","))
    results = probe_adapter(args.adapter, args.backbone, args.data, args.num_scenes, timesteps, args.seed)
    for name, table in results.items():
        print(f"{name.replace('_', ' ')} ({args.num_scenes} test scenes of {args.data}):\n{format_probe(table)}\n")
    if args.json:
        write_json_atomic(args.json, {"adapter": str(args.adapter), **results}, allow_nan=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
