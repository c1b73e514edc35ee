"""Hydra resolvers that name wandb runs: a group per sweep, a run name from the swept overrides, tags.

``configs/logger/wandb.yaml`` uses them::

    name:  ${wandb_run_name:${name}}                            # multirun job: "recipe.lr=0.001,seed=2"
    group: ${wandb_run_group:${name},${oc.select:wandb_group,null}}
    tags:  ${wandb_run_tags:${tags}}                            # + "experiment:<choice>", "model:<choice>"

- ``wandb_group`` (set by the table rows, or on the command line) puts runs in one group whatever else;
  otherwise every job of a Hydra multirun shares the group ``<run group>/<sweep folder>`` (the sweep's own
  folder under ``logs/<task>/<name>/multiruns/``), and a single run's group is its ``name``.
- A multirun job is named by the overrides that differ between jobs: the keys swept on the command line
  (read from the sweep's ``multirun.yaml``) and the sweeper's ``params`` (Optuna's search space).
- Outside a Hydra run (a test composing configs) the defaults are returned unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def _hydra() -> DictConfig | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _multirun_folder(hydra_cfg: DictConfig | None) -> Path | None:
    """The sweep's folder (every job's output folder sits in it), or None outside a multirun."""
    from hydra.types import RunMode

    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    output_dir = OmegaConf.select(hydra_cfg, "runtime.output_dir", default=None)
    return Path(str(output_dir)).parent if output_dir else None


def _override_key(text: str) -> str:
    return text.split("=", 1)[0].lstrip("+~")


def swept_keys(hydra_cfg: DictConfig, sweep_dir: Path) -> list[str]:
    """Keys whose value changes between the sweep's jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys: list[str] = []
    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None)
    if params:
        keys += [str(k) for k in params]
    primary = sweep_dir / "multirun.yaml"
    if primary.is_file():
        task = OmegaConf.select(OmegaConf.load(primary), "hydra.overrides.task", default=None) or []
        parsed = OverridesParser.create().parse_overrides([str(t) for t in task])
        keys += [o.key_or_group for o in parsed if o.is_sweep_override()]
    return list(dict.fromkeys(keys))


def wandb_run_name(default: str) -> str:
    hydra_cfg = _hydra()
    sweep_dir = _multirun_folder(hydra_cfg)
    if sweep_dir is None:
        return default
    task = [str(t) for t in hydra_cfg.overrides.task]
    swept = set(swept_keys(hydra_cfg, sweep_dir))
    chosen = [t for t in task if _override_key(t) in swept]
    if chosen:
        return ",".join(chosen)
    return str(hydra_cfg.job.override_dirname or f"{default}-{hydra_cfg.job.num}")


def wandb_run_group(default: str, explicit: Any = None) -> str:
    if explicit:
        return str(explicit)
    sweep_dir = _multirun_folder(_hydra())
    if sweep_dir is None:
        return default
    if sweep_dir.parent.name == "multiruns":  # logs/<task>/<name>/multiruns/<time>_<id>
        return f"{sweep_dir.parent.parent.name}/{sweep_dir.name}"
    return sweep_dir.name


def wandb_run_tags(tags: Any) -> list[str]:
    """The run's ``tags`` plus its experiment (or table row) and model variant (Hydra's config-group choices)."""
    out = [str(t) for t in (OmegaConf.to_container(tags) if isinstance(tags, ListConfig) else tags or [])]
    hydra_cfg = _hydra()
    if hydra_cfg is not None:
        for group in ("experiment", "table", "model"):
            choice = OmegaConf.select(hydra_cfg, f"runtime.choices.{group}", default=None)
            if choice:
                out.append(f"{group}:{choice}"[:64])  # wandb's tag limit
    return list(dict.fromkeys(out))


def register_wandb_resolvers() -> None:
    """Idempotent; not cached: in a multirun every job resolves its own name."""
    for name, function in (("wandb_run_name", wandb_run_name), ("wandb_run_group", wandb_run_group),
                           ("wandb_run_tags", wandb_run_tags)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
