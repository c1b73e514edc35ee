"""``interactdiffusion-dashboard project=... entity=...``: save the project's wandb workspace.

    interactdiffusion-dashboard project=interactdiffusion entity=my-team [name="InteractDiffusion"]
    interactdiffusion-dashboard project=interactdiffusion entity=my-team --print   # the layout, nothing sent

The layout is ``dashboards.workspace.build_workspace``. Saving needs a logged-in wandb (``wandb login``
or ``WANDB_API_KEY``) and the network; without them the command says so and exits with code 2.
"""

from __future__ import annotations

import os
import sys

EXIT_BAD_INPUT = 2
KEYS = ("project", "entity", "name")


def parse_arguments(argv: list[str]) -> tuple[dict[str, str], bool]:
    """``key=value`` arguments (Hydra-style, as the other commands take them) and ``--print``."""
    values: dict[str, str] = {}
    show = False
    for arg in argv:
        if arg in ("--print", "--dry-run"):
            show = True
            continue
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS or not value:
            raise ValueError(f"expected key=value with key one of {list(KEYS)}, or --print; got {arg!r}")
        values[key] = value
    missing = [k for k in ("project", "entity") if k not in values]
    if missing:
        raise ValueError(f"missing {', '.join(f'{k}=...' for k in missing)}")
    return values, show


def logged_in() -> bool:
    """True when wandb has credentials (no prompt, no network)."""
    import wandb

    return bool(wandb.login(prompt=False, verify=False))


def describe(workspace) -> str:
    """The layout as text: sections, their panels and the keys each shows, the runs table's columns."""
    lines = [f"workspace {workspace.name!r} of {workspace.entity}/{workspace.project}"]
    for section in workspace.sections:
        lines.append(f"  [{section.name}]")
        for panel in section.panels:
            keys = getattr(panel, "y", None) or getattr(panel, "media_keys", None) or [getattr(panel, "table_name", "")]
            title = getattr(panel, "title", None) or ""
            lines.append(f"    {type(panel).__name__}: {', '.join(map(str, keys))}" + (f"  ({title})" if title else ""))
    runs = workspace.runset_settings
    lines.append(f"  runs table grouped by {[str(g.name) for g in runs.groupby]}, pinned {runs.pinned_columns}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        values, show = parse_arguments(argv)
    except ValueError as error:
        print(f"interactdiffusion-dashboard: error: {error}\n{__doc__}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from ..dashboards.workspace import build_workspace

    workspace = build_workspace(values["entity"], values["project"], values.get("name", "InteractDiffusion"))
    if show:
        print(describe(workspace))
        return 0
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        print(f"interactdiffusion-dashboard: error: WANDB_MODE={os.environ['WANDB_MODE']}: saving a workspace needs "
              "the wandb server; unset WANDB_MODE (or use --print to see the layout)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not logged_in():
        print("interactdiffusion-dashboard: error: wandb is not logged in; run `wandb login` (or set "
              "WANDB_API_KEY) on a machine that reaches the wandb server, then run this again", file=sys.stderr)
        return EXIT_BAD_INPUT
    workspace.save()
    print(f"workspace {workspace.name!r} saved: {workspace.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
